package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestRefillSchedule: refills come at 00:00 UTC, daily, or monthly on the
// day, which past a month's end is its last day.
func TestRefillSchedule(t *testing.T) {
	at := func(s string) int64 {
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm.UnixNano()
	}
	daily := &creditRefill{Amount: 1, Interval: refillDaily}
	monthly := func(day int) *creditRefill { return &creditRefill{Amount: 1, Interval: refillMonthly, Day: day} }
	for _, c := range []struct {
		r           *creditRefill
		after, want string
	}{
		{daily, "2026-11-24T20:30:00Z", "2026-11-25T00:00:00Z"},
		{daily, "2026-11-24T00:00:00Z", "2026-11-25T00:00:00Z"},
		{daily, "2026-12-31T23:59:59Z", "2027-01-01T00:00:00Z"},
		{monthly(1), "2026-11-24T20:30:00Z", "2026-12-01T00:00:00Z"},
		{monthly(24), "2026-11-24T20:30:00Z", "2026-12-24T00:00:00Z"},
		{monthly(25), "2026-11-24T20:30:00Z", "2026-11-25T00:00:00Z"},
		{monthly(31), "2026-11-24T20:30:00Z", "2026-11-30T00:00:00Z"},
		{monthly(31), "2027-01-31T00:00:00Z", "2027-02-28T00:00:00Z"},
		{monthly(31), "2028-02-01T00:00:00Z", "2028-02-29T00:00:00Z"},
		{monthly(30), "2027-02-28T00:00:00Z", "2027-03-30T00:00:00Z"},
		{monthly(31), "2026-12-31T12:00:00Z", "2027-01-31T00:00:00Z"},
	} {
		if got := nextRefill(c.r, at(c.after)); got != at(c.want) {
			t.Errorf("%s day %d after %s = %s; want %s", c.r.Interval, c.r.Day, c.after,
				time.Unix(0, got).UTC().Format(time.RFC3339), c.want)
		}
	}
	if nextRefill(nil, 1) != 0 {
		t.Error("no refill has a next refill")
	}
}

// TestCreditsRefill: at the refill, remaining is the refill's amount
// again (unused credits do not add up), on the guarded surface and in the
// record; a 429 says when it comes.
func TestCreditsRefill(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t) // the clock starts at 2026-11-24T20:30:00Z
	org := te.createOrg("acme")
	id, key := te.createKey(org, `{"name":"k","env":"live","rate_limits":[{"limit":100,"window":"1m"}],
		"credits":{"remaining":2,"refill":{"amount":3,"interval":"daily"}}}`)
	mustStatus(t, "first", te.whoami(envLive, key), 200)
	mustStatus(t, "second", te.whoami(envLive, key), 200)
	r := te.whoami(envLive, key)
	wantCode(t, "third", r, 429, "usage_exceeded")
	if r.header.Get("Retry-After") != "12600" { // 3.5 h to midnight
		t.Errorf("Retry-After %q; want 12600", r.header.Get("Retry-After"))
	}
	te.clock.Advance(3*time.Hour + 30*time.Minute)
	credits := func() int64 {
		t.Helper()
		var v keyView
		json.Unmarshal(te.root("GET", "/orgs/"+org+"/keys/"+id, "").body, &v)
		if v.Credits == nil {
			t.Fatal("no credits in the record")
		}
		return v.Credits.Remaining
	}
	if got := credits(); got != 3 {
		t.Errorf("at midnight the record shows %d; want the refill's 3", got)
	}
	r = te.whoami(envLive, key)
	if r.status != 200 || r.header.Get("X-Credits-Remaining") != "2" {
		t.Errorf("after the refill = %d, X-Credits-Remaining %q; want 200, 2", r.status, r.header.Get("X-Credits-Remaining"))
	}
	te.clock.Advance(48 * time.Hour) // two refills missed: still the amount, not twice it
	if got := credits(); got != 3 {
		t.Errorf("two days later the record shows %d; want 3", got)
	}
	// The spending and the refill are written behind and read back.
	mustStatus(t, "spend", te.whoami(envLive, key), 200)
	te.restart()
	if got := credits(); got != 2 {
		t.Errorf("after a restart the record shows %d; want 2", got)
	}
}

// TestCreditsRestart: a restart keeps what was spent, and a new setting
// (a PATCH of credits) is not overwritten by the spending of the old one,
// whether or not that was flushed.
func TestCreditsRestart(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t)
	org := te.createOrg("acme")
	id, key := te.createKey(org, `{"name":"k","env":"live","rate_limits":[{"limit":100,"window":"1m"}],"credits":{"remaining":5}}`)
	remaining := func() string {
		t.Helper()
		r := te.do("POST", "/v1/keys/verify", `{"key":"`+key+`","cost":0}`)
		var a verifyAnswer
		json.Unmarshal(r.body, &a)
		if a.Credits == nil {
			t.Fatalf("verify %s: no credits", r.body)
		}
		return strconv.FormatInt(a.Credits.Remaining, 10)
	}
	for range 3 {
		mustStatus(t, "spend", te.whoami(envLive, key), 200)
	}
	te.restart()
	if got := remaining(); got != "2" {
		t.Fatalf("after a restart %s left; want 2", got)
	}
	mustStatus(t, "spend", te.whoami(envLive, key), 200)
	if err := te.s.behind.Flush(); err != nil { // spending of the old setting on disk
		t.Fatal(err)
	}
	mustStatus(t, "PATCH credits", te.root("PATCH", "/orgs/"+org+"/keys/"+id, `{"credits":{"remaining":50}}`), 200)
	te.restart()
	if got := remaining(); got != "50" {
		t.Fatalf("after a new setting and a restart %s left; want 50", got)
	}
	// A PATCH of something else keeps the spending.
	mustStatus(t, "spend", te.whoami(envLive, key), 200)
	mustStatus(t, "PATCH name", te.root("PATCH", "/orgs/"+org+"/keys/"+id, `{"name":"other"}`), 200)
	if got := remaining(); got != "49" {
		t.Fatalf("after a PATCH of the name %s left; want 49", got)
	}
}

// TestCreditsSurviveSIGKILL: spending is written behind, so a SIGKILL gives
// back at most what was spent since the last flush, never more, and a
// SIGTERM gives back nothing. With a long --flush-interval the bound is
// exact: the flush that reading the logs makes is the last one.
func TestCreditsSurviveSIGKILL(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "k.db")
	token := "kh_admin_" + strings.Repeat("7", 32)
	args := []string{"--db", db, "--admin-token", token, "--flush-interval", "1h"}
	c := startKeyhole(t, args...)
	org, _ := childOrgAndKey(t, c, token)
	r := c.admin(token, "POST", "/orgs/"+org+"/keys", `{"name":"c","env":"live","rate_limits":[{"limit":100000,"window":"1m"}],"credits":{"remaining":1000}}`)
	mustStatus(t, "create", r, 201)
	var k struct{ ID, Key string }
	json.Unmarshal(r.body, &k)
	spend := func(c *child, n int) {
		t.Helper()
		for range n {
			mustStatus(t, "spend", c.do("GET", "/api/v1/prod/whoami", "", bearer(k.Key)...), 200)
		}
	}
	left := func(c *child) int64 {
		t.Helper()
		r := c.admin(token, "GET", "/orgs/"+org+"/keys/"+k.ID, "")
		var v keyView
		if json.Unmarshal(r.body, &v) != nil || v.Credits == nil {
			t.Fatalf("GET key = %d %s", r.status, r.body)
		}
		return v.Credits.Remaining
	}
	spend(c, 100)
	childLogs(t, c, token, org) // reading the logs flushes: 900 is on disk
	spend(c, 50)
	if got := left(c); got != 850 {
		t.Fatalf("before the kill %d left; want 850", got)
	}
	c.stop(t, syscall.SIGKILL)
	c = startKeyhole(t, args...)
	if got := left(c); got != 900 {
		t.Fatalf("after SIGKILL %d left; want 900: the 50 spent since the last flush are back, no more", got)
	}
	spend(c, 10)
	c.stop(t, syscall.SIGTERM)
	c = startKeyhole(t, args...)
	if got := left(c); got != 890 {
		t.Fatalf("after SIGTERM %d left; want 890: nothing given back", got)
	}
	c.stop(t, syscall.SIGTERM)
}

// TestCreditsCrashLoop kills keyhole with SIGKILL at random moments while
// clients spend a key's credits, and restarts it on the same db: after each
// restart the key has at most what it had when a flush was last asked for
// (what was spent before it stays spent), and at least what the last
// answers said less the requests in flight.
func TestCreditsCrashLoop(t *testing.T) {
	t.Parallel()
	skipShort(t, "a crash loop restarts keyhole again and again")
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	db := filepath.Join(t.TempDir(), "k.db")
	token := "kh_admin_" + strings.Repeat("8", 32)
	args := []string{"--db", db, "--admin-token", token, "--flush-interval", "20ms"}
	c := startKeyhole(t, args...)
	org, _ := childOrgAndKey(t, c, token)
	const start = 1_000_000
	r := c.admin(token, "POST", "/orgs/"+org+"/keys", fmt.Sprintf(`{"name":"c","env":"live",`+
		`"rate_limits":[{"limit":1000000,"window":"1m"}],"credits":{"remaining":%d}}`, start))
	mustStatus(t, "create", r, 201)
	var k struct{ ID, Key string }
	json.Unmarshal(r.body, &k)
	left := func(c *child) int64 {
		t.Helper()
		r := c.admin(token, "GET", "/orgs/"+org+"/keys/"+k.ID, "")
		var v keyView
		if json.Unmarshal(r.body, &v) != nil || v.Credits == nil {
			t.Fatalf("GET key = %d %s", r.status, r.body)
		}
		return v.Credits.Remaining
	}
	const clients = 3
	for round := range 8 {
		var lowest atomic.Int64 // the fewest credits an answer reported
		lowest.Store(start)
		stop := new(atomic.Bool)
		var wg sync.WaitGroup
		client := crashClient(t, c.url())
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !stop.Load() {
					r, err := client.try("GET", "/api/v1/prod/whoami", "", bearer(k.Key)...)
					if err != nil {
						return // killed
					}
					n, err := strconv.ParseInt(r.header.Get("X-Credits-Remaining"), 10, 64)
					if r.status != 200 || err != nil {
						t.Errorf("whoami = %d %s, X-Credits-Remaining %q", r.status, r.body, r.header.Get("X-Credits-Remaining"))
						return
					}
					for cur := lowest.Load(); n < cur && !lowest.CompareAndSwap(cur, n); cur = lowest.Load() {
					}
				}
			}()
		}
		time.Sleep(time.Duration(30+rng.IntN(100)) * time.Millisecond)
		// What the key has now is an upper bound of what the flush that
		// reading the logs makes writes; spending goes on meanwhile.
		flushedAtMost := left(c)
		childLogs(t, c, token, org)
		time.Sleep(time.Duration(rng.IntN(60)) * time.Millisecond)
		c.stop(t, syscall.SIGKILL)
		stop.Store(true)
		wg.Wait()
		client.http.CloseIdleConnections()
		c = startKeyhole(t, args...)
		got := left(c)
		if got > flushedAtMost {
			t.Fatalf("round %d: after SIGKILL %d left; at most %d were on disk: credits given back beyond the last flush (seed %d)",
				round, got, flushedAtMost, seed)
		}
		if low := lowest.Load(); got < low-clients {
			t.Fatalf("round %d: after SIGKILL %d left; answers said %d, with at most %d requests in flight (seed %d)",
				round, got, low, clients, seed)
		}
		t.Logf("round %d: %d left after the restart (at most %d flushed, answers said %d)", round, got, flushedAtMost, lowest.Load())
	}
	c.stop(t, syscall.SIGTERM)
}
