package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The admin commands, run as the built binary against a real keyhole
// process, as an operator at a shell would.

// adminCLI runs admin commands of the binary against one server.
type adminCLI struct {
	t      *testing.T
	server *child
	env    []string
	seen   strings.Builder // every output but the reveals', for TestCLISecrets
}

func newAdminCLI(t *testing.T) *adminCLI {
	c := startKeyhole(t, "--db", filepath.Join(t.TempDir(), "k.db"), "--admin-token", testRootToken)
	return &adminCLI{t: t, server: c, env: []string{"KEYHOLE_SERVER=" + c.url(), "KEYHOLE_ADMIN_TOKEN=" + testRootToken}}
}

// run runs keyhole args with the server and root token; want is the exit
// status it must end with.
func (a *adminCLI) run(want int, args ...string) (stdout, stderr string) {
	a.t.Helper()
	return a.runEnv(nil, want, args...)
}

func (a *adminCLI) runEnv(env []string, want int, args ...string) (stdout, stderr string) {
	a.t.Helper()
	status, out, errOut := runBinary(a.t, append(append([]string{}, a.env...), env...), args...)
	if status != want {
		a.t.Fatalf("keyhole %s: exit %d, stdout %q, stderr %q; want exit %d", strings.Join(args, " "), status, out, errOut, want)
	}
	return out, errOut
}

// quiet runs a command that must show no secret and records its output.
func (a *adminCLI) quiet(want int, args ...string) (stdout, stderr string) {
	a.t.Helper()
	out, errOut := a.run(want, args...)
	a.seen.WriteString(out + errOut)
	return out, errOut
}

func (a *adminCLI) json(v any, args ...string) {
	a.t.Helper()
	out, _ := a.quiet(0, append(args, "--json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		a.t.Fatalf("keyhole %s --json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

var (
	anySecret  = regexp.MustCompile(`kh_(live|test|orgadmin|admin)_[0-9a-f]{32}`)
	keyWarning = regexp.MustCompile(`Copy this (live|test) key for “[^”]+” now\. It won't be shown again\.`)
)

// checkAligned fails unless every line of a table starts its columns
// where the header starts them.
func checkAligned(t *testing.T, table string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(table, "\n"), "\n")
	if len(lines) < 2 {
		t.Fatalf("table has no rows:\n%s", table)
	}
	starts := []int{0}
	for _, m := range regexp.MustCompile(`  +`).FindAllStringIndex(lines[0], -1) {
		starts = append(starts, m[1])
	}
	for _, line := range lines[1:] {
		runes := []rune(line)
		for _, s := range starts[1:] {
			if len(runes) <= s || runes[s] == ' ' || runes[s-1] != ' ' || runes[s-2] != ' ' {
				t.Fatalf("line %q does not start a column at %d, as the header does:\n%s", line, s, table)
			}
		}
	}
}

func TestCLIAdminCommands(t *testing.T) {
	t.Parallel()
	a := newAdminCLI(t)
	out, _ := a.quiet(0, "orgs", "create", "acme")
	if !regexp.MustCompile(`(?m)^id +org_[0-9a-f]{16}$`).MatchString(out) || !strings.Contains(out, "acme") {
		t.Fatalf("orgs create printed %q; want the record", out)
	}
	a.quiet(0, "orgs", "create", "beta corp")
	out, _ = a.quiet(0, "orgs", "list")
	checkAligned(t, out)
	var orgs struct{ Orgs []orgView }
	a.json(&orgs, "orgs", "list")
	var org string
	for _, o := range orgs.Orgs {
		if o.Name == "acme" {
			org = o.ID
		}
	}
	if len(orgs.Orgs) != 2 || org == "" {
		t.Fatalf("orgs list --json = %+v", orgs)
	}

	key := createKeyCLI(t, a, org)
	if r := a.server.do("GET", "/api/v1/prod/whoami", "", bearer(key)...); r.status != 200 {
		t.Fatalf("the key keys create showed: whoami = %d %s", r.status, r.body)
	}
	out, _ = a.quiet(0, "keys", "list", org)
	checkAligned(t, out)
	var keys struct{ Keys []keyView }
	a.json(&keys, "keys", "list", org, "--env", "live")
	if len(keys.Keys) != 1 || keys.Keys[0].Scopes[0] != "sms:send" || keys.Keys[0].RateLimits[0].Limit != 100 {
		t.Fatalf("keys list --json = %+v", keys)
	}
	id := keys.Keys[0].ID
	// Of the environment, the connection's flags count, not a command's own.
	out, _ = a.runEnv([]string{"KEYHOLE_ENV=production", "KEYHOLE_LIMIT=x", "KEYHOLE_JSON=true"}, 0, "keys", "list", org)
	if err := json.Unmarshal([]byte(out), &keys); err != nil || len(keys.Keys) != 2 {
		t.Fatalf("KEYHOLE_JSON=true keys list = %q (%v); want the JSON of both keys", out, err)
	}
	out, _ = a.quiet(0, "keys", "show", org, id)
	if !regexp.MustCompile(`(?m)^rate_limits +100/1m$`).MatchString(out) || !regexp.MustCompile(`(?m)^last_used_at +20`).MatchString(out) {
		t.Fatalf("keys show printed %q; want its fields, last use included", out)
	}
	rolled := rollKeyCLI(t, a, org, id)
	a.quiet(0, "keys", "revoke", org, id)
	if r := a.server.do("GET", "/api/v1/prod/whoami", "", bearer(key)...); r.status != 401 {
		t.Fatalf("a revoked key: whoami = %d", r.status)
	}
	out, _ = a.quiet(0, "keys", "list", org, "--include-revoked")
	if !regexp.MustCompile(`(?m)^` + id + `.*revoked$`).MatchString(out) {
		t.Fatalf("keys list --include-revoked:\n%s", out)
	}
	tokensCLI(t, a, org)
	out, _ = a.quiet(0, "audit", org, "--action", "key.revoked")
	if checkAligned(t, out); !strings.Contains(out, id) {
		t.Fatalf("audit ORG --action key.revoked:\n%s", out)
	}
	var audit auditPage
	a.json(&audit, "audit", "--limit", "100")
	if len(audit.Entries) < 7 {
		t.Fatalf("audit --json has %d entries", len(audit.Entries))
	}
	checkNoSecret(t, a, key, rolled)
}

// createKeyCLI creates a live key of org, and a test key with --json:
// each is shown once, with the console's warning.
func createKeyCLI(t *testing.T, a *adminCLI, org string) string {
	out, errOut := a.run(0, "keys", "create", org, "--name", "backend", "--env", "live", "--scopes", "sms:send", "--rate-limits", "100/1m")
	keys := anySecret.FindAllString(out, -1)
	if len(keys) != 1 || len(keyWarning.FindAllString(out, -1)) != 1 || errOut != "" ||
		!strings.Contains(out, "Copy this live key for “backend” now. It won't be shown again.\n\n    "+keys[0]+"\n") {
		t.Fatalf("keys create: stdout %q, stderr %q; want the record, the warning and the key once", out, errOut)
	}
	out, errOut = a.run(0, "keys", "create", "--json", org, "--name", "ci", "--env", "test")
	var k keyView
	if err := json.Unmarshal([]byte(out), &k); err != nil || !strings.HasPrefix(k.Key, "kh_test_") ||
		strings.Count(out, k.Key) != 1 || !keyWarning.MatchString(errOut) || anySecret.MatchString(errOut) {
		t.Fatalf("keys create --json: stdout %q (%v), stderr %q; want the API's JSON, and the warning on stderr", out, err, errOut)
	}
	return keys[0]
}

// rollKeyCLI rolls id with a grace period: a new key shown once.
func rollKeyCLI(t *testing.T, a *adminCLI, org, id string) string {
	out, _ := a.run(0, "keys", "roll", org, id, "--expires-in", "1h")
	keys := anySecret.FindAllString(out, -1)
	if len(keys) != 1 || !keyWarning.MatchString(out) || strings.Contains(out, id) {
		t.Fatalf("keys roll printed %q; want the new record and its key once", out)
	}
	return keys[0]
}

// tokensCLI issues, lists, rolls and revokes an org admin token, which
// then works with --token-file.
func tokensCLI(t *testing.T, a *adminCLI, org string) {
	out, _ := a.run(0, "tokens", "create", org, "--name", "acme ops")
	tokens := anySecret.FindAllString(out, -1)
	if len(tokens) != 1 || !strings.Contains(out, "Copy this token now and hand it to the organization’s admin. It won't be shown again.") {
		t.Fatalf("tokens create printed %q; want the token once with the warning", out)
	}
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(tokens[0]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _ = a.quiet(0, "keys", "list", org, "--token-file", file)
	checkAligned(t, out)
	out, _ = a.quiet(0, "tokens", "list", org)
	checkAligned(t, out)
	var list struct {
		Tokens []tokenView `json:"admin_tokens"`
	}
	a.json(&list, "tokens", "list", org)
	out, _ = a.run(0, "tokens", "roll", org, list.Tokens[0].ID, "--token-file", file)
	if strings.Count(out, "kh_orgadmin_") != 2 || len(anySecret.FindAllString(out, -1)) != 1 { // the prefix and the token
		t.Fatalf("tokens roll printed %q", out)
	}
	a.quiet(0, "tokens", "revoke", org, list.Tokens[0].ID)
	_, errOut := a.runEnv([]string{"KEYHOLE_TOKEN_FILE=" + file}, exitRefused, "orgs", "list")
	if !strings.Contains(errOut, "invalid_or_revoked: Admin token is invalid or revoked.") {
		t.Fatalf("a revoked token: stderr %q", errOut)
	}
}

// checkNoSecret: what the commands printed, other than the reveals, holds
// no key or token, nor the root token.
func checkNoSecret(t *testing.T, a *adminCLI, secrets ...string) {
	seen := a.seen.String() + a.server.output()
	if m := anySecret.FindString(seen); m != "" {
		t.Errorf("output beyond the one-time reveals holds a secret, %s", m)
	}
	for _, s := range append(secrets, testRootToken) {
		if strings.Contains(seen, s) {
			t.Errorf("output beyond the one-time reveals holds %s", s)
		}
	}
}

// TestCLIAdminExitStatus: scripts can tell not found (3), a refused token
// (4), a refused request (5), a bad command line (2) and a server that is
// not there (1); each prints the contract's error code and message.
func TestCLIAdminExitStatus(t *testing.T) {
	t.Parallel()
	a := newAdminCLI(t)
	var o orgView
	a.json(&o, "orgs", "create", "acme")
	down := closedPort(t)
	tests := []struct {
		env    []string
		args   []string
		status int
		want   string
	}{
		{nil, []string{"keys", "show", o.ID, "key_0000000000000000"}, exitNotFound, "keyhole keys show: not_found: Key not found. (HTTP 404, request req_"},
		{nil, []string{"keys", "list", "org_0000000000000000"}, exitNotFound, "not_found: Organization not found."},
		{[]string{"KEYHOLE_ADMIN_TOKEN=kh_admin_0000000000000000000000000000dead"}, []string{"orgs", "list"}, exitRefused, "invalid_or_revoked: Admin token is invalid or revoked."},
		{nil, []string{"keys", "create", o.ID, "--name", "k", "--env", "live", "--expires-at", "2001-01-01T00:00:00Z"}, exitRejected, `invalid_request: Field "expires_at" must be in the future.`},
		{nil, []string{"keys", "show", o.ID}, exitUsage, "keyhole keys show: missing KEY: keyhole keys show ORG KEY"},
		{nil, []string{"keys", "create", o.ID, "--name", "k", "--env", "prod"}, exitUsage, "want --env test or --env live"},
		{nil, []string{"keys", "create", o.ID, "--name", "k", "--env", "live", "--rate-limits", "5"}, exitUsage, "is not LIMIT/DURATION like 5/1m"},
		{nil, []string{"keys", "roll", o.ID, "key_0000000000000000", "--expires-in", "soon"}, exitUsage, `--expires-in "soon": want a duration`},
		{nil, []string{"keys", "frob"}, exitUsage, `keyhole keys: unknown subcommand "frob"`},
		{nil, []string{"logs"}, exitUsage, "want ORG, or --unidentified"},
		{nil, []string{"logs", o.ID, "--status", "bad"}, exitUsage, `--status "bad": want a status like 429`},
		{nil, []string{"keys", "list", o.ID, "--env", "prod"}, exitUsage, `--env "prod": want test or live`},
		{nil, []string{"audit", "--action", "key.frobbed"}, exitRejected, `invalid_request: Parameter "action" must be one of`},
		{[]string{"KEYHOLE_ADMIN_TOKEN="}, []string{"orgs", "list"}, exitUsage, "no admin token: set KEYHOLE_ADMIN_TOKEN, or give --token-file FILE"},
		{nil, []string{"orgs", "list", "--token-file", "/nonexistent/token"}, exitUsage, "--token-file: open /nonexistent/token"},
		{nil, []string{"orgs", "list", "--server", "ftp://x"}, exitUsage, `--server "ftp://x": want a URL`},
		{nil, []string{"orgs", "list", "--server", down}, exitFailed, "keyhole orgs list: cannot reach keyhole at " + down},
		{[]string{"KEYHOLE_SERVER=" + down}, []string{"logs", o.ID, "--follow"}, exitFailed, "cannot reach keyhole at " + down},
	}
	for _, tt := range tests {
		out, errOut := a.runEnv(tt.env, tt.status, tt.args...)
		if out != "" || !strings.Contains(errOut, tt.want) || strings.Contains(errOut, testRootToken) {
			t.Errorf("keyhole %s: stdout %q, stderr %q; want nothing and %q", strings.Join(tt.args, " "), out, errOut, tt.want)
		}
	}
	// An org admin token on a root-only call: 403 is a refusal too.
	token := a.server.on(t).root("POST", "/orgs/"+o.ID+"/admin-tokens", `{"name":"ops"}`)
	var tok tokenView
	json.Unmarshal(token.body, &tok)
	_, errOut := a.runEnv([]string{"KEYHOLE_ADMIN_TOKEN=" + tok.Token}, exitRefused, "orgs", "create", "other")
	if !strings.Contains(errOut, "forbidden: Only the root admin token can do this.") || strings.Contains(errOut, tok.Token) {
		t.Errorf("org token on orgs create: stderr %q", errOut)
	}
}

// closedPort is the URL of an address nothing listens on.
func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

// TestCLILogsFollow: keyhole logs --follow prints the log's newest
// entries, then each new request as it comes, and ends with status 0 on
// SIGINT (Ctrl-C); --json prints an entry a line.
func TestCLILogsFollow(t *testing.T) {
	t.Parallel()
	a := newAdminCLI(t)
	org, key := childOrgAndKey(t, a.server, testRootToken)
	first := a.server.do("GET", "/api/v1/prod/whoami", "", bearer(key)...).header.Get("X-Request-Id")
	out, _ := a.quiet(0, "logs", org)
	if !strings.Contains(out, first) || !strings.HasPrefix(out, "TIME ") {
		t.Fatalf("logs printed %q; want the request %s", out, first)
	}
	for _, jsonOut := range []bool{false, true} {
		args := []string{"logs", org, "--follow", "--interval", "100ms"}
		if jsonOut {
			args = append(args, "--json")
		}
		f := startFollow(t, a, args...)
		f.waitFor(t, first)
		next := a.server.do("GET", "/api/v1/prod/nope", "", bearer(key)...).header.Get("X-Request-Id")
		line := f.waitFor(t, next)
		if status := f.interrupt(t); status != 0 {
			t.Fatalf("logs --follow after SIGINT: exit %d; want 0\n%s", status, f.out.String())
		}
		var e logEntry
		if jsonOut && (json.Unmarshal([]byte(line), &e) != nil || e.RequestID != next || e.Path != "/api/v1/prod/nope") {
			t.Fatalf("logs --follow --json printed %q; want the entry as JSON", line)
		}
		if strings.Count(f.out.String(), first) != 1 || strings.Count(f.out.String(), next) != 1 {
			t.Fatalf("logs --follow printed an entry twice, or not at all:\n%s", f.out.String())
		}
		a.seen.WriteString(f.out.String())
	}
	checkNoSecret(t, a, key)
}

// follow is a keyhole logs --follow process.
type follow struct {
	cmd   *exec.Cmd
	lines chan string
	out   *lockedBuffer
}

func startFollow(t *testing.T, a *adminCLI, args ...string) *follow {
	cmd := exec.Command(keyholeBinary(t), args...)
	cmd.Env = append(os.Environ(), a.env...)
	f := &follow{cmd: cmd, lines: make(chan string, 100), out: new(lockedBuffer)}
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = f.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			f.out.Write([]byte(sc.Text() + "\n"))
			f.lines <- sc.Text()
		}
		close(f.lines)
	}()
	return f
}

// waitFor returns the first line that holds s.
func (f *follow) waitFor(t *testing.T, s string) string {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case line, ok := <-f.lines:
			if !ok {
				t.Fatalf("logs --follow ended before printing %s:\n%s", s, f.out.String())
			}
			if strings.Contains(line, s) {
				return line
			}
		case <-timeout:
			t.Fatalf("logs --follow did not print %s within 10s:\n%s", s, f.out.String())
		}
	}
}

// interrupt sends SIGINT and returns the exit status.
func (f *follow) interrupt(t *testing.T) int {
	t.Helper()
	f.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() {
		for range f.lines { // the scanner ends with the pipe
		}
		done <- f.cmd.Wait()
	}()
	select {
	case <-done:
		return f.cmd.ProcessState.ExitCode()
	case <-time.After(10 * time.Second):
		t.Fatalf("logs --follow still runs 10s after SIGINT")
	}
	return -1
}

// TestCLIArgsAnywhere: an admin command's flags may come after its
// arguments; "--" ends them.
func TestCLIArgsAnywhere(t *testing.T) {
	for _, tt := range []struct {
		args     []string
		operands string
		json     bool
		name     string
	}{
		{[]string{"org_1", "--json"}, "org_1", true, ""},
		{[]string{"--name", "x", "org_1", "key_1", "--json=false"}, "org_1 key_1", false, "x"},
		{[]string{"org_1", "--", "--json"}, "org_1 --json", false, ""},
		{[]string{"--json", "--", "-x"}, "-x", true, ""},
	} {
		fs := newFlagSet("keys show")
		f := addAdminFlags(fs)
		name := fs.String("name", "", "")
		got, err := parseArgsAnywhere(fs, tt.args, func(string) string { return "" })
		if err != nil || strings.Join(got, " ") != tt.operands || f.json != tt.json || *name != tt.name {
			t.Errorf("parseArgsAnywhere(%q) = %q, json %v, name %q, %v; want %q, %v, %q", tt.args, got, f.json, *name, err,
				tt.operands, tt.json, tt.name)
		}
	}
}

// TestCLICell: a value that could drive a terminal is quoted.
func TestCLICell(t *testing.T) {
	var b bytes.Buffer
	printTable(&b, []string{"PATH"}, [][]string{{"/a\x1b[2Jb"}, {""}, {"/ok"}})
	if want := "PATH\n\"/a\\x1b[2Jb\"\n-\n/ok\n"; b.String() != want {
		t.Fatalf("table = %q; want %q", b.String(), want)
	}
}

// TestReadmeCLI runs README.md's CLI block with bash against a real
// keyhole, started as the walkthrough's, with the binary on PATH.
func TestReadmeCLI(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"bash", "curl", "jq", "timeout"} {
		if _, err := exec.LookPath(tool); err != nil {
			integrationMissing(t, tool+" is not installed")
		}
	}
	block := readmeBlock(t, "cli")
	c := startKeyhole(t, "--db", filepath.Join(t.TempDir(), "cli.db"), "--admin-token", "walkthrough-root-token-change-me")
	cmd := exec.Command("bash", "-c", "set -euo pipefail\n"+strings.ReplaceAll(block, "http://127.0.0.1:8080", c.url()))
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(keyholeBinary(t))+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the CLI block failed: %v\n%s\nserver:\n%s", err, out, c.output())
	}
	for _, want := range []string{"Copy this live key for “backend” now. It won't be shown again.", "ID                    NAME",
		`"key_id"`, "200     GET", "exit status 3: not found", "Copy this token now", "key.revoked", "admin_token.created",
		`"code":"key_disabled"`, "allowed_ips   127.0.0.1/32, 10.0.0.0/8"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the CLI block's output lacks %q:\n%s", want, out)
		}
	}
	checkMode(t, filepath.Join(cmd.Dir, "acme-ops.token"), 0o600)
}

// TestCLIKeysUpdate: keys update edits only what its flags name, and the
// next request sees it; flags that undo each other, or none, are a usage
// error, a value the server refuses exit 5.
func TestCLIKeysUpdate(t *testing.T) {
	t.Parallel()
	a := newAdminCLI(t)
	org, key := childOrgAndKey(t, a.server, testRootToken)
	var list struct{ Keys []keyView }
	if err := json.Unmarshal(a.server.on(t).root("GET", "/orgs/"+org+"/keys", "").body, &list); err != nil || len(list.Keys) != 1 {
		t.Fatalf("keys: %+v %v", list, err)
	}
	k := list.Keys[0]
	a.json(&k, "keys", "update", org, k.ID, "--name", "renamed", "--scopes", "sms:send, sms:read", "--disable",
		"--meta", `{"plan":"pro"}`, "--credits", `{"remaining":5}`, "--expires-at", "2099-01-02T15:04:05Z")
	if k.Name != "renamed" || strings.Join(k.Scopes, ",") != "sms:send,sms:read" || k.Enabled || string(k.Meta) != `{"plan":"pro"}` ||
		k.Credits == nil || k.Credits.Remaining != 5 || k.ExpiresAt == nil || k.Env != "live" {
		t.Fatalf("keys update --json = %+v", k)
	}
	if r := a.server.do("GET", "/api/v1/prod/whoami", "", bearer(key)...); r.status != 401 || !strings.Contains(string(r.body), "key_disabled") {
		t.Fatalf("a disabled key: whoami = %d %s", r.status, r.body)
	}
	out, _ := a.quiet(0, "keys", "list", org)
	if !regexp.MustCompile(`(?m)^` + k.ID + ` +renamed .* disabled$`).MatchString(out) {
		t.Fatalf("keys list shows a disabled key as:\n%s", out)
	}
	out, _ = a.quiet(0, "keys", "update", org, k.ID, "--enable", "--no-expiry", "--meta", "null", "--allowed-ips", "10.0.0.0/8")
	for _, want := range []string{`(?m)^enabled +true$`, `(?m)^expires_at +-$`, `(?m)^meta +-$`, `(?m)^allowed_ips +10\.0\.0\.0/8$`, `(?m)^name +renamed$`} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("keys update printed no %s:\n%s", want, out)
		}
	}
	if r := a.server.do("GET", "/api/v1/prod/whoami", "", bearer(key)...); r.status != 403 || !strings.Contains(string(r.body), "ip_not_allowed") {
		t.Fatalf("a key allowed only 10.0.0.0/8: whoami from 127.0.0.1 = %d %s", r.status, r.body)
	}
	a.quiet(0, "keys", "update", org, k.ID, "--allowed-ips", "", "--credits", "null", "--default-rate-limits")
	if r := a.server.do("GET", "/api/v1/prod/whoami", "", bearer(key)...); r.status != 200 {
		t.Fatalf("after --allowed-ips '': whoami = %d %s", r.status, r.body)
	}
	for _, tt := range []struct {
		args   []string
		status int
		want   string
	}{
		{[]string{org, k.ID}, exitUsage, "nothing to change"},
		{[]string{org, k.ID, "--enable", "--disable"}, exitUsage, "--enable and --disable: give one of them"},
		{[]string{org, k.ID, "--expires-at", "2099-01-01T00:00:00Z", "--no-expiry"}, exitUsage, "give one of them"},
		{[]string{org, k.ID, "--meta", "[1]"}, exitUsage, `--meta "[1]": want a JSON object, or null`},
		{[]string{org, k.ID, "--credits", "{"}, exitUsage, "want a JSON object"},
		{[]string{org, k.ID, "--expires-at", "tomorrow"}, exitUsage, `--expires-at "tomorrow": want an RFC 3339 time`},
		{[]string{org, k.ID, "--allowed-ips", "10.0.0.1/8"}, exitRejected, `invalid_request: Field "allowed_ips"`},
		{[]string{org, "key_0000000000000000", "--disable"}, exitNotFound, "not_found: Key not found."},
	} {
		_, errOut := a.run(tt.status, append([]string{"keys", "update"}, tt.args...)...)
		if !strings.Contains(errOut, tt.want) {
			t.Errorf("keys update %s: stderr %q; want %q", strings.Join(tt.args, " "), errOut, tt.want)
		}
	}
	checkNoSecret(t, a, key)
}
