package main

import (
	"bytes"
	"io"
	"os"
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
	te.testClient = &testClient{t: t, handler: te}
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
