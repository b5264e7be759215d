package main

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestAdminInputIsStrict: every bad body is a 400 invalid_request naming the
// field, and changes nothing.
func TestAdminInputIsStrict(t *testing.T) {
	te := newTestEnv(t)
	org := te.createOrg("acme")
	keyID, _ := te.createKey(org, `{"name":"k","env":"live"}`)
	tokID := te.root("POST", "/orgs/"+org+"/admin-tokens", `{"name":"t"}`).json(t)["id"].(string)
	tokenPath := "/orgs/" + org + "/admin-tokens/" + tokID
	big := `{"name":"` + strings.Repeat("a", 70<<10) + `"}`
	tests := []struct {
		name, path, body, wantInMessage string
	}{
		{"org unknown field", "/orgs", `{"name":"x","color":"red"}`, `"color"`},
		{"org empty name", "/orgs", `{"name":""}`, `"name"`},
		{"org name wrong type", "/orgs", `{"name":5}`, `"name"`},
		{"org no body", "/orgs", ``, "JSON object"},
		{"org not json", "/orgs", `name=x`, "JSON"},
		{"org two objects", "/orgs", `{"name":"a"}{"name":"b"}`, "after the object"},
		{"org too big", "/orgs", big, "65536"},
		{"org control chars", "/orgs", `{"name":"a\u0000b"}`, `"name"`},
		{"key no env", "/orgs/" + org + "/keys", `{"name":"k"}`, `"env"`},
		{"key bad env", "/orgs/" + org + "/keys", `{"name":"k","env":"prod"}`, `"env"`},
		{"key bad scope", "/orgs/" + org + "/keys", `{"name":"k","env":"live","scopes":["has space"]}`, `"scopes"`},
		{"key scopes not list", "/orgs/" + org + "/keys", `{"name":"k","env":"live","scopes":"a"}`, `"scopes"`},
		{"key zero limit", "/orgs/" + org + "/keys", `{"name":"k","env":"live","rate_limits":[{"limit":0,"window":"1m"}]}`, `"rate_limits"`},
		{"key bad window", "/orgs/" + org + "/keys", `{"name":"k","env":"live","rate_limits":[{"limit":5,"window":"soon"}]}`, `"rate_limits"`},
		{"key sub-second window", "/orgs/" + org + "/keys", `{"name":"k","env":"live","rate_limits":[{"limit":5,"window":"500ms"}]}`, `"rate_limits"`},
		{"key empty limits", "/orgs/" + org + "/keys", `{"name":"k","env":"live","rate_limits":[]}`, `"rate_limits"`},
		{"key limit unknown field", "/orgs/" + org + "/keys", `{"name":"k","env":"live","rate_limits":[{"limit":5,"window":"1m","burst":3}]}`, `"burst"`},
		{"key past expiry", "/orgs/" + org + "/keys", `{"name":"k","env":"live","expires_at":"2001-01-01T00:00:00Z"}`, `"expires_at"`},
		{"key bad expiry", "/orgs/" + org + "/keys", `{"name":"k","env":"live","expires_at":"tomorrow"}`, `"expires_at"`},
		{"key hash field", "/orgs/" + org + "/keys", `{"name":"k","env":"live","hash":"00"}`, `"hash"`},
		{"token no name", "/orgs/" + org + "/admin-tokens", `{}`, `"name"`},
		{"roll bad duration", "/orgs/" + org + "/keys/" + keyID + "/roll", `{"expires_in":"forever"}`, `"expires_in"`},
		{"roll negative", "/orgs/" + org + "/keys/" + keyID + "/roll", `{"expires_in":"-1h"}`, `"expires_in"`},
		{"revoke unknown field", "/orgs/" + org + "/keys/" + keyID + "/revoke", `{"now":true}`, `"now"`},
		// encoding/json matches names in any case and takes the last of a
		// name given twice; neither is let through.
		{"org name in capitals", "/orgs", `{"NAME":"x"}`, `"NAME"`},
		{"org name twice", "/orgs", `{"name":"a","name":"b"}`, `"name" appears twice`},
		{"org name twice, escaped", "/orgs", `{"name":"a","n\u0061me":"b"}`, `"name" appears twice`},
		{"key env capitalized", "/orgs/" + org + "/keys", `{"name":"k","Env":"live"}`, `"Env"`},
		{"key scopes with a long s", "/orgs/" + org + "/keys", `{"name":"k","env":"live","\u017fcopes":["a:b"]}`, `"ſcopes"`},
		{"key limit capitalized", "/orgs/" + org + "/keys", `{"name":"k","env":"live","rate_limits":[{"Limit":5,"window":"1m"}]}`, `"Limit"`},
		{"key window twice", "/orgs/" + org + "/keys", `{"name":"k","env":"live","rate_limits":[{"limit":5,"window":"1h","window":"1m"}]}`, `"window" appears twice`},
		{"token name twice", "/orgs/" + org + "/admin-tokens", `{"name":"a","name":"a"}`, `"name" appears twice`},
		{"roll capitalized", "/orgs/" + org + "/keys/" + keyID + "/roll", `{"Expires_In":"1h"}`, `"Expires_In"`},
		{"token roll bad duration", tokenPath + "/roll", `{"expires_in":"forever"}`, `"expires_in"`},
		{"token roll too long", tokenPath + "/roll", `{"expires_in":"9000h"}`, `"expires_in"`},
		{"token roll unknown field", tokenPath + "/roll", `{"expires_in":"1h","grace":"1h"}`, `"grace"`},
		{"token roll twice", tokenPath + "/roll", `{"expires_in":"1h","expires_in":"2h"}`, `"expires_in" appears twice`},
		{"token revoke unknown field", tokenPath + "/revoke", `{"now":true}`, `"now"`},
		{"token revoke not an object", tokenPath + "/revoke", `[]`, "JSON object"},
		{"root roll unknown field", "/admin-token/roll", `{"token":"mine"}`, `"token"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := te.root("POST", tt.path, tt.body)
			if r.status != 400 || r.errorCode(t) != "invalid_request" {
				t.Fatalf("status = %d %s; want 400 invalid_request", r.status, r.body)
			}
			msg := r.json(t)["error"].(map[string]any)["message"].(string)
			if !strings.Contains(msg, tt.wantInMessage) {
				t.Fatalf("message %q does not name %s", msg, tt.wantInMessage)
			}
		})
	}
	orgs := te.root("GET", "/orgs", "").json(t)["orgs"].([]any)
	keys := te.root("GET", "/orgs/"+org+"/keys?include_revoked=true", "").json(t)["keys"].([]any)
	tokens := te.root("GET", "/orgs/"+org+"/admin-tokens?include_revoked=true", "").json(t)["admin_tokens"].([]any)
	audit := te.root("GET", "/audit", "").json(t)["entries"].([]any)
	if len(orgs) != 1 || len(keys) != 1 || keys[0].(map[string]any)["revoked_at"] != nil ||
		len(tokens) != 1 || tokens[0].(map[string]any)["revoked_at"] != nil || len(audit) != 4 {
		t.Fatalf("bad requests changed state: %d orgs, keys %v, tokens %v, %d audit entries", len(orgs), keys, tokens, len(audit))
	}
	mustStatus(t, "the root token after the bad rolls", te.root("GET", "/orgs", ""), 200)
}

func TestAdminAuth(t *testing.T) {
	te := newTestEnv(t)
	tests := []struct {
		name    string
		headers []string
		status  int
		code    string
	}{
		{"no token", nil, 401, "missing_authorization"},
		{"basic", []string{"Authorization", "Basic eDp5"}, 401, "invalid_scheme"},
		{"wrong token", []string{"Authorization", "Bearer kh_admin_" + strings.Repeat("9", 32)}, 401, "invalid_or_revoked"},
		{"a key is not an admin token", []string{"Authorization", "Bearer kh_live_" + strings.Repeat("9", 32)}, 401, "invalid_or_revoked"},
		{"root", []string{"Authorization", "Bearer " + testRootToken}, 200, ""},
	}
	for _, tt := range tests {
		r := te.do("GET", "/admin/v1/orgs", "", tt.headers...)
		if r.status != tt.status || tt.code != "" && r.errorCode(t) != tt.code {
			t.Errorf("%s: %d %s; want %d %s", tt.name, r.status, r.body, tt.status, tt.code)
		}
	}
	if r := te.root("GET", "/orgs/org_nope", ""); r.status != 404 || r.errorCode(t) != "not_found" {
		t.Errorf("unknown org = %d %s; want 404 not_found", r.status, r.body)
	}
	if r := te.do("GET", "/admin/v1/nothing", ""); r.status != 404 || r.errorCode(t) != "not_found" {
		t.Errorf("unknown route = %d %s; want 404 in the error shape", r.status, r.body)
	}
}

func TestAdminTokenThrottle(t *testing.T) {
	te := newTestEnv(t)
	for i := 0; i < maxFails; i++ {
		te.admin("kh_admin_"+strings.Repeat("1", 32), "GET", "/orgs", "")
	}
	if r := te.root("GET", "/orgs", ""); r.status != 429 {
		t.Fatalf("after %d failures even the right token = %d; want 429", maxFails, r.status)
	}
	te.clock.Advance(failWindow)
	mustStatus(t, "after the window", te.root("GET", "/orgs", ""), 200)
}

func TestOrgIsolation(t *testing.T) {
	te := newTestEnv(t)
	a, b := te.createOrg("a"), te.createOrg("b")
	r := te.root("POST", "/orgs/"+a+"/admin-tokens", `{"name":"ci"}`)
	mustStatus(t, "create admin token", r, 201)
	tokenA := r.json(t)["token"].(string)
	if !regexp.MustCompile(`^kh_orgadmin_[0-9a-f]{32}$`).MatchString(tokenA) {
		t.Fatalf("org admin token %q has the wrong shape", tokenA)
	}
	keyB, _ := te.createKey(b, `{"name":"kb","env":"live"}`)
	tokB := te.root("POST", "/orgs/"+b+"/admin-tokens", `{"name":"b"}`).json(t)["id"].(string)
	tests := []struct {
		method, path, body string
		want               int
	}{
		{"GET", "/orgs/" + a, "", 200},
		{"POST", "/orgs/" + a + "/keys", `{"name":"x","env":"test"}`, 201},
		{"GET", "/orgs/" + a + "/keys", "", 200},
		{"GET", "/orgs/" + a + "/logs", "", 200},
		{"GET", "/orgs/" + a + "/usage", "", 200},
		{"GET", "/orgs/" + b, "", 404},
		{"GET", "/orgs/" + b + "/keys", "", 404},
		{"GET", "/orgs/" + b + "/keys/" + keyB, "", 404},
		{"POST", "/orgs/" + b + "/keys/" + keyB + "/revoke", "", 404},
		{"POST", "/orgs/" + b + "/keys/" + keyB + "/roll", "", 404},
		{"POST", "/orgs/" + b + "/keys", `{"name":"x","env":"test"}`, 404},
		{"GET", "/orgs/" + b + "/logs", "", 404},
		{"GET", "/orgs/" + b + "/usage", "", 404},
		{"GET", "/orgs/" + a + "/keys/" + keyB, "", 404},
		{"GET", "/orgs/" + a + "/admin-tokens", "", 200},
		{"GET", "/orgs/" + a + "/audit", "", 200},
		{"GET", "/orgs/" + b + "/admin-tokens", "", 404},
		{"POST", "/orgs/" + b + "/admin-tokens/" + tokB + "/revoke", "", 404},
		{"POST", "/orgs/" + b + "/admin-tokens/" + tokB + "/roll", "", 404},
		{"POST", "/orgs/" + a + "/admin-tokens/" + tokB + "/revoke", "", 404},
		{"GET", "/orgs/" + b + "/audit", "", 404},
		{"PATCH", "/orgs/" + b + "/keys/" + keyB, `{"enabled":false}`, 404},
		{"PATCH", "/orgs/" + a + "/keys/" + keyB, `{"enabled":false}`, 404},
		{"GET", "/orgs/" + b + "/usage?key_id=" + keyB, "", 404},
		{"GET", "/orgs/" + a + "/usage?key_id=" + keyB, "", 404},
		{"POST", "/orgs", `{"name":"c"}`, 403},
		{"POST", "/orgs/" + a + "/admin-tokens", `{"name":"x"}`, 403},
		{"GET", "/logs", "", 403},
		{"GET", "/backup", "", 403},
		{"GET", "/audit", "", 403},
		{"POST", "/admin-token/roll", "", 403},
	}
	for _, tt := range tests {
		r := te.admin(tokenA, tt.method, tt.path, tt.body)
		if r.status != tt.want {
			t.Errorf("org admin %s %s = %d %s; want %d", tt.method, tt.path, r.status, r.body, tt.want)
		}
	}
	orgs := te.admin(tokenA, "GET", "/orgs", "").json(t)["orgs"].([]any)
	if len(orgs) != 1 || orgs[0].(map[string]any)["id"] != a {
		t.Fatalf("org admin lists %v; want only its own org", orgs)
	}
	if r := te.admin("kh_orgadmin_"+strings.Repeat("0", 32), "GET", "/orgs/"+a, ""); r.status != 401 {
		t.Fatalf("unknown admin token = %d; want 401", r.status)
	}
}

func TestRevokeRollExpiry(t *testing.T) {
	te := newTestEnv(t)
	org := te.createOrg("acme")
	id, key := te.createKey(org, `{"name":"k","env":"live","scopes":["a:b"],"rate_limits":[{"limit":50,"window":"60s"}]}`)
	mustStatus(t, "before revoke", te.whoami(envLive, key), 200)

	r := te.root("POST", "/orgs/"+org+"/keys/"+id+"/revoke", "")
	mustStatus(t, "revoke", r, 200)
	revokedAt := r.json(t)["revoked_at"]
	if revokedAt == nil {
		t.Fatalf("revoke answer has no revoked_at: %s", r.body)
	}
	if r := te.whoami(envLive, key); r.errorCode(t) != "invalid_or_revoked" {
		t.Fatalf("revoked key = %d %s; want invalid_or_revoked", r.status, r.body)
	}
	te.clock.Advance(time.Minute)
	again := te.root("POST", "/orgs/"+org+"/keys/"+id+"/revoke", "")
	if again.status != 200 || again.json(t)["revoked_at"] != revokedAt {
		t.Fatalf("second revoke = %d %s; want 200 with the same revoked_at", again.status, again.body)
	}
	if r := te.root("POST", "/orgs/"+org+"/keys/"+id+"/roll", ""); r.status != 400 {
		t.Fatalf("roll of a revoked key = %d; want 400", r.status)
	}
	list := te.root("GET", "/orgs/"+org+"/keys", "").json(t)["keys"].([]any)
	withRevoked := te.root("GET", "/orgs/"+org+"/keys?include_revoked=true", "").json(t)["keys"].([]any)
	if len(list) != 0 || len(withRevoked) != 1 {
		t.Fatalf("listing: %d active, %d with revoked; want 0 and 1", len(list), len(withRevoked))
	}

	// Roll with a grace period: both keys work until it ends.
	oldID, old := te.createKey(org, `{"name":"rolling","env":"live","scopes":["a:b"],"rate_limits":[{"limit":50,"window":"1m"}]}`)
	r = te.root("POST", "/orgs/"+org+"/keys/"+oldID+"/roll", `{"expires_in":"1h"}`)
	mustStatus(t, "roll", r, 201)
	m := r.json(t)
	fresh := m["key"].(string)
	if m["name"] != "rolling" || m["env"] != "live" || m["id"] == oldID || len(m["scopes"].([]any)) != 1 ||
		m["rate_limits"].([]any)[0].(map[string]any)["limit"] != 50.0 {
		t.Fatalf("rolled key = %s; want same name, env, scopes, limits and a new id", r.body)
	}
	mustStatus(t, "old key in grace", te.whoami(envLive, old), 200)
	mustStatus(t, "new key", te.whoami(envLive, fresh), 200)
	te.clock.Advance(time.Hour)
	if r := te.whoami(envLive, old); r.errorCode(t) != "key_expired" {
		t.Fatalf("old key after grace = %d %s; want key_expired", r.status, r.body)
	}
	mustStatus(t, "new key after grace", te.whoami(envLive, fresh), 200)

	// Roll without a grace period: the old key stops at once.
	r = te.root("POST", "/orgs/"+org+"/keys/"+m["id"].(string)+"/roll", "")
	mustStatus(t, "roll now", r, 201)
	if r := te.whoami(envLive, fresh); r.errorCode(t) != "key_expired" {
		t.Fatalf("rolled-away key = %d %s; want key_expired", r.status, r.body)
	}
}

// TestRollKeepsExpiry: rolling a temporary key never extends its life. The
// new key keeps the old one's expires_at, also after a restart; a grace
// period longer than the time left does not push the old one's back; an
// expired key cannot be rolled.
func TestRollKeepsExpiry(t *testing.T) {
	te := newTestEnv(t)
	org := te.createOrg("acme")
	const end = "2026-11-24T22:30:00.000Z" // two hours after the test clock's start
	id, _ := te.createKey(org, `{"name":"temp","env":"live","expires_at":"`+end+`"}`)
	expiry := func(id string) any {
		r := te.root("GET", "/orgs/"+org+"/keys/"+id, "")
		mustStatus(t, "get "+id, r, 200)
		return r.json(t)["expires_at"]
	}

	r := te.root("POST", "/orgs/"+org+"/keys/"+id+"/roll", `{"expires_in":"24h"}`)
	mustStatus(t, "roll with a long grace", r, 201)
	m := r.json(t)
	if m["expires_at"] != end || expiry(id) != end {
		t.Fatalf("new key expires at %v, old at %v; want both %s", m["expires_at"], expiry(id), end)
	}
	r = te.root("POST", "/orgs/"+org+"/keys/"+m["id"].(string)+"/roll", `{"expires_in":"30m"}`)
	mustStatus(t, "roll with a short grace", r, 201)
	second, newest := m["id"].(string), r.json(t)
	if newest["expires_at"] != end || expiry(second) != "2026-11-24T21:00:00.000Z" {
		t.Fatalf("new key expires at %v, old at %v; want %s and 21:00", newest["expires_at"], expiry(second), end)
	}

	te.restart()
	if got := expiry(newest["id"].(string)); got != end {
		t.Fatalf("after a restart the rolled key expires at %v; want %s", got, end)
	}
	mustStatus(t, "rolled key before its end", te.whoami(envLive, newest["key"].(string)), 200)
	te.clock.Advance(2 * time.Hour)
	if r := te.whoami(envLive, newest["key"].(string)); r.errorCode(t) != "key_expired" {
		t.Fatalf("rolled key after the old one's end = %d %s; want key_expired", r.status, r.body)
	}
	r = te.root("POST", "/orgs/"+org+"/keys/"+newest["id"].(string)+"/roll", "")
	if r.status != 400 || r.errorCode(t) != "invalid_request" {
		t.Fatalf("roll of an expired key = %d %s; want 400 invalid_request", r.status, r.body)
	}
}
