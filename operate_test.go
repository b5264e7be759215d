package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The tests in this file run what README.md tells an operator to run:
// the systemd unit, and backup and restore.

// readmeBlock is the fenced block after "<!-- marker -->" in README.md,
// without the fence and the indentation of a list item.
func readmeBlock(t *testing.T, marker string) string {
	t.Helper()
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "<!-- "+marker+" -->\n")
	lines := strings.Split(rest, "\n")
	if !ok || len(lines) < 2 || !strings.HasPrefix(strings.TrimSpace(lines[0]), "```") {
		t.Fatalf("README.md has no block after <!-- %s -->", marker)
	}
	indent := lines[0][:len(lines[0])-len(strings.TrimLeft(lines[0], " "))]
	var body strings.Builder
	for _, line := range lines[1:] {
		if line == indent+"```" {
			return body.String()
		}
		body.WriteString(strings.TrimPrefix(line, indent) + "\n")
	}
	t.Fatalf("README.md's block after <!-- %s --> does not end", marker)
	return ""
}

// TestReadmeNamesEveryFile: "How the code is laid out" names every source
// file, so that its table stays the design a newcomer reads.
func TestReadmeNamesEveryFile(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, layout, _ := strings.Cut(string(readme), "## How the code is laid out\n")
	layout, _, _ = strings.Cut(layout, "\n## ")
	files, _ := filepath.Glob("*.go")
	for _, f := range files {
		if !strings.HasSuffix(f, "_test.go") && !strings.Contains(layout, "`"+f+"`") {
			t.Errorf("README.md's \"How the code is laid out\" does not name %s", f)
		}
	}
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != want {
		t.Errorf("%s has mode %#o; want %#o", filepath.Base(path), info.Mode().Perm(), want)
	}
}

// TestReadmeSystemdUnit checks README.md's unit with systemd-analyze: verify
// finds no error or warning (an unknown or misspelt setting is a warning),
// and security rates its exposure OK, below 2.0.
func TestReadmeSystemdUnit(t *testing.T) {
	t.Parallel()
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		integrationMissing(t, "systemd-analyze is not installed (Debian package systemd)")
	}
	unit := readmeBlock(t, "systemd")
	for _, want := range []string{"ExecStart=/usr/local/bin/keyhole serve", "DynamicUser=yes", "StateDirectory=keyhole",
		"ProtectSystem=strict", "NoNewPrivileges=yes", "Environment=KEYHOLE_DB=/var/lib/keyhole/keyhole.db"} {
		if !strings.Contains(unit, want+"\n") {
			t.Errorf("README.md's unit lacks %s", want)
		}
	}
	// verify checks that ExecStart's binary exists: the one this test built.
	path := filepath.Join(t.TempDir(), "keyhole.service")
	unit = strings.ReplaceAll(unit, "/usr/local/bin/keyhole", keyholeBinary(t))
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(analyze, "verify", path).CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err := exec.Command(analyze, "security", "--offline=yes", "--threshold=20", path).CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze security rates the unit above 2.0: %v\n%s", err, out)
	}
	// The settings keyhole reads from the unit's environment are valid.
	env := []string{"KEYHOLE_DB=" + filepath.Join(t.TempDir(), "k.db")}
	for _, line := range strings.Split(unit, "\n") {
		if v, ok := strings.CutPrefix(line, "Environment="); ok && !strings.HasPrefix(v, "KEYHOLE_DB=") {
			env = append(env, v)
		}
	}
	if status, _, errOut := runBinary(t, env, "serve", "--addr", "300.0.0.1:1"); status != 1 || !strings.Contains(errOut, "listen") {
		t.Errorf("keyhole with the unit's environment: exit %d %s; want it to get as far as listening", status, errOut)
	}
}

// TestReadmeBackupRestore runs README.md's backup blocks, both ways, under
// the usual umask 022, and its restore block: the backups are 0600 as
// README.md promises, and the restored db serves the backup's keys.
func TestReadmeBackupRestore(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"bash", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			integrationMissing(t, tool+" is not installed")
		}
	}
	dbDir, backups := t.TempDir(), t.TempDir()
	db := filepath.Join(dbDir, "keyhole.db")
	c := startKeyhole(t, "--db", db, "--admin-token", crashToken)
	org, key := childOrgAndKey(t, c, crashToken)
	paths := strings.NewReplacer("http://127.0.0.1:8080", c.url(), "/var/lib/keyhole", dbDir,
		"/backups/", backups+"/", "$(date +%F)", "2026-11-25", "keyhole backup", keyholeBinary(t)+" backup")
	run := func(marker string) {
		t.Helper()
		cmd := exec.Command("bash", "-c", "set -euo pipefail\numask 022\n"+paths.Replace(readmeBlock(t, marker)))
		cmd.Dir = backups
		cmd.Env = append(os.Environ(), "ROOT_TOKEN="+crashToken)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("README.md's %s block: %v\n%s", marker, err, out)
		}
	}
	run("backup while running")
	checkMode(t, filepath.Join(backups, "keyhole-2026-11-25.db"), 0o600)
	os.Remove(filepath.Join(backups, "keyhole-2026-11-25.db"))
	c.stop(t, syscall.SIGTERM)
	run("backup while stopped")
	checkMode(t, filepath.Join(backups, "keyhole-2026-11-25.db"), 0o600)

	// A key made after the backup is gone once it is restored.
	c = startKeyhole(t, "--db", db, "--admin-token", crashToken)
	_, later := childCreateKey(t, c, crashToken, org, false)
	c.stop(t, syscall.SIGTERM)
	run("restore")
	checkMode(t, db, 0o600)
	c = startKeyhole(t, "--db", db, "--admin-token", crashToken)
	if st := c.do("GET", "/api/v1/prod/whoami", "", bearer(key)...).status; st != 200 {
		t.Errorf("the backup's key on the restored db = %d; want 200", st)
	}
	if st := c.do("GET", "/api/v1/prod/whoami", "", bearer(later)...).status; st != 401 {
		t.Errorf("a key made after the backup, on the restored db = %d; want 401", st)
	}
}
