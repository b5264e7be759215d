package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
)

// The tests in this file give keyhole bad files and backups under load.

// makeKeyholeDB writes a real keyhole db (an org, keys, a revocation,
// logged requests) and returns its path, the server stopped.
func makeKeyholeDB(t *testing.T) string {
	t.Helper()
	te := newTestEnv(t)
	org := te.createOrg("acme")
	for i := range 40 {
		id, key := te.createKey(org, `{"name":"k`+strconv.Itoa(i)+`","env":"live"}`)
		te.whoami(envLive, key)
		if i%4 == 0 {
			te.root("POST", "/orgs/"+org+"/keys/"+id+"/revoke", "")
		}
	}
	if err := te.s.behind.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := te.s.store.Close(); err != nil {
		t.Fatal(err)
	}
	return te.dbPath
}

// boltUse reads the meta page a db file's last commit wrote: page size and
// the bytes its pages use.
func boltUse(t *testing.T, path string) (pageSize, used int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m0, m1 := parseBoltMeta(b), parseBoltMeta(b[4096:])
	if !m0.valid || !m1.valid || m0.pageSize != 4096 {
		t.Fatalf("test db has unexpected meta pages: %+v %+v", m0, m1)
	}
	m := m0
	if m1.txid > m0.txid {
		m = m1
	}
	return int64(m.pageSize), int64(m.highMark * m.pageSize)
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "absent"
	}
	if err != nil {
		return "unreadable: " + err.Error()
	}
	sum := sha256.Sum256(b)
	return fmt.Sprintf("%x (%d bytes)", sum[:8], len(b))
}

// runKeyhole runs the binary to its end; a run over 15 s is a hang.
func runKeyhole(t *testing.T, args ...string) (exitCode int, output string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, keyholeBinary(t), args...)
	cmd.Env = append(os.Environ(), "KEYHOLE_ADMIN_TOKEN=")
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("keyhole %s still runs after 15s: it hangs\n%s", strings.Join(args, " "), out)
	}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return exit.ExitCode(), string(out)
	case err != nil:
		t.Fatal(err)
	}
	return 0, string(out)
}

// TestDiskTrouble starts keyhole on files and paths it cannot use: each is
// a clear error naming the file, exit status 1 rather than a panic, and the
// file is left byte for byte as it was.
func TestDiskTrouble(t *testing.T) {
	t.Parallel()
	valid := makeKeyholeDB(t)
	pageSize, used := boltUse(t, valid)
	tests := []struct {
		name string
		make func(t *testing.T, dir string) string // returns the --db path
		want string
	}{
		{"directory is a regular file", func(t *testing.T, dir string) string {
			os.WriteFile(filepath.Join(dir, "plain"), []byte("x"), 0o600)
			return filepath.Join(dir, "plain", "keyhole.db")
		}, "not a directory"},
		{"unwritable directory", func(t *testing.T, dir string) string {
			if os.Geteuid() == 0 {
				t.Skip("skipping: running as root, which may write where the mode says it may not; " +
					"the 'directory is a regular file' case covers a directory keyhole cannot create the file in")
			}
			ro := filepath.Join(dir, "ro")
			os.Mkdir(ro, 0o500)
			return filepath.Join(ro, "keyhole.db")
		}, "permission denied"},
		{"read-only db file", func(t *testing.T, dir string) string {
			if os.Geteuid() == 0 {
				t.Skip("skipping: running as root, which may write a file whose mode says it may not")
			}
			db := filepath.Join(dir, "k.db")
			copyFile(t, valid, db)
			os.Chmod(db, 0o400)
			return db
		}, "permission denied"},
		{"db path is a directory", func(t *testing.T, dir string) string {
			return dir
		}, "is a directory"},
		{"text file", func(t *testing.T, dir string) string {
			db := filepath.Join(dir, "notes.txt")
			os.WriteFile(db, bytes.Repeat([]byte("my precious notes, not a database\n"), 500), 0o600)
			return db
		}, "not a keyhole db file"},
		{"a few bytes", func(t *testing.T, dir string) string {
			db := filepath.Join(dir, "k.db")
			os.WriteFile(db, []byte("kh"), 0o600)
			return db
		}, "not a keyhole db file"},
		{"zeros", func(t *testing.T, dir string) string {
			db := filepath.Join(dir, "k.db")
			os.WriteFile(db, make([]byte, 64<<10), 0o600)
			return db
		}, "not a keyhole db file"},
		{"another program's bbolt file", func(t *testing.T, dir string) string {
			db := filepath.Join(dir, "other.db")
			bdb, err := bolt.Open(db, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			bdb.Update(func(tx *bolt.Tx) error {
				b, _ := tx.CreateBucket([]byte("invoices"))
				return b.Put([]byte("2026-001"), []byte("paid"))
			})
			bdb.Close()
			return db
		}, "not a keyhole db file"},
		{"truncated to half of what it uses", func(t *testing.T, dir string) string {
			db := filepath.Join(dir, "k.db")
			copyFile(t, valid, db)
			os.Truncate(db, used/2/pageSize*pageSize)
			return db
		}, "truncated"},
		{"truncated to one page", func(t *testing.T, dir string) string {
			db := filepath.Join(dir, "k.db")
			copyFile(t, valid, db)
			os.Truncate(db, 4096)
			return db
		}, "truncated"},
		{"truncated mid-page", func(t *testing.T, dir string) string {
			db := filepath.Join(dir, "k.db")
			copyFile(t, valid, db)
			os.Truncate(db, used-100)
			return db
		}, "truncated"},
		{"both meta pages damaged", func(t *testing.T, dir string) string {
			b, _ := os.ReadFile(valid)
			b[16+50] ^= 0xff // in each meta page's transaction id
			b[4096+16+50] ^= 0xff
			db := filepath.Join(dir, "k.db")
			os.WriteFile(db, b, 0o600)
			return db
		}, "damaged"},
		{"data pages damaged", func(t *testing.T, dir string) string {
			b, _ := os.ReadFile(valid)
			for i := 2 * pageSize; i < used; i++ {
				b[i] = 0xa5
			}
			db := filepath.Join(dir, "k.db")
			os.WriteFile(db, b, 0o600)
			return db
		}, "damaged"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			db := tt.make(t, dir)
			before := fileSum(t, db)
			code, out := runKeyhole(t, "serve", "--addr", "127.0.0.1:0", "--db", db, "--admin-token", crashToken)
			if code != 1 || strings.Contains(out, "listening") {
				t.Fatalf("keyhole on %s: exit status %d; want 1 before listening\n%s", tt.name, code, out)
			}
			if strings.Contains(out, "panic") || strings.Contains(out, "goroutine ") {
				t.Fatalf("keyhole on %s panicked:\n%s", tt.name, out)
			}
			if !strings.Contains(out, tt.want) || !strings.Contains(out, db) {
				t.Fatalf("keyhole on %s says %q; want a message with %q naming %s", tt.name, out, tt.want, db)
			}
			if after := fileSum(t, db); after != before {
				t.Fatalf("keyhole changed the file it refused: %s, was %s", after, before)
			}
			// The same file refused by the commands that open it.
			if code, out := runKeyhole(t, "backup", "--db", db, filepath.Join(t.TempDir(), "b.db")); code != 1 ||
				strings.Contains(out, "panic") {
				t.Fatalf("keyhole backup of %s: exit status %d\n%s", tt.name, code, out)
			}
			if after := fileSum(t, db); after != before {
				t.Fatalf("keyhole backup changed the file it refused: %s, was %s", after, before)
			}
		})
	}
	t.Run("intact copy starts", func(t *testing.T) {
		db := filepath.Join(t.TempDir(), "k.db")
		copyFile(t, valid, db)
		c := startKeyhole(t, "--db", db, "--admin-token", crashToken)
		c.stop(t, syscall.SIGTERM)
	})
}

// TestOpenStoreDamage calls openStore directly on damaged files: an error,
// no panic, even in the process that opens it.
func TestOpenStoreDamage(t *testing.T) {
	t.Parallel()
	valid := makeKeyholeDB(t)
	pageSize, used := boltUse(t, valid)
	b, _ := os.ReadFile(valid)
	for i := 2 * pageSize; i < used; i++ {
		b[i] = byte(i * 7)
	}
	db := filepath.Join(t.TempDir(), "k.db")
	os.WriteFile(db, b, 0o600)
	st, err := openStore(db, time.Second)
	if err == nil {
		_, err = newServer(testConfig(t), st, time.Now, zerolog.Nop())
		st.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("openStore on damaged pages: %v; want an error saying the file is damaged", err)
	}
	if _, err := openStoreReadOnly(filepath.Join(t.TempDir(), "missing.db"), time.Second); err == nil ||
		!strings.Contains(err.Error(), "no such file") {
		t.Fatalf("read-only open of a missing file: %v; want no such file", err)
	}
}

// backupKeys is what the backup tests expect of a copy: each key created
// before the backup began works, each revoked one is refused.
type backupKeys struct {
	live, revoked []string
}

func (bk *backupKeys) check(t *testing.T, c *child) {
	t.Helper()
	for _, key := range bk.live {
		if st := c.do("GET", "/api/v1/prod/whoami", "", bearer(key)...).status; st != 200 {
			t.Fatalf("key from before the backup = %d on the restored copy; want 200", st)
		}
	}
	for _, key := range bk.revoked {
		if st := c.do("GET", "/api/v1/prod/whoami", "", bearer(key)...).status; st != 401 {
			t.Fatalf("key revoked before the backup = %d on the restored copy; want 401", st)
		}
	}
}

func seedBackupKeys(t *testing.T, c *child, org string) *backupKeys {
	t.Helper()
	bk := &backupKeys{}
	for i := range 30 {
		_, key := childCreateKey(t, c, crashToken, org, i%5 == 0)
		if i%5 == 0 {
			bk.revoked = append(bk.revoked, key)
		} else {
			bk.live = append(bk.live, key)
		}
	}
	return bk
}

// checkBoltFile runs bbolt's consistency check on a copy.
func checkBoltFile(t *testing.T, path string) {
	t.Helper()
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("the backup does not open: %v", err)
	}
	defer bdb.Close()
	bdb.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			t.Errorf("bbolt check of the backup: %v", err)
		}
		return nil
	})
}

// TestBackupEndpointUnderLoad takes GET /admin/v1/backup while keys are being
// created: the copy is a consistent bbolt file, and a keyhole started on it
// serves every key created before the backup began, and refuses the revoked
// ones; a key created during it either works or does not exist.
func TestBackupEndpointUnderLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c := startKeyhole(t, "--db", filepath.Join(dir, "k.db"), "--admin-token", crashToken, "--rate-limits", "1000/1m")
	org, _ := childOrgAndKey(t, c, crashToken)
	bk := seedBackupKeys(t, c, org)

	var stop atomic.Bool
	defer stop.Store(true)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var during []string
	client := crashClient(t, c.url())
	defer client.http.CloseIdleConnections()
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				r, err := client.try("POST", "/admin/v1/orgs/"+org+"/keys", crashKeyBody, bearer(crashToken)...)
				var k struct{ Key string }
				if err == nil && r.status == 201 && json.Unmarshal(r.body, &k) == nil {
					mu.Lock()
					during = append(during, k.Key)
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; ; i++ { // the backup starts while creates are under way
		mu.Lock()
		n := len(during)
		mu.Unlock()
		if n >= 5 {
			break
		}
		if i > 15000 {
			t.Fatal("no key was created within 15s")
		}
		time.Sleep(time.Millisecond)
	}
	copyPath := filepath.Join(dir, "copy.db")
	r, err := client.try("GET", "/admin/v1/backup", "", bearer(crashToken)...)
	stop.Store(true)
	wg.Wait()
	st, hdr, body := r.status, r.header, r.body
	if err != nil || st != 200 {
		t.Fatalf("GET /admin/v1/backup = %d %v", st, err)
	}
	if hdr.Get("Cache-Control") != "no-store" || hdr.Get("Content-Length") != strconv.Itoa(len(body)) {
		t.Fatalf("backup headers %v; want no-store and the length of the copy (%d)", hdr, len(body))
	}
	if err := os.WriteFile(copyPath, body, 0o600); err != nil {
		t.Fatal(err)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".keyhole-backup-*")); len(leftovers) != 0 {
		t.Fatalf("the backup left temporary files: %v", leftovers)
	}
	checkBoltFile(t, copyPath)

	restored := startKeyhole(t, "--db", copyPath, "--admin-token", crashToken, "--rate-limits", "1000/1m")
	bk.check(t, restored)
	present := 0
	for _, key := range during {
		switch st := restored.do("GET", "/api/v1/prod/whoami", "", bearer(key)...).status; st {
		case 200:
			present++
		case 401:
		default:
			t.Fatalf("key created during the backup = %d on the copy; want 200 or 401", st)
		}
	}
	t.Logf("%d of %d keys created during the backup are in it", present, len(during))
}

// TestBackupCommand: `keyhole backup` copies a stopped server's db without
// writing to it, and refuses a missing or foreign file without creating
// anything.
func TestBackupCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	db := filepath.Join(dir, "k.db")
	c := startKeyhole(t, "--db", db, "--admin-token", crashToken)
	org, _ := childOrgAndKey(t, c, crashToken)
	bk := seedBackupKeys(t, c, org)
	c.stop(t, syscall.SIGTERM)

	before := fileSum(t, db)
	out := filepath.Join(dir, "copy.db")
	code, msg := runKeyhole(t, "backup", "--db", db, out)
	if code != 0 || !strings.Contains(msg, "wrote") {
		t.Fatalf("keyhole backup: exit status %d\n%s", code, msg)
	}
	if after := fileSum(t, db); after != before {
		t.Fatalf("keyhole backup wrote to the db it copied: %s, was %s", after, before)
	}
	if _, err := os.Stat(out + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("keyhole backup left %s.tmp", out)
	}
	checkBoltFile(t, out)
	restored := startKeyhole(t, "--db", out, "--admin-token", crashToken)
	bk.check(t, restored)
	restored.stop(t, syscall.SIGTERM)

	missing := filepath.Join(dir, "typo.db")
	if code, msg := runKeyhole(t, "backup", "--db", missing, filepath.Join(dir, "x.db")); code != 1 ||
		!strings.Contains(msg, "no such file") {
		t.Fatalf("backup of a missing db: exit status %d\n%s", code, msg)
	}
	for _, p := range []string{missing, filepath.Join(dir, "x.db")} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("backup of a missing db created %s", p)
		}
	}
}

// TestBackupDoesNotHoldWrites: a client that downloads the backup slowly
// must not hold up commits. bbolt's read transaction, which makes the copy
// consistent, blocks any commit that must grow the file's memory map until it
// ends; keyhole keeps it open only while it copies to a local file.
func TestBackupDoesNotHoldWrites(t *testing.T) {
	skipShort(t, "writes tens of MB")
	t.Parallel()
	te := newTestEnv(t)
	ballast := func(name string, mb int) error {
		return te.s.store.db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte(name))
			if err != nil {
				return err
			}
			chunk := bytes.Repeat([]byte{0x5a}, 1<<20)
			for i := range mb {
				if err := b.Put([]byte(strconv.Itoa(i)), chunk); err != nil {
					return err
				}
			}
			return nil
		})
	}
	// More than the socket buffers hold (a few MB on loopback), so a reader
	// that stops stalls the sender.
	if err := ballast("ballast1", 12); err != nil {
		t.Fatal(err)
	}
	c := te.listen()
	c.deadline = time.Minute // the hang guards are below
	_, _, resp := c.exchange("GET /admin/v1/backup HTTP/1.1\r\nHost: k\r\nAuthorization: Bearer " + testRootToken + "\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("backup = %d", resp.StatusCode)
	}
	io.CopyN(io.Discard, resp.Body, 4096) // then read nothing for a while

	done := make(chan error, 1)
	go func() { done <- ballast("ballast2", 24) }() // beyond the map: bbolt must remap
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second): // a hang guard
		t.Fatal("a commit waited for a slow backup download")
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || n+4096 != resp.ContentLength {
		t.Fatalf("backup body: %d bytes, %v; want %d", n+4096, err, resp.ContentLength)
	}
}

// TestFilesArePrivate: the db and its backups are readable by their owner
// only; they hold key and token hashes, org names and request logs.
func TestFilesArePrivate(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t)
	te.createOrg("acme")
	out := filepath.Join(t.TempDir(), "copy.db")
	if err := writeBackup(te.s.store, out, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{te.dbPath, out} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v; want 0600", p, st.Mode().Perm())
		}
	}
}
