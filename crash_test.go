package main

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The tests in this file stop real keyhole processes at random moments under
// load, again and again on the same db file, and check that nothing keyhole
// acknowledged is lost: SPEC 9.

const crashToken = "kh_admin_c0ffee00c0ffee00c0ffee00c0ffee00"

// crashKeyBody creates live keys with room for every request a test makes.
const crashKeyBody = `{"name":"crash","env":"live","rate_limits":[{"limit":100000,"window":"1m"}]}`

// crashLedger records what keyhole acknowledged: only answers whose status
// line, headers and body were all received count.
type crashLedger struct {
	mu        sync.Mutex
	keys      map[string]string // key id -> key: create answered 201
	ids       []string          // key ids in the order they were answered
	revoked   map[string]bool   // revoke answered 200
	attempted map[string]bool   // revoke sent, answer maybe lost
	settled   map[string]bool   // key ids created or revoked since the last check
	answered  []answered        // guarded requests answered since the last check
	failures  []string          // answers that were received but wrong
	// folded counts the refusals that logged entries with a count stand
	// for, beyond the entry itself, by key and status; seenFolds are those
	// entries' request ids, so each is counted once.
	folded    map[foldedBy]int
	seenFolds map[string]bool
}

// answered is one answered guarded request.
type answered struct {
	reqID string
	by    foldedBy
}

type foldedBy struct {
	keyID  string
	status int
}

func newCrashLedger() *crashLedger {
	return &crashLedger{keys: map[string]string{}, revoked: map[string]bool{},
		attempted: map[string]bool{}, settled: map[string]bool{},
		folded: map[foldedBy]int{}, seenFolds: map[string]bool{}}
}

func (l *crashLedger) fail(format string) {
	l.mu.Lock()
	l.failures = append(l.failures, format)
	l.mu.Unlock()
}

// randomKey picks an acknowledged key, revoked or not, and its id; "" if
// none yet.
func (l *crashLedger) randomKey(rng *rand.Rand) (id, key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.ids) == 0 {
		return "", ""
	}
	id = l.ids[rng.IntN(len(l.ids))]
	return id, l.keys[id]
}

// toRevoke picks an acknowledged key no revoke was sent for, and marks it.
func (l *crashLedger) toRevoke(rng *rand.Rand) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for tries := 0; tries < 8 && len(l.ids) > 0; tries++ {
		id := l.ids[rng.IntN(len(l.ids))]
		if !l.attempted[id] {
			l.attempted[id] = true
			return id
		}
	}
	return ""
}

// crashClient is a client of the server at base under load: no request
// can hang the test. Close its idle connections when done.
func crashClient(t *testing.T, base string) *testClient {
	return &testClient{t: t, base: base,
		http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}}
}

// load runs admin and guarded traffic through c until stop is set:
// creators make keys, a revoker revokes some, and guarded clients call
// whoami with any acknowledged key.
func (l *crashLedger) load(c *testClient, org string, seed uint64, stop *atomic.Bool) *sync.WaitGroup {
	var wg sync.WaitGroup
	pause := func() { time.Sleep(time.Millisecond) } // the server is gone: don't spin
	worker := func(n uint64, fn func(rng *rand.Rand)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, n))
			for !stop.Load() {
				fn(rng)
			}
		}()
	}
	for i := range 3 {
		worker(uint64(i), func(*rand.Rand) {
			r, err := c.try("POST", "/admin/v1/orgs/"+org+"/keys", crashKeyBody, bearer(crashToken)...)
			if err != nil {
				pause()
				return
			}
			var k struct{ ID, Key string }
			if r.status != 201 || json.Unmarshal(r.body, &k) != nil || k.Key == "" {
				l.fail("create answered " + string(r.body))
				return
			}
			l.mu.Lock()
			l.keys[k.ID] = k.Key
			l.ids = append(l.ids, k.ID)
			l.settled[k.ID] = true
			l.mu.Unlock()
		})
	}
	worker(10, func(rng *rand.Rand) {
		id := l.toRevoke(rng)
		if id == "" {
			pause()
			return
		}
		r, err := c.try("POST", "/admin/v1/orgs/"+org+"/keys/"+id+"/revoke", "", bearer(crashToken)...)
		if err != nil {
			pause()
			return
		}
		if r.status != 200 {
			l.fail("revoke answered " + string(r.body))
			return
		}
		l.mu.Lock()
		l.revoked[id] = true
		l.settled[id] = true
		l.mu.Unlock()
		time.Sleep(2 * time.Millisecond) // revoke some keys, not all
	})
	for i := range 3 {
		worker(20+uint64(i), func(rng *rand.Rand) {
			id, key := l.randomKey(rng)
			if key == "" {
				pause()
				return
			}
			r, err := c.try("GET", "/api/v1/prod/whoami", "", bearer(key)...)
			if err != nil {
				pause()
				return
			}
			if r.status != 200 && r.status != 401 || r.header.Get("X-Request-Id") == "" {
				l.fail("whoami answered " + string(r.body))
				return
			}
			l.mu.Lock()
			l.answered = append(l.answered, answered{r.header.Get("X-Request-Id"), foldedBy{id, r.status}})
			l.mu.Unlock()
		})
	}
	return &wg
}

// check asks the running keyhole about every key settled since the last
// check (all keys when all is set): a created key works, a revoked one is
// refused, one whose revoke went unanswered may be either. With logs set,
// every guarded request that was answered must be in a request log, one by
// one or, a key's refusals past the budget, in an entry's count.
func (l *crashLedger) check(t *testing.T, c *child, org string, all, logs bool) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, f := range l.failures {
		t.Errorf("a request was answered wrongly: %s", f)
	}
	client := crashClient(t, c.url())
	defer client.http.CloseIdleConnections()
	checked := 0
	for _, id := range l.ids {
		if !all && !l.settled[id] {
			continue
		}
		checked++
		r, err := client.try("GET", "/api/v1/prod/whoami", "", bearer(l.keys[id])...)
		if err != nil {
			t.Fatalf("whoami after restart: %v", err)
		}
		st, body := r.status, r.body
		refused := st == 401 && strings.Contains(string(body), `"invalid_or_revoked"`)
		switch {
		case l.revoked[id] && !refused:
			t.Errorf("key %s was revoked (200) but after restart answers %d %s", id, st, body)
		case !l.revoked[id] && l.attempted[id] && st != 200 && !refused:
			t.Errorf("key %s (revoke unanswered) after restart answers %d %s", id, st, body)
		case !l.attempted[id] && st != 200:
			t.Errorf("key %s was created (201) but after restart answers %d %s", id, st, body)
		}
	}
	if logs {
		logged := map[string]bool{}
		for _, e := range append(childLogs(t, c, crashToken, org), childServerLogs(t, c, crashToken)...) {
			logged[e.RequestID] = true
			if e.Count > 1 && !l.seenFolds[e.RequestID] {
				l.seenFolds[e.RequestID] = true
				l.folded[foldedBy{e.KeyID, e.Status}] += int(e.Count) - 1
			}
		}
		for _, a := range l.answered {
			switch {
			case logged[a.reqID]:
			case l.folded[a.by] > 0:
				l.folded[a.by]--
			default:
				t.Errorf("guarded request %s was answered but is in no request log after SIGTERM", a.reqID)
			}
		}
	}
	t.Logf("checked %d keys (%d acknowledged, %d revoked), %d answered guarded requests",
		checked, len(l.ids), len(l.revoked), len(l.answered))
	clear(l.settled)
	l.answered = l.answered[:0]
	l.failures = nil
}

// checkDBOpensCleanly runs bbolt's own consistency check on the stopped
// server's file, and has `keyhole backup` copy it.
func checkDBOpensCleanly(t *testing.T, db, backupDir string) {
	t.Helper()
	bdb, err := bolt.Open(db, 0o600, &bolt.Options{ReadOnly: true, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("bbolt cannot open the db after the crash: %v", err)
	}
	bdb.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			t.Errorf("bbolt check after the crash: %v", err)
		}
		return nil
	})
	bdb.Close()
	out, err := exec.Command(keyholeBinary(t), "backup", "--db", db, filepath.Join(backupDir, "copy.db")).CombinedOutput()
	if err != nil {
		t.Fatalf("keyhole backup after the crash: %v\n%s", err, out)
	}
}

// crashLoop starts keyhole on one db, loads it, stops it with sig at a
// random moment, and checks after each restart.
func crashLoop(t *testing.T, sig syscall.Signal, rounds int) {
	skipShort(t, "a crash loop restarts keyhole again and again")
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed) // the kill moments; the loss checks hold for any
	rng := rand.New(rand.NewPCG(seed, 0))
	dir := t.TempDir()
	db := filepath.Join(dir, "crash.db")
	args := []string{"--db", db, "--admin-token", crashToken, "--flush-interval", "20ms",
		"--rate-limits", "100000/1m", "--log-retention", "1000000"}
	ledger := newCrashLedger()
	var org string
	for round := 0; round <= rounds; round++ {
		c := startKeyhole(t, args...)
		if round == 0 {
			org, _ = childOrgAndKey(t, c, crashToken)
		} else {
			ledger.check(t, c, org, round == rounds, sig == syscall.SIGTERM)
			if t.Failed() {
				t.Fatalf("round %d (%v) lost acknowledged work; seed %d", round, sig, seed)
			}
		}
		if round == rounds {
			c.stop(t, syscall.SIGTERM)
			return
		}
		client := crashClient(t, c.url())
		stop := new(atomic.Bool)
		t.Cleanup(func() { stop.Store(true) }) // should a check below end the test early
		wg := ledger.load(client, org, seed+uint64(round), stop)
		time.Sleep(time.Duration(20+rng.IntN(230)) * time.Millisecond)
		c.stop(t, sig)
		stop.Store(true)
		wg.Wait()
		client.http.CloseIdleConnections()
		checkDBOpensCleanly(t, db, dir)
	}
}

// TestCrashLoopSIGKILL: SIGKILL at random moments under load loses no key
// whose create answered 201 and no revocation that answered 200, and leaves
// a db file that opens cleanly.
func TestCrashLoopSIGKILL(t *testing.T) {
	t.Parallel()
	crashLoop(t, syscall.SIGKILL, 15)
}

// TestCrashLoopSIGTERM: the same for SIGTERM, which also loses no log entry
// of a guarded request that was answered.
func TestCrashLoopSIGTERM(t *testing.T) {
	t.Parallel()
	crashLoop(t, syscall.SIGTERM, 8)
}

// TestSecondProcessSameDB: a second keyhole on a db file in use, and the
// commands that need the server stopped, exit at once with a message that
// names the lock, rather than hang; the running server is unharmed.
func TestSecondProcessSameDB(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	db := filepath.Join(dir, "k.db")
	c := startKeyhole(t, "--db", db, "--admin-token", crashToken)
	org, key := childOrgAndKey(t, c, crashToken)
	tests := []struct {
		name string
		args []string
		hint string
	}{
		{"serve", []string{"serve", "--addr", "127.0.0.1:0", "--db", db, "--admin-token", crashToken}, "already running"},
		{"backup", []string{"backup", "--db", db, filepath.Join(dir, "b.db")}, "GET /admin/v1/backup"},
		{"admin-token reset", []string{"admin-token", "reset", "--db", db}, "stop the server first"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second) // a hang guard
			defer cancel()
			cmd := exec.CommandContext(ctx, keyholeBinary(t), tt.args...)
			cmd.Env = append(os.Environ(), "KEYHOLE_ADMIN_TOKEN=")
			out, err := cmd.CombinedOutput()
			if ctx.Err() != nil {
				t.Fatalf("keyhole %s on a locked db still runs after 15s: it hangs\n%s", tt.name, out)
			}
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("keyhole %s on a locked db: %v; want exit status 1\n%s", tt.name, err, out)
			}
			msg := string(out)
			if !strings.Contains(msg, "locked by another process") || !strings.Contains(msg, tt.hint) ||
				!strings.Contains(msg, db) || strings.Contains(msg, "goroutine ") {
				t.Fatalf("keyhole %s on a locked db says %q; want the file, the lock and %q", tt.name, msg, tt.hint)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "b.db")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused backup left a file: %v", err)
	}
	if st := c.do("GET", "/api/v1/prod/whoami", "", bearer(key)...).status; st != 200 {
		t.Fatalf("the running server's key = %d after the refused starts; want 200", st)
	}
	if r := c.admin(crashToken, "GET", "/orgs/"+org, ""); r.status != 200 {
		t.Fatalf("the running server's root token = %d %s after admin-token reset was refused", r.status, r.body)
	}
}
