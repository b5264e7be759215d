package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// The tests in this file run keyhole as a real child process.

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	binDir    string
)

func TestMain(m *testing.M) {
	flag.Parse()
	// The parallel tests mostly wait: on keyhole, nginx, Caddy, a JVM,
	// Python or Node in child processes, and on timeouts. -parallel's
	// default, one test per core, leaves two cores idle most of that time;
	// unless -parallel (or fuzzing, whose workers it counts) says
	// otherwise, run four at once.
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" || f.Name == "test.fuzz" })
	if !set && runtime.GOMAXPROCS(0) < 4 {
		flag.Set("test.parallel", "4")
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// keyholeBinary builds the binary once per test run.
func keyholeBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "keyhole-bin")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "keyhole")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = err
			binPath = string(out)
		}
	})
	if buildErr != nil {
		t.Fatalf("go build: %v\n%s", buildErr, binPath)
	}
	return binPath
}

// child is a running keyhole process, and a client of it.
type child struct {
	*testClient
	cmd    *exec.Cmd
	args   []string // serve's, for its client's checks (childConfig)
	addr   string
	mu     sync.Mutex
	stderr bytes.Buffer  // the log
	stdout *lockedBuffer // what it shows the operator once
	done   chan struct{}
}

func (c *child) output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stderr.String()
}

func (c *child) url() string { return "http://" + c.addr }

var listeningRE = regexp.MustCompile(`listening on http://([^\s"]+)`)

// startKeyhole runs the binary with args and waits until it listens.
func startKeyhole(t *testing.T, args ...string) *child {
	t.Helper()
	c, addr := launchKeyhole(t, args...)
	c.waitListening(t, addr, 30*time.Second)
	return c
}

// launchKeyhole starts a keyhole serve without waiting for it: addr gets
// its address once it listens.
func launchKeyhole(t *testing.T, args ...string) (*child, chan string) {
	t.Helper()
	cmd := exec.Command(keyholeBinary(t), append([]string{"serve", "--addr", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(os.Environ(), "KEYHOLE_ADMIN_TOKEN=")
	c := &child{cmd: cmd, args: args, stdout: new(lockedBuffer), done: make(chan struct{})}
	cmd.Stdout = c.stdout
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			line := sc.Text()
			c.mu.Lock()
			c.stderr.WriteString(line + "\n")
			c.mu.Unlock()
			if m := listeningRE.FindStringSubmatch(line); m != nil {
				addr <- m[1]
			}
		}
		cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-c.done
	})
	return c, addr
}

// waitListening waits until c, launched, listens.
func (c *child) waitListening(t *testing.T, addr chan string, within time.Duration) {
	t.Helper()
	select {
	case c.addr = <-addr:
		c.testClient = &testClient{t: t, base: c.url(), cfg: childConfig(t, c.args)}
	case <-c.done:
		t.Fatalf("keyhole exited before listening:\n%s", c.output())
	case <-time.After(within):
		t.Fatalf("keyhole did not listen within %v:\n%s", within, c.output())
	}
}

// childConfig is the configuration a child started with args runs with,
// for its client's checks against openapi.json.
func childConfig(t *testing.T, args []string) *config {
	t.Helper()
	cfg, err := parseServeFlags(args, func(string) string { return "" })
	if err != nil {
		t.Fatalf("parsing the child's flags %q: %v", args, err)
	}
	return &cfg
}

// stop sends sig and waits for the process to end.
func (c *child) stop(t *testing.T, sig os.Signal) {
	t.Helper()
	c.cmd.Process.Signal(sig)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("keyhole did not exit after %v", sig)
	}
}

// TestReadmeWalkthrough runs the README's walkthrough block with bash against
// a real keyhole, so every curl in it works as written.
func TestReadmeWalkthrough(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "jq"} {
		if _, err := exec.LookPath(tool); err != nil {
			integrationMissing(t, tool+" is not installed")
		}
	}
	block := readmeBlock(t, "walkthrough")
	db := filepath.Join(t.TempDir(), "walkthrough.db")
	c := startKeyhole(t, "--db", db, "--admin-token", "walkthrough-root-token-change-me")
	backup := filepath.Join(t.TempDir(), "backup.db")
	script := "set -euo pipefail\numask 022\n" + strings.ReplaceAll(block, "http://127.0.0.1:8080", c.url())
	script = strings.ReplaceAll(script, "/tmp/keyhole-backup.db", backup)
	cmd := exec.Command("bash", "-c", script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("walkthrough failed: %v\n%s\nserver:\n%s", err, out, c.output())
	}
	for _, want := range []string{`"environment_mismatch"`, `"valid":true`, `"invalid_or_revoked"`, "Ratelimit-Policy",
		`"last_used_at"`, "Admin token is invalid or revoked.", `"action":"admin_token.revoked"`,
		`"action":"key.revoked"`, `"action":"backup.taken"`, `"action":"root_token.rolled"`,
		`"name":"backend (eu)"`, `"meta":{"customer":"cus_123","plan":"pro"}`, `"allowed_ips":["127.0.0.1/32","10.0.0.0/8"]`,
		`"key_disabled"`, "X-Credits-Remaining: 1", `"credits":{"remaining":0,`, `"usage_exceeded"`, "Retry-After:"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("walkthrough output lacks %s:\n%s", want, out)
		}
	}
	checkMode(t, backup, 0o600)
}

// skipShort skips a slow test under -short, a quick run by hand; never
// where KEYHOLE_REQUIRE_INTEGRATION=1 or CI is set, which run everything.
func skipShort(t *testing.T, why string) {
	t.Helper()
	if testing.Short() && os.Getenv("KEYHOLE_REQUIRE_INTEGRATION") != "1" && os.Getenv("CI") == "" {
		t.Skipf("skipping in -short mode: %s", why)
	}
}

// integrationMissing skips when a real component is absent, or fails when
// KEYHOLE_REQUIRE_INTEGRATION=1 says it must be there.
func integrationMissing(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("KEYHOLE_REQUIRE_INTEGRATION") == "1" {
		t.Fatalf("%s, and KEYHOLE_REQUIRE_INTEGRATION=1", why)
	}
	t.Skipf("skipping: %s (set KEYHOLE_REQUIRE_INTEGRATION=1 to make this a failure)", why)
}

func childOrgAndKey(t *testing.T, c *child, token string) (org, key string) {
	t.Helper()
	r := c.on(t).admin(token, "POST", "/orgs", `{"name":"acme"}`)
	if r.status != 201 {
		t.Fatalf("create org = %d %s", r.status, r.body)
	}
	var o struct{ ID string }
	json.Unmarshal(r.body, &o)
	_, key = childCreateKey(t, c, token, o.ID, false)
	return o.ID, key
}

// childCreateKey creates a live key, and revokes it when revoke is set.
func childCreateKey(t *testing.T, c *child, token, org string, revoke bool) (id, key string) {
	t.Helper()
	r := c.on(t).admin(token, "POST", "/orgs/"+org+"/keys", `{"name":"k","env":"live"}`)
	if r.status != 201 {
		t.Fatalf("create key = %d %s", r.status, r.body)
	}
	var k struct{ ID, Key string }
	json.Unmarshal(r.body, &k)
	if revoke {
		if r := c.on(t).admin(token, "POST", "/orgs/"+org+"/keys/"+k.ID+"/revoke", ""); r.status != 200 {
			t.Fatalf("revoke = %d %s", r.status, r.body)
		}
	}
	return k.ID, k.Key
}

func childLogs(t *testing.T, c *child, token, org string) []logEntry {
	t.Helper()
	var all []logEntry
	cursor := ""
	for {
		r := c.on(t).admin(token, "GET", "/orgs/"+org+"/logs?limit=1000"+cursor, "")
		if r.status != 200 {
			t.Fatalf("logs = %d %s", r.status, r.body)
		}
		var a logsAnswer
		json.Unmarshal(r.body, &a)
		all = append(all, a.Entries...)
		if a.Next == nil {
			return all
		}
		cursor = "&before=" + *a.Next
	}
}

// childServerLogs reads the whole server-wide log of unidentified requests
// (revoked keys end up there).
func childServerLogs(t *testing.T, c *child, token string) []logEntry {
	t.Helper()
	var all []logEntry
	cursor := ""
	for {
		r := c.on(t).admin(token, "GET", "/logs?limit=1000"+cursor, "")
		if r.status != 200 {
			t.Fatalf("server logs = %d %s", r.status, r.body)
		}
		var a logsAnswer
		if err := json.Unmarshal(r.body, &a); err != nil {
			t.Fatal(err)
		}
		all = append(all, a.Entries...)
		if a.Next == nil {
			return all
		}
		cursor = "&before=" + *a.Next
	}
}
