package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

type logsAnswer struct {
	Entries []logEntry `json:"entries"`
	Next    *string    `json:"next"`
}

func (te *testEnv) logs(query string) logsAnswer {
	te.t.Helper()
	r := te.root("GET", query, "")
	mustStatus(te.t, "logs "+query, r, 200)
	var a logsAnswer
	if err := json.Unmarshal(r.body, &a); err != nil {
		te.t.Fatal(err)
	}
	return a
}

func TestLogRingRetention(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, func(c *config) { c.logRetention = 5 })
	org := te.createOrg("acme")
	_, key := te.createKey(org, `{"name":"k","env":"live","rate_limits":[{"limit":1000,"window":"1m"}]}`)
	for i := 0; i < 12; i++ {
		te.do("GET", fmt.Sprintf("/api/v1/prod/whoami?n=%d&secret=x", i), "", bearer(key)...)
		if i == 6 {
			te.s.behind.Flush() // the ring trims across flushes too
		}
	}
	a := te.logs("/orgs/" + org + "/logs?limit=100")
	if len(a.Entries) != 5 || a.Next != nil {
		t.Fatalf("ring holds %d entries, next %v; want the newest 5 and no cursor", len(a.Entries), a.Next)
	}
	for i, e := range a.Entries {
		if e.ID != fmt.Sprint(12-i) {
			t.Errorf("entry %d id = %s; want %d (newest first)", i, e.ID, 12-i)
		}
		if e.Path != "/api/v1/prod/whoami" {
			t.Errorf("logged path %q; want no query string", e.Path)
		}
	}
}

// TestLogFiltersAndPaging walks every page with the cursor for each filter.
func TestLogFiltersAndPaging(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t)
	org := te.createOrg("acme")
	liveID, live := te.createKey(org, `{"name":"l","env":"live","rate_limits":[{"limit":3,"window":"1m"}]}`)
	testID, test := te.createKey(org, `{"name":"t","env":"test"}`)
	for i := 0; i < 5; i++ {
		te.whoami(envLive, live) // 3 × 200, 2 × 429
	}
	te.whoami(envTest, test)           // 200
	te.whoami(envLive, test)           // 401 mismatch
	te.do("GET", "/api/v1/prod/x", "") // unidentified: server log only

	tests := []struct {
		query string
		want  int
	}{
		{"", 7},
		{"key_id=" + liveID, 5},
		{"key_id=" + testID, 2},
		{"env=live", 5},
		{"env=test", 2},
		{"status=429", 2},
		{"status=4xx", 3},
		{"status=2xx", 4},
		{"status=200&env=test", 1},
	}
	for _, tt := range tests {
		var all []logEntry
		seen := map[string]bool{}
		cursor := ""
		for pages := 0; ; pages++ {
			a := te.logs("/orgs/" + org + "/logs?limit=2&" + tt.query + cursor)
			for _, e := range a.Entries {
				if seen[e.ID] {
					t.Fatalf("%s: entry %s on two pages", tt.query, e.ID)
				}
				seen[e.ID] = true
			}
			all = append(all, a.Entries...)
			if a.Next == nil || pages > 10 {
				break
			}
			cursor = "&before=" + *a.Next
		}
		if len(all) != tt.want {
			t.Errorf("logs?%s: %d entries; want %d", tt.query, len(all), tt.want)
		}
		for i := 1; i < len(all); i++ {
			if all[i].Time > all[i-1].Time || all[i].ID >= all[i-1].ID && len(all[i].ID) >= len(all[i-1].ID) {
				t.Errorf("logs?%s not newest first: %s after %s", tt.query, all[i].ID, all[i-1].ID)
			}
		}
	}
	server := te.logs("/logs")
	if len(server.Entries) != 1 || server.Entries[0].KeyID != "" || server.Entries[0].Status != 401 {
		t.Fatalf("server log = %+v; want the one unidentified request", server.Entries)
	}
	e := te.logs("/orgs/" + org + "/logs?limit=1").Entries[0]
	if e.KeyID != testID || e.OrgID != org || e.Env != envTest || e.Status != 401 || e.Method != "GET" ||
		!strings.HasPrefix(e.RequestID, "req_") || !strings.HasSuffix(e.Time, "Z") || len(e.Time) != len("2026-11-24T20:30:00.000Z") {
		t.Fatalf("newest entry = %+v; want every SPEC 7 field", e)
	}
	for _, bad := range []string{"limit=0", "limit=5000", "before=abc", "env=prod", "status=abc"} {
		if r := te.root("GET", "/orgs/"+org+"/logs?"+bad, ""); r.status != 400 {
			t.Errorf("logs?%s = %d; want 400", bad, r.status)
		}
	}
}

func TestUsageAndLastUsed(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t)
	org := te.createOrg("acme")
	liveID, live := te.createKey(org, `{"name":"l","env":"live","rate_limits":[{"limit":2,"window":"1m"}]}`)
	_, test := te.createKey(org, `{"name":"t","env":"test"}`)
	if r := te.root("GET", "/orgs/"+org+"/keys/"+liveID, "").json(t); r["last_used_at"] != nil {
		t.Fatalf("unused key has last_used_at %v", r["last_used_at"])
	}
	te.whoami(envLive, live)
	te.whoami(envLive, live)
	te.whoami(envLive, live) // 429
	te.whoami(envTest, live) // 401
	te.whoami(envTest, test)
	te.clock.Advance(time.Hour)
	te.whoami(envTest, test)
	te.restart()

	r := te.root("GET", "/orgs/"+org+"/usage?hours=48", "")
	mustStatus(t, "usage", r, 200)
	var usage struct {
		Buckets []map[string]any `json:"buckets"`
	}
	json.Unmarshal(r.body, &usage)
	want := []string{
		"2026-11-24T20:00:00Z live 2 1 1 0",
		"2026-11-24T20:00:00Z test 1 0 0 0",
		"2026-11-24T21:00:00Z test 1 0 0 0",
	}
	if len(usage.Buckets) != len(want) {
		t.Fatalf("usage = %s; want %d buckets", r.body, len(want))
	}
	for i, b := range usage.Buckets {
		got := fmt.Sprintf("%s %s %v %v %v %v", b["hour"], b["env"], b["2xx"], b["4xx"], b["429"], b["5xx"])
		if got != want[i] {
			t.Errorf("bucket %d = %s; want %s", i, got, want[i])
		}
	}
	liveOnly := te.root("GET", "/orgs/"+org+"/usage?env=live", "")
	if strings.Contains(string(liveOnly.body), `"test"`) {
		t.Errorf("usage?env=live shows test traffic: %s", liveOnly.body)
	}
	rec := te.root("GET", "/orgs/"+org+"/keys/"+liveID, "").json(t)
	if rec["last_used_at"] != "2026-11-24T20:30:00.000Z" {
		t.Fatalf("last_used_at after restart = %v; want the time of its last request", rec["last_used_at"])
	}
	for _, bad := range []string{"hours=0", "hours=99999", "env=x"} {
		if r := te.root("GET", "/orgs/"+org+"/usage?"+bad, ""); r.status != 400 {
			t.Errorf("usage?%s = %d; want 400", bad, r.status)
		}
	}
}

// TestKeyUsage: GET /orgs/:org/usage?key_id= is one key's hourly usage,
// in the organization's shape; the organization's rows are still the sum
// of its keys'. A key's rows are kept seven days.
func TestKeyUsage(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t)
	org := te.createOrg("acme")
	aID, a := te.createKey(org, `{"name":"a","env":"live","rate_limits":[{"limit":2,"window":"1h"}]}`)
	bID, b := te.createKey(org, `{"name":"b","env":"live"}`)
	cID, c := te.createKey(org, `{"name":"c","env":"test"}`)
	te.whoami(envLive, a)
	if err := te.s.behind.Flush(); err != nil { // a second flush adds to the same rows
		t.Fatal(err)
	}
	te.whoami(envLive, a)
	te.whoami(envLive, a) // 429
	te.whoami(envLive, b)
	te.whoami(envTest, c)
	te.clock.Advance(time.Hour)
	te.whoami(envLive, b)
	te.restart()
	usage := func(query string) string {
		t.Helper()
		r := te.root("GET", "/orgs/"+org+"/usage?"+query, "")
		mustStatus(t, "usage?"+query, r, 200)
		var u struct{ Buckets []map[string]any }
		json.Unmarshal(r.body, &u)
		var out []string
		for _, b := range u.Buckets {
			out = append(out, fmt.Sprintf("%s %s %v %v %v %v", b["hour"], b["env"], b["2xx"], b["4xx"], b["429"], b["5xx"]))
		}
		return strings.Join(out, "; ")
	}
	for query, want := range map[string]string{
		"key_id=" + aID:               "2026-11-24T20:00:00Z live 2 0 1 0",
		"key_id=" + bID:               "2026-11-24T20:00:00Z live 1 0 0 0; 2026-11-24T21:00:00Z live 1 0 0 0",
		"key_id=" + bID + "&hours=1":  "2026-11-24T21:00:00Z live 1 0 0 0",
		"key_id=" + cID:               "2026-11-24T20:00:00Z test 1 0 0 0",
		"key_id=" + cID + "&env=live": "",
		"env=live":                    "2026-11-24T20:00:00Z live 3 0 1 0; 2026-11-24T21:00:00Z live 1 0 0 0",
	} {
		if got := usage(query); got != want {
			t.Errorf("usage?%s = %q; want %q", query, got, want)
		}
	}
	for query, want := range map[string]int{
		"key_id=" + aID + "&hours=169": 400,
		"key_id=" + aID + "&hours=168": 200,
		"key_id=nokey":                 400,
		"key_id=key_0000000000000000":  404,
	} {
		if r := te.root("GET", "/orgs/"+org+"/usage?"+query, ""); r.status != want {
			t.Errorf("usage?%s = %d %s; want %d", query, r.status, r.body, want)
		}
	}
	rows := func() (n int) {
		te.s.store.db.View(func(tx *bolt.Tx) error {
			n = tx.Bucket(bucketKeyUsage).Stats().KeyN
			return nil
		})
		return n
	}
	if n := rows(); n != 4 {
		t.Fatalf("%d key usage rows; want 4", n)
	}
	te.clock.Advance(7*24*time.Hour - 30*time.Minute) // 21:00 is kept, 20:00 is past
	te.whoami(envLive, b)
	te.s.behind.lastPrune = time.Time{}
	if err := te.s.behind.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := rows(); n != 2 {
		t.Errorf("%d key usage rows after seven days; want the hour kept and the new one", n)
	}
}

// TestPendingIsBounded: when the disk falls behind, log entries beyond the
// bound are dropped and counted, and usage still counts every request.
func TestPendingIsBounded(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t)
	org := te.createOrg("acme")
	_, key := te.createKey(org, `{"name":"k","env":"live"}`)
	p, _ := te.s.format.parse(key)
	k := te.s.index.find(p)
	start := te.clock.Now()
	for i := 0; i < maxPending+10; i++ {
		te.s.behind.Add(pendingEntry{at: start.UnixNano(), method: "GET", path: "/api/v1/prod/x", status: 200, key: k, env: envLive}, start, false)
	}
	if n := len(te.s.behind.pending); n != maxPending {
		t.Fatalf("pending = %d; want the bound %d", n, maxPending)
	}
	if d := te.s.behind.dropped.Load(); d != 10 {
		t.Fatalf("dropped = %d; want 10", d)
	}
	if err := te.s.behind.Flush(); err != nil {
		t.Fatal(err)
	}
	buckets, _ := te.s.store.ReadUsage(org, envLive, 0)
	if len(buckets) != 1 || buckets[0].OK != maxPending+10 {
		t.Fatalf("usage = %+v; want every request counted", buckets)
	}
}

// TestSIGTERMLosesNothing: with a flush interval far away, every request's
// entry is written by the shutdown flush.
func TestSIGTERMLosesNothing(t *testing.T) {
	db := filepath.Join(t.TempDir(), "k.db")
	token := "kh_admin_" + strings.Repeat("5", 32)
	c := startKeyhole(t, "--db", db, "--admin-token", token, "--flush-interval", "1h", "--rate-limits", "1000/1m")
	org, key := childOrgAndKey(t, c, token)
	const n = 50
	for i := 0; i < n; i++ {
		if st := c.do("GET", "/api/v1/prod/whoami", "", bearer(key)...).status; st != 200 {
			t.Fatalf("request %d = %d", i, st)
		}
	}
	c.stop(t, syscall.SIGTERM)
	c2 := startKeyhole(t, "--db", db, "--admin-token", token)
	entries := childLogs(t, c2, token, org)
	if len(entries) != n {
		t.Fatalf("after SIGTERM the log holds %d entries; want %d", len(entries), n)
	}
}

// TestSIGKILLKeepsFlushed: whatever was flushed before a SIGKILL is there
// after it, and so is every key and revocation.
func TestSIGKILLKeepsFlushed(t *testing.T) {
	db := filepath.Join(t.TempDir(), "k.db")
	token := "kh_admin_" + strings.Repeat("6", 32)
	c := startKeyhole(t, "--db", db, "--admin-token", token, "--flush-interval", "50ms", "--rate-limits", "1000/1m")
	org, key := childOrgAndKey(t, c, token)
	for i := 0; i < 30; i++ {
		c.do("GET", "/api/v1/prod/whoami", "", bearer(key)...)
	}
	flushed := childLogs(t, c, token, org) // reading logs flushes first
	_, revoked := childCreateKey(t, c, token, org, true)
	for i := 0; i < 30; i++ {
		c.do("GET", "/api/v1/prod/whoami", "", bearer(key)...)
	}
	c.stop(t, syscall.SIGKILL)

	c2 := startKeyhole(t, "--db", db, "--admin-token", token)
	after := map[string]bool{}
	for _, e := range childLogs(t, c2, token, org) {
		after[e.RequestID] = true
	}
	for _, e := range flushed {
		if !after[e.RequestID] {
			t.Fatalf("entry %s flushed before SIGKILL is gone", e.RequestID)
		}
	}
	if st := c2.do("GET", "/api/v1/prod/whoami", "", bearer(key)...).status; st != 200 {
		t.Fatalf("key after SIGKILL = %d; want 200", st)
	}
	if st := c2.do("GET", "/api/v1/prod/whoami", "", bearer(revoked)...).status; st != 401 {
		t.Fatalf("revoked key after SIGKILL = %d; want 401", st)
	}
}

// TestRefusalsCannotEraseTheLog: a key holder flooding refusals (revoked,
// expired, out of scope, rate-limited) adds at most refusalBudget entries a
// minute per status to its organization's ring, plus one that counts the
// rest, so the organization's other entries stay; usage counts them all.
func TestRefusalsCannotEraseTheLog(t *testing.T) {
	t.Parallel()
	rules := writeRules(t)
	te := newTestEnv(t, func(c *config) { c.logRetention = 100; c.rulesPath = rules })
	org := te.createOrg("acme")
	goodID, good := te.createKey(org, `{"name":"good","env":"live","rate_limits":[{"limit":100,"window":"1m"}]}`)
	_, limited := te.createKey(org, `{"name":"once","env":"live","rate_limits":[{"limit":1,"window":"1h"}]}`)
	_, plain := te.createKey(org, `{"name":"plain","env":"live"}`)
	revokedID, revoked := te.createKey(org, `{"name":"gone","env":"live"}`)
	mustStatus(t, "revoke", te.root("POST", "/orgs/"+org+"/keys/"+revokedID+"/revoke", ""), 200)
	for i := 0; i < 20; i++ {
		mustStatus(t, "good request", te.whoami(envLive, good), 200)
	}
	floods := []struct {
		name, method, path, key string
		status                  int
	}{
		{"rate-limited", "GET", "/api/v1/prod/whoami", limited, 429},
		{"out of scope", "POST", "/api/v1/prod/sms/send", plain, 403},
		{"revoked", "GET", "/api/v1/prod/whoami", revoked, 401},
	}
	const flood = 1000
	for _, f := range floods {
		for i := 0; i < flood; i++ {
			te.do(f.method, f.path, "", bearer(f.key)...)
		}
		te.clock.Advance(time.Second)
	}
	te.clock.Advance(time.Minute) // the minute is over: its counts are written
	entries := readAllLogs(t, te, org)
	good20, perStatus, counted := 0, map[int]int{}, map[int]uint32{}
	for _, e := range entries {
		switch {
		case e.KeyID == goodID:
			good20++
		case e.Count > 0:
			counted[e.Status] += e.Count
		default:
			perStatus[e.Status]++
		}
	}
	if good20 != 20 {
		t.Errorf("the ring kept %d of the 20 good entries; refusals pushed them out", good20)
	}
	for _, f := range floods {
		want := flood
		if f.status == 429 {
			want = flood - 1 // the key's one allowed request
		}
		if perStatus[f.status] != refusalBudget || int(counted[f.status]) != want-refusalBudget {
			t.Errorf("%s: %d entries one by one and a count of %d; want %d and %d",
				f.name, perStatus[f.status], counted[f.status], refusalBudget, want-refusalBudget)
		}
	}
	for _, e := range entries {
		if e.Status == 401 && e.KeyID != revokedID {
			t.Errorf("a revoked key's refusal is logged as key %q; want %s", e.KeyID, revokedID)
		}
	}
	r := te.root("GET", "/orgs/"+org+"/usage?env=live", "")
	var usage struct{ Buckets []usageBucket }
	if err := json.Unmarshal(r.body, &usage); err != nil || len(usage.Buckets) != 1 {
		t.Fatalf("usage = %s, %v", r.body, err)
	}
	if b := usage.Buckets[0]; b.OK != 21 || b.Client != 2*flood || b.Limited != flood-1 {
		t.Errorf("usage = %+v; want every request counted: 21 2xx, %d 4xx, %d 429", b, 2*flood, flood-1)
	}
}

// readAllLogs is every entry of an org's ring, newest first.
func readAllLogs(t *testing.T, te *testEnv, org string) []logEntry {
	t.Helper()
	r := te.root("GET", "/orgs/"+org+"/logs?limit=1000", "")
	mustStatus(t, "GET logs", r, 200)
	var page logPage
	if err := json.Unmarshal(r.body, &page); err != nil {
		t.Fatal(err)
	}
	return page.Entries
}

// TestRefusalCountSurvivesShutdown: the count of the minute under way is
// written by the last flush, as a restart does it.
func TestRefusalCountSurvivesShutdown(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t)
	org := te.createOrg("acme")
	id, key := te.createKey(org, `{"name":"once","env":"live","rate_limits":[{"limit":1,"window":"1h"}]}`)
	for i := 0; i < refusalBudget+6; i++ {
		te.whoami(envLive, key)
	}
	te.restart()
	var total uint32
	for _, e := range readAllLogs(t, te, org) {
		if e.KeyID != id {
			t.Fatalf("entry of another key: %+v", e)
		}
		total += max(e.Count, 1)
	}
	if total != refusalBudget+6 {
		t.Errorf("entries stand for %d requests; want %d", total, refusalBudget+6)
	}
}
