package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// The tests in this file edit keys with PATCH /admin/v1/orgs/:org/keys/:key
// and check, through the guarded surface, that the very next request sees
// each change, and that what a PATCH refuses changes nothing.

// patchEnv is a server with the test rules, one org and one live key.
type patchEnv struct {
	*testEnv
	org, id, key string
}

func newPatchEnv(t *testing.T, body string) *patchEnv {
	t.Helper()
	rules := writeRules(t)
	te := newTestEnv(t, func(c *config) { c.rulesPath = rules })
	pe := &patchEnv{testEnv: te, org: te.createOrg("acme")}
	pe.id, pe.key = te.createKey(pe.org, body)
	return pe
}

// patch edits the key and wants 200; it returns the record answered.
func (pe *patchEnv) patch(body string) keyView {
	pe.t.Helper()
	r := pe.root("PATCH", "/orgs/"+pe.org+"/keys/"+pe.id, body)
	mustStatus(pe.t, "PATCH "+body, r, 200)
	var v keyView
	if err := json.Unmarshal(r.body, &v); err != nil {
		pe.t.Fatal(err)
	}
	return v
}

// record is the key's record from GET.
func (pe *patchEnv) record() keyView {
	pe.t.Helper()
	r := pe.root("GET", "/orgs/"+pe.org+"/keys/"+pe.id, "")
	mustStatus(pe.t, "GET key", r, 200)
	var v keyView
	if err := json.Unmarshal(r.body, &v); err != nil {
		pe.t.Fatal(err)
	}
	return v
}

// smsSend asks forward auth about POST …/sms/send, which needs sms:send.
func (pe *patchEnv) smsSend() response {
	pe.t.Helper()
	return pe.do("GET", "/v1/auth", "", append(bearer(pe.key),
		"X-Original-Method", "POST", "X-Original-URI", "/api/v1/prod/sms/send")...)
}

// verifyKey is POST /v1/keys/verify for the key, decoded.
func (pe *patchEnv) verifyKey(extra string) (verifyAnswer, response) {
	pe.t.Helper()
	r := pe.do("POST", "/v1/keys/verify", `{"key":"`+pe.key+`"`+extra+`}`)
	mustStatus(pe.t, "verify", r, 200)
	var a verifyAnswer
	if err := json.Unmarshal(r.body, &a); err != nil {
		pe.t.Fatalf("verify answer %s: %v", r.body, err)
	}
	return a, r
}

func wantCode(t *testing.T, what string, r response, status int, code string) {
	t.Helper()
	if r.status != status || status >= 400 && r.errorCode(t) != code {
		t.Fatalf("%s = %d %s; want %d %s", what, r.status, r.body, status, code)
	}
}

// TestPatchKeyTakesEffectAtOnce edits each field in turn; the request
// right after the PATCH answers sees it, on the guarded surface and in
// verify, and the change survives a restart.
func TestPatchKeyTakesEffectAtOnce(t *testing.T) {
	t.Parallel()
	pe := newPatchEnv(t, `{"name":"backend","env":"live","rate_limits":[{"limit":1,"window":"1h"}]}`)

	// scopes
	wantCode(t, "sms/send without the scope", pe.smsSend(), 403, "insufficient_scope")
	if v := pe.patch(`{"scopes":["sms:send"]}`); len(v.Scopes) != 1 || v.Scopes[0] != "sms:send" {
		t.Fatalf("PATCH scopes answered %+v", v.Scopes)
	}
	wantCode(t, "sms/send with the scope", pe.smsSend(), 200, "")

	// rate_limits: the one token of the hour is spent; new windows start full
	wantCode(t, "whoami over the hourly limit", pe.whoami(envLive, pe.key), 429, "rate_limited")
	pe.patch(`{"rate_limits":[{"limit":100,"window":"60s"}]}`)
	r := pe.whoami(envLive, pe.key)
	wantCode(t, "whoami with new windows", r, 200, "")
	if got := r.header.Get("RateLimit-Policy"); got != `"1m";q=100;w=60` {
		t.Errorf("RateLimit-Policy %q after the PATCH", got)
	}
	if v := pe.patch(`{"rate_limits":null}`); len(v.RateLimits) != 2 || v.RateLimits[0].Limit != 5 {
		t.Errorf("rate_limits null answered %+v; want the server default", v.RateLimits)
	}
	if got := pe.whoami(envLive, pe.key).header.Get("RateLimit-Policy"); got != `"1m";q=5;w=60, "1h";q=100;w=3600` {
		t.Errorf("RateLimit-Policy %q; want the server default's", got)
	}
	pe.patch(`{"rate_limits":[{"limit":1000,"window":"1m"}]}`)

	// name
	pe.patch(`{"name":"renamed"}`)
	if a, _ := pe.verifyKey(""); a.Name == nil || *a.Name != "renamed" {
		t.Errorf("verify name = %v; want renamed", a.Name)
	}

	// expires_at, and null to clear it
	in := pe.clock.Now().Add(time.Hour).Format(time.RFC3339)
	if v := pe.patch(`{"expires_at":"` + in + `"}`); v.ExpiresAt == nil {
		t.Fatalf("PATCH expires_at answered no expires_at")
	}
	pe.clock.Advance(2 * time.Hour)
	wantCode(t, "whoami past the new expiry", pe.whoami(envLive, pe.key), 401, "key_expired")
	if v := pe.patch(`{"expires_at":null}`); v.ExpiresAt != nil {
		t.Fatalf("expires_at null answered %v", *v.ExpiresAt)
	}
	wantCode(t, "whoami without an expiry", pe.whoami(envLive, pe.key), 200, "")

	// enabled
	if v := pe.patch(`{"enabled":false}`); v.Enabled {
		t.Fatalf("PATCH enabled false answered enabled")
	}
	wantCode(t, "whoami while disabled", pe.whoami(envLive, pe.key), 401, "key_disabled")
	wantCode(t, "forward auth while disabled", pe.smsSend(), 401, "key_disabled")
	if a, _ := pe.verifyKey(""); a.Valid || a.Code != "key_disabled" || a.Message != "API key is disabled." {
		t.Errorf("verify while disabled = %+v", a)
	}
	list := pe.root("GET", "/orgs/"+pe.org+"/keys", "")
	if !strings.Contains(string(list.body), `"enabled":false`) {
		t.Errorf("the listing does not show the key disabled: %s", list.body)
	}
	pe.patch(`{"enabled":true}`)
	wantCode(t, "whoami enabled again", pe.whoami(envLive, pe.key), 200, "")

	// meta: verify and whoami answer it, as the admin API shows it
	v := pe.patch(`{"meta":{"plan":"pro","limits":{"seats":3},"note":"<b>&</b>"}}`)
	const meta = `{"plan":"pro","limits":{"seats":3},"note":"\u003cb\u003e\u0026\u003c/b\u003e"}`
	if string(v.Meta) != meta {
		t.Errorf("PATCH meta answered %s; want %s", v.Meta, meta)
	}
	if a, r := pe.verifyKey(""); string(a.Meta) != meta || !strings.Contains(string(r.body), `"meta":`+meta) {
		t.Errorf("verify meta = %s", r.body)
	}
	r = pe.whoami(envLive, pe.key)
	if !strings.Contains(string(r.body), `"meta":`+meta) {
		t.Errorf("whoami = %s; want the meta", r.body)
	}
	for name := range r.header {
		if strings.Contains(strings.ToLower(name), "meta") {
			t.Errorf("meta became a header: %s", name)
		}
	}
	pe.patch(`{"meta":null}`)
	if a, _ := pe.verifyKey(""); string(a.Meta) != "null" {
		t.Errorf("verify meta after null = %s", a.Meta)
	}
	if r := pe.whoami(envLive, pe.key); strings.Contains(string(r.body), "meta") {
		t.Errorf("whoami after meta null = %s", r.body)
	}

	// allowed_ips: the in-process client is 192.0.2.1
	pe.patch(`{"allowed_ips":["198.51.100.0/24"]}`)
	wantCode(t, "whoami from outside allowed_ips", pe.whoami(envLive, pe.key), 403, "ip_not_allowed")
	if a, _ := pe.verifyKey(""); a.Code != "ip_not_allowed" {
		t.Errorf("verify from outside allowed_ips = %+v", a)
	}
	if v := pe.patch(`{"allowed_ips":["198.51.100.0/24","192.0.2.1"]}`); len(v.AllowedIPs) != 2 || v.AllowedIPs[1] != "192.0.2.1/32" {
		t.Errorf("allowed_ips answered %v; want the canonical CIDRs", v.AllowedIPs)
	}
	wantCode(t, "whoami from inside allowed_ips", pe.whoami(envLive, pe.key), 200, "")
	pe.patch(`{"allowed_ips":null}`)

	// credits
	pe.patch(`{"credits":{"remaining":2}}`)
	for i, want := range []string{"1", "0"} {
		r := pe.whoami(envLive, pe.key)
		wantCode(t, fmt.Sprintf("whoami %d with credits", i), r, 200, "")
		if got := r.header.Get("X-Credits-Remaining"); got != want {
			t.Errorf("X-Credits-Remaining %q; want %s", got, want)
		}
	}
	wantCode(t, "whoami without credits left", pe.whoami(envLive, pe.key), 429, "usage_exceeded")
	if v := pe.record(); v.Credits == nil || v.Credits.Remaining != 0 {
		t.Errorf("record credits = %+v; want 0 left", v.Credits)
	}
	pe.patch(`{"credits":{"remaining":1}}`)
	wantCode(t, "whoami with a credit again", pe.whoami(envLive, pe.key), 200, "")
	pe.patch(`{"credits":null}`)
	if r := pe.whoami(envLive, pe.key); r.status != 200 || r.header.Get("X-Credits-Remaining") != "" {
		t.Errorf("whoami without a usage limit = %d, X-Credits-Remaining %q", r.status, r.header.Get("X-Credits-Remaining"))
	}

	// Several at once, then a restart: the record and the checks are as
	// the last PATCH left them.
	pe.patch(`{"name":"final","scopes":[],"enabled":false,"meta":{"a":1},"allowed_ips":["192.0.2.0/24"],"credits":{"remaining":7,"refill":{"amount":7,"interval":"monthly","day":31}}}`)
	before := pe.record()
	pe.restart()
	after := pe.record()
	b1, _ := json.Marshal(before)
	b2, _ := json.Marshal(after)
	if string(b1) != string(b2) {
		t.Errorf("after a restart the record is\n%s\nwas\n%s", b2, b1)
	}
	wantCode(t, "whoami disabled after the restart", pe.whoami(envLive, pe.key), 401, "key_disabled")
	pe.patch(`{"enabled":true}`)
	wantCode(t, "sms/send without scopes after the restart", pe.smsSend(), 403, "insufficient_scope")
	if r := pe.whoami(envLive, pe.key); r.status != 200 || r.header.Get("X-Credits-Remaining") != "6" {
		t.Errorf("whoami after the restart = %d, X-Credits-Remaining %q; want 200, 6", r.status, r.header.Get("X-Credits-Remaining"))
	}
}

// TestPatchKeyRefusals: a PATCH body is as strict as every admin body, and
// one that is refused changes nothing; a revoked key cannot be edited.
func TestPatchKeyRefusals(t *testing.T) {
	t.Parallel()
	pe := newPatchEnv(t, `{"name":"k","env":"live","scopes":["a:b"],"meta":{"x":1}}`)
	before := pe.root("GET", "/orgs/"+pe.org+"/keys/"+pe.id, "").body
	big := `{"meta":{"a":"` + strings.Repeat("x", maxMetaBytes) + `"}}`
	ips := `{"allowed_ips":[` + strings.Repeat(`"192.0.2.1",`, maxAllowedIPs) + `"192.0.2.1"]}`
	for _, c := range []struct{ body, names string }{
		{`{"nme":"x"}`, `"nme"`},
		{`{"Enabled":false}`, `"Enabled"`},
		{`{"enabled":false,"enabled":true}`, `"enabled" appears twice`},
		{`{"meta":{"a":1,"a":2}}`, `"a" appears twice`},
		{`{"enabled":null}`, `"enabled"`},
		{`{"enabled":"no"}`, `"enabled"`},
		{`{"name":null}`, `"name"`},
		{`{"name":""}`, `"name"`},
		{`{"name":5}`, `"name"`},
		{`{"scopes":["a b"]}`, `"scopes"`},
		{`{"rate_limits":[]}`, `"rate_limits"`},
		{`{"rate_limits":[{"limit":5,"window":"1m","Limit":6}]}`, `"Limit"`},
		{`{"expires_at":"2001-01-01T00:00:00Z"}`, `"expires_at"`},
		{`{"expires_at":"soon"}`, `"expires_at"`},
		{`{"meta":[1]}`, `"meta"`},
		{`{"meta":"x"}`, `"meta"`},
		{big, `"meta"`},
		{`{"allowed_ips":["10.0.0.1/8"]}`, `10.0.0.0/8`},
		{`{"allowed_ips":["nowhere"]}`, `"allowed_ips"`},
		{`{"allowed_ips":["::ffff:10.0.0.0/104"]}`, `IPv4`},
		{`{"allowed_ips":["fe80::1%eth0"]}`, `"allowed_ips"`},
		{`{"allowed_ips":"192.0.2.1"}`, `"allowed_ips"`},
		{ips, `"allowed_ips"`},
		{`{"credits":{}}`, `"remaining"`},
		{`{"credits":{"remaining":-1}}`, `"remaining"`},
		{`{"credits":{"remaining":1.5}}`, `remaining`},
		{`{"credits":{"remaining":2000000000000000}}`, `"remaining"`},
		{`{"credits":{"remaining":1,"refill":{"amount":5,"interval":"weekly"}}}`, `"interval"`},
		{`{"credits":{"remaining":1,"refill":{"amount":5,"interval":"daily","day":1}}}`, `"day"`},
		{`{"credits":{"remaining":1,"refill":{"amount":5,"interval":"monthly","day":32}}}`, `"day"`},
		{`{"credits":{"remaining":1,"refill":{"amount":5,"interval":"monthly","day":0}}}`, `"day"`},
		{`{"credits":{"remaining":1,"refill":{"amount":0,"interval":"daily"}}}`, `"amount"`},
		{`{"credits":{"remaining":1,"refill":{"interval":"daily"}}}`, `"amount"`},
		{`{"credits":{"remaining":1,"rest":2}}`, `"rest"`},
		{`{"name":"ok","enabled":"later"}`, `"enabled"`}, // nothing of a refused body is written
		{`name=x`, `syntax`},
		{``, `JSON object`},
		{`[]`, `JSON object`},
		{`null`, `JSON object`},
	} {
		r := pe.root("PATCH", "/orgs/"+pe.org+"/keys/"+pe.id, c.body)
		e, _ := r.json(t)["error"].(map[string]any)
		msg, _ := e["message"].(string)
		if r.status != 400 || r.errorCode(t) != "invalid_request" || !strings.Contains(msg, c.names) {
			t.Errorf("PATCH %.80s = %d %s; want 400 invalid_request naming %s", c.body, r.status, r.body, c.names)
		}
	}
	if after := pe.root("GET", "/orgs/"+pe.org+"/keys/"+pe.id, "").body; string(after) != string(before) {
		t.Fatalf("refused PATCHes changed the key:\n%s\nwas\n%s", after, before)
	}
	// {} changes nothing, and answers the record.
	if v := pe.patch(`{}`); v.Name != "k" || !v.Enabled {
		t.Errorf("PATCH {} answered %+v", v)
	}
	if r := pe.root("PATCH", "/orgs/"+pe.org+"/keys/key_0000000000000000", `{"enabled":false}`); r.status != 404 {
		t.Errorf("PATCH of an unknown key = %d %s; want 404", r.status, r.body)
	}
	mustStatus(t, "revoke", pe.root("POST", "/orgs/"+pe.org+"/keys/"+pe.id+"/revoke", ""), 200)
	r := pe.root("PATCH", "/orgs/"+pe.org+"/keys/"+pe.id, `{"enabled":true}`)
	if r.status != 400 || r.errorCode(t) != "invalid_request" || !strings.Contains(string(r.body), "revoked") {
		t.Errorf("PATCH of a revoked key = %d %s; want 400 naming the revocation", r.status, r.body)
	}
	wantCode(t, "the revoked key", pe.whoami(envLive, pe.key), 401, "invalid_or_revoked")
}

// TestCreateKeyWithOptions: meta, enabled, allowed_ips and credits can be
// given at creation, are in the record, and are carried over by a roll.
func TestCreateKeyWithOptions(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t)
	org := te.createOrg("acme")
	r := te.root("POST", "/orgs/"+org+"/keys", `{"name":"k","env":"live","meta":{"customer":"c_1"},"enabled":false,
		"allowed_ips":["192.0.2.0/24","2001:DB8::/32"],"credits":{"remaining":10,"refill":{"amount":10,"interval":"monthly"}}}`)
	mustStatus(t, "create with options", r, 201)
	var v keyView
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatal(err)
	}
	if string(v.Meta) != `{"customer":"c_1"}` || v.Enabled || len(v.AllowedIPs) != 2 || v.AllowedIPs[1] != "2001:db8::/32" ||
		v.Credits == nil || v.Credits.Remaining != 10 || v.Credits.Refill == nil || *v.Credits.Refill != (creditRefill{10, refillMonthly, 1}) {
		t.Fatalf("created %s", r.body)
	}
	wantCode(t, "the disabled new key", te.whoami(envLive, v.Key), 401, "key_disabled")
	plain := te.root("GET", "/orgs/"+org+"/keys/"+te.mustKeyID(org, `{"name":"plain","env":"test"}`), "")
	for _, want := range []string{`"enabled":true`, `"meta":null`, `"allowed_ips":[]`, `"credits":null`} {
		if !strings.Contains(string(plain.body), want) {
			t.Errorf("a key without options shows %s; want %s", plain.body, want)
		}
	}

	mustStatus(t, "enable", te.root("PATCH", "/orgs/"+org+"/keys/"+v.ID, `{"enabled":true}`), 200)
	mustStatus(t, "spend one", te.whoami(envLive, v.Key), 200)
	roll := te.root("POST", "/orgs/"+org+"/keys/"+v.ID+"/roll", `{"expires_in":"1h"}`)
	mustStatus(t, "roll", roll, 201)
	var rolled keyView
	json.Unmarshal(roll.body, &rolled)
	if string(rolled.Meta) != string(v.Meta) || !rolled.Enabled || len(rolled.AllowedIPs) != 2 ||
		rolled.Credits == nil || rolled.Credits.Remaining != 9 || rolled.Credits.Refill == nil {
		t.Errorf("rolled %s; want the old key's options, with its 9 credits left", roll.body)
	}
}

func (te *testEnv) mustKeyID(org, body string) string {
	te.t.Helper()
	id, _ := te.createKey(org, body)
	return id
}

// TestVerifyAnswerFields: a valid verify answer has the key's name, meta,
// expires_at, enabled, credits and every window, besides SPEC 6's fields.
func TestVerifyAnswerFields(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t)
	org := te.createOrg("acme")
	id, plain := te.createKey(org, `{"name":"plain","env":"live","rate_limits":[{"limit":5,"window":"1m"},{"limit":100,"window":"1h"}]}`)
	r := te.do("POST", "/v1/keys/verify", `{"key":"`+plain+`"}`)
	want := `{"valid":true,"key_id":"` + id + `","org_id":"` + org + `","env":"live","scopes":[],"name":"plain","meta":null,` +
		`"expires_at":null,"enabled":true,"credits":null,"ratelimit":{"limit":5,"remaining":4,"reset":12},` +
		`"ratelimits":[{"window":"1m","limit":5,"remaining":4,"reset":12},{"window":"1h","limit":100,"remaining":99,"reset":36}]}` + "\n"
	if string(r.body) != want {
		t.Errorf("verify answer\n%s\nwant\n%s", r.body, want)
	}
	exp := "2026-12-24T20:30:00.000Z"
	id, rich := te.createKey(org, `{"name":"r\"ich","env":"test","scopes":["a:b"],"meta":{"tier":"<gold>"},"expires_at":"`+exp+`",`+
		`"rate_limits":[{"limit":10,"window":"1d"}],"credits":{"remaining":3,"refill":{"amount":50,"interval":"monthly","day":15}}}`)
	r = te.do("POST", "/v1/keys/verify", `{"key":"`+rich+`","cost":2}`)
	want = `{"valid":true,"key_id":"` + id + `","org_id":"` + org + `","env":"test","scopes":["a:b"],"name":"r\"ich",` +
		`"meta":{"tier":"\u003cgold\u003e"},"expires_at":"` + exp + `","enabled":true,` +
		`"credits":{"remaining":1,"refill":{"amount":50,"interval":"monthly","day":15}},"ratelimit":{"limit":10,"remaining":9,"reset":8640},` +
		`"ratelimits":[{"window":"1d","limit":10,"remaining":9,"reset":8640}]}` + "\n"
	if string(r.body) != want {
		t.Errorf("verify answer\n%s\nwant\n%s", r.body, want)
	}
	if r.header.Get("X-Credits-Remaining") != "1" {
		t.Errorf("X-Credits-Remaining %q; want 1", r.header.Get("X-Credits-Remaining"))
	}
	// A refusal of an identified key with credits carries them and every
	// window too.
	r = te.do("POST", "/v1/keys/verify", `{"key":"`+rich+`","cost":2}`)
	want = `{"valid":false,"code":"usage_exceeded","message":"API key has no requests left.",` +
		`"credits":{"remaining":1,"refill":{"amount":50,"interval":"monthly","day":15}},"ratelimit":{"limit":10,"remaining":9,"reset":8640},` +
		`"ratelimits":[{"window":"1d","limit":10,"remaining":9,"reset":8640}]}` + "\n"
	if string(r.body) != want {
		t.Errorf("verify answer\n%s\nwant\n%s", r.body, want)
	}
}

// TestVerifyCost: verify's "cost" is what a call spends of a key's
// credits: 0 checks without spending, more than is left spends nothing
// and takes no rate-limit token; a key without credits ignores it.
func TestVerifyCost(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t)
	org := te.createOrg("acme")
	_, key := te.createKey(org, `{"name":"k","env":"live","rate_limits":[{"limit":100,"window":"1h"}],"credits":{"remaining":10}}`)
	_, free := te.createKey(org, `{"name":"free","env":"live"}`)
	verify := func(body string) verifyAnswer {
		t.Helper()
		r := te.do("POST", "/v1/keys/verify", body)
		mustStatus(t, "verify "+body, r, 200)
		var a verifyAnswer
		if err := json.Unmarshal(r.body, &a); err != nil {
			t.Fatal(err)
		}
		return a
	}
	for _, c := range []struct {
		cost      string
		valid     bool
		remaining int64 // credits left after
		tokens    int64 // rate-limit tokens left after
	}{
		{`,"cost":0`, true, 10, 99},
		{``, true, 9, 98},
		{`,"cost":null`, true, 8, 97},
		{`,"cost":3`, true, 5, 96},
		{`,"cost":6`, false, 5, 96},
		{`,"cost":5`, true, 0, 95},
		{`,"cost":0`, true, 0, 94},
		{`,"cost":1`, false, 0, 94},
	} {
		a := verify(`{"key":"` + key + `"` + c.cost + `}`)
		if a.Valid != c.valid || a.Credits == nil || a.Credits.Remaining != c.remaining || a.RateLimit.Remaining != c.tokens {
			t.Fatalf("cost %q: valid %v, credits %+v, ratelimit %+v; want %v, %d left, %d tokens",
				c.cost, a.Valid, a.Credits, a.RateLimit, c.valid, c.remaining, c.tokens)
		}
		if !c.valid && a.Code != "usage_exceeded" {
			t.Fatalf("cost %q: code %s; want usage_exceeded", c.cost, a.Code)
		}
	}
	if a := verify(`{"key":"` + free + `","cost":1000}`); !a.Valid || a.Credits != nil {
		t.Errorf("a key without credits and a cost: %+v; want valid, no credits", a)
	}
	for _, bad := range []string{`1.5`, `-1`, `"1"`, `1e3`, `01`, `true`, `1000000000000001`, `99999999999999999999`} {
		r := te.do("POST", "/v1/keys/verify", `{"key":"`+key+`","cost":`+bad+`}`)
		names := strings.Contains(string(r.body), `cost`) || bad == "01" && strings.Contains(string(r.body), "syntax error")
		if r.status != 400 || r.errorCode(t) != "invalid_request" || !names {
			t.Errorf("cost %s = %d %s; want 400 naming cost", bad, r.status, r.body)
		}
	}
}

// TestConcurrentPatchesEndAsCommitted: PATCHes of one key from many
// clients at once leave the guarded surface as the last commit left the
// record, though their answers may be put in the index in another order.
func TestConcurrentPatchesEndAsCommitted(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t)
	org := te.createOrg("acme")
	id, key := te.createKey(org, `{"name":"k","env":"live","rate_limits":[{"limit":100000,"window":"1m"}]}`)
	for round := range 5 {
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				body := fmt.Sprintf(`{"enabled":%v,"name":"n%d"}`, i%2 == 0, i)
				if r, err := te.try("PATCH", "/admin/v1/orgs/"+org+"/keys/"+id, body, bearer(testRootToken)...); err != nil || r.status != 200 {
					t.Errorf("PATCH: %v %d %s", err, r.status, r.body)
				}
			}()
		}
		wg.Wait()
		var rec keyView
		json.Unmarshal(te.root("GET", "/orgs/"+org+"/keys/"+id, "").body, &rec)
		r := te.do("POST", "/v1/keys/verify", `{"key":"`+key+`"}`)
		var v verifyAnswer
		json.Unmarshal(r.body, &v)
		if v.Valid != rec.Enabled || rec.Enabled && (v.Name == nil || *v.Name != rec.Name) {
			t.Fatalf("round %d: the record says enabled %v, name %s; verify says %s", round, rec.Enabled, rec.Name, r.body)
		}
	}
}
