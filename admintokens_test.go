package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// issueOrgToken has root issue an admin token for org; it returns the
// answer's id and token.
func (te *testEnv) issueOrgToken(org, name string) (id, token string) {
	te.t.Helper()
	r := te.root("POST", "/orgs/"+org+"/admin-tokens", `{"name":"`+name+`"}`)
	mustStatus(te.t, "issue admin token", r, 201)
	m := r.json(te.t)
	return m["id"].(string), m["token"].(string)
}

type tokensAnswer struct {
	AdminTokens []tokenView `json:"admin_tokens"`
}

// listTokens lists org's admin tokens, revoked ones included, as token.
func (te *testEnv) listTokens(token, org string) map[string]tokenView {
	te.t.Helper()
	r := te.admin(token, "GET", "/orgs/"+org+"/admin-tokens?include_revoked=true", "")
	mustStatus(te.t, "list admin tokens", r, 200)
	if strings.Contains(string(r.body), `"hash"`) || strings.Contains(string(r.body), `"token"`) {
		te.t.Fatalf("the listing shows a hash or a token: %s", r.body)
	}
	var a tokensAnswer
	if err := json.Unmarshal(r.body, &a); err != nil {
		te.t.Fatal(err)
	}
	byID := map[string]tokenView{}
	for _, v := range a.AdminTokens {
		byID[v.ID] = v
	}
	return byID
}

// TestAdminTokenRevoke: an org admin lists its organization's tokens and
// revokes one, its own included; a revoked token is refused from the next
// request on, after a restart too, and stays listed as revoked.
func TestAdminTokenRevoke(t *testing.T) {
	te := newTestEnv(t)
	org := te.createOrg("acme")
	ciID, ci := te.issueOrgToken(org, "ci")
	opsID, ops := te.issueOrgToken(org, "ops")

	listed := te.listTokens(ops, org)
	v := listed[ciID]
	if len(listed) != 2 || v.Name != "ci" || v.OrgID != org || v.Prefix == nil || !strings.HasPrefix(ci, *v.Prefix) ||
		*v.Prefix != ci[:len("kh_orgadmin_")+8] || v.RevokedAt != nil || v.ExpiresAt != nil || v.LastUsedAt != nil {
		t.Fatalf("listing = %+v; want ci with the token's first 8 hex as prefix, never used", listed)
	}
	if lu := listed[opsID].LastUsedAt; lu == nil || *lu != formatTime(te.clock.Now().UnixNano()) {
		t.Fatalf("the listing token's last_used_at = %v; want now", lu)
	}

	r := te.admin(ops, "POST", "/orgs/"+org+"/admin-tokens/"+ciID+"/revoke", "")
	mustStatus(t, "revoke ci", r, 200)
	if r.json(t)["revoked_at"] == nil {
		t.Fatalf("revoke answer %s has no revoked_at", r.body)
	}
	if r := te.admin(ci, "GET", "/orgs/"+org, ""); r.status != 401 || r.errorCode(t) != "invalid_or_revoked" {
		t.Fatalf("revoked token's next call = %d %s; want 401 invalid_or_revoked", r.status, r.body)
	}
	te.clock.Advance(time.Minute)
	again := te.admin(ops, "POST", "/orgs/"+org+"/admin-tokens/"+ciID+"/revoke", "")
	if again.status != 200 || again.json(t)["revoked_at"] != r.json(t)["revoked_at"] {
		t.Fatalf("second revoke = %d %s; want 200 with revoked_at", again.status, again.body)
	}
	active := te.admin(ops, "GET", "/orgs/"+org+"/admin-tokens", "").json(t)["admin_tokens"].([]any)
	if len(active) != 1 {
		t.Fatalf("listing without include_revoked = %v; want ops only", active)
	}

	// Revoking the token in use: the call answers, the next is refused.
	mustStatus(t, "revoke itself", te.admin(ops, "POST", "/orgs/"+org+"/admin-tokens/"+opsID+"/revoke", ""), 200)
	if r := te.admin(ops, "GET", "/orgs/"+org, ""); r.status != 401 {
		t.Fatalf("the token that revoked itself = %d; want 401", r.status)
	}
	te.restart()
	for _, tok := range []string{ci, ops} {
		if r := te.admin(tok, "GET", "/orgs/"+org, ""); r.status != 401 {
			t.Fatalf("a revoked token after a restart = %d; want 401", r.status)
		}
	}
	if l := te.listTokens(testRootToken, org); l[ciID].RevokedAt == nil || l[opsID].RevokedAt == nil {
		t.Fatalf("after a restart the listing = %+v; want both revoked", l)
	}
}

// TestAdminTokenRoll: a roll answers a new token once, with the old one's
// name; the old one stops at once, or when its grace period ends; a
// revoked or expired token cannot be rolled.
func TestAdminTokenRoll(t *testing.T) {
	te := newTestEnv(t)
	org := te.createOrg("acme")
	oldID, old := te.issueOrgToken(org, "deploy")

	r := te.admin(old, "POST", "/orgs/"+org+"/admin-tokens/"+oldID+"/roll", `{"expires_in":"1h"}`)
	mustStatus(t, "roll with grace", r, 201)
	var fresh tokenView
	json.Unmarshal(r.body, &fresh)
	if fresh.ID == oldID || fresh.Name != "deploy" || !strings.HasPrefix(fresh.Token, "kh_orgadmin_") ||
		fresh.Prefix == nil || !strings.HasPrefix(fresh.Token, *fresh.Prefix) || fresh.ExpiresAt != nil {
		t.Fatalf("rolled token answer = %s", r.body)
	}
	mustStatus(t, "old token in its grace", te.admin(old, "GET", "/orgs/"+org, ""), 200)
	mustStatus(t, "new token", te.admin(fresh.Token, "GET", "/orgs/"+org, ""), 200)
	if e := te.listTokens(fresh.Token, org)[oldID].ExpiresAt; e == nil || *e != formatTime(te.clock.Now().Add(time.Hour).UnixNano()) {
		t.Fatalf("old token's expires_at = %v; want in an hour", e)
	}
	te.restart()
	mustStatus(t, "old token in its grace after a restart", te.admin(old, "GET", "/orgs/"+org, ""), 200)
	te.clock.Advance(time.Hour)
	if r := te.admin(old, "GET", "/orgs/"+org, ""); r.status != 401 {
		t.Fatalf("old token after its grace = %d; want 401", r.status)
	}
	if r := te.root("POST", "/orgs/"+org+"/admin-tokens/"+oldID+"/roll", ""); r.status != 400 || r.errorCode(t) != "invalid_request" {
		t.Fatalf("roll of an expired token = %d %s; want 400", r.status, r.body)
	}

	// Without a grace period the old token stops at once.
	r = te.admin(fresh.Token, "POST", "/orgs/"+org+"/admin-tokens/"+fresh.ID+"/roll", "")
	mustStatus(t, "roll now", r, 201)
	newest := r.json(t)["token"].(string)
	if r := te.admin(fresh.Token, "GET", "/orgs/"+org, ""); r.status != 401 {
		t.Fatalf("token rolled without grace = %d; want 401", r.status)
	}
	mustStatus(t, "newest token", te.admin(newest, "GET", "/orgs/"+org, ""), 200)
	te.restart()
	if r := te.admin(fresh.Token, "GET", "/orgs/"+org, ""); r.status != 401 {
		t.Fatalf("token rolled without grace, after a restart = %d; want 401", r.status)
	}

	revID, _ := te.issueOrgToken(org, "gone")
	mustStatus(t, "revoke", te.root("POST", "/orgs/"+org+"/admin-tokens/"+revID+"/revoke", ""), 200)
	if r := te.root("POST", "/orgs/"+org+"/admin-tokens/"+revID+"/roll", ""); r.status != 400 || r.errorCode(t) != "invalid_request" {
		t.Fatalf("roll of a revoked token = %d %s; want 400", r.status, r.body)
	}
	if r := te.root("POST", "/orgs/"+org+"/admin-tokens/tok_0000000000000000/roll", ""); r.status != 404 || r.errorCode(t) != "not_found" {
		t.Fatalf("roll of an unknown token = %d %s; want 404", r.status, r.body)
	}
}

// TestRootTokenRoll: the old root token is refused from the next request
// on, after a restart too, even with the same --admin-token; a new
// --admin-token value replaces the rolled one.
func TestRootTokenRoll(t *testing.T) {
	te := newTestEnv(t)
	org := te.createOrg("acme")
	_, orgToken := te.issueOrgToken(org, "ci")
	if r := te.admin(orgToken, "POST", "/admin-token/roll", ""); r.status != 403 || r.errorCode(t) != "forbidden" {
		t.Fatalf("org admin rolling root = %d %s; want 403", r.status, r.body)
	}
	r := te.root("POST", "/admin-token/roll", "")
	mustStatus(t, "roll root", r, 201)
	fresh := r.json(t)["token"].(string)
	if !strings.HasPrefix(fresh, "kh_admin_") || len(fresh) != len("kh_admin_")+32 {
		t.Fatalf("new root token %q has the wrong shape", fresh)
	}
	if r := te.root("GET", "/orgs", ""); r.status != 401 || r.errorCode(t) != "invalid_or_revoked" {
		t.Fatalf("old root token's next call = %d %s; want 401", r.status, r.body)
	}
	mustStatus(t, "new root token", te.admin(fresh, "GET", "/orgs", ""), 200)
	mustStatus(t, "org token after the root roll", te.admin(orgToken, "GET", "/orgs/"+org, ""), 200)

	te.restart() // with the same --admin-token as before the roll
	if r := te.root("GET", "/orgs", ""); r.status != 401 {
		t.Fatalf("rolled root token after a restart with the same --admin-token = %d; want 401", r.status)
	}
	mustStatus(t, "new root token after a restart", te.admin(fresh, "GET", "/orgs", ""), 200)

	te.cfg.adminToken = "kh_admin_" + strings.Repeat("5", 32)
	te.restart()
	mustStatus(t, "a new --admin-token value", te.admin(te.cfg.adminToken, "GET", "/orgs", ""), 200)
	if r := te.admin(fresh, "GET", "/orgs", ""); r.status != 401 {
		t.Fatalf("the rolled token after a new --admin-token = %d; want 401", r.status)
	}
}

// TestAdminTokenLastUsedIsWrittenBehind: a token's use costs its request
// no bbolt write; the flush writes its last use, which a restart reads.
func TestAdminTokenLastUsedIsWrittenBehind(t *testing.T) {
	te := newTestEnv(t)
	org := te.createOrg("acme")
	id, token := te.issueOrgToken(org, "ci")
	pageWrites := func() int64 { st := te.s.store.db.Stats(); return st.TxStats.GetWrite() }
	writes := pageWrites()
	for range 20 {
		te.clock.Advance(time.Second)
		mustStatus(t, "org admin call", te.admin(token, "GET", "/orgs/"+org+"/keys", ""), 200)
	}
	if n := pageWrites() - writes; n != 0 {
		t.Fatalf("20 admin calls wrote %d pages; want none before the flush", n)
	}
	used := formatTime(te.clock.Now().UnixNano())
	te.restart()
	if lu := te.listTokens(testRootToken, org)[id].LastUsedAt; lu == nil || *lu != used {
		t.Fatalf("last_used_at after a restart = %v; want %s", lu, used)
	}
}

// TestTokensFromAnOlderDB: a token stored before tokens had a prefix,
// expiry or revocation still works, is listed with its name and no
// prefix, learns its prefix from its next use (kept across a restart),
// and can be revoked.
func TestTokensFromAnOlderDB(t *testing.T) {
	te := newTestEnv(t)
	org := te.createOrg("acme")
	const token = "kh_orgadmin_0123456789abcdef0123456789abcdef"
	hash := hashKey(token)
	old, _ := json.Marshal(map[string]any{"id": "tok_00000000000000aa", "org_id": org, "name": "legacy",
		"hash": hash, "created_at": te.clock.Now().UnixNano()})
	err := te.s.store.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTokens).Put([]byte("tok_00000000000000aa"), old) // bare JSON, as before version bytes
	})
	if err != nil {
		t.Fatal(err)
	}
	te.restart()
	v := te.listTokens(testRootToken, org)["tok_00000000000000aa"]
	if v.Name != "legacy" || v.Prefix != nil || v.RevokedAt != nil {
		t.Fatalf("an old token is listed as %+v; want its name, no prefix yet", v)
	}
	mustStatus(t, "old token", te.admin(token, "GET", "/orgs/"+org, ""), 200)
	te.restart()
	v = te.listTokens(testRootToken, org)["tok_00000000000000aa"]
	if v.Prefix == nil || *v.Prefix != "kh_orgadmin_01234567" || v.LastUsedAt == nil {
		t.Fatalf("the old token after its use and a restart = %+v; want prefix kh_orgadmin_01234567", v)
	}
	mustStatus(t, "revoke the old token", te.root("POST", "/orgs/"+org+"/admin-tokens/tok_00000000000000aa/revoke", ""), 200)
	if r := te.admin(token, "GET", "/orgs/"+org, ""); r.status != 401 {
		t.Fatalf("the revoked old token = %d; want 401", r.status)
	}
}

// TestAdminTokenIsolation: an org admin may list, revoke and roll its own
// organization's tokens only, and issue none.
func TestAdminTokenIsolation(t *testing.T) {
	te := newTestEnv(t)
	a, b := te.createOrg("a"), te.createOrg("b")
	_, tokenA := te.issueOrgToken(a, "a")
	idB, tokenB := te.issueOrgToken(b, "b")
	for _, tt := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/orgs/" + b + "/admin-tokens", 404},
		{"POST", "/orgs/" + b + "/admin-tokens/" + idB + "/revoke", 404},
		{"POST", "/orgs/" + b + "/admin-tokens/" + idB + "/roll", 404},
		{"POST", "/orgs/" + a + "/admin-tokens/" + idB + "/revoke", 404}, // b's token under a's path
		{"POST", "/orgs/" + a + "/admin-tokens/" + idB + "/roll", 404},
		{"POST", "/orgs/" + a + "/admin-tokens", 403},
	} {
		body := ""
		if tt.want == 403 {
			body = `{"name":"x"}`
		}
		r := te.admin(tokenA, tt.method, tt.path, body)
		if r.status != tt.want {
			t.Errorf("org admin %s %s = %d %s; want %d", tt.method, tt.path, r.status, r.body, tt.want)
		}
	}
	if l := te.listTokens(tokenA, a); len(l) != 1 {
		t.Errorf("org a lists %d tokens; want its own one", len(l))
	}
	mustStatus(t, "b's token, untouched", te.admin(tokenB, "GET", "/orgs/"+b, ""), 200)
}
