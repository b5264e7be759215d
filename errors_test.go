package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The SPEC 3 contract: one table of error rows, with the allowed requests
// between them, each with its status, code and exact message, run against
// every surface that checks a key (whoami, the reverse proxy in front of a
// Go upstream, forward auth and verify) on servers of both key styles.

// contractRules require whoami:read for GET …/whoami under either base.
const contractRules = `[{"method":"GET","path":"/api/v1/*/whoami","scope":"whoami:read"}]`

// contractRow is a GET of whoami (or of path) under base's base path, with
// key presented as a Bearer token (as X-Api-Key if apiKey), or with header
// instead of a key. Verify, which takes the key, env and scope in its body,
// has no row for a header of another form or a path of the row's own.
type contractRow struct {
	name    string
	base    string // envLive or envTest
	path    string // under the base; "whoami" if empty
	key     string
	apiKey  bool
	header  []string
	status  int
	code    string // "" for an allowed request
	message string
	keyID   string // for an allowed request, the key it is identified as
	noRetry bool   // a 429 without Retry-After: credits spent, no refill
	credits string // X-Credits-Remaining, "" for none
}

func (row contractRow) headers() []string {
	switch {
	case row.header != nil:
		return row.header
	case row.key == "":
		return nil
	case row.apiKey:
		return []string{"X-Api-Key", row.key}
	}
	return bearer(row.key)
}

// uri is the request's path, under its base.
func (row contractRow) uri(te *testEnv) string {
	base, path := te.cfg.liveBase, row.path
	if row.base == envTest {
		base = te.cfg.testBase
	}
	if path == "" {
		path = "whoami"
	}
	return base + path
}

// contractRows makes on te the keys the rows present, uses up the budgets
// the rate-limit rows need, moves the clock on two hours, and gives the
// rows, in the order they must run.
func contractRows(t *testing.T, te *testEnv) []contractRow {
	t.Helper()
	org := te.createOrg("acme")
	liveID, live := te.createKey(org, `{"name":"l","env":"live","scopes":["whoami:read"]}`)
	_, test := te.createKey(org, `{"name":"t","env":"test","scopes":["whoami:read"]}`)
	_, noScope := te.createKey(org, `{"name":"n","env":"live"}`)
	revokedID, revoked := te.createKey(org, `{"name":"r","env":"live","scopes":["*"]}`)
	mustStatus(t, "revoke", te.root("POST", "/orgs/"+org+"/keys/"+revokedID+"/revoke", ""), 200)
	expiring := te.clock.Now().Add(time.Hour).Format(time.RFC3339)
	_, expired := te.createKey(org, `{"name":"e","env":"live","scopes":["*"],"expires_at":"`+expiring+`"}`)
	minuteID, minute := te.createKey(org, `{"name":"m","env":"live","scopes":["*"],"rate_limits":[{"limit":1,"window":"1m"},{"limit":100,"window":"1h"}]}`)
	hourlyID, hourly := te.createKey(org, `{"name":"h","env":"live","scopes":["*"],"rate_limits":[{"limit":10,"window":"1m"},{"limit":1,"window":"1h"}]}`)
	_, daily := te.createKey(org, `{"name":"d","env":"live","scopes":["*"],"rate_limits":[{"limit":1,"window":"1d"}]}`)
	disabledID, disabled := te.createKey(org, `{"name":"off","env":"live","scopes":["*"]}`)
	mustStatus(t, "disable", te.root("PATCH", "/orgs/"+org+"/keys/"+disabledID, `{"enabled":false}`), 200)
	// The in-process client is 192.0.2.1, the proxy's 127.0.0.1.
	hereID, here := te.createKey(org, `{"name":"here","env":"live","scopes":["*"],"allowed_ips":["192.0.2.1","127.0.0.0/8","::1"]}`)
	_, elsewhere := te.createKey(org, `{"name":"elsewhere","env":"live","scopes":["*"],"allowed_ips":["198.51.100.0/24","2001:db8::/32"]}`)
	oneID, one := te.createKey(org, `{"name":"one","env":"live","scopes":["*"],"credits":{"remaining":1}}`)
	_, spent := te.createKey(org, `{"name":"spent","env":"live","scopes":["*"],"credits":{"remaining":0,"refill":{"amount":5,"interval":"daily"}}}`)
	_, spentNoScope := te.createKey(org, `{"name":"spent, no scope","env":"live","credits":{"remaining":0}}`)
	_, spentLimited := te.createKey(org, `{"name":"spent, limited","env":"live","scopes":["*"],"credits":{"remaining":1},"rate_limits":[{"limit":1,"window":"1d"}]}`)
	wrongSecret := live[:len(live)-4] + "0000"
	if wrongSecret == live {
		wrongSecret = live[:len(live)-4] + "1111"
	}
	for _, k := range []string{minute, hourly, daily, spentLimited} {
		mustStatus(t, "first call", te.whoami(envLive, k), 200)
	}
	te.clock.Advance(2 * time.Hour)

	// A malformed key gets the message of the server's style, and one with
	// a dot that of the split style, which it tried.
	malformed, split := "API key is malformed.", "Authorization token must be provided as <public>.<secret>"
	if te.cfg.keyStyle == styleSplit {
		malformed = split
	}
	const scheme = "Authorization header must use the `Bearer <api key>` scheme."
	const invalid = "API key is invalid or revoked."
	const mismatch = "A test key must be used with /api/v1/dev/ and a live key with /api/v1/prod/."
	const disabledMsg, notHere, noneLeft = "API key is disabled.", "API key is not allowed from this address.", "API key has no requests left."
	return []contractRow{
		{name: "no key", base: envLive, status: 401, code: "missing_authorization", message: "Missing Authorization header."},
		{name: "basic scheme", base: envLive, header: []string{"Authorization", "Basic dXNlcjpwYXNz"}, status: 401, code: "invalid_scheme", message: scheme},
		{name: "bare token", base: envLive, header: []string{"Authorization", live}, status: 401, code: "invalid_scheme", message: scheme},
		{name: "malformed", base: envLive, key: "kh_live_nothex", status: 401, code: "malformed_token", message: malformed},
		{name: "too long", base: envLive, key: "kh_live_" + strings.Repeat("a", 300), status: 401, code: "malformed_token", message: malformed},
		{name: "bad characters", base: envLive, key: "kh_live_" + strings.Repeat("é", 16), apiKey: true, status: 401, code: "malformed_token", message: malformed},
		{name: "split key without its secret", base: envLive, key: "khpub_0123456789abcdef", status: 401, code: "malformed_token", message: malformed},
		{name: "split key with a short secret", base: envLive, key: "khpub_0123456789abcdef.khsec_0123", status: 401, code: "malformed_token", message: split},
		{name: "unknown key", base: envLive, key: "kh_live_" + strings.Repeat("0", 32), status: 401, code: "invalid_or_revoked", message: invalid},
		{name: "wrong secret", base: envLive, key: wrongSecret, status: 401, code: "invalid_or_revoked", message: invalid},
		{name: "revoked", base: envLive, key: revoked, status: 401, code: "invalid_or_revoked", message: invalid},
		{name: "expired", base: envLive, key: expired, status: 401, code: "key_expired", message: "API key has expired."},
		{name: "live key on the test base", base: envTest, key: live, status: 401, code: "environment_mismatch", message: mismatch},
		{name: "test key on the live base", base: envLive, key: test, apiKey: true, status: 401, code: "environment_mismatch", message: mismatch},
		{name: "missing scope", base: envLive, key: noScope, status: 403, code: "insufficient_scope", message: "API key lacks the required scope: whoami:read."},
		{name: "minute window", base: envLive, key: minute, status: 200, keyID: minuteID},
		{name: "minute window empty", base: envLive, key: minute, status: 429, code: "rate_limited", message: "Rate limit exceeded. Wait a minute before retrying."},
		{name: "hour window", base: envLive, key: hourly, status: 200, keyID: hourlyID},
		{name: "hour window empty", base: envLive, key: hourly, status: 429, code: "rate_limited", message: "Hourly rate limit exceeded."},
		{name: "day window", base: envLive, key: daily, status: 429, code: "rate_limited", message: "Rate limit exceeded for the 1d window."},
		{name: "x-api-key", base: envLive, key: live, apiKey: true, status: 200, keyID: liveID},
		// Checked after revocation and before expiry, the address, the
		// environment and scope (README: the order of the checks).
		{name: "disabled", base: envLive, key: disabled, status: 401, code: "key_disabled", message: disabledMsg},
		{name: "disabled, on the test base", base: envTest, key: disabled, status: 401, code: "key_disabled", message: disabledMsg},
		{name: "inside allowed_ips", base: envLive, key: here, status: 200, keyID: hereID},
		{name: "outside allowed_ips", base: envLive, key: elsewhere, status: 403, code: "ip_not_allowed", message: notHere},
		{name: "outside allowed_ips, on the test base", base: envTest, key: elsewhere, status: 403, code: "ip_not_allowed", message: notHere},
		{name: "the last credit", base: envLive, key: one, status: 200, keyID: oneID, credits: "0"},
		{name: "no credits left", base: envLive, key: one, status: 429, code: "usage_exceeded", message: noneLeft, noRetry: true, credits: "0"},
		// A refill ahead: Retry-After says when (01:30 from 22:30), in
		// place of X-Credits-Remaining.
		{name: "no credits left until the refill", base: envLive, key: spent, status: 429, code: "usage_exceeded", message: noneLeft},
		{name: "no credits left, missing scope", base: envLive, key: spentNoScope, status: 403, code: "insufficient_scope",
			message: "API key lacks the required scope: whoami:read.", credits: "0"},
		{name: "no credits left, rate limited", base: envLive, key: spentLimited, status: 429, code: "usage_exceeded", message: noneLeft},
		{name: "ambiguous path", base: envTest, path: "../prod/whoami", key: test, status: 400, code: "invalid_request",
			message: "Request path must be canonical (no //, /./ or /../)."},
	}
}

// contractEnv is a server the table runs on; for the reverse proxy, with
// its upstream and a client of it over a socket.
type contractEnv struct {
	*testEnv
	up   *upstreamAPI
	wire *testClient
}

// contractSurfaces ask about a row's request each in its own way, and
// check what an answer of theirs must hold beyond status, code and message.
var contractSurfaces = []struct {
	name  string
	proxy bool
	check func(t *testing.T, ce *contractEnv, row contractRow)
}{
	{"whoami", false, func(t *testing.T, ce *contractEnv, row contractRow) {
		r := ce.on(t).do("GET", row.uri(ce.testEnv), "", row.headers()...)
		if checkContractAnswer(t, r, row) {
			if got := r.json(t)["key_id"]; got != row.keyID {
				t.Errorf("whoami key_id = %v; want %s", got, row.keyID)
			}
		}
	}},
	{"proxy", true, func(t *testing.T, ce *contractEnv, row contractRow) {
		before := len(ce.up.requests())
		r := ce.wire.on(t).do("GET", row.uri(ce.testEnv), "", row.headers()...)
		allowed := checkContractAnswer(t, r, row)
		want := 0
		if allowed {
			want = 1
		}
		if n := len(ce.up.requests()) - before; n != want {
			t.Fatalf("the upstream saw %d requests; want %d", n, want)
		}
		if allowed {
			if !strings.Contains(string(r.body), `"upstream":true`) {
				t.Errorf("body %q; want the upstream's", r.body)
			}
			if got := ce.up.last(t).header.Values("X-Keyhole-Key-Id"); len(got) != 1 || got[0] != row.keyID {
				t.Errorf("upstream X-Keyhole-Key-Id = %q; want [%s]", got, row.keyID)
			}
		}
	}},
	{"forward auth", false, func(t *testing.T, ce *contractEnv, row contractRow) {
		r := ce.on(t).do("GET", "/v1/auth", "", append(row.headers(),
			"X-Original-Method", "GET", "X-Original-URI", row.uri(ce.testEnv))...)
		if !checkContractAnswer(t, r, row) {
			checkNoIdentity(t, r)
			return
		}
		if len(r.body) != 0 {
			t.Errorf("200 body = %q; want empty", r.body)
		}
		if got := r.header.Values("X-Keyhole-Key-Id"); len(got) != 1 || got[0] != row.keyID {
			t.Errorf("X-Keyhole-Key-Id = %q; want [%s]", got, row.keyID)
		}
	}},
	{"verify", false, func(t *testing.T, ce *contractEnv, row contractRow) {
		if row.header != nil || row.path != "" {
			return // no such request: see contractRow
		}
		body, _ := json.Marshal(verifyRequest{Key: row.key, Env: row.base, Scope: "whoami:read"})
		r := ce.on(t).do("POST", "/v1/keys/verify", string(body))
		mustStatus(t, "verify", r, 200)
		var a verifyAnswer
		if err := json.Unmarshal(r.body, &a); err != nil {
			t.Fatalf("verify answer %q: %v", r.body, err)
		}
		if row.code == "" {
			if !a.Valid || a.KeyID != row.keyID || a.Code != "" {
				t.Fatalf("verify = %s; want valid, key_id %s", r.body, row.keyID)
			}
			return
		}
		if a.Valid || a.Code != row.code || a.Message != row.message {
			t.Fatalf("verify = %s; want valid false, %s %q", r.body, row.code, row.message)
		}
		checkRetryAndCredits(t, r, row)
		if row.code == "usage_exceeded" && (a.Credits == nil || a.Credits.Remaining != 0) {
			t.Errorf("usage_exceeded answer %s; want its credits, remaining 0", r.body)
		}
	}},
}

// checkContractAnswer checks a header surface's answer against row: its
// status, and for a refusal the error body's code and exact message, its
// request id (X-Request-Id's too) and a 429's Retry-After. It says whether
// the row is an allowed request.
func checkContractAnswer(t *testing.T, r response, row contractRow) (allowed bool) {
	t.Helper()
	if r.status != row.status {
		t.Fatalf("status = %d %s; want %d", r.status, r.body, row.status)
	}
	if row.code == "" {
		if got := r.header.Get("X-Credits-Remaining"); got != row.credits {
			t.Errorf("X-Credits-Remaining %q; want %q", got, row.credits)
		}
		return true
	}
	m := r.json(t)
	e, _ := m["error"].(map[string]any)
	if e["code"] != row.code || e["message"] != row.message {
		t.Fatalf("error = %v; want %s %q", e, row.code, row.message)
	}
	if id, _ := m["request_id"].(string); id == "" || r.header.Get("X-Request-Id") != id {
		t.Fatalf("request_id = %q, header %q; want the same non-empty id", id, r.header.Get("X-Request-Id"))
	}
	checkRetryAndCredits(t, r, row)
	return false
}

// checkRetryAndCredits checks a 429's Retry-After (none for credits spent
// without a refill) and X-Credits-Remaining.
func checkRetryAndCredits(t *testing.T, r response, row contractRow) {
	t.Helper()
	if retry := r.header.Get("Retry-After"); row.status == 429 && (retry == "") != row.noRetry {
		t.Errorf("429 with Retry-After %q; want one: %v", retry, !row.noRetry)
	}
	if row.name == "no credits left until the refill" && r.header.Get("Retry-After") != "5400" {
		t.Errorf("Retry-After %q; want 5400, the seconds until the refill at 00:00 UTC", r.header.Get("Retry-After"))
	}
	if got := r.header.Get("X-Credits-Remaining"); got != row.credits {
		t.Errorf("X-Credits-Remaining %q; want %q", got, row.credits)
	}
}

// TestErrorRows runs the SPEC 3 table against each surface, on a server
// of each key style.
func TestErrorRows(t *testing.T) {
	t.Parallel()
	rules := filepath.Join(t.TempDir(), "rules.json")
	if err := os.WriteFile(rules, []byte(contractRules), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, surface := range contractSurfaces {
		for _, style := range []string{stylePrefixed, styleSplit} {
			t.Run(surface.name+"/"+style, func(t *testing.T) {
				t.Parallel()
				ce := &contractEnv{}
				if surface.proxy {
					ce.up = newUpstreamAPI(t, nil)
				}
				ce.testEnv = newTestEnv(t, func(c *config) {
					c.rulesPath, c.keyStyle = rules, style
					if ce.up != nil {
						c.upstream = ce.up.URL
					}
				})
				if ce.up != nil {
					ce.wire = ce.listen()
				}
				for _, row := range contractRows(t, ce.testEnv) {
					t.Run(row.name, func(t *testing.T) { surface.check(t, ce, row) })
				}
			})
		}
	}
}

// TestEveryErrorCarriesItsRequestID: whichever surface answers an error,
// the router's 404 and 405 included, X-Request-Id is the body's request_id.
func TestEveryErrorCarriesItsRequestID(t *testing.T) {
	te := newTestEnv(t)
	for _, tt := range []struct{ method, path string }{
		{"GET", "/no/such/page"},
		{"DELETE", "/admin/v1/orgs"},
		{"GET", "/admin/v1/orgs/org_missing"},
		{"GET", "/api/v1/prod/whoami"},
		{"POST", "/v1/keys/verify"},
		{"GET", "/v1/auth"},
	} {
		r := te.do(tt.method, tt.path, "", bearer(testRootToken)...)
		var body errorBody
		if err := json.Unmarshal(r.body, &body); err != nil || body.RequestID == "" {
			t.Errorf("%s %s = %d %s: no request_id", tt.method, tt.path, r.status, r.body)
			continue
		}
		if got := r.header.Values("X-Request-Id"); len(got) != 1 || got[0] != body.RequestID {
			t.Errorf("%s %s: X-Request-Id %q; want the body's %q", tt.method, tt.path, got, body.RequestID)
		}
	}
}

// BenchmarkAnswerBody: whoami's body written by hand (appendIdentity, from
// a pooled buffer) against encoding/json, to show the hand-written answers
// pay for themselves (BENCHMARKS.md).
func BenchmarkAnswerBody(b *testing.B) {
	te := newTestEnv(b)
	_, key := te.createKey(te.createOrg("acme"), `{"name":"k","env":"live","scopes":["sms:send","reports:read"]}`)
	p, _ := te.s.format.parse(key)
	ix, k := te.s.index, te.s.index.find(p)
	b.Run("by hand", func(b *testing.B) {
		buf := make([]byte, 0, 512)
		for b.Loop() {
			buf = append(appendIdentity(append(buf[:0], '{'), ix, k), "}\n"...)
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		type identity struct {
			KeyID  string   `json:"key_id"`
			OrgID  string   `json:"org_id"`
			Env    string   `json:"env"`
			Scopes []string `json:"scopes"`
		}
		for b.Loop() {
			if _, err := json.Marshal(identity{k.keyID(), ix.orgID(k), k.env(), ix.scopes(k).list}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
