package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func openCommitTestStore(t *testing.T) *store {
	t.Helper()
	st, err := openStore(filepath.Join(t.TempDir(), "commit.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.db.Close() })
	return st
}

// TestCommitterSharesCommits runs many concurrent writes: each is on disk
// when its call returns, and they took fewer transactions than writes.
func TestCommitterSharesCommits(t *testing.T) {
	t.Parallel()
	st := openCommitTestStore(t)
	before := writeTxs(st)
	const writers, each = 32, 20
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				key := fmt.Sprintf("w%02d-%02d", w, i)
				err := st.commit.do(func(tx *bolt.Tx) error {
					return tx.Bucket(bucketMeta).Put([]byte(key), []byte("v"))
				})
				if err != nil {
					t.Error(err)
					return
				}
				if !metaHas(t, st, key) {
					t.Errorf("%s: not in the db after do returned", key)
				}
			}
		}()
	}
	wg.Wait()
	commits := writeTxs(st) - before
	t.Logf("%d writes in %d commits", writers*each, commits)
	if commits >= writers*each {
		t.Errorf("%d writes took %d commits; want them shared", writers*each, commits)
	}
}

// writeTxs is the id of the last committed write transaction: bbolt
// numbers them one by one.
func writeTxs(st *store) int {
	var id int
	st.db.View(func(tx *bolt.Tx) error { id = tx.ID(); return nil })
	return id
}

func metaHas(t *testing.T, st *store, key string) bool {
	t.Helper()
	var found bool
	st.db.View(func(tx *bolt.Tx) error {
		found = tx.Bucket(bucketMeta).Get([]byte(key)) != nil
		return nil
	})
	return found
}

// TestCommitterIsolatesFailures puts a failing and a panicking write among
// good ones: those two get their errors and write nothing, the rest commit.
func TestCommitterIsolatesFailures(t *testing.T) {
	st := openCommitTestStore(t)
	errBad := errors.New("bad write")
	// Hold the writer lock so that every call below queues into one batch.
	hold := make(chan struct{})
	held := make(chan struct{})
	go st.commit.do(func(*bolt.Tx) error { close(held); <-hold; return nil })
	<-held
	writes := map[string]func(*bolt.Tx) error{}
	for _, name := range []string{"a", "b", "fails", "panics", "c"} {
		writes[name] = func(tx *bolt.Tx) error {
			if err := tx.Bucket(bucketMeta).Put([]byte("t-"+name), []byte("v")); err != nil {
				return err
			}
			switch name {
			case "fails":
				return errBad
			case "panics":
				panic("boom")
			}
			return nil
		}
	}
	results := make(map[string]error)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, fn := range writes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := st.commit.do(fn)
			mu.Lock()
			results[name] = err
			mu.Unlock()
		}()
	}
	waitQueued(t, &st.commit, len(writes))
	close(hold)
	wg.Wait()
	for name, err := range results {
		switch name {
		case "fails":
			if !errors.Is(err, errBad) {
				t.Errorf("fails: err = %v; want its own error", err)
			}
		case "panics":
			if err == nil || !strings.Contains(err.Error(), "boom") {
				t.Errorf("panics: err = %v; want the panic as an error", err)
			}
		default:
			if err != nil {
				t.Errorf("%s: err = %v; want committed", name, err)
			}
		}
		want := name != "fails" && name != "panics"
		if got := metaHas(t, st, "t-"+name); got != want {
			t.Errorf("%s in the db = %v; want %v", name, got, want)
		}
	}
}

func waitQueued(t *testing.T, c *committer, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		queued := len(c.queue)
		c.mu.Unlock()
		if queued == n {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("%d writes never queued", n)
}

// TestConcurrentRollsReadModifyWrite: rolls and revokes of one key read and
// write it in one transaction each (store.UpdateKey), so of concurrent
// rolls without a grace period exactly one wins: the others find the old
// key expired by it, and no old key gives two new ones.
func TestConcurrentRollsReadModifyWrite(t *testing.T) {
	te := newTestEnv(t)
	org := te.createOrg("acme")
	id, _ := te.createKey(org, `{"name":"k","env":"live"}`)
	const n = 16
	statuses := make(chan int, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses <- te.root("POST", "/orgs/"+org+"/keys/"+id+"/roll", "").status
		}()
	}
	wg.Wait()
	close(statuses)
	won := 0
	for st := range statuses {
		switch st {
		case 201:
			won++
		case 400:
		default:
			t.Errorf("a concurrent roll answered %d", st)
		}
	}
	if won != 1 {
		t.Fatalf("%d of %d concurrent rolls made a new key; want exactly 1", won, n)
	}
	r := te.root("GET", "/orgs/"+org+"/keys", "")
	if keys := r.json(t)["keys"].([]any); len(keys) != 2 {
		t.Errorf("%d keys after the rolls; want the old and one new", len(keys))
	}
}
