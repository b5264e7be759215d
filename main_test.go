package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestFirstStartToken(t *testing.T) {
	cfg := testConfig(t)
	cfg.adminToken = ""
	te := &testEnv{clock: newFakeClock(), dbPath: cfg.dbPath, cfg: cfg, stdout: new(bytes.Buffer), stderr: new(bytes.Buffer)}
	te.testClient = &testClient{t: t, handler: te, cfg: &te.cfg}
	te.open()
	token := regexp.MustCompile(`kh_admin_[0-9a-f]{32}`).FindString(te.stdout.String())
	if token == "" {
		t.Fatalf("first start showed no root token on stdout: %q", te.stdout.String())
	}
	if strings.Contains(te.stderr.String(), token) {
		t.Fatalf("the root token is in the log: %q", te.stderr.String())
	}
	mustStatus(t, "root token works", te.admin(token, "GET", "/orgs", ""), 200)
	te.restart()
	if strings.Count(te.stdout.String(), "kh_admin_") != 1 {
		t.Fatalf("the root token was printed again on restart")
	}
	mustStatus(t, "root token after restart", te.admin(token, "GET", "/orgs", ""), 200)
	te.s.store.Close()

	var out, errOut bytes.Buffer
	c := &cli{stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }}
	if status := runCLI([]string{"admin-token", "reset", "--db", cfg.dbPath}, c); status != 0 {
		t.Fatalf("admin-token reset: exit status %d: %s", status, errOut.String())
	}
	fresh := strings.TrimSpace(out.String())
	te.open()
	mustStatus(t, "reset token", te.admin(fresh, "GET", "/orgs", ""), 200)
	if r := te.admin(token, "GET", "/orgs", ""); r.status != 401 {
		t.Fatalf("old root token after reset = %d; want 401", r.status)
	}
}

func TestConfigFromEnv(t *testing.T) {
	env := map[string]string{"KEYHOLE_ADDR": "127.0.0.1:9999", "KEYHOLE_BRAND": "acme",
		"KEYHOLE_RATE_LIMITS": "10/1s", "KEYHOLE_KEY_STYLE": "split", "KEYHOLE_LOG_RETENTION": "7"}
	cfg, err := parseServeFlags([]string{"--brand", "flagwins"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.addr != "127.0.0.1:9999" || cfg.brand != "flagwins" || cfg.keyStyle != styleSplit ||
		cfg.logRetention != 7 || cfg.rateLimits[0] != (rateLimit{10, "1s"}) {
		t.Fatalf("config = %+v", cfg)
	}
	for _, bad := range [][]string{{"--key-style", "x"}, {"--brand", "Bad_Brand"}, {"--rate-limits", "5"},
		{"--test-base", "/api/"}, {"--live-base", "nope"}, {"--log-retention", "0"}, {"--test-base", "/admin/x/"}} {
		if _, err := parseServeFlags(bad, func(string) string { return "" }); err == nil {
			t.Errorf("flags %v accepted; want an error", bad)
		}
	}
}

// TestSeedReadsEnvironment: keyhole seed takes KEYHOLE_DB like every
// command.
func TestSeedReadsEnvironment(t *testing.T) {
	db := filepath.Join(t.TempDir(), "seeded.db")
	t.Setenv("KEYHOLE_DB", db)
	c := &cli{stdout: io.Discard, stderr: io.Discard, getenv: os.Getenv}
	if err := seedCmd(c, []string{"--orgs", "2", "--keys", "3"}); err != nil {
		t.Fatal(err)
	}
	st, err := openStore(db, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if n, err := st.KeyCount(); err != nil || n != 3 {
		t.Fatalf("KEYHOLE_DB's db holds %d keys, %v; want 3", n, err)
	}
}

// TestFirstStartTokenWhenPortTaken: a first start whose address is taken
// exits with the listen error, having made and shown no root token and no
// demo keys; the next start, on the same still-empty db, shows a root
// token that works and makes the demo keys.
func TestFirstStartTokenWhenPortTaken(t *testing.T) {
	t.Parallel()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	db := filepath.Join(t.TempDir(), "first.db")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, keyholeBinary(t), "serve", "--addr", taken.Addr().String(), "--db", db, "--demo")
	cmd.Env = append(os.Environ(), "KEYHOLE_ADMIN_TOKEN=")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(out), "address already in use") {
		t.Fatalf("keyhole on a taken port: %v; want exit status 1 and the listen error\n%s", err, out)
	}
	tokenRE := regexp.MustCompile(`kh_admin_[0-9a-f]{32}`)
	if tokenRE.Match(out) || strings.Contains(string(out), "kh_live_") {
		t.Fatalf("the failed start showed a root token or demo key, which the next start will not show again:\n%s", out)
	}

	c := startKeyhole(t, "--db", db, "--demo")
	// The reveals go to stdout before the "listening" line goes to stderr,
	// but the two pipes are copied by their own goroutines: wait for the
	// demo hint's last line.
	var shown string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if shown = c.stdout.String(); strings.Contains(shown, "whoami   # 401") {
			break
		}
	}
	token := tokenRE.FindString(shown)
	if token == "" || !strings.Contains(shown, "keyhole demo:") {
		t.Fatalf("the start after the failed one showed no root token or no demo keys:\n%s", shown)
	}
	mustStatus(t, "the root token shown", c.admin(token, "GET", "/orgs", ""), 200)
}
