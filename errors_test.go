package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

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
