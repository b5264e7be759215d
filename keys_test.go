package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseKey(t *testing.T) {
	prefixed := keyFormat{brand: "kh", style: stylePrefixed}
	split := keyFormat{brand: "kh", style: styleSplit}
	hex32 := strings.Repeat("ab", 16)
	hex16 := strings.Repeat("cd", 8)
	tests := []struct {
		name       string
		f          keyFormat
		token      string
		wantLookup string
		wantErr    string
	}{
		{"live key", prefixed, "kh_live_" + hex32, "kh_live_abababab", ""},
		{"test key", prefixed, "kh_test_" + hex32, "kh_test_abababab", ""},
		{"unknown env", prefixed, "kh_prod_" + hex32, "", msgMalformed},
		{"other brand", prefixed, "ck_live_" + hex32, "", msgMalformed},
		{"short", prefixed, "kh_live_" + hex32[:31], "", msgMalformed},
		{"upper hex", prefixed, "kh_live_" + strings.ToUpper(hex32), "", msgMalformed},
		{"trailing junk", prefixed, "kh_live_" + hex32 + "x", "", msgMalformed},
		{"empty", prefixed, "", "", msgMalformed},
		{"too long", prefixed, strings.Repeat("a", 300), "", msgMalformed},
		{"split key", split, "khpub_" + hex16 + ".khsec_" + hex32, "khpub_" + hex16, ""},
		{"split key on prefixed server", prefixed, "khpub_" + hex16 + ".khsec_" + hex32, "khpub_" + hex16, ""},
		{"prefixed key on split server", split, "kh_test_" + hex32, "kh_test_abababab", ""},
		{"split without dot", split, "khpub_" + hex16, "", msgMalformedSplit},
		{"split without secret", split, "khpub_" + hex16 + ".", "", msgMalformedSplit},
		{"split without public", split, ".khsec_" + hex32, "", msgMalformedSplit},
		{"split short secret", split, "khpub_" + hex16 + ".khsec_" + hex16, "", msgMalformedSplit},
		{"split parts swapped", split, "khsec_" + hex32 + ".khpub_" + hex16, "", msgMalformedSplit},
		{"split too long", split, "khpub_" + hex16 + ".khsec_" + strings.Repeat("a", 300), "", msgMalformedSplit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := tt.f.parse(tt.token)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("parse(%q) error = %v; want %q", tt.token, err, tt.wantErr)
				}
				return
			}
			if err != nil || p.lookup != tt.wantLookup || p.whole != tt.token {
				t.Fatalf("parse(%q) = %+v, %v; want lookup %q", tt.token, p, err, tt.wantLookup)
			}
		})
	}
}

func TestNewKeyShapes(t *testing.T) {
	prefixed := regexp.MustCompile(`^kh_(test|live)_[0-9a-f]{32}$`)
	split := regexp.MustCompile(`^khpub_[0-9a-f]{16}\.khsec_[0-9a-f]{32}$`)
	for _, f := range []keyFormat{{"kh", stylePrefixed}, {"kh", styleSplit}} {
		seen := map[string]bool{}
		for i := 0; i < 100; i++ {
			key, lookup := f.newKey(envLive)
			if f.style == stylePrefixed && !prefixed.MatchString(key) || f.style == styleSplit && !split.MatchString(key) {
				t.Fatalf("newKey = %q; not %s style", key, f.style)
			}
			p, err := f.parse(key)
			if err != nil || p.lookup != lookup {
				t.Fatalf("parse(newKey) = %+v, %v; want lookup %q", p, err, lookup)
			}
			if seen[key] {
				t.Fatalf("newKey repeated %q", key)
			}
			seen[key] = true
		}
	}
}

// TestErrorRows sends one request per row of SPEC 3 and checks status, code,
// message and the body's shape.
func TestErrorRows(t *testing.T) {
	rules := filepath.Join(t.TempDir(), "rules.json")
	os.WriteFile(rules, []byte(`[{"method":"POST","path":"/api/v1/*/sms/send","scope":"sms:send"},
		{"method":"GET","path":"/api/v1/*/whoami","scope":"whoami:read"}]`), 0o600)
	te := newTestEnv(t, func(c *config) { c.rulesPath = rules })
	org := te.createOrg("acme")
	_, live := te.createKey(org, `{"name":"l","env":"live","scopes":["whoami:read"]}`)
	_, test := te.createKey(org, `{"name":"t","env":"test","scopes":["whoami:read"]}`)
	_, noScope := te.createKey(org, `{"name":"n","env":"live"}`)
	revokedID, revoked := te.createKey(org, `{"name":"r","env":"live","scopes":["*"]}`)
	mustStatus(t, "revoke", te.root("POST", "/orgs/"+org+"/keys/"+revokedID+"/revoke", ""), 200)
	expiring := te.clock.Now().Add(time.Hour).Format(time.RFC3339)
	_, expired := te.createKey(org, `{"name":"e","env":"live","scopes":["*"],"expires_at":"`+expiring+`"}`)
	_, minute := te.createKey(org, `{"name":"m","env":"live","scopes":["*"],"rate_limits":[{"limit":1,"window":"1m"},{"limit":100,"window":"1h"}]}`)
	_, hourly := te.createKey(org, `{"name":"h","env":"live","scopes":["*"],"rate_limits":[{"limit":10,"window":"1m"},{"limit":1,"window":"1h"}]}`)
	_, daily := te.createKey(org, `{"name":"d","env":"live","scopes":["*"],"rate_limits":[{"limit":1,"window":"1d"}]}`)
	wrongSecret := live[:len(live)-4] + "0000"
	if wrongSecret == live {
		wrongSecret = live[:len(live)-4] + "1111"
	}
	for _, k := range []string{minute, hourly, daily} {
		mustStatus(t, "first call", te.whoami(envLive, k), 200)
	}
	te.clock.Advance(2 * time.Hour)

	tests := []struct {
		name    string
		path    string
		headers []string
		status  int
		code    string
		message string
	}{
		{"no header", "/api/v1/prod/whoami", nil, 401, "missing_authorization", "Missing Authorization header."},
		{"basic scheme", "/api/v1/prod/whoami", []string{"Authorization", "Basic dXNlcjpwYXNz"}, 401, "invalid_scheme", "Authorization header must use the `Bearer <api key>` scheme."},
		{"bare token", "/api/v1/prod/whoami", []string{"Authorization", live}, 401, "invalid_scheme", "Authorization header must use the `Bearer <api key>` scheme."},
		{"malformed", "/api/v1/prod/whoami", bearer("kh_live_nothex"), 401, "malformed_token", "API key is malformed."},
		{"too long", "/api/v1/prod/whoami", bearer("kh_live_" + strings.Repeat("a", 300)), 401, "malformed_token", "API key is malformed."},
		{"bad characters", "/api/v1/prod/whoami", []string{"X-Api-Key", "kh_live_" + strings.Repeat("é", 16)}, 401, "malformed_token", "API key is malformed."},
		{"unknown key", "/api/v1/prod/whoami", bearer("kh_live_" + strings.Repeat("0", 32)), 401, "invalid_or_revoked", "API key is invalid or revoked."},
		{"wrong secret", "/api/v1/prod/whoami", bearer(wrongSecret), 401, "invalid_or_revoked", "API key is invalid or revoked."},
		{"revoked", "/api/v1/prod/whoami", bearer(revoked), 401, "invalid_or_revoked", "API key is invalid or revoked."},
		{"expired", "/api/v1/prod/whoami", bearer(expired), 401, "key_expired", "API key has expired."},
		{"live key on test base", "/api/v1/dev/whoami", bearer(live), 401, "environment_mismatch", "A test key must be used with /api/v1/dev/ and a live key with /api/v1/prod/."},
		{"test key on live base", "/api/v1/prod/whoami", []string{"X-Api-Key", test}, 401, "environment_mismatch", "A test key must be used with /api/v1/dev/ and a live key with /api/v1/prod/."},
		{"missing scope", "/api/v1/prod/whoami", bearer(noScope), 403, "insufficient_scope", "API key lacks the required scope: whoami:read."},
		{"minute window", "/api/v1/prod/whoami", bearer(minute), 200, "", ""},
		{"minute window empty", "/api/v1/prod/whoami", bearer(minute), 429, "rate_limited", "Rate limit exceeded. Wait a minute before retrying."},
		{"hour window", "/api/v1/prod/whoami", bearer(hourly), 200, "", ""},
		{"hour window empty", "/api/v1/prod/whoami", bearer(hourly), 429, "rate_limited", "Hourly rate limit exceeded."},
		{"day window", "/api/v1/prod/whoami", bearer(daily), 429, "rate_limited", "Rate limit exceeded for the 1d window."},
		{"x-api-key ok", "/api/v1/prod/whoami", []string{"X-Api-Key", live}, 200, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := te.do("GET", tt.path, "", tt.headers...)
			if r.status != tt.status {
				t.Fatalf("status = %d %s; want %d", r.status, r.body, tt.status)
			}
			if tt.code == "" {
				return
			}
			m := r.json(t)
			e, _ := m["error"].(map[string]any)
			if e["code"] != tt.code || e["message"] != tt.message {
				t.Fatalf("error = %v; want %s %q", e, tt.code, tt.message)
			}
			if id, _ := m["request_id"].(string); id == "" || r.header.Get("X-Request-Id") != id {
				t.Fatalf("request_id = %q, header %q; want the same non-empty id", id, r.header.Get("X-Request-Id"))
			}
		})
	}
}

func TestSplitMalformedMessage(t *testing.T) {
	te := newTestEnv(t, func(c *config) { c.keyStyle = styleSplit })
	r := te.do("GET", "/api/v1/prod/whoami", "", bearer("khpub_0123456789abcdef")...)
	if r.status != 401 || !strings.Contains(string(r.body), `"malformed_token","message":"Authorization token must be provided as \u003cpublic\u003e.\u003csecret\u003e"`) {
		t.Fatalf("split malformed = %d %s", r.status, r.body)
	}
}

// TestVerificationFailed shows an internal fault answers 500 and leaks nothing.
func TestVerificationFailed(t *testing.T) {
	te := newTestEnv(t)
	org := te.createOrg("acme")
	_, key := te.createKey(org, `{"name":"k","env":"live"}`)
	p, _ := te.s.format.parse(key)
	// A set without windows makes verification panic.
	te.s.index.find(p).limitSet = 1 + te.s.index.limitSets.intern([]byte("test: no windows"), func() *limitSet { return &limitSet{} })
	r := te.whoami(envLive, key)
	if r.status != 500 || r.errorCode(t) != "verification_failed" || strings.Contains(string(r.body), "nil") {
		t.Fatalf("corrupt entry = %d %s; want 500 verification_failed", r.status, r.body)
	}
}

func TestBothKeyStylesEndToEnd(t *testing.T) {
	for _, style := range []string{stylePrefixed, styleSplit} {
		t.Run(style, func(t *testing.T) {
			te := newTestEnv(t, func(c *config) { c.keyStyle = style; c.brand = "acme" })
			org := te.createOrg("acme")
			id, key := te.createKey(org, `{"name":"k","env":"test","scopes":["a:b"]}`)
			if style == styleSplit && !strings.HasPrefix(key, "acmepub_") || style == stylePrefixed && !strings.HasPrefix(key, "acme_test_") {
				t.Fatalf("key %q is not %s style of brand acme", key, style)
			}
			r := te.whoami(envTest, key)
			mustStatus(t, "whoami", r, 200)
			if got := r.json(t)["key_id"]; got != id {
				t.Fatalf("whoami key_id = %v; want %s", got, id)
			}
			rec := te.root("GET", "/orgs/"+org+"/keys/"+id, "").json(t)
			if p := rec["prefix"].(string); !strings.HasPrefix(key, p) || len(p) >= len(key)-16 {
				t.Fatalf("prefix %q is not a short start of the key", p)
			}
		})
	}
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
		{"POST", "/orgs", `{"name":"c"}`, 403},
		{"POST", "/orgs/" + a + "/admin-tokens", `{"name":"x"}`, 403},
		{"GET", "/logs", "", 403},
		{"GET", "/backup", "", 403},
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

// TestRestartKeepsKeys reopens the real bbolt file: keys, revocations, tokens
// and org survive; the in-memory index is rebuilt from it.
func TestRestartKeepsKeys(t *testing.T) {
	te := newTestEnv(t)
	org := te.createOrg("acme")
	_, live := te.createKey(org, `{"name":"k","env":"live"}`)
	revID, revoked := te.createKey(org, `{"name":"r","env":"live"}`)
	te.root("POST", "/orgs/"+org+"/keys/"+revID+"/revoke", "")
	token := te.root("POST", "/orgs/"+org+"/admin-tokens", `{"name":"t"}`).json(t)["token"].(string)
	te.restart()
	mustStatus(t, "key after restart", te.whoami(envLive, live), 200)
	if r := te.whoami(envLive, revoked); r.errorCode(t) != "invalid_or_revoked" {
		t.Fatalf("revoked key after restart = %d; want invalid_or_revoked", r.status)
	}
	mustStatus(t, "org admin token after restart", te.admin(token, "GET", "/orgs/"+org, ""), 200)
}

// TestSecretsNeverStored checks the plaintext key and tokens appear in no
// byte of the db file and in nothing the server printed or logged.
func TestSecretsNeverStored(t *testing.T) {
	te := newTestEnv(t)
	org := te.createOrg("acme")
	var secrets []string
	for _, style := range []string{stylePrefixed, styleSplit} {
		te.s.format.style = style
		_, key := te.createKey(org, `{"name":"k","env":"live"}`)
		secrets = append(secrets, key, key[len(key)-32:])
		te.whoami(envLive, key)
		te.whoami(envTest, key)
		te.do("POST", "/v1/keys/verify", `{"key":"`+key+`"}`)
	}
	token := te.root("POST", "/orgs/"+org+"/admin-tokens", `{"name":"t"}`).json(t)["token"].(string)
	secrets = append(secrets, token, testRootToken)
	list := te.root("GET", "/orgs/"+org+"/keys?include_revoked=true", "")
	logs := te.root("GET", "/orgs/"+org+"/logs", "")
	te.restart()
	db, err := os.ReadFile(te.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, sec := range secrets {
		for what, b := range map[string][]byte{"db file": db, "server output": te.stderr.Bytes(),
			"key listing": list.body, "logs": logs.body} {
			if bytes.Contains(b, []byte(sec)) {
				t.Errorf("%s contains the secret %s…", what, sec[:12])
			}
		}
	}
	if bytes.Contains(list.body, []byte(`"hash"`)) || bytes.Contains(list.body, []byte(`"key"`)) {
		t.Errorf("key listing shows a hash or key: %s", list.body)
	}
}

func TestVerifyEndpoint(t *testing.T) {
	te := newTestEnv(t)
	org := te.createOrg("acme")
	id, key := te.createKey(org, `{"name":"k","env":"live","scopes":["sms:send"]}`)
	tests := []struct {
		name      string
		body      string
		status    int
		wantValid bool
		wantCode  string
	}{
		{"valid", `{"key":"` + key + `"}`, 200, true, ""},
		{"valid env and scope", `{"key":"` + key + `","env":"live","scope":"sms:send"}`, 200, true, ""},
		{"env mismatch", `{"key":"` + key + `","env":"test"}`, 200, false, "environment_mismatch"},
		{"missing scope", `{"key":"` + key + `","scope":"sms:read"}`, 200, false, "insufficient_scope"},
		{"unknown key", `{"key":"kh_live_` + strings.Repeat("1", 32) + `"}`, 200, false, "invalid_or_revoked"},
		{"malformed", `{"key":"nope"}`, 200, false, "malformed_token"},
		{"empty key", `{"key":""}`, 200, false, "missing_authorization"},
		{"bad env", `{"key":"` + key + `","env":"prod"}`, 400, false, "invalid_request"},
		{"unknown field", `{"key":"` + key + `","extra":1}`, 400, false, "invalid_request"},
		{"not json", `key=abc`, 400, false, "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := te.do("POST", "/v1/keys/verify", tt.body)
			if r.status != tt.status {
				t.Fatalf("status = %d %s; want %d", r.status, r.body, tt.status)
			}
			m := r.json(t)
			if tt.status == 400 {
				if r.errorCode(t) != tt.wantCode {
					t.Fatalf("error = %s; want %s", r.body, tt.wantCode)
				}
				return
			}
			if m["valid"] != tt.wantValid || tt.wantCode != "" && m["code"] != tt.wantCode {
				t.Fatalf("verify = %s; want valid %v code %q", r.body, tt.wantValid, tt.wantCode)
			}
			if tt.wantValid && (m["key_id"] != id || m["org_id"] != org || m["ratelimit"] == nil) {
				t.Fatalf("verify = %s; want key_id, org_id and ratelimit", r.body)
			}
		})
	}
}

func TestFirstStartToken(t *testing.T) {
	cfg := testConfig(t)
	cfg.adminToken = ""
	te := &testEnv{t: t, clock: newFakeClock(), dbPath: cfg.dbPath, cfg: cfg, stderr: new(bytes.Buffer)}
	te.open()
	token := regexp.MustCompile(`kh_admin_[0-9a-f]{32}`).FindString(te.stderr.String())
	if token == "" {
		t.Fatalf("first start printed no root token: %q", te.stderr.String())
	}
	mustStatus(t, "root token works", te.admin(token, "GET", "/orgs", ""), 200)
	te.restart()
	if strings.Count(te.stderr.String(), "kh_admin_") != 1 {
		t.Fatalf("the root token was printed again on restart")
	}
	mustStatus(t, "root token after restart", te.admin(token, "GET", "/orgs", ""), 200)
	te.s.store.Close()

	var out bytes.Buffer
	if err := runMain([]string{"admin-token", "reset", "--db", cfg.dbPath}, &out, &out); err != nil {
		t.Fatal(err)
	}
	fresh := strings.TrimSpace(out.String())
	te.open()
	mustStatus(t, "reset token", te.admin(fresh, "GET", "/orgs", ""), 200)
	if r := te.admin(token, "GET", "/orgs", ""); r.status != 401 {
		t.Fatalf("old root token after reset = %d; want 401", r.status)
	}
}

func TestDemo(t *testing.T) {
	te := newTestEnv(t, func(c *config) { c.demo = true })
	var out bytes.Buffer
	te.s.printDemoHint(&out, "127.0.0.1:8080")
	keys := regexp.MustCompile(`Bearer (kh_(test|live)_[0-9a-f]{32})' http://127\.0\.0\.1:8080(/api/v1/(dev|prod)/)whoami\n`).FindAllStringSubmatch(out.String(), -1)
	if len(keys) != 2 {
		t.Fatalf("demo printed %q; want two curl lines", out.String())
	}
	for _, k := range keys {
		mustStatus(t, "demo key "+k[2], te.do("GET", k[3]+"whoami", "", bearer(k[1])...), 200)
	}
}

func TestHotRowRoundTrip(t *testing.T) {
	rec := keyRecord{ID: "key_0123456789abcdef", OrgID: "org_x", Env: envLive, Prefix: "kh_live_1a2b3c4d",
		Hash: hashKey("x"), Scopes: []string{"a:b", "c"}, RateLimits: []rateLimit{{5, "1m"}},
		ExpiresAt: 42, RevokedAt: 7}
	var row hotRow
	if err := row.decode(appendHotRow(nil, &rec)); err != nil {
		t.Fatal(err)
	}
	ix := newKeyIndex(0)
	e := ix.addRow(&row)
	if e.keyID() != rec.ID || ix.orgID(e) != rec.OrgID || e.env() != envLive || e.hash != rec.Hash ||
		e.expiresAt.Load() != 42 || e.revokedAt.Load() != 7 || len(ix.scopes(e).list) != 2 ||
		ix.scopes(e).header[0] != "a:b,c" || ix.limits(e).sig != "5/1m," {
		t.Fatalf("entry from row = %+v", e)
	}
	if ix.get(rec.Prefix, rec.ID) != e {
		t.Fatalf("get by prefix and id did not find the entry")
	}
	for _, bad := range [][]byte{nil, make([]byte, 49), append([]byte{9}, make([]byte, 60)...), appendHotRow(nil, &rec)[:60]} {
		if err := row.decode(bad); err == nil {
			t.Errorf("decode(%x) accepted a malformed row", bad)
		}
	}
}

func TestLookupValue(t *testing.T) {
	values := map[uint64]string{}
	for _, l := range []string{"kh_live_1a2b3c4d", "kh_test_1a2b3c4d", "khpub_000000011a2b3c4d", "khpub_1a2b3c4d00000000", "acme_live_ffffffff"} {
		v := lookupValue(l)
		if other, ok := values[v]; ok {
			t.Errorf("%s and %s share lookup value %x", l, other, v)
		}
		values[v] = l
		if lookupValue([]byte(l)) != v {
			t.Errorf("lookupValue differs for string and bytes of %s", l)
		}
	}
}

func TestRulesMatch(t *testing.T) {
	rules, err := parseRules([]byte(`[{"method":"POST","path":"/api/v1/*/sms/send","scope":"sms:send"},
		{"method":"GET","path":"/api/v1/*/reports","scope":"reports:read"},
		{"method":"*","path":"/api/v1/*/admin/*","scope":"admin"}]`))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ method, path, want string }{
		{"POST", "/api/v1/prod/sms/send", "sms:send"},
		{"GET", "/api/v1/prod/sms/send", ""},
		{"POST", "/api/v1/prod/sms/send/x", ""},
		{"POST", "/api/v1//sms/send", ""},
		{"GET", "/api/v1/dev/reports", "reports:read"},
		{"HEAD", "/api/v1/dev/reports", "reports:read"},
		{"DELETE", "/api/v1/dev/admin/users/1", "admin"},
		{"GET", "/api/v1/dev/other", ""},
		// Every spelling a common router serves as the same route.
		{"POST", "/api/v1/prod/SMS/Send", "sms:send"},
		{"POST", "/api/v1/prod/sms/send/", "sms:send"},
		{"post", "/api/v1/prod/sms/send", ""}, // methods are upper-cased by the caller
		{"GET", "/API/V1/DEV/Reports/", "reports:read"},
		{"GET", "/api/v1/dev/admin", "admin"},
		{"GET", "/api/v1/dev/admin/", "admin"},
		{"GET", "/api/v1/dev/ADMIN/x/y", "admin"},
		{"GET", "/api/v1/dev/administrator", ""},
		{"GET", "/api/v1/dev", ""},
	}
	for _, tt := range tests {
		if got := requiredScope(rules, tt.method, tt.path); got != tt.want {
			t.Errorf("requiredScope(%s %s) = %q; want %q", tt.method, tt.path, got, tt.want)
		}
	}
}

// TestKeyIndexChains adds keys that share a lookup value, across a chunk
// boundary: each is found by its own secret and id, never another's.
func TestKeyIndexChains(t *testing.T) {
	ix := newKeyIndex(0)
	const lookup = "kh_live_1a2b3c4d"
	var wholes []string
	var ids []string
	for i := range chunkSize + 3 {
		whole := fmt.Sprintf("%s%024x", lookup, i)
		id := fmt.Sprintf("key_%016x", i)
		prefix := lookup
		if i%2 == 1 { // half the keys chain, half stand alone
			prefix = fmt.Sprintf("kh_live_%08x", i)
			whole = fmt.Sprintf("%s%024x", prefix, i)
		}
		rec := keyRecord{ID: id, OrgID: fmt.Sprintf("org_%d", i%3), Env: envLive, Prefix: prefix, Hash: hashKey(whole)}
		ix.add(&rec)
		wholes, ids = append(wholes, whole), append(ids, id)
	}
	for _, i := range []int{0, 1, 2, chunkSize - 1, chunkSize, chunkSize + 1, chunkSize + 2} {
		p := parsedKey{lookup: wholes[i][:len(wholes[i])-24], whole: wholes[i]}
		e := ix.find(p)
		if e == nil || e.keyID() != ids[i] || ix.orgID(e) != fmt.Sprintf("org_%d", i%3) {
			t.Fatalf("find key %d = %+v; want %s", i, e, ids[i])
		}
		if got := ix.get(p.lookup, ids[i]); got != e {
			t.Errorf("get key %d = %p; want %p", i, got, e)
		}
	}
	if e := ix.find(parsedKey{lookup: lookup, whole: lookup + strings.Repeat("f", 24)}); e != nil {
		t.Errorf("an unknown secret on a shared lookup value found %s", e.keyID())
	}
}

// TestInternTableGrows numbers more values than one chunk holds while a
// reader reads each value as soon as its number is published, as index
// entries publish theirs: the race detector checks the lock-free reads.
func TestInternTableGrows(t *testing.T) {
	var table internTable[string]
	const n = 3*internChunk + 5
	var published atomic.Uint32
	go func() {
		for i := range uint32(n) {
			v := fmt.Sprint(i)
			if got := table.intern([]byte(v), func() string { return v }); got != i {
				t.Errorf("intern(%s) = %d; want %d", v, got, i)
			}
			published.Store(i + 1)
		}
	}()
	for seen := uint32(0); seen < n; {
		if m := published.Load(); m > seen {
			if got := table.get(m - 1); got != fmt.Sprint(m-1) {
				t.Fatalf("get(%d) = %q", m-1, got)
			}
			seen = m
		}
	}
	for _, i := range []uint32{0, internChunk - 1, internChunk, 2 * internChunk, n - 1} {
		if got := table.get(i); got != fmt.Sprint(i) {
			t.Errorf("get(%d) = %q", i, got)
		}
		if again := table.intern([]byte(fmt.Sprint(i)), func() string { return "dup" }); again != i {
			t.Errorf("interning %d again gave %d", i, again)
		}
	}
}
