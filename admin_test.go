package main

import (
	"strings"
	"testing"
)

// TestAdminInputIsStrict: every bad body is a 400 invalid_request naming the
// field, and changes nothing.
func TestAdminInputIsStrict(t *testing.T) {
	te := newTestEnv(t)
	org := te.createOrg("acme")
	keyID, _ := te.createKey(org, `{"name":"k","env":"live"}`)
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
	if len(orgs) != 1 || len(keys) != 1 || keys[0].(map[string]any)["revoked_at"] != nil {
		t.Fatalf("bad requests changed state: %d orgs, keys %v", len(orgs), keys)
	}
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

func TestConfigFromEnv(t *testing.T) {
	env := map[string]string{"KEYHOLE_ADDR": "127.0.0.1:9999", "KEYHOLE_BRAND": "acme",
		"KEYHOLE_RATE_LIMITS": "10/1s", "KEYHOLE_KEY_STYLE": "split", "KEYHOLE_LOG_RETENTION": "7"}
	cfg, err := parseServeFlags([]string{"--brand", "flagwins"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.addr != "127.0.0.1:9999" || cfg.brand != "flagwins" || cfg.keyStyle != styleSplit ||
		cfg.logRetention != 7 || cfg.rateLimits[0] != (rateLimit{10, "1s"}) {
		t.Fatalf("config = %+v", cfg)
	}
	for _, bad := range [][]string{{"--key-style", "x"}, {"--brand", "Bad_Brand"}, {"--rate-limits", "5"},
		{"--test-base", "/api/"}, {"--live-base", "nope"}, {"--log-retention", "0"}, {"--test-base", "/admin/x/"}} {
		if _, err := parseServeFlags(bad, func(string) string { return "" }); err == nil {
			t.Errorf("flags %v accepted; want an error", bad)
		}
	}
}
