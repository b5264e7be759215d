package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

type auditAnswer struct {
	Entries []auditView `json:"entries"`
	Next    *string     `json:"next"`
}

// audit reads one page of an audit listing as token, strictly: an
// answer with a member auditView lacks fails.
func (c *testClient) audit(token, path string) auditAnswer {
	c.t.Helper()
	r := c.admin(token, "GET", path, "")
	mustStatus(c.t, "GET "+path, r, 200)
	var a auditAnswer
	dec := json.NewDecoder(strings.NewReader(string(r.body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		c.t.Fatalf("audit answer %s: %v", r.body, err)
	}
	return a
}

// allAudit reads every entry of an audit listing, following "next".
func (c *testClient) allAudit(token, path string) []auditView {
	c.t.Helper()
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	var all []auditView
	for cursor := ""; ; {
		a := c.audit(token, path+sep+"limit=1000"+cursor)
		all = append(all, a.Entries...)
		if a.Next == nil {
			return all
		}
		cursor = "&before=" + *a.Next
	}
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// TestAuditEveryWrite: every admin write leaves exactly one entry, with
// who (root, or the org admin token's id and name), what, the ids it
// touched, the fields it set, from where and in which request. A refused
// write, an idempotent repeat and a read leave none.
func TestAuditEveryWrite(t *testing.T) {
	te := newTestEnv(t)
	root := testRootToken
	var org, tokID, tokName, keyID string
	type write struct {
		name, method, path, body string
		token                    *string // as whom; nil: root
		status                   int
		action                   string // "": no entry
		targets                  func(answer map[string]any) []string
		fields                   []string
	}
	self := func(m map[string]any) []string { return []string{m["id"].(string)} }
	rolled := func(old *string) func(map[string]any) []string {
		return func(m map[string]any) []string { return []string{*old, m["id"].(string)} }
	}
	var orgToken string
	writes := []write{
		{"create org", "POST", "/orgs", `{"name":"acme"}`, nil, 201, actionOrgCreated, self, []string{"name"}},
		{"issue token", "POST", "/orgs/{org}/admin-tokens", `{"name":"ci"}`, nil, 201, actionTokenCreated, self, []string{"name"}},
		{"create key", "POST", "/orgs/{org}/keys", `{"name":"k","env":"live","scopes":["a:b"]}`, &orgToken, 201,
			actionKeyCreated, self, []string{"name", "env", "scopes"}},
		{"roll key", "POST", "/orgs/{org}/keys/{key}/roll", `{"expires_in":"1h"}`, &orgToken, 201, actionKeyRolled,
			rolled(&keyID), []string{"expires_at"}},
		{"revoke key", "POST", "/orgs/{org}/keys/{key}/revoke", "", nil, 200, actionKeyRevoked, self, []string{"revoked_at"}},
		{"revoke key again", "POST", "/orgs/{org}/keys/{key}/revoke", "", nil, 200, "", nil, nil},
		{"roll a revoked key", "POST", "/orgs/{org}/keys/{key}/roll", "", nil, 400, "", nil, nil},
		{"bad body", "POST", "/orgs", `{"nom":"x"}`, nil, 400, "", nil, nil},
		{"a read", "GET", "/orgs/{org}/keys", "", nil, 200, "", nil, nil},
		{"roll token", "POST", "/orgs/{org}/admin-tokens/{tok}/roll", "", &orgToken, 201, actionTokenRolled,
			rolled(&tokID), []string{"expires_at"}},
		{"revoke token", "POST", "/orgs/{org}/admin-tokens/{tok}/revoke", "", nil, 200, actionTokenRevoked, self, []string{"revoked_at"}},
		{"backup", "GET", "/backup", "", nil, 200, actionBackupTaken, nil, nil},
		{"roll root", "POST", "/admin-token/roll", "", nil, 201, actionRootRolled, nil, nil},
	}
	before := len(te.allAudit(root, "/audit"))
	for _, w := range writes {
		token := &root
		if w.token != nil {
			token = w.token
		}
		actor, actorName := actorRoot, ""
		if token == &orgToken {
			actor, actorName = tokID, tokName
		}
		path := strings.NewReplacer("{org}", org, "{key}", keyID, "{tok}", tokID).Replace(w.path)
		r := te.admin(*token, w.method, path, w.body)
		mustStatus(t, w.name, r, w.status)
		var answer map[string]any
		json.Unmarshal(r.body, &answer)
		switch w.name {
		case "create org":
			org = answer["id"].(string)
		case "issue token":
			tokID, tokName, orgToken = answer["id"].(string), answer["name"].(string), answer["token"].(string)
		case "create key":
			keyID = answer["id"].(string)
		case "roll root":
			root = answer["token"].(string)
		}
		entries := te.allAudit(root, "/audit")
		if w.action == "" {
			if len(entries) != before {
				t.Fatalf("%s left %d entries; want none: %+v", w.name, len(entries)-before, entries[0])
			}
			continue
		}
		if len(entries) != before+1 {
			t.Fatalf("%s left %d entries; want exactly one", w.name, len(entries)-before)
		}
		before++
		e := entries[0]
		var targets []string
		if w.targets != nil {
			targets = w.targets(answer)
		}
		wantOrg := org
		if w.action == actionBackupTaken || w.action == actionRootRolled {
			wantOrg = ""
		}
		if e.Action != w.action || e.Actor != actor || str(e.ActorName) != actorName || str(e.OrgID) != wantOrg ||
			!reflect.DeepEqual(e.TargetIDs, nonNil(targets)) || !reflect.DeepEqual(e.Fields, nonNil(w.fields)) ||
			str(e.Client) != "192.0.2.1" || str(e.RequestID) != r.header.Get("X-Request-Id") ||
			e.Time != formatTime(te.clock.Now().UnixNano()) {
			t.Fatalf("%s: entry %+v; want %s by %s %q on %s %v, fields %v, from 192.0.2.1 in %s", w.name, e,
				w.action, actor, actorName, wantOrg, targets, w.fields, r.header.Get("X-Request-Id"))
		}
		te.clock.Advance(time.Second)
	}
}

// TestAuditEntryIsInTheChangesTransaction: a change whose entry cannot be
// written is not made, and answers 500.
func TestAuditEntryIsInTheChangesTransaction(t *testing.T) {
	te := newTestEnv(t)
	org := te.createOrg("acme")
	keyID, key := te.createKey(org, `{"name":"k","env":"live"}`)
	setAuditBucket := func(present bool) {
		err := te.s.store.db.Update(func(tx *bolt.Tx) error {
			if present {
				_, err := tx.CreateBucket(bucketAudit)
				return err
			}
			return tx.DeleteBucket(bucketAudit)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	setAuditBucket(false)
	for _, w := range []struct{ path, body string }{
		{"/orgs", `{"name":"other"}`},
		{"/orgs/" + org + "/keys", `{"name":"n","env":"live"}`},
		{"/orgs/" + org + "/keys/" + keyID + "/revoke", ""},
		{"/orgs/" + org + "/keys/" + keyID + "/roll", ""},
		{"/orgs/" + org + "/admin-tokens", `{"name":"t"}`},
	} {
		if r := te.root("POST", w.path, w.body); r.status != 500 || r.errorCode(t) != "internal_error" {
			t.Fatalf("POST %s without its entry = %d %s; want 500", w.path, r.status, r.body)
		}
	}
	setAuditBucket(true)
	te.restart()
	orgs := te.root("GET", "/orgs", "").json(t)["orgs"].([]any)
	keys := te.root("GET", "/orgs/"+org+"/keys?include_revoked=true", "").json(t)["keys"].([]any)
	if len(orgs) != 1 || len(keys) != 1 || keys[0].(map[string]any)["revoked_at"] != nil ||
		keys[0].(map[string]any)["expires_at"] != nil || len(te.listTokens(testRootToken, org)) != 0 {
		t.Fatalf("writes whose entries failed changed the data: orgs %v, keys %v", orgs, keys)
	}
	mustStatus(t, "the key whose revoke failed", te.whoami(envLive, key), 200)
}

// TestAuditKeyUpdatedHook: an edit through store.UpdateKey records
// key.updated with the names of the fields it changed, found by the
// store; an edit that changes nothing records nothing.
func TestAuditKeyUpdatedHook(t *testing.T) {
	te := newTestEnv(t)
	org := te.createOrg("acme")
	keyID, _ := te.createKey(org, `{"name":"k","env":"live","scopes":["a:b"]}`)
	c := caller{root: true, client: "198.51.100.1", reqID: "req_00000000000000ed"}
	edit := func(change func(k *keyRecord)) {
		t.Helper()
		_, _, err := te.s.store.UpdateKey(org, keyID, te.s.newAudit(c, actionKeyUpdated), func(k *keyRecord) ([]*keyRecord, error) {
			change(k)
			return nil, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	edit(func(k *keyRecord) {
		k.Name = "renamed"
		k.Scopes = append(k.Scopes, "c:d")
		k.RateLimits = []rateLimit{{5, "1m"}}
	})
	e := te.audit(testRootToken, "/audit?limit=1").Entries[0]
	if e.Action != actionKeyUpdated || !reflect.DeepEqual(e.Fields, []string{"name", "scopes", "rate_limits"}) ||
		!reflect.DeepEqual(e.TargetIDs, []string{keyID}) || str(e.OrgID) != org || str(e.RequestID) != c.reqID {
		t.Fatalf("edit entry = %+v; want key.updated of name, scopes, rate_limits", e)
	}
	count := len(te.allAudit(testRootToken, "/audit"))
	edit(func(k *keyRecord) { k.Name = "renamed"; k.Scopes = []string{"a:b", "c:d"} })
	if n := len(te.allAudit(testRootToken, "/audit")); n != count {
		t.Fatalf("an edit that changed nothing wrote %d entries; want none", n-count)
	}
}

// TestAuditOrgAdminsSeeTheirOwn: an org admin reads its organization's
// entries and no other's, root's actions in it without root's address;
// root reads all; filters and the cursor work as the request log's.
func TestAuditOrgAdminsSeeTheirOwn(t *testing.T) {
	te := newTestEnv(t)
	a, b := te.createOrg("a"), te.createOrg("b")
	tokAID, tokA := te.issueOrgToken(a, "a-admin")
	_, tokB := te.issueOrgToken(b, "b-admin")
	for i := range 3 {
		te.admin(tokA, "POST", "/orgs/"+a+"/keys", fmt.Sprintf(`{"name":"a%d","env":"test"}`, i))
		te.admin(tokB, "POST", "/orgs/"+b+"/keys", fmt.Sprintf(`{"name":"b%d","env":"test"}`, i))
	}
	keyA, _ := te.createKey(a, `{"name":"by root","env":"live"}`)

	seen := te.allAudit(tokA, "/orgs/"+a+"/audit")
	if len(seen) != 6 { // org created, token issued, 3 keys by a-admin, 1 by root
		t.Fatalf("org a's admin sees %d entries; want 6: %+v", len(seen), seen)
	}
	for _, e := range seen {
		if str(e.OrgID) != a {
			t.Fatalf("org a's admin sees an entry of %s: %+v", str(e.OrgID), e)
		}
		if (e.Actor == actorRoot) != (e.Client == nil) {
			t.Fatalf("entry %+v: root's address must be hidden from an org admin, its own shown", e)
		}
	}
	if r := te.admin(tokA, "GET", "/orgs/"+b+"/audit", ""); r.status != 404 || r.errorCode(t) != "not_found" {
		t.Fatalf("org a's admin reading b's audit = %d %s; want 404", r.status, r.body)
	}
	if r := te.admin(tokA, "GET", "/audit", ""); r.status != 403 || r.errorCode(t) != "forbidden" {
		t.Fatalf("org a's admin reading all the audit = %d %s; want 403", r.status, r.body)
	}
	if rootView := te.allAudit(testRootToken, "/orgs/"+a+"/audit"); rootView[0].Client == nil {
		t.Fatalf("root sees its own entry without its address: %+v", rootView[0])
	}

	filters := map[string]int{
		"actor=" + tokAID:                                         3,
		"actor=root&action=" + actionKeyCreated:                   1,
		"action=" + actionTokenCreated:                            1,
		"target=" + keyA:                                          1,
		"target=" + keyA + "&action=" + actionKeyRevoked:          0,
		"actor=tok_0000000000000000":                              0,
		"action=" + actionKeyCreated + "&actor=" + tokAID:         3,
		"action=" + actionOrgCreated + "&target=" + a:             1,
		"action=" + actionOrgCreated + "&target=" + b:             0,
		"actor=system&action=" + actionRootSet:                    0,
		"limit=2&action=" + actionKeyCreated + "&actor=" + tokAID: 3,
	}
	for q, want := range filters {
		if got := te.allAudit(testRootToken, "/orgs/"+a+"/audit?"+q); len(got) != want {
			t.Errorf("?%s: %d entries; want %d", q, len(got), want)
		}
	}
	if got := te.allAudit(testRootToken, "/audit?actor=system&action="+actionRootSet); len(got) != 1 {
		t.Errorf("all the audit holds %d entries of --admin-token; want the first start's", len(got))
	}

	// Pages of 2, newest first, with "next" until the last.
	all := te.allAudit(testRootToken, "/audit")
	var paged []auditView
	for cursor := ""; ; {
		p := te.audit(testRootToken, "/audit?limit=2"+cursor)
		paged = append(paged, p.Entries...)
		if p.Next == nil {
			break
		}
		cursor = "&before=" + *p.Next
	}
	if !reflect.DeepEqual(paged, all) || !slices.IsSortedFunc(all, func(x, y auditView) int {
		return strings.Compare(fmt.Sprintf("%020s", y.ID), fmt.Sprintf("%020s", x.ID))
	}) {
		t.Fatalf("pages of 2 = %d entries; want the %d of one page, newest first", len(paged), len(all))
	}

	for _, q := range []string{"actor=someone", "action=key.deleted", "target=nope", "limit=0", "limit=1001", "before=x"} {
		r := te.root("GET", "/audit?"+q, "")
		checkErrorShape(t, q, r, 400, "invalid_request")
		name, _, _ := strings.Cut(q, "=")
		if !strings.Contains(string(r.body), `\"`+name+`\"`) {
			t.Errorf("?%s: %s does not name the parameter", q, r.body)
		}
	}
}

// TestAuditRetention: entries older than --audit-retention are pruned,
// from every listing; newer ones stay. KEYHOLE_AUDIT_RETENTION sets it.
func TestAuditRetention(t *testing.T) {
	cfg, err := parseServeFlags(nil, func(k string) string {
		return map[string]string{"KEYHOLE_AUDIT_RETENTION": "30d"}[k]
	})
	if err != nil || cfg.auditRetention != 30*24*time.Hour {
		t.Fatalf("KEYHOLE_AUDIT_RETENTION=30d gives %v, %v", cfg.auditRetention, err)
	}
	if cfg, _ := parseServeFlags(nil, func(string) string { return "" }); cfg.auditRetention != 365*24*time.Hour {
		t.Fatalf("default retention = %v; want 365d", cfg.auditRetention)
	}
	for _, bad := range []string{"0", "30m", "soon"} {
		if _, err := parseServeFlags([]string{"--audit-retention", bad}, func(string) string { return "" }); err == nil {
			t.Errorf("--audit-retention %s accepted", bad)
		}
	}

	te := newTestEnv(t, func(c *config) { c.auditRetention = 30 * 24 * time.Hour })
	org := te.createOrg("acme")
	te.createKey(org, `{"name":"old","env":"live"}`)
	te.clock.Advance(31 * 24 * time.Hour)
	newID, _ := te.createKey(org, `{"name":"new","env":"live"}`)
	if err := te.s.pruneAudit(); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/audit", "/orgs/" + org + "/audit"} {
		entries := te.allAudit(testRootToken, path)
		if len(entries) != 1 || entries[0].TargetIDs[0] != newID {
			t.Fatalf("%s after pruning = %+v; want only the new key's entry", path, entries)
		}
	}
	err = te.s.store.db.View(func(tx *bolt.Tx) error {
		if n := tx.Bucket(bucketAuditOrgs).Stats().KeyN; n != 1 {
			t.Errorf("%d index keys after pruning; want 1", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// auditLedger is what a load against a real keyhole had acknowledged:
// the writes whose answers arrived whole, by action and first target.
type auditLedger struct {
	mu       sync.Mutex
	acked    map[auditKey]bool
	keys     []string // acknowledged, neither revoked nor rolled: to change next
	tokens   []string // the same for admin tokens
	failures []string
}

type auditKey struct{ action, target string }

// ack notes a write whose answer arrived, and what it makes to change next.
func (l *auditLedger) ack(action, target string, keys, tokens []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.acked[auditKey{action, target}] = true
	l.keys = append(l.keys, keys...)
	l.tokens = append(l.tokens, tokens...)
}

func (l *auditLedger) take(ids *[]string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(*ids) == 0 {
		return ""
	}
	id := (*ids)[len(*ids)-1]
	*ids = (*ids)[:len(*ids)-1]
	return id
}

// post sends one admin write as root; ok says its answer arrived with want.
func (l *auditLedger) post(c *testClient, path, body string, want int) (map[string]any, bool) {
	r, err := c.try("POST", "/admin/v1"+path, body, bearer(crashToken)...)
	if err != nil {
		time.Sleep(time.Millisecond) // the server is gone: don't spin
		return nil, false
	}
	var m map[string]any
	if r.status != want || json.Unmarshal(r.body, &m) != nil {
		l.mu.Lock()
		l.failures = append(l.failures, fmt.Sprintf("POST %s = %d %s", path, r.status, r.body))
		l.mu.Unlock()
		return nil, false
	}
	return m, true
}

// load runs concurrent admin writes of every kind until stop is set.
func (l *auditLedger) load(c *testClient, org string, stop *atomic.Bool) *sync.WaitGroup {
	var wg sync.WaitGroup
	worker := func(fn func(rng *rand.Rand)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
			for !stop.Load() {
				fn(rng)
			}
		}()
	}
	createKey := func(*rand.Rand) {
		if m, ok := l.post(c, "/orgs/"+org+"/keys", crashKeyBody, 201); ok {
			l.ack(actionKeyCreated, m["id"].(string), []string{m["id"].(string)}, nil)
		}
	}
	worker(createKey)
	worker(createKey)
	worker(func(rng *rand.Rand) { l.changeOne(c, org, "keys", &l.keys, rng) })
	worker(func(*rand.Rand) {
		if m, ok := l.post(c, "/orgs/"+org+"/admin-tokens", `{"name":"t"}`, 201); ok {
			l.ack(actionTokenCreated, m["id"].(string), nil, []string{m["id"].(string)})
		}
	})
	worker(func(rng *rand.Rand) { l.changeOne(c, org, "admin-tokens", &l.tokens, rng) })
	worker(func(*rand.Rand) {
		if m, ok := l.post(c, "/orgs", `{"name":"other"}`, 201); ok {
			l.ack(actionOrgCreated, m["id"].(string), nil, nil)
		}
		time.Sleep(5 * time.Millisecond)
	})
	return &wg
}

// changeOne revokes or rolls an acknowledged key or token (kind "keys" or
// "admin-tokens"), each once.
func (l *auditLedger) changeOne(c *testClient, org, kind string, ids *[]string, rng *rand.Rand) {
	id := l.take(ids)
	if id == "" {
		time.Sleep(time.Millisecond)
		return
	}
	prefix := map[string]string{"keys": "key.", "admin-tokens": "admin_token."}[kind]
	base := "/orgs/" + org + "/" + kind + "/" + id
	if rng.IntN(2) == 0 {
		if _, ok := l.post(c, base+"/revoke", "", 200); ok {
			l.ack(prefix+"revoked", id, nil, nil)
		}
		return
	}
	if m, ok := l.post(c, base+"/roll", `{"expires_in":"1h"}`, 201); ok {
		fresh := []string{m["id"].(string)}
		if kind == "keys" {
			l.ack(prefix+"rolled", id, fresh, nil)
		} else {
			l.ack(prefix+"rolled", id, nil, fresh)
		}
	}
}

// auditState is what a restarted keyhole holds: the entries by action and
// first target, and the records.
type auditState struct {
	entries map[auditKey][]auditView
	made    map[string]bool // ids that some created or rolled entry made
	orgs    map[string]bool
	records map[string]map[string]any // keys and tokens of the org, by id
}

func readAuditState(t *testing.T, c *child, org string) auditState {
	t.Helper()
	st := auditState{entries: map[auditKey][]auditView{}, made: map[string]bool{}, orgs: map[string]bool{},
		records: map[string]map[string]any{}}
	for _, e := range c.on(t).allAudit(crashToken, "/audit") {
		if len(e.TargetIDs) == 0 {
			continue // the first start's root_token.set
		}
		k := auditKey{e.Action, e.TargetIDs[0]}
		st.entries[k] = append(st.entries[k], e)
		st.made[e.TargetIDs[len(e.TargetIDs)-1]] = strings.HasSuffix(e.Action, ".created") || strings.HasSuffix(e.Action, ".rolled")
	}
	for _, o := range c.on(t).admin(crashToken, "GET", "/orgs", "").json(t)["orgs"].([]any) {
		st.orgs[o.(map[string]any)["id"].(string)] = true
	}
	for _, list := range []string{"keys", "admin_tokens"} {
		path := "/orgs/" + org + "/" + strings.ReplaceAll(list, "_", "-") + "?include_revoked=true"
		for _, rec := range c.on(t).admin(crashToken, "GET", path, "").json(t)[list].([]any) {
			m := rec.(map[string]any)
			st.records[m["id"].(string)] = m
		}
	}
	return st
}

// check: every acknowledged write has exactly one entry, every entry's
// change is there, and every change there has its entry.
func (st auditState) check(t *testing.T, l *auditLedger) {
	t.Helper()
	for k := range l.acked {
		if n := len(st.entries[k]); n != 1 {
			t.Errorf("acknowledged %s of %s has %d entries; want 1", k.action, k.target, n)
		}
	}
	for k, es := range st.entries {
		if len(es) != 1 {
			t.Errorf("%s of %s has %d entries; want 1", k.action, k.target, len(es))
		}
		if !st.changeExists(es[0]) {
			t.Errorf("entry %+v records a change that is not in the db", es[0])
		}
	}
	for id := range st.orgs {
		if len(st.entries[auditKey{actionOrgCreated, id}]) == 0 {
			t.Errorf("org %s exists without its org.created entry", id)
		}
	}
	for id, rec := range st.records {
		kind := "key."
		if strings.HasPrefix(id, "tok_") {
			kind = "admin_token."
		}
		if !st.made[id] {
			t.Errorf("%s exists without the entry that made it", id)
		}
		if rec["revoked_at"] != nil && len(st.entries[auditKey{kind + "revoked", id}]) == 0 {
			t.Errorf("%s is revoked without its entry", id)
		}
		if rec["expires_at"] != nil && len(st.entries[auditKey{kind + "rolled", id}]) == 0 {
			t.Errorf("%s was rolled without its entry", id)
		}
	}
}

// changeExists says whether the db holds the change e records.
func (st auditState) changeExists(e auditView) bool {
	target := e.TargetIDs[0]
	rec := st.records[target]
	switch e.Action {
	case actionOrgCreated:
		return st.orgs[target]
	case actionKeyCreated, actionTokenCreated:
		return rec != nil
	case actionKeyRevoked, actionTokenRevoked:
		return rec != nil && rec["revoked_at"] != nil
	case actionKeyRolled, actionTokenRolled:
		return rec != nil && rec["expires_at"] != nil && len(e.TargetIDs) == 2 && st.records[e.TargetIDs[1]] != nil
	}
	return false
}

// TestAuditSurvivesSIGKILL: SIGKILL at random moments under concurrent
// admin writes of every kind: after each restart every acknowledged
// change has exactly one entry, no entry lacks its change, and no change
// in the db lacks its entry.
func TestAuditSurvivesSIGKILL(t *testing.T) {
	t.Parallel()
	skipShort(t, "a crash loop restarts keyhole again and again")
	db := filepath.Join(t.TempDir(), "audit.db")
	args := []string{"--db", db, "--admin-token", crashToken, "--flush-interval", "20ms"}
	l := &auditLedger{acked: map[auditKey]bool{}}
	var org string
	const rounds = 6
	for round := 0; round <= rounds; round++ {
		c := startKeyhole(t, args...)
		if round == 0 {
			m := c.admin(crashToken, "POST", "/orgs", `{"name":"acme"}`).json(t)
			org = m["id"].(string)
			l.ack(actionOrgCreated, org, nil, nil)
		} else {
			readAuditState(t, c, org).check(t, l)
			for _, f := range l.failures {
				t.Errorf("a write was answered wrongly: %s", f)
			}
			if t.Failed() {
				t.Fatalf("round %d: the audit log and the data disagree", round)
			}
		}
		if round == rounds {
			t.Logf("%d acknowledged writes checked", len(l.acked))
			return
		}
		client := crashClient(t, c.url())
		stop := new(atomic.Bool)
		t.Cleanup(func() { stop.Store(true) })
		wg := l.load(client, org, stop)
		time.Sleep(time.Duration(100+rand.IntN(200)) * time.Millisecond)
		c.stop(t, syscall.SIGKILL)
		stop.Store(true)
		wg.Wait()
		client.http.CloseIdleConnections()
	}
}

// TestAuditKeyEdits: each PATCH that changes a key leaves one entry, named
// for what it did, with the changed fields' names and none of their
// values; a PATCH that changes nothing, or is refused, leaves none.
func TestAuditKeyEdits(t *testing.T) {
	te := newTestEnv(t)
	org := te.createOrg("acme")
	keyID, _ := te.createKey(org, `{"name":"k","env":"live"}`)
	path := "/orgs/" + org + "/keys/" + keyID
	for _, tt := range []struct {
		body, action string
		fields       []string
	}{
		{`{"enabled":false}`, actionKeyDisabled, []string{"enabled"}},
		{`{"enabled":true,"name":"k2"}`, actionKeyEnabled, []string{"name", "enabled"}},
		{`{"meta":{"plan":"secret-plan-value"},"allowed_ips":["10.0.0.0/8"]}`, actionKeyUpdated, []string{"meta", "allowed_ips"}},
		{`{"credits":{"remaining":5}}`, actionKeyUpdated, []string{"credits"}},
	} {
		before := len(te.allAudit(testRootToken, "/audit"))
		mustStatus(t, tt.body, te.root("PATCH", path, tt.body), 200)
		entries := te.allAudit(testRootToken, "/audit")
		if len(entries) != before+1 {
			t.Fatalf("PATCH %s left %d entries; want 1", tt.body, len(entries)-before)
		}
		e := entries[0]
		if e.Action != tt.action || !reflect.DeepEqual(e.Fields, tt.fields) || !reflect.DeepEqual(e.TargetIDs, []string{keyID}) {
			t.Errorf("PATCH %s: entry %s %v %v; want %s %v", tt.body, e.Action, e.Fields, e.TargetIDs, tt.action, tt.fields)
		}
	}
	before := len(te.allAudit(testRootToken, "/audit"))
	mustStatus(t, "an empty edit", te.root("PATCH", path, `{}`), 200)
	mustStatus(t, "a refused edit", te.root("PATCH", path, `{"enabled":"no"}`), 400)
	if n := len(te.allAudit(testRootToken, "/audit")); n != before {
		t.Fatalf("an empty and a refused PATCH left %d entries; want none", n-before)
	}
	if r := te.root("GET", "/audit", ""); strings.Contains(string(r.body), "secret-plan-value") {
		t.Fatal("an audit entry holds a value of meta")
	}
}
