package main

import (
	"net/url"
	"strings"
	"testing"
)

// TestVerificationFailed shows an internal fault answers 500 and leaks nothing.
func TestVerificationFailed(t *testing.T) {
	te := newTestEnv(t)
	org := te.createOrg("acme")
	_, key := te.createKey(org, `{"name":"k","env":"live"}`)
	p, _ := te.s.format.parse(key)
	// A set without windows makes verification panic.
	te.s.index.find(p).limitSet.Store(1 + te.s.index.limitSets.intern([]byte("test: no windows"), func() *limitSet { return &limitSet{} }))
	r := te.whoami(envLive, key)
	if r.status != 500 || r.errorCode(t) != "verification_failed" || strings.Contains(string(r.body), "nil") {
		t.Fatalf("corrupt entry = %d %s; want 500 verification_failed", r.status, r.body)
	}
}

// TestForwardAuthHeaders calls /v1/auth as nginx, Caddy and Traefik do.
func TestForwardAuthHeaders(t *testing.T) {
	rules := writeRules(t)
	te := newTestEnv(t, func(c *config) { c.rulesPath = rules })
	org := te.createOrg("acme")
	liveID, live := te.createKey(org, `{"name":"live","env":"live","scopes":["sms:send"],"rate_limits":[{"limit":100,"window":"1m"}]}`)
	_, test := te.createKey(org, `{"name":"test","env":"test","scopes":["sms:send"]}`)
	noScopeID, noScope := te.createKey(org, `{"name":"plain","env":"live"}`)
	original := func(method, uri string) []string {
		return []string{"X-Original-Method", method, "X-Original-URI", uri}
	}
	forwarded := func(method, uri string) []string {
		return []string{"X-Forwarded-Method", method, "X-Forwarded-Uri", uri}
	}
	with := func(parts ...[]string) []string {
		var all []string
		for _, p := range parts {
			all = append(all, p...)
		}
		return all
	}
	tests := []struct {
		name       string
		headers    []string
		wantStatus int
		want       string // the error code, or for a 200 the key id
	}{
		{"X-Original-*", with(bearer(live), original("POST", "/api/v1/prod/sms/send")), 200, liveID},
		{"X-Forwarded-*", with(bearer(live), forwarded("POST", "/api/v1/prod/sms/send")), 200, liveID},
		{"x-api-key", with([]string{"X-Api-Key", live}, forwarded("GET", "/api/v1/prod/x")), 200, liveID},
		{"query string is not the path", with(bearer(noScope), original("GET", "/api/v1/prod/x?next=/api/v1/dev/")), 200, noScopeID},
		{"lower-case method", with(bearer(noScope), forwarded("post", "/api/v1/prod/sms/send")), 403, "insufficient_scope"},
		{"both agree", with(bearer(live), original("GET", "/api/v1/prod/x"), forwarded("GET", "/api/v1/prod/x")), 200, liveID},
		// SPEC 3's rows, asked with X-Original-*, are TestErrorRows's.
		{"live key on the test base", with(bearer(live), forwarded("GET", "/api/v1/dev/x")), 401, "environment_mismatch"},
		{"outside both bases", with(bearer(live), forwarded("GET", "/other/x")), 401, "environment_mismatch"},
		{"missing scope (forwarded)", with(bearer(noScope), forwarded("POST", "/api/v1/prod/sms/send")), 403, "insufficient_scope"},
		{"escaped path is decoded", with(bearer(noScope), original("POST", "/api/v1/prod/sms/%73end")), 403, "insufficient_scope"},
		{"dot-dot", with(bearer(test), original("GET", "/api/v1/dev/../prod/x")), 400, "invalid_request"},
		{"escaped dot-dot", with(bearer(test), forwarded("GET", "/api/v1/dev/%2E%2E/prod/x")), 400, "invalid_request"},
		{"bad escape", with(bearer(live), forwarded("GET", "/api/v1/prod/%zz")), 400, "invalid_request"},
		{"no URI", with(bearer(live), []string{"X-Forwarded-Method", "GET"}), 400, "invalid_request"},
		{"no method", with(bearer(live), []string{"X-Original-URI", "/api/v1/prod/x"}), 400, "invalid_request"},
		// nginx sets X-Original-*; a client adding X-Forwarded-* must not
		// choose the path that is checked. The same the other way round.
		{"client's X-Forwarded-Uri differs", with(bearer(test), original("GET", "/api/v1/prod/x"),
			[]string{"X-Forwarded-Uri", "/api/v1/dev/x"}), 400, "invalid_request"},
		{"client's X-Original-Method differs", with(bearer(noScope), forwarded("POST", "/api/v1/prod/sms/send"),
			[]string{"X-Original-Method", "GET"}), 400, "invalid_request"},
		{"repeated X-Forwarded-Uri", with(bearer(test), forwarded("GET", "/api/v1/dev/x"),
			[]string{"X-Forwarded-Uri", "/api/v1/prod/x"}), 400, "invalid_request"},
		// What the front proxy passes on is what its upstream reads: the
		// same ambiguous paths and headers as the reverse proxy's.
		{"path parameter dot-dot", with(bearer(test), original("GET", "/api/v1/dev/..;/prod/x")), 400, "invalid_request"},
		{"path parameter", with(bearer(noScope), forwarded("POST", "/api/v1/prod/sms/send;a=b?x=1")), 400, "invalid_request"},
		{"backslash", with(bearer(test), original("GET", `/api/v1/dev/..\prod/x`)), 400, "invalid_request"},
		{"escaped backslash", with(bearer(test), original("GET", "/api/v1/dev/..%5cprod/x")), 400, "invalid_request"},
		{"double-escaped dots", with(bearer(test), forwarded("GET", "/api/v1/dev/%252e%252e/prod/x")), 400, "invalid_request"},
		{"escaped slash", with(bearer(noScope), forwarded("POST", "/api/v1/prod/sms%2fsend")), 400, "invalid_request"},
		{"fragment", with(bearer(live), forwarded("GET", "/api/v1/prod/x#/../../dev/x")), 400, "invalid_request"},
		{"absolute URI", with(bearer(live), forwarded("GET", "http://other/api/v1/prod/x")), 400, "invalid_request"},
		{"method with a space", with(bearer(live), forwarded("GET /api/v1/dev/x", "/api/v1/prod/x")), 400, "invalid_request"},
		{"method past its bound", with(bearer(live), forwarded(strings.Repeat("A", 60000), "/api/v1/prod/x")), 400, "invalid_request"},
		{"underscore identity", with(bearer(live), original("GET", "/api/v1/prod/x"), []string{"X_Keyhole_Org", "org_evil"}), 400, "invalid_request"},
		{"underscore forwarded URI", with(bearer(live), original("GET", "/api/v1/prod/x"), []string{"X_Forwarded_Uri", "/api/v1/dev/x"}), 400, "invalid_request"},
		{"h2c upgrade", with(bearer(live), original("GET", "/api/v1/prod/x"), []string{"Upgrade", "h2c", "HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"}), 400, "invalid_request"},
		{"websocket upgrade", with(bearer(live), original("GET", "/api/v1/prod/x"), []string{"Upgrade", "WebSocket"}), 200, liveID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := te.do("GET", "/v1/auth", "", tt.headers...)
			mustStatus(t, "GET /v1/auth", r, tt.wantStatus)
			if tt.wantStatus != 200 {
				if got := r.errorCode(t); got != tt.want {
					t.Errorf("code = %q; want %q", got, tt.want)
				}
				checkNoIdentity(t, r)
				return
			}
			if len(r.body) != 0 {
				t.Errorf("200 body = %q; want empty", r.body)
			}
			if r.header.Get("X-Ratelimit-Limit") == "" || r.header.Get("Ratelimit-Policy") == "" {
				t.Errorf("200 lacks rate-limit headers: %v", r.header)
			}
			wantScopes := ""
			if tt.want == liveID {
				wantScopes = "sms:send"
			}
			want := map[string]string{"X-Keyhole-Org": org, "X-Keyhole-Key-Id": tt.want,
				"X-Keyhole-Env": "live", "X-Keyhole-Scopes": wantScopes}
			for name, v := range want {
				if got := r.header.Values(name); len(got) != 1 || got[0] != v {
					t.Errorf("%s = %q; want [%q]", name, got, v)
				}
			}
		})
	}
	// Over the wire the empty 200 says so: net/http adds Content-Length: 0.
	r := te.listen().do("GET", "/v1/auth", "", with(bearer(live), original("GET", "/api/v1/prod/x"))...)
	if r.status != 200 || r.header.Get("Content-Length") != "0" {
		t.Errorf("over the wire: %d, Content-Length %q; want 200 and 0", r.status, r.header.Get("Content-Length"))
	}
}

// TestPlainRequestPath: the fast path agrees with url.ParseRequestURI
// wherever it answers.
func TestPlainRequestPath(t *testing.T) {
	for _, uri := range []string{"/api/v1/prod/x", "/a?b=c", "/a#frag?x", "/a b", "/", "/a/../b", "/%2e%2e", "a/b", "http://h/x", "/x\x01", "/é"} {
		path, ok := plainRequestPath(uri)
		if !ok {
			continue
		}
		u, err := url.ParseRequestURI(uri)
		if err != nil || u.Path != path {
			t.Errorf("plainRequestPath(%q) = %q; ParseRequestURI gives %v, %v", uri, path, u, err)
		}
	}
}

// checkNoIdentity fails if a refusal from /v1/auth names a key: a front
// proxy would copy its identity headers on.
func checkNoIdentity(t *testing.T, r response) {
	t.Helper()
	for _, name := range identityHeaders {
		if r.header.Get(name) != "" {
			t.Errorf("a %d carries %s", r.status, name)
		}
	}
}
