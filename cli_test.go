package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// The tests in this file run the built binary, as a person at a shell
// would, and read what it prints and its exit status.

// runBinary runs keyhole with args and extra environment to its end.
func runBinary(t *testing.T, env []string, args ...string) (status int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second) // a hang guard
	defer cancel()
	cmd := exec.CommandContext(ctx, keyholeBinary(t), args...)
	cmd.Env = append(append(os.Environ(), "KEYHOLE_ADMIN_TOKEN=", "KEYHOLE_LOG_FORMAT="), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("keyhole %s still runs after 15s", strings.Join(args, " "))
	case errors.As(err, &exit):
		status = exit.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return status, out.String(), errOut.String()
}

var commandNames = []string{"serve", "admin-token", "backup", "seed", "orgs", "keys", "tokens", "logs", "audit", "version", "help"}

// adminSubcommands are the groups' subcommands, which help lists too.
var adminSubcommands = map[string][]string{
	"orgs":   {"list", "show", "create"},
	"keys":   {"list", "show", "create", "revoke", "roll", "update"},
	"tokens": {"list", "create", "revoke", "roll"},
}

// TestCLIHelp: --help, -h and help list every command and exit 0; each
// command's --help (and help CMD) shows its usage and flags.
func TestCLIHelp(t *testing.T) {
	t.Parallel()
	var first string
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		status, out, errOut := runBinary(t, nil, args...)
		if status != 0 || errOut != "" {
			t.Fatalf("keyhole %s: exit %d, stderr %q; want 0 and nothing", args[0], status, errOut)
		}
		for _, name := range append(commandNames, "--version", "KEYHOLE_<FLAG>") {
			if !strings.Contains(out, name) {
				t.Errorf("keyhole %s does not mention %s:\n%s", args[0], name, out)
			}
		}
		if first == "" {
			first = out
		} else if out != first {
			t.Errorf("keyhole %s differs from keyhole --help", args[0])
		}
	}
	flags := map[string][]string{
		"serve":       readmeFlags(t),
		"admin-token": {"--db", "--brand"},
		"backup":      {"--db"},
		"seed":        {"--db", "--orgs", "--keys", "--brand"},
		"logs":        {"--server", "--token-file", "--json", "--follow", "--interval", "--limit", "--key", "--env", "--status"},
		"audit":       {"--server", "--token-file", "--json", "--actor", "--action", "--target", "--limit"},
		"cluster":     {"--db", "--etcd-endpoints"},
	}
	for _, name := range commandNames {
		for _, args := range [][]string{{name, "--help"}, {"help", name}} {
			status, out, errOut := runBinary(t, nil, args...)
			if status != 0 || errOut != "" || !strings.HasPrefix(out, "Usage: keyhole "+name) {
				t.Fatalf("keyhole %s: exit %d, stderr %q, stdout %q; want 0 and its usage", strings.Join(args, " "), status, errOut, out)
			}
			for _, f := range flags[name] {
				if !regexp.MustCompile(`(?m)^  ` + f + `\b`).MatchString(out) {
					t.Errorf("keyhole %s does not list %s:\n%s", strings.Join(args, " "), f, out)
				}
			}
		}
	}
	checkSubcommandHelp(t)
	// Every flag serve --help lists is in the README's table, and the other
	// way round (the loop above).
	_, out, _ := runBinary(t, nil, "serve", "--help")
	readme := strings.Join(readmeFlags(t), " ")
	for _, m := range regexp.MustCompile(`(?m)^  (--[a-z-]+)`).FindAllStringSubmatch(out, -1) {
		if !strings.Contains(readme+" ", m[1]+" ") {
			t.Errorf("serve --help lists %s, which README.md's flag table lacks", m[1])
		}
	}
}

// checkSubcommandHelp: a group's help lists its subcommands, and each
// subcommand's --help (and help GROUP SUB) shows its usage, the admin
// commands' flags and their exit statuses.
func checkSubcommandHelp(t *testing.T) {
	t.Helper()
	for group, subs := range adminSubcommands {
		_, out, _ := runBinary(t, nil, group, "--help")
		for _, sub := range subs {
			if !strings.Contains(out, "keyhole "+group+" "+sub+" ") {
				t.Errorf("keyhole %s --help does not list %s:\n%s", group, sub, out)
			}
			for _, args := range [][]string{{group, sub, "--help"}, {"help", group, sub}} {
				status, out, errOut := runBinary(t, nil, args...)
				if status != 0 || errOut != "" || !strings.HasPrefix(out, "Usage: keyhole "+group+" "+sub+" ") ||
					!strings.Contains(out, "3 not found") {
					t.Fatalf("keyhole %s: exit %d, stderr %q, stdout %q; want 0 and its usage", strings.Join(args, " "), status, errOut, out)
				}
				for _, f := range []string{"--server", "--token-file", "--json"} {
					if !regexp.MustCompile(`(?m)^  ` + f + `\b`).MatchString(out) {
						t.Errorf("keyhole %s does not list %s:\n%s", strings.Join(args, " "), f, out)
					}
				}
			}
		}
	}
}

// readmeFlags are the flags in the first column of README.md's flag table.
func readmeFlags(t *testing.T) []string {
	t.Helper()
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, _ := strings.Cut(string(readme), "| flag | default | meaning |")
	table, _, _ = strings.Cut(table, "\n\n")
	var flags []string
	for _, line := range strings.Split(table, "\n") {
		first, _, _ := strings.Cut(strings.TrimPrefix(line, "| "), " |")
		for _, m := range regexp.MustCompile("`(--[a-z-]+)`").FindAllStringSubmatch(first, -1) {
			flags = append(flags, m[1])
		}
	}
	if len(flags) < 10 {
		t.Fatalf("README.md's flag table has %d flags: %q", len(flags), flags)
	}
	return flags
}

// TestCLIUsageErrors: an unknown command prints the usage to stderr and
// exits 2; so do bad flags and values, naming the form they want.
func TestCLIUsageErrors(t *testing.T) {
	t.Parallel()
	status, out, errOut := runBinary(t, nil, "frobnicate")
	if status != 2 || out != "" || !strings.Contains(errOut, `unknown command "frobnicate"`) || !strings.Contains(errOut, "Usage:") {
		t.Fatalf("keyhole frobnicate: exit %d, stdout %q, stderr %q; want 2 and the usage on stderr", status, out, errOut)
	}
	db := filepath.Join(t.TempDir(), "k.db")
	tests := []struct {
		env  []string
		args []string
		want string
	}{
		{[]string{"KEYHOLE_FLUSH_INTERVAL=fast"}, []string{"serve", "--db", db}, `KEYHOLE_FLUSH_INTERVAL="fast": want a duration such as 250ms or 1s`},
		{nil, []string{"serve", "--flush-interval", "fast"}, `--flush-interval "fast": want a duration such as 250ms or 1s`},
		{nil, []string{"--log-retention", "lots"}, `--log-retention "lots": want a whole number`},
		{[]string{"KEYHOLE_DEMO=maybe"}, []string{"serve"}, `KEYHOLE_DEMO="maybe": want true or false`},
		{nil, []string{"serve", "--key-style", "fancy"}, `--key-style "fancy": want prefixed or split`},
		{nil, []string{"serve", "--log-format", "xml"}, `--log-format "xml": want json or text`},
		{nil, []string{"serve", "--rate-limits", "5"}, `is not LIMIT/DURATION like 5/1m`},
		{nil, []string{"serve", "--bogus"}, "flag provided but not defined: -bogus"},
		{nil, []string{"serve", "extra"}, `unexpected argument "extra"`},
		{nil, []string{"backup", "--db", db}, "want one argument, the file to write"},
		{nil, []string{"admin-token", "--db", db}, "want the subcommand reset"},
		{[]string{"KEYHOLE_ORGS=many"}, []string{"seed", "--db", db}, `KEYHOLE_ORGS="many": want a whole number`},
		{nil, []string{"version", "extra"}, `unexpected argument "extra"`},
		{[]string{"KEYHOLE_ADMIN_TOKEN=kh_orgadmin_0123456789abcdef0123456789abcdef"}, []string{"serve", "--db", db},
			"--admin-token is an org admin token (_orgadmin_…), which must not become the root token"},
	}
	for _, tt := range tests {
		status, out, errOut := runBinary(t, tt.env, tt.args...)
		if status != 2 || out != "" || !strings.Contains(logMessages(errOut), tt.want) {
			t.Errorf("%v keyhole %s: exit %d, stdout %q, stderr %q; want 2 and %q", tt.env, strings.Join(tt.args, " "),
				status, out, errOut, tt.want)
		}
	}
	if _, err := os.Stat(db); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused command line created the db: %v", err)
	}
}

// logMessages is the messages of the JSON log lines in s, a line each;
// other lines as they are.
func logMessages(s string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(s, "\n") {
		var entry struct{ Message string }
		if json.Unmarshal([]byte(line), &entry) == nil && entry.Message != "" {
			line = entry.Message + "\n"
		}
		b.WriteString(line)
	}
	return b.String()
}

// TestCLIVersion: --version and version print the same line, the build's
// version as go version -m reads it from the binary.
func TestCLIVersion(t *testing.T) {
	t.Parallel()
	status, out, errOut := runBinary(t, nil, "--version")
	status2, out2, _ := runBinary(t, nil, "version")
	if status != 0 || status2 != 0 || errOut != "" || out != out2 || !strings.HasPrefix(out, "keyhole ") {
		t.Fatalf("keyhole --version = %d %q %q, keyhole version = %d %q; want the same line, exit 0", status, out, errOut, status2, out2)
	}
	meta, err := exec.Command("go", "version", "-m", keyholeBinary(t)).Output()
	if err != nil {
		t.Fatalf("go version -m: %v", err)
	}
	want := "devel"
	if m := regexp.MustCompile(`(?m)^\s+mod\s+\S+\s+(v\S+)`).FindSubmatch(meta); m != nil {
		want = string(m[1])
	}
	if m := regexp.MustCompile(`(?m)vcs\.revision=([0-9a-f]{12})`).FindSubmatch(meta); m != nil {
		want = string(m[1])
	}
	if !strings.Contains(out, want) {
		t.Fatalf("keyhole --version = %q; the binary's build info says %q\n%s", out, want, meta)
	}
}

func TestDescribeBuild(t *testing.T) {
	rev := []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.modified", Value: "true"}}
	for _, tt := range []struct {
		linked string
		info   *debug.BuildInfo
		want   string
	}{
		{"", nil, "devel"},
		{"", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "devel"},
		{"", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: rev}, "devel (revision 0123456789ab, modified)"},
		{"", &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}, "v1.2.3"},
		{"", &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261101000000-0123456789ab+dirty"}, Settings: rev},
			"v0.0.0-20261101000000-0123456789ab+dirty"},
		{"v2.0.0", &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}, Settings: rev[:1]}, "v2.0.0 (revision 0123456789ab)"},
	} {
		if got := describeBuild(tt.linked, tt.info); got != tt.want {
			t.Errorf("describeBuild(%q, %+v) = %q; want %q", tt.linked, tt.info, got, tt.want)
		}
	}
}

// TestLogJSON runs a real server through a first start with --demo, some
// requests and a SIGTERM: every line on stderr is a JSON object with a
// level and a message, and none holds a secret; the root token and the
// demo keys are on stdout.
func TestLogJSON(t *testing.T) {
	t.Parallel()
	c := startKeyhole(t, "--db", filepath.Join(t.TempDir(), "k.db"), "--demo")
	secret := regexp.MustCompile(`kh_(admin|live|test)_[0-9a-f]{32}`)
	var secrets []string
	// stdout is another pipe: it may reach the test after stderr's line.
	for deadline := time.Now().Add(10 * time.Second); len(secrets) < 4 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond) // polling the pipe, not timing a result
		secrets = secret.FindAllString(c.stdout.String(), -1)
	}
	if len(secrets) < 4 { // the token, the two keys, the live key again
		t.Fatalf("stdout shows %d secrets; want the root token and two demo keys:\n%s", len(secrets), c.stdout.String())
	}
	c.do("GET", "/api/v1/prod/whoami", "", bearer(secrets[len(secrets)-1])...)
	c.do("GET", "/healthz", "")
	c.stop(t, syscall.SIGTERM)
	lines := strings.Split(strings.TrimSuffix(c.output(), "\n"), "\n")
	if len(lines) < 4 {
		t.Fatalf("stderr has %d lines; want the token notice, listening, demo and stopped:\n%s", len(lines), c.output())
	}
	for _, line := range lines {
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Fatalf("stderr line %q is not JSON: %v", line, err)
		}
		level, _ := entry["level"].(string)
		msg, _ := entry["message"].(string)
		if _, err := zerolog.ParseLevel(level); level == "" || err != nil || msg == "" {
			t.Errorf("stderr line %q lacks a level or a message", line)
		}
		for _, secret := range secrets {
			if strings.Contains(line, secret) {
				t.Errorf("stderr line %q holds a secret", line)
			}
		}
	}
	if !strings.Contains(lines[len(lines)-1], `"message":"stopped"`) {
		t.Errorf("the last line is %q; want stopped", lines[len(lines)-1])
	}
}

// TestLogText: --log-format text (and KEYHOLE_LOG_FORMAT) writes zerolog's
// console lines, time, level and message, without colour on a pipe; a
// failure to start is one of them too.
func TestLogText(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "k.db")
	c := startKeyhole(t, "--db", db, "--log-format", "text")
	c.stop(t, syscall.SIGTERM)
	_, _, failed := runBinary(t, []string{"KEYHOLE_LOG_FORMAT=text"}, "serve", "--addr", c.addr, "--db", filepath.Join(db, "nested"))
	_, _, badFlag := runBinary(t, nil, "serve", "--flush-interval", "fast", "--log-format", "text")
	line := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\S* (DBG|INF|WRN|ERR) \S`)
	all := c.output() + failed + badFlag
	for _, l := range strings.Split(strings.TrimSuffix(all, "\n"), "\n") {
		if !line.MatchString(l) || strings.Contains(l, "\x1b[") {
			t.Errorf("stderr line %q is not a plain console log line", l)
		}
	}
	for _, want := range []string{" INF listening on http://", " WRN created the root admin token", " ERR ", " INF stopped"} {
		if !strings.Contains(all, want) {
			t.Errorf("text log lacks %q:\n%s", want, all)
		}
	}
}

func TestStdLoggerLines(t *testing.T) {
	var buf bytes.Buffer
	stdLogger(newLogger(&buf, logJSON)).Printf("http: TLS handshake error from %s", "127.0.0.1:1")
	var entry struct{ Level, Message string }
	if err := json.Unmarshal(buf.Bytes(), &entry); err != nil || entry.Level != "warn" ||
		entry.Message != "http: TLS handshake error from 127.0.0.1:1" {
		t.Fatalf("standard library log line = %q (%v); want a warn line with its message", buf.String(), err)
	}
}

// TestHealthHEAD: load balancers and uptime checks probe with HEAD; the
// real server answers it on /healthz and /readyz as it answers GET, with
// no body.
func TestHealthHEAD(t *testing.T) {
	t.Parallel()
	c := startKeyhole(t, "--db", filepath.Join(t.TempDir(), "k.db"), "--admin-token", testRootToken)
	for _, path := range []string{"/healthz", "/readyz"} {
		get, err := http.Get(c.url() + path)
		if err != nil {
			t.Fatal(err)
		}
		get.Body.Close()
		head, err := http.Head(c.url() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(head.Body)
		head.Body.Close()
		if head.StatusCode != 200 || get.StatusCode != 200 || len(body) != 0 ||
			head.Header.Get("Content-Type") != get.Header.Get("Content-Type") {
			t.Errorf("HEAD %s = %d %q %q; want 200 like GET's %d %q, no body", path, head.StatusCode,
				head.Header.Get("Content-Type"), body, get.StatusCode, get.Header.Get("Content-Type"))
		}
	}
}
