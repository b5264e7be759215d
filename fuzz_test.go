package main

// Fuzz targets for everything keyhole reads from the outside: presented keys
// (both styles), the Authorization / x-api-key headers, the rules file, the
// --rate-limits list, every admin JSON body and the verify body. Each target
// checks properties of the result, not only that nothing panics. Seeds are
// added with f.Add and kept in testdata/fuzz/<FuzzName>/; .ci/fuzz runs each
// target for a few seconds.
//
// No seed holds a well-formed key: keys that must be valid are made at run
// time by newKey or by the server.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"

	"github.com/rs/zerolog"
)

// newFuzzEnv is newTestEnv for FuzzAdminBodies, which replaces its server
// from inside f.Fuzz when the db has grown: newTestEnv ties the server's life
// to the test it is given, and inside f.Fuzz that is one input. The returned
// func closes it. Before using te.do / te.root inside f.Fuzz, set te.t = t.
func newFuzzEnv(tb testing.TB, modify ...func(*config)) (*testEnv, func()) {
	tb.Helper()
	dir, err := os.MkdirTemp("", "keyhole-fuzz-")
	if err != nil {
		tb.Fatal(err)
	}
	cfg, err := parseServeFlags([]string{"--db", filepath.Join(dir, "keyhole.db"),
		"--admin-token", testRootToken}, func(string) string { return "" })
	if err != nil {
		tb.Fatal(err)
	}
	for _, m := range modify {
		m(&cfg)
	}
	if err := cfg.validate(); err != nil {
		tb.Fatal(err)
	}
	st, err := openStore(cfg.dbPath, time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	st.db.NoSync = true // durability is not fuzzed here, and an fsync per 201 slows fuzzing
	te := &testEnv{clock: newFakeClock(), dbPath: cfg.dbPath, cfg: cfg, stdout: new(bytes.Buffer), stderr: new(bytes.Buffer)}
	te.testClient = &testClient{handler: te, cfg: &te.cfg} // te.t is set inside f.Fuzz
	s, err := newServer(cfg, st, te.clock.Now, zerolog.New(te.stderr))
	if err == nil {
		err = s.firstStart(te.stdout)
	}
	if err != nil {
		st.Close()
		tb.Fatal(err)
	}
	te.s = s
	var once sync.Once
	return te, func() {
		once.Do(func() {
			st.Close()
			os.RemoveAll(dir)
		})
	}
}

// mustCreate posts body and wants 201; it returns the answer as keyView
// (orgs fit it too: id, name, created_at).
func mustCreate(tb testing.TB, te *testEnv, path, body string) keyView {
	tb.Helper()
	r := te.root("POST", path, body)
	if r.status != 201 {
		tb.Fatalf("POST %s %s = %d %s; want 201", path, body, r.status, r.body)
	}
	var v keyView
	if err := json.Unmarshal(r.body, &v); err != nil {
		tb.Fatalf("POST %s answer %s: %v", path, r.body, err)
	}
	return v
}

// checkErrorShape asserts r is exactly the contract's error body
// {"error":{"code","message"},"request_id"} with status and code.
func checkErrorShape(t *testing.T, what string, r response, status int, code string) errorBody {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: status %d %s; want %d %s", what, r.status, r.body, status, code)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s: Content-Type %q", what, ct)
	}
	var top map[string]json.RawMessage
	if json.Unmarshal(r.body, &top) != nil || len(top) != 2 || top["error"] == nil || top["request_id"] == nil {
		t.Fatalf("%s: body %s is not {\"error\",\"request_id\"}", what, r.body)
	}
	var inner map[string]json.RawMessage
	if json.Unmarshal(top["error"], &inner) != nil || len(inner) != 2 || inner["code"] == nil || inner["message"] == nil {
		t.Fatalf("%s: body %s: error is not {\"code\",\"message\"}", what, r.body)
	}
	var eb errorBody
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&eb); err != nil {
		t.Fatalf("%s: body %s: %v", what, r.body, err)
	}
	if eb.Error.Code != code || eb.Error.Message == "" {
		t.Fatalf("%s: body %s; want code %s and a message", what, r.body, code)
	}
	if !strings.HasPrefix(eb.RequestID, "req_") || eb.RequestID != r.header.Get("X-Request-Id") {
		t.Fatalf("%s: request_id %q, X-Request-Id %q", what, eb.RequestID, r.header.Get("X-Request-Id"))
	}
	return eb
}

// keyShapes are the exact shapes of SPEC 2 for a brand.
func keyShapes(brand string) (prefixed, split *regexp.Regexp) {
	b := regexp.QuoteMeta(brand)
	return regexp.MustCompile(`^` + b + `_(test|live)_[0-9a-f]{32}$`),
		regexp.MustCompile(`^` + b + `pub_[0-9a-f]{16}\.` + b + `sec_[0-9a-f]{32}$`)
}

var (
	hex32 = strings.Repeat("0f", 16)
	hex16 = strings.Repeat("a1", 8)
)

// Seeds of FuzzParseKey (brand, token), also in testdata/fuzz/FuzzParseKey.
// None is a well-formed key; those are made by newKey at run time.
var parseKeySeeds = [][2]string{
	{"kh", "kh_live_" + hex32[:31]},
	{"kh", "kh_test_" + hex32[:31] + "g0"},
	{"kh", "kh_prod_" + hex32},
	{"kh", "kh_live_" + strings.ToUpper(hex32)},
	{"kh", "kh__" + hex32},
	{"kh", "khpub_" + hex16},
	{"kh", "khpub_" + hex16 + "."},
	{"kh", "khpub_" + hex16 + ".khsec_" + hex32[:30]},
	{"kh", "khpub_" + hex16[:15] + ".khsec_" + hex32[:31] + "a"},
	{"kh", ".khsec_" + hex32[:31]},
	{"kh", "khsec_" + hex32[:31] + ".khpub_" + hex16},
	{"acme", "acme_live_" + hex32[:31]},
	{"acme", "kh_live_" + hex32[:31]},
	{"kh", strings.Repeat("a", 300)},
	{"kh", ""},
	{"kh", "."},
	{"KH", "kh_live_x"},
}

func FuzzParseKey(f *testing.F) {
	for _, s := range parseKeySeeds {
		f.Add(s[0], s[1])
	}
	for _, brand := range []string{"kh", "acme", "a1"} {
		for _, style := range []string{stylePrefixed, styleSplit} {
			for _, env := range []string{envTest, envLive} {
				key, _ := keyFormat{brand: brand, style: style}.newKey(env)
				f.Add(brand, key)
				f.Add(brand, key[:len(key)-1])
				f.Add(brand, key+" ")
			}
		}
	}
	f.Fuzz(func(t *testing.T, brand, token string) {
		if !validBrand(brand) {
			brand = "kh"
		}
		prefixedRE, splitRE := keyShapes(brand)
		wellFormed := prefixedRE.MatchString(token) || splitRE.MatchString(token)
		for _, style := range []string{stylePrefixed, styleSplit} {
			kf := keyFormat{brand: brand, style: style}
			p, err := kf.parse(token)
			if err != nil {
				var m errMalformed
				if !errors.As(err, &m) {
					t.Fatalf("%s parse(%q): error %T %v; want errMalformed", style, token, err, err)
				}
				switch msg := err.Error(); {
				case msg != msgMalformed && msg != msgMalformedSplit:
					t.Fatalf("%s parse(%q): message %q is not a contract message", style, token, msg)
				case style == styleSplit && msg != msgMalformedSplit:
					t.Fatalf("split parse(%q): message %q; want the split message", token, msg)
				case style == stylePrefixed && !strings.Contains(token, ".") && msg != msgMalformed:
					t.Fatalf("prefixed parse(%q): message %q; want %q", token, msg, msgMalformed)
				}
				if wellFormed {
					t.Fatalf("%s parse(%q) refused a well-formed key: %v", style, token, err)
				}
				continue
			}
			if p.whole != token || len(token) > maxKeyLen || p.lookup == "" || !strings.HasPrefix(token, p.lookup) {
				t.Fatalf("%s parse(%q) = %+v", style, token, p)
			}
			if p.env != "" {
				wantLookup := brand + "_" + p.env + "_" + token[len(brand)+len(p.env)+2:][:8]
				if !prefixedRE.MatchString(token) || !strings.HasPrefix(token, brand+"_"+p.env+"_") || p.lookup != wantLookup {
					t.Fatalf("%s parse(%q) = %+v; not a prefixed key of brand %q", style, token, p, brand)
				}
			} else {
				public, _, _ := strings.Cut(token, ".")
				if !splitRE.MatchString(token) || p.lookup != public {
					t.Fatalf("%s parse(%q) = %+v; not a split key of brand %q", style, token, p, brand)
				}
			}
		}

		// Every key newKey makes parses back, under either style.
		for _, style := range []string{stylePrefixed, styleSplit} {
			for _, env := range []string{envTest, envLive} {
				key, lookup := keyFormat{brand: brand, style: style}.newKey(env)
				if style == stylePrefixed && !prefixedRE.MatchString(key) || style == styleSplit && !splitRE.MatchString(key) {
					t.Fatalf("newKey(%s, %s, %s) = %q: wrong shape", brand, style, env, key)
				}
				for _, server := range []string{stylePrefixed, styleSplit} {
					p, err := keyFormat{brand: brand, style: server}.parse(key)
					wantEnv := env
					if style == styleSplit {
						wantEnv = ""
					}
					if err != nil || p.lookup != lookup || p.whole != key || p.env != wantEnv {
						t.Fatalf("%s server parse(newKey %q) = %+v, %v; want lookup %q", server, key, p, err, lookup)
					}
				}
			}
		}
	})
}

// Bits of FuzzExtractKey's mode argument.
const (
	modeAuth      = 1 << iota // send Authorization
	modeAuthTwice             // send it twice
	modeAPIKey                // send x-api-key
	modeAPIKeyTwice
)

// Seeds of FuzzExtractKey, also in testdata/fuzz/FuzzExtractKey.
var extractKeySeeds = []struct {
	auth, apiKey string
	mode         uint8
}{
	{"", "", 0},
	{"Bearer kh_test_" + hex32[:30], "", modeAuth},
	{"Basic dXNlcjpwYXNz", "", modeAuth},
	{"Bearer", "", modeAuth},
	{"Bearer ", "", modeAuth},
	{"", "", modeAuth},
	{"Bearer\tkh_test_x", "", modeAuth},
	{"BEARER kh_test_x", "", modeAuth | modeAuthTwice},
	{"Bearer khpub_" + hex16 + ".khsec_" + hex32[:20], "", modeAuth},
	{"", "kh_live_" + hex32[:31] + "g", modeAPIKey},
	{"", "", modeAPIKey},
	{"", "   ", modeAPIKey},
	{"", "", modeAPIKey | modeAPIKeyTwice},
	{"", "kh_live_abc", modeAPIKey | modeAPIKeyTwice},
	{"Token abc", "kh_live_abc", modeAuth | modeAPIKey},
}

func FuzzExtractKey(f *testing.F) {
	te := newTestEnv(f)
	org := mustCreate(f, te, "/orgs", `{"name":"acme"}`).ID
	known := mustCreate(f, te, "/orgs/"+org+"/keys",
		`{"name":"k","env":"test","rate_limits":[{"limit":1000000000,"window":"1s"}]}`).Key

	f.Add("Bearer "+known, "", uint8(modeAuth))
	f.Add("", known, uint8(modeAPIKey))
	f.Add("bearer  "+known+" ", "", uint8(modeAuth))
	f.Add("Bearer "+known, known, uint8(modeAuth|modeAuthTwice|modeAPIKey))
	for _, s := range extractKeySeeds {
		f.Add(s.auth, s.apiKey, s.mode)
	}

	f.Fuzz(func(t *testing.T, auth, apiKey string, mode uint8) {
		te.t = t
		h := http.Header{}
		var headers []string
		add := func(name, value string) {
			h.Add(name, value)
			headers = append(headers, name, value)
		}
		if mode&modeAuth != 0 {
			add("Authorization", auth)
			if mode&modeAuthTwice != 0 {
				add("Authorization", auth)
			}
		}
		if mode&modeAPIKey != 0 {
			add("x-api-key", apiKey)
			if mode&modeAPIKeyTwice != 0 {
				add("x-api-key", apiKey)
			}
		}

		token, aerr := extractKey(h)
		hasAuth, hasKey := mode&modeAuth != 0, mode&modeAPIKey != 0
		authBearer := len(auth) >= 7 && strings.EqualFold(auth[:7], "Bearer ")
		switch {
		case aerr == nil:
			if token != strings.TrimFunc(token, unicode.IsSpace) {
				t.Fatalf("token %q is not trimmed", token)
			}
			if hasAuth && (!authBearer || mode&modeAuthTwice != 0 || !strings.Contains(auth[7:], token)) {
				t.Fatalf("Authorization %q (mode %d) gave token %q", auth, mode, token)
			}
			if !hasAuth && (!hasKey || mode&modeAPIKeyTwice != 0 || token != strings.TrimSpace(apiKey)) {
				t.Fatalf("x-api-key %q (mode %d) gave token %q", apiKey, mode, token)
			}
		case aerr == errMissingAuth:
			if hasAuth || hasKey && apiKey != "" {
				t.Fatalf("mode %d, auth %q, x-api-key %q: missing_authorization", mode, auth, apiKey)
			}
		case aerr == errInvalidSch:
			if !hasAuth || authBearer && mode&modeAuthTwice == 0 {
				t.Fatalf("mode %d, auth %q: invalid_scheme", mode, auth)
			}
		case aerr.status == 401 && aerr.code == "malformed_token" && aerr.message == msgMalformed:
			if hasAuth || mode&modeAPIKeyTwice == 0 {
				t.Fatalf("mode %d, auth %q, x-api-key %q: malformed", mode, auth, apiKey)
			}
		default:
			t.Fatalf("extractKey: unexpected error %+v", aerr)
		}
		if !hasAuth && !hasKey && aerr != errMissingAuth {
			t.Fatalf("no headers: %q, %v; want missing_authorization", token, aerr)
		}
		if hasAuth && !authBearer && aerr != errInvalidSch {
			t.Fatalf("Authorization %q: %q, %v; want invalid_scheme", auth, token, aerr)
		}

		// End to end, on the guarded surface: the same answer, in the
		// contract's shape.
		r := te.do("GET", te.cfg.testBase+"whoami", "", headers...)
		want := aerr
		if want == nil {
			if _, err := te.s.format.parse(token); err != nil {
				want = malformedError(err.Error())
			} else if token != known {
				want = errInvalidKey
			}
		}
		if want == nil {
			if r.status != 200 {
				t.Fatalf("known key via mode %d: %d %s; want 200", mode, r.status, r.body)
			}
			return
		}
		eb := checkErrorShape(t, "whoami", r, want.status, want.code)
		if eb.Error.Message != want.message {
			t.Fatalf("whoami message %q; want %q", eb.Error.Message, want.message)
		}
	})
}

// refMatch is the rule path match of the README's scope rules, written from
// them: ASCII case is ignored, so is a trailing "/"; "*" is one non-empty
// segment, a final "*" the rest of the path, nothing included.
func refMatch(pattern, path string) bool {
	trim := func(s string) string {
		if len(s) > 1 {
			return strings.TrimSuffix(s, "/")
		}
		return s
	}
	ps, xs := strings.Split(trim(pattern), "/"), strings.Split(trim(path), "/")
	for i, p := range ps {
		switch {
		case p == "*" && i == len(ps)-1:
			return i <= len(xs)
		case i >= len(xs):
			return false
		case p == "*" && xs[i] == "", p != "*" && !strings.EqualFold(p, xs[i]):
			return false
		}
	}
	return len(xs) == len(ps)
}

// Seeds of FuzzParseRules (file, method, path), also in testdata/fuzz/FuzzParseRules.
var parseRulesSeeds = []struct{ file, method, path string }{
	{`[{"method":"POST","path":"/api/v1/*/sms/send","scope":"sms:send"}]`, "POST", "/api/v1/prod/sms/send"},
	{`[{"method":"GET","path":"/api/v1/dev/*","scope":"read"},{"path":"/","scope":"root"}]`, "GET", "/api/v1/dev/a/b"},
	{`[{"method":"*","path":"/a/*/c","scope":"x"}]`, "DELETE", "/a//c"},
	{`[]`, "GET", "/"},
	{`null`, "GET", "/"},
	{`[{"method":"get","path":"/x","scope":"a,b"}]`, "GET", "/x"},
	{`[{"method":"GET","path":"x","scope":"s"}]`, "GET", "x"},
	{`[{"method":"GET","path":"/x","scope":"*"}]`, "GET", "/x"},
	{`[{"method":"G T","path":"/x","scope":"s"}]`, "GET", "/x"},
	{`[{"path":"/x","scope":"s","extra":1}]`, "GET", "/x"},
	{`[{"path":"/x","scope":"s"}] []`, "GET", "/x"},
	{`{"path":"/x","scope":"s"}`, "GET", "/x"},
	{`[{"path":"/x","scope":"s"}`, "GET", "/x"},
	{`[{"path":"/x","scope":"s"}]]`, "GET", "/x"},
}

func FuzzParseRules(f *testing.F) {
	for _, s := range parseRulesSeeds {
		f.Add([]byte(s.file), s.method, s.path)
	}
	upper := regexp.MustCompile(`^[A-Z]+$`)
	f.Fuzz(func(t *testing.T, file []byte, method, path string) {
		rules, err := parseRules(file)
		if err != nil {
			if rules != nil {
				t.Fatalf("parseRules failed (%v) but returned rules", err)
			}
			return
		}
		if !json.Valid(file) {
			t.Fatalf("parseRules accepted %q, which is not one JSON value", file)
		}
		scopes := map[string]bool{"": true}
		for i, r := range rules {
			if !strings.HasPrefix(r.Path, "/") || !validScope(r.Scope) || r.Scope == "*" {
				t.Fatalf("rule %d %+v: bad path or scope accepted", i, r)
			}
			if r.Method != "" && r.Method != "*" && !upper.MatchString(r.Method) {
				t.Fatalf("rule %d: method %q accepted", i, r.Method)
			}
			m := r.Method
			if m == "" || m == "*" {
				m = "GET"
			}
			if !r.matches(m, r.Path) {
				t.Fatalf("rule %d %+v does not match its own path", i, r)
			}
			scopes[r.Scope] = true
		}
		got := requiredScope(rules, method, path)
		if !scopes[got] {
			t.Fatalf("requiredScope(%q, %q) = %q, not a rule's scope", method, path, got)
		}
		want := ""
		for _, r := range rules {
			if (r.Method == "" || r.Method == "*" || r.Method == method) && refMatch(r.Path, path) {
				want = r.Scope
				break
			}
		}
		if got != want {
			t.Fatalf("requiredScope(%q, %q) = %q; the spec's first match gives %q (rules %s)", method, path, got, want, file)
		}
	})
}

// Seeds of FuzzParseRateLimits, also in testdata/fuzz/FuzzParseRateLimits.
var rateLimitSeeds = []string{
	"5/1m,100/1h", "5/1m", "1/1s", "10/90s", "3/1d", "7/366d", "1000000000/1s", " 5/1m , 6/2h ",
	"5/1m,", "", "0/1m", "-1/1m", "5/0s", "5/500ms", "5/1.5s", "5/367d", "5/1", "5/-1d", "5/1m,1/1m,1/1m,1/1m,1/1m,1/1m,1/1m,1/1m,1/1m",
	"99999999999999999999/1m", "5/1m/1h", "+5/+1d", "5/60m", "5/0.5m", "5/2562047h",
}

func FuzzParseRateLimits(f *testing.F) {
	for _, s := range rateLimitSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		// The spec as one window.
		if d, err := parseWindow(spec); err == nil {
			if d < time.Second || d%time.Second != 0 || d > maxWindow {
				t.Fatalf("parseWindow(%q) = %v", spec, d)
			}
			if d2, err := parseWindow(windowName(d)); err != nil || d2 != d {
				t.Fatalf("windowName(parseWindow(%q)) = %q re-parses to %v, %v", spec, windowName(d), d2, err)
			}
		}

		limits, err := parseRateLimits(spec)
		if err != nil {
			if limits != nil {
				t.Fatalf("parseRateLimits(%q) failed (%v) but returned limits", spec, err)
			}
			return
		}
		items := strings.Split(spec, ",")
		if len(limits) == 0 || len(limits) > 8 || len(limits) != len(items) {
			t.Fatalf("parseRateLimits(%q) = %d windows for %d items", spec, len(limits), len(items))
		}
		for i, r := range limits {
			if r.Limit < 1 || r.Limit > maxLimit {
				t.Fatalf("parseRateLimits(%q)[%d]: limit %d out of range", spec, i, r.Limit)
			}
			d, err := parseWindow(r.Window)
			if err != nil || windowName(d) != r.Window || r.seconds() != int64(d/time.Second) || r.seconds() < 1 {
				t.Fatalf("parseRateLimits(%q)[%d]: window %q is not canonical: %v, %v", spec, i, r.Window, d, err)
			}
			// The window given must mean the canonical one, exactly.
			_, given, _ := strings.Cut(strings.TrimSpace(items[i]), "/")
			gd, err := parseWindow(given)
			if err != nil || gd != d {
				t.Fatalf("parseRateLimits(%q)[%d]: %q became %q (%v, %v)", spec, i, given, r.Window, gd, err)
			}
			if days, ok := strings.CutSuffix(given, "d"); ok {
				if n, err := strconv.ParseInt(days, 10, 64); err != nil || d != time.Duration(n)*24*time.Hour {
					t.Fatalf("window %q became %v", given, d)
				}
			}
		}
		sig := limitsSignature(limits)
		again, err := parseRateLimits(strings.TrimSuffix(sig, ","))
		if err != nil || !reflect.DeepEqual(again, limits) {
			t.Fatalf("limitsSignature %q of %q re-parses to %+v, %v; want %+v", sig, spec, again, err, limits)
		}
	})
}

// adminState is what FuzzAdminBodies posts to: an org, a key to roll and a
// key to revoke. It is rebuilt when the db has grown, to keep listing fast.
type adminState struct {
	te         *testEnv
	closeEnv   func()
	org        string
	roll       keyView // as created
	rollID     string  // the newest key rolled from roll: an older one may have expired
	revokeID   string
	patchID    string // the key PATCH edits
	orgsBody   string
	keysBody   string
	tokenCount int
	stale      bool // the snapshot may be behind the data
}

// adminRollBody's expires_at is within the longest grace period of the
// fuzz clock, which does not move: some grace periods are cut short by it.
const adminRollBody = `{"name":"roll-me","env":"live","scopes":["a:b","*"],"rate_limits":[{"limit":7,"window":"90s"},{"limit":100,"window":"60m"}],"expires_at":"2026-12-01T00:00:00Z"}`

func newAdminState(tb testing.TB) *adminState {
	te, closeEnv := newFuzzEnv(tb)
	st := &adminState{te: te, closeEnv: closeEnv}
	st.org = mustCreate(tb, te, "/orgs", `{"name":"acme"}`).ID
	st.roll = mustCreate(tb, te, "/orgs/"+st.org+"/keys", adminRollBody)
	st.rollID = st.roll.ID
	st.revokeID = mustCreate(tb, te, "/orgs/"+st.org+"/keys", `{"name":"revoke-me","env":"test"}`).ID
	st.patchID = mustCreate(tb, te, "/orgs/"+st.org+"/keys", `{"name":"patch-me","env":"live"}`).ID
	st.orgsBody, st.keysBody, st.tokenCount = st.snapshot(tb)
	return st
}

// snapshot is everything an admin POST can change: the org list, the org's
// keys with revoked ones, and the number of org admin tokens (stored and in
// memory).
func (st *adminState) snapshot(tb testing.TB) (orgs, keys string, tokens int) {
	tb.Helper()
	o := st.te.root("GET", "/orgs", "")
	k := st.te.root("GET", "/orgs/"+st.org+"/keys?include_revoked=true", "")
	if o.status != 200 || k.status != 200 {
		tb.Fatalf("listing: %d %s / %d %s", o.status, o.body, k.status, k.body)
	}
	stored, err := st.te.s.store.Tokens()
	if err != nil {
		tb.Fatal(err)
	}
	st.te.s.admins.mu.RLock()
	inMemory := len(st.te.s.admins.orgs)
	st.te.s.admins.mu.RUnlock()
	if inMemory != len(stored) {
		tb.Fatalf("%d org admin tokens stored, %d in memory", len(stored), inMemory)
	}
	return string(o.body), string(k.body), len(stored)
}

func listLen(t *testing.T, body, field string) int {
	t.Helper()
	var m map[string][]json.RawMessage
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("list %s: %v", body, err)
	}
	return len(m[field])
}

// listDiff shows the items of two admin list answers that differ.
func listDiff(before, after, field string) string {
	var a, b map[string][]json.RawMessage
	json.Unmarshal([]byte(before), &a)
	json.Unmarshal([]byte(after), &b)
	var out strings.Builder
	for i := 0; i < max(len(a[field]), len(b[field])); i++ {
		var x, y string
		if i < len(a[field]) {
			x = string(a[field][i])
		}
		if i < len(b[field]) {
			y = string(b[field][i])
		}
		if x != y {
			fmt.Fprintf(&out, "%s[%d]: %s\n  -> %s\n", field, i, x, y)
		}
	}
	return out.String()
}

// verifyValid says whether POST /v1/keys/verify finds key valid.
func verifyValid(te *testEnv, key string) (bool, string) {
	b, _ := json.Marshal(verifyRequest{Key: key})
	r := te.do("POST", "/v1/keys/verify", string(b))
	var ans verifyAnswer
	json.Unmarshal(r.body, &ans)
	return r.status == 200 && ans.Valid, string(r.body)
}

// checkNewKey checks a 201 key answer: the key works, or is refused as
// its options say, and is what the record says.
func checkNewKey(t *testing.T, te *testEnv, what string, v keyView) {
	t.Helper()
	p, err := te.s.format.parse(v.Key)
	if err != nil || p.lookup != v.Prefix || p.env != v.Env || v.ID == "" {
		t.Fatalf("%s: key %q, prefix %q, env %q: %v", what, v.Key, v.Prefix, v.Env, err)
	}
	want := ""
	prefixes, _ := parseCIDRs(v.AllowedIPs)
	switch {
	case !v.Enabled:
		want = "key_disabled"
	case len(v.AllowedIPs) > 0 && !prefixesContain(prefixes, netip.MustParseAddr("192.0.2.1")):
		want = "ip_not_allowed"
	case v.Credits != nil && v.Credits.Remaining == 0:
		want = "usage_exceeded"
	}
	ok, body := verifyValid(te, v.Key)
	if want == "" && !ok {
		t.Fatalf("%s: the new key does not verify: %s", what, body)
	}
	if want != "" && (ok || !strings.Contains(body, `"code":"`+want+`"`)) {
		t.Fatalf("%s: the new key verifies as %s; want %s", what, body, want)
	}
}

// Seeds of FuzzAdminBodies, also in testdata/fuzz/FuzzAdminBodies.
var adminBodySeeds = []string{
	`{"name":"acme"}`,
	`{"name":"k","env":"test"}`,
	`{"name":"k","env":"live","scopes":["sms:send","*"],"rate_limits":[{"limit":5,"window":"1m"},{"limit":100,"window":"1h"}],"expires_at":"2030-01-02T15:04:05Z"}`,
	`{"name":"k","env":"test","expires_at":"2030-01-02T15:04:05.123456789+02:00"}`,
	`{"name":"k","env":"test","rate_limits":[{"limit":3,"window":"2d"}]}`,
	`{"expires_in":"24h"}`,
	`{"expires_in":"0s"}`,
	`{}`,
	``,
	` `,
	`null`,
	`[]`,
	`{"name":""}`,
	`{"name":"   "}`,
	`{"name":"a\u0000b"}`,
	`{"name":"acme","extra":1}`,
	`{"name":1}`,
	`{"name":"acme"} {"name":"acme"}`,
	`{"name":"acme"`,
	`{"name":"k","env":"prod"}`,
	`{"name":"k","env":"test","scopes":["a b"]}`,
	`{"name":"k","env":"test","scopes":[]}`,
	`{"name":"k","env":"test","rate_limits":[]}`,
	`{"name":"k","env":"test","rate_limits":null}`,
	`{"name":"k","env":"test","rate_limits":[{"limit":0,"window":"1m"}]}`,
	`{"name":"k","env":"test","rate_limits":[{"limit":5,"window":"500ms"}]}`,
	`{"name":"k","env":"test","expires_at":"2001-01-01T00:00:00Z"}`,
	`{"name":"k","env":"test","expires_at":"tomorrow"}`,
	`{"expires_in":"-1h"}`,
	`{"expires_in":"9000h"}`,
	`{"expires_in":24}`,
	`{"name":"acme"}}`,
	`{"name":"k","env":"test","expires_at":"2300-01-01T00:00:00Z"}`,
	"\v\u00a0",
	`{"NAME":"acme"}`,
	`{"name":"a","name":"b"}`,
	`{"name":"k","Env":"test"}`,
	`{"name":"k","env":"test","rate_limits":[{"Limit":5,"window":"1m"}]}`,
	`{"name":"k","env":"test","rate_limits":[{"limit":5,"window":"1m","limit":6}]}`,
	`{"name":"k","env":"test","\u017fcopes":[]}`,
	`{"Expires_In":"1h"}`,
	`{"enabled":false}`,
	`{"enabled":true,"name":"renamed"}`,
	`{"meta":{"a":[1,{"b":null}],"c":"<d>&"}}`,
	`{"allowed_ips":["192.0.2.0/24","2001:db8::1"]}`,
	`{"credits":{"remaining":3,"refill":{"amount":5,"interval":"monthly","day":31}}}`,
	`{"name":"k","env":"live","credits":{"remaining":0},"meta":{"x":"<y>"},"allowed_ips":["198.51.100.0/24"],"enabled":false}`,
	`{"credits":null,"meta":null,"allowed_ips":null,"expires_at":null,"rate_limits":null,"scopes":null}`,
	`{"meta":{"a":1,"a":2}}`,
	`{"allowed_ips":["10.0.0.1/8"]}`,
	`{"meta":{"name":{"env":1}}}`,
	`{"credits":{"remaining":1,"refill":{"amount":1,"interval":"daily","day":2}}}`,
}

func FuzzAdminBodies(f *testing.F) {
	for _, s := range adminBodySeeds {
		f.Add(s)
	}
	f.Add(`{"name":"` + strings.Repeat("a", maxBodyBytes) + `"}`)
	f.Add(`{"name":"k","env":"test","scopes":[` + strings.Repeat(`"s",`, 50) + `"s"]}`)

	st := newAdminState(f)
	f.Cleanup(func() { st.closeEnv() })

	f.Fuzz(func(t *testing.T, body string) {
		if st.te.s.index.len() > 60 || st.tokenCount > 30 || listLen(t, st.orgsBody, "orgs") > 30 {
			st.closeEnv()
			st = newAdminState(t)
		}
		te := st.te
		te.t = t
		if st.stale {
			st.orgsBody, st.keysBody, st.tokenCount = st.snapshot(t)
		}
		st.stale = true // until this input passes: a failed one leaves the snapshot behind
		defer func() { st.stale = t.Failed() }()
		emptyOrJSON := strings.Trim(body, " \t\r\n") == "" || json.Valid([]byte(body))
		endpoints := []struct {
			name, method, path string
			ok                 int
			emptyOK            bool
		}{
			{"create org", "POST", "/orgs", 201, false},
			{"create admin token", "POST", "/orgs/" + st.org + "/admin-tokens", 201, false},
			{"create key", "POST", "/orgs/" + st.org + "/keys", 201, false},
			{"roll", "POST", "/orgs/" + st.org + "/keys/" + st.rollID + "/roll", 201, true},
			{"revoke", "POST", "/orgs/" + st.org + "/keys/" + st.revokeID + "/revoke", 200, true},
			{"patch", "PATCH", "/orgs/" + st.org + "/keys/" + st.patchID, 200, false},
		}
		for _, ep := range endpoints {
			r := te.root(ep.method, ep.path, body)
			orgs, keys, tokens := st.snapshot(t)
			if r.status != ep.ok {
				checkErrorShape(t, ep.name, r, 400, "invalid_request")
				if orgs != st.orgsBody || keys != st.keysBody || tokens != st.tokenCount {
					t.Fatalf("%s: a 400 (%s) changed the data:\n%s%s\ntokens %d -> %d", ep.name, r.body,
						listDiff(st.orgsBody, orgs, "orgs"), listDiff(st.keysBody, keys, "keys"), st.tokenCount, tokens)
				}
				continue
			}
			if !emptyOrJSON || !ep.emptyOK && strings.Trim(body, " \t\r\n") == "" {
				t.Fatalf("%s: %q is not a JSON body but got %d %s", ep.name, body, r.status, r.body)
			}
			if !namesExactOnce([]byte(body)) {
				t.Fatalf("%s: %q has a name not exactly a field's, or one twice, but got %d %s", ep.name, body, r.status, r.body)
			}
			dOrgs := listLen(t, orgs, "orgs") - listLen(t, st.orgsBody, "orgs")
			dKeys := listLen(t, keys, "keys") - listLen(t, st.keysBody, "keys")
			dTokens := tokens - st.tokenCount
			want := [3]int{}
			switch ep.name {
			case "create org":
				want[0] = 1
			case "create admin token":
				want[2] = 1
			case "create key", "roll":
				want[1] = 1
			}
			if [3]int{dOrgs, dKeys, dTokens} != want {
				t.Fatalf("%s: orgs, keys, tokens changed by %v; want %v", ep.name, [3]int{dOrgs, dKeys, dTokens}, want)
			}
			var v keyView
			if err := json.Unmarshal(r.body, &v); err != nil {
				t.Fatalf("%s: answer %s: %v", ep.name, r.body, err)
			}
			switch ep.name {
			case "create org":
				var req nameRequest
				json.Unmarshal([]byte(body), &req)
				if v.Name != req.Name || !strings.HasPrefix(v.ID, "org_") {
					t.Fatalf("create org %q: answer %s", req.Name, r.body)
				}
			case "create admin token":
				var tv tokenView
				json.Unmarshal(r.body, &tv)
				if !regexp.MustCompile(`^kh_orgadmin_[0-9a-f]{32}$`).MatchString(tv.Token) || tv.OrgID != st.org {
					t.Fatalf("create admin token: answer %s", r.body)
				}
			case "create key":
				checkCreatedKey(t, te, body, v)
			case "roll":
				checkNewKey(t, te, "roll", v)
				was, is := keyExpiry(t, st.keysBody, st.rollID), keyExpiry(t, keys, st.rollID)
				if v.Name != st.roll.Name || v.Env != st.roll.Env || !reflect.DeepEqual(v.Scopes, st.roll.Scopes) ||
					!reflect.DeepEqual(v.RateLimits, st.roll.RateLimits) || !reflect.DeepEqual(v.ExpiresAt, was) || v.ID == st.rollID {
					t.Fatalf("roll: answer %s is not like %+v expiring at %v", r.body, st.roll, was)
				}
				if is == nil || was != nil && *is > *was { // the layout's times sort as text
					t.Fatalf("roll: the old key's expires_at went from %v to %v", was, is)
				}
				st.rollID = v.ID
			case "revoke":
				if v.ID != st.revokeID || v.RevokedAt == nil {
					t.Fatalf("revoke: answer %s", r.body)
				}
			case "patch":
				checkPatchedKey(t, te, body, keyIn(t, st.keysBody, st.patchID), v, keyIn(t, keys, st.patchID))
			}
			// The checks above used the new key, which sets its last_used_at.
			st.orgsBody, st.keysBody, st.tokenCount = st.snapshot(t)
		}
	})
}

// adminNames are the member names of the admin bodies, at any depth.
var adminNames = map[string]bool{"name": true, "env": true, "scopes": true, "rate_limits": true,
	"expires_at": true, "limit": true, "window": true, "expires_in": true, "meta": true, "enabled": true,
	"allowed_ips": true, "credits": true, "remaining": true, "refill": true, "amount": true, "interval": true, "day": true}

// namesExactOnce says whether every member name in the JSON text buf is one
// of adminNames byte for byte (inside "meta", any name), and none is given
// twice in one object.
func namesExactOnce(buf []byte) bool {
	type open struct {
		names   map[string]bool // nil in a list
		wantKey bool
		free    bool   // inside meta
		last    string // the member whose value is read
	}
	var stack []open
	dec := json.NewDecoder(bytes.NewReader(buf))
	for {
		tok, err := dec.Token()
		if err != nil {
			return true
		}
		var top *open
		if len(stack) > 0 && stack[len(stack)-1].names != nil {
			top = &stack[len(stack)-1]
		}
		switch name, _ := tok.(string); {
		case tok == json.Delim('}') || tok == json.Delim(']'):
			stack = stack[:len(stack)-1]
		case top != nil && top.wantKey:
			if !top.free && !adminNames[name] || top.names[name] {
				return false
			}
			top.names[name], top.wantKey, top.last = true, false, name
		case tok == json.Delim('{') || tok == json.Delim('['):
			free := false
			if len(stack) > 0 {
				parent := stack[len(stack)-1]
				free = parent.free || parent.names != nil && parent.last == "meta"
			}
			if top != nil {
				top.wantKey = true // once this value is closed
			}
			o := open{wantKey: true, free: free}
			if tok == json.Delim('{') {
				o.names = map[string]bool{}
			}
			stack = append(stack, o)
		case top != nil:
			top.wantKey = true
		}
	}
}

// keyExpiry is the expires_at of key id in a key list answer.
func keyExpiry(t *testing.T, list, id string) *string {
	t.Helper()
	var m map[string][]keyView
	if err := json.Unmarshal([]byte(list), &m); err != nil {
		t.Fatalf("list %s: %v", list, err)
	}
	for _, k := range m["keys"] {
		if k.ID == id {
			return k.ExpiresAt
		}
	}
	t.Fatalf("key %s is not in %s", id, list)
	return nil
}

// checkCreatedKey checks a 201 create-key answer against the request body.
func checkCreatedKey(t *testing.T, te *testEnv, body string, v keyView) {
	t.Helper()
	var req createKeyRequest
	if err := json.Unmarshal([]byte(body), &req); err != nil {
		t.Fatalf("create key accepted %q: %v", body, err)
	}
	checkNewKey(t, te, "create key", v)
	if v.Name != req.Name || v.Env != req.Env || !reflect.DeepEqual(v.Scopes, nonNil(req.Scopes)) {
		t.Fatalf("create key %q: answer %+v", body, v)
	}
	wantLimits := req.RateLimits
	if wantLimits == nil {
		wantLimits = te.cfg.rateLimits
	}
	if len(v.RateLimits) != len(wantLimits) {
		t.Fatalf("create key %q: rate_limits %+v", body, v.RateLimits)
	}
	for i, r := range v.RateLimits {
		d, err1 := parseWindow(r.Window)
		wd, err2 := parseWindow(wantLimits[i].Window)
		if err1 != nil || err2 != nil || d != wd || r.Limit != wantLimits[i].Limit || windowName(d) != r.Window {
			t.Fatalf("create key %q: rate_limits %+v; asked %+v", body, v.RateLimits, wantLimits)
		}
	}
	checkOptions(t, "create key "+body, req.Meta, req.Enabled, req.AllowedIPs, req.Credits, v)
	switch {
	case req.ExpiresAt == nil && v.ExpiresAt != nil:
		t.Fatalf("create key %q: expires_at %q", body, *v.ExpiresAt)
	case req.ExpiresAt != nil:
		asked, err := time.Parse(time.RFC3339Nano, *req.ExpiresAt)
		if err != nil || v.ExpiresAt == nil {
			t.Fatalf("create key %q: expires_at %v (%v)", body, v.ExpiresAt, err)
		}
		got, err := time.Parse(time.RFC3339Nano, *v.ExpiresAt)
		if err != nil || !got.Equal(asked.Truncate(time.Millisecond)) {
			t.Fatalf("create key: asked to expire at %s, answer says %s", asked, *v.ExpiresAt)
		}
	}
}

// checkOptions checks a key view's meta, enabled, allowed_ips and credits
// against what a body gave (nil: not given, or null).
func checkOptions(t *testing.T, what string, meta json.RawMessage, enabled *bool, allowed []string, credits *creditsRequest, v keyView) {
	t.Helper()
	isNull := func(m json.RawMessage) bool { return m == nil || sameJSON(m, json.RawMessage("null")) }
	if (isNull(meta)) != isNull(v.Meta) || !isNull(meta) && !sameJSON(meta, v.Meta) {
		t.Fatalf("%s: meta %s; asked %s", what, v.Meta, meta)
	}
	if v.Enabled != (enabled == nil || *enabled) {
		t.Fatalf("%s: enabled %v; asked %v", what, v.Enabled, enabled)
	}
	if len(v.AllowedIPs) != len(allowed) {
		t.Fatalf("%s: allowed_ips %v; asked %v", what, v.AllowedIPs, allowed)
	}
	asked, err := parseCIDRs(allowed)
	for i, p := range v.AllowedIPs {
		if err != nil || p != asked[i].String() {
			t.Fatalf("%s: allowed_ips %v; asked %v", what, v.AllowedIPs, allowed)
		}
	}
	if (credits == nil) != (v.Credits == nil) {
		t.Fatalf("%s: credits %+v; asked %+v", what, v.Credits, credits)
	}
	if credits != nil {
		r := credits.Refill
		if v.Credits.Remaining != *credits.Remaining || (r == nil) != (v.Credits.Refill == nil) ||
			r != nil && (v.Credits.Refill.Amount != *r.Amount || v.Credits.Refill.Interval != r.Interval ||
				r.Day != nil && v.Credits.Refill.Day != *r.Day) {
			t.Fatalf("%s: credits %+v; asked %+v", what, v.Credits, credits)
		}
	}
}

func sameJSON(a, b json.RawMessage) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
}

// keyIn is key id in a key list answer.
func keyIn(t *testing.T, list, id string) keyView {
	t.Helper()
	var m map[string][]keyView
	if err := json.Unmarshal([]byte(list), &m); err != nil {
		t.Fatalf("list %s: %v", list, err)
	}
	for _, k := range m["keys"] {
		if k.ID == id {
			return k
		}
	}
	t.Fatalf("key %s is not in %s", id, list)
	return keyView{}
}

// checkPatchedKey checks a 200 PATCH answer against the body and the key
// before: each member given is changed as it says, the others are not,
// and the answer is the record as listed.
func checkPatchedKey(t *testing.T, te *testEnv, body string, was, answer, is keyView) {
	t.Helper()
	var given map[string]json.RawMessage
	var req patchKeyRequest
	if json.Unmarshal([]byte(body), &given) != nil || json.Unmarshal([]byte(body), &req) != nil {
		t.Fatalf("patch accepted %q", body)
	}
	a, _ := json.Marshal(answer)
	b, _ := json.Marshal(is)
	if string(a) != string(b) {
		t.Fatalf("patch %q answered %s; the listing has %s", body, a, b)
	}
	expect := was
	if _, ok := given["name"]; ok {
		expect.Name = *req.Name
	}
	if _, ok := given["scopes"]; ok {
		expect.Scopes = nonNil(req.Scopes)
	}
	if _, ok := given["rate_limits"]; ok {
		expect.RateLimits = te.cfg.rateLimits
		if req.RateLimits != nil {
			expect.RateLimits, _ = normalizeLimits(req.RateLimits)
		}
	}
	if _, ok := given["expires_at"]; ok {
		expect.ExpiresAt = nil
		if req.ExpiresAt != nil {
			at, _ := time.Parse(time.RFC3339Nano, *req.ExpiresAt)
			expect.ExpiresAt = optionalTime(at.UnixNano())
		}
	}
	meta, enabled, allowed, credits := was.Meta, &was.Enabled, was.AllowedIPs, (*creditsRequest)(nil)
	if was.Credits != nil {
		credits = &creditsRequest{Remaining: &was.Credits.Remaining}
		if r := was.Credits.Refill; r != nil {
			credits.Refill = &refillRequest{Amount: &r.Amount, Interval: r.Interval, Day: &r.Day}
		}
	}
	if _, ok := given["meta"]; ok {
		meta = req.Meta
	}
	if _, ok := given["enabled"]; ok {
		enabled = req.Enabled
	}
	if _, ok := given["allowed_ips"]; ok {
		allowed = req.AllowedIPs
	}
	if _, ok := given["credits"]; ok {
		credits = req.Credits
	}
	checkOptions(t, "patch "+body, meta, enabled, allowed, credits, is)
	expect.Meta, expect.Enabled, expect.AllowedIPs, expect.Credits = is.Meta, is.Enabled, is.AllowedIPs, is.Credits
	expect.LastUsedAt = is.LastUsedAt
	e, _ := json.Marshal(expect)
	if string(e) != string(b) {
		t.Fatalf("patch %q: the key is\n%s\nwant\n%s", body, b, e)
	}
}

// jsonStrings returns every string (keys included) in the JSON text buf, as
// far as it is valid.
func jsonStrings(buf []byte) []string {
	var out []string
	dec := json.NewDecoder(bytes.NewReader(buf))
	for {
		tok, err := dec.Token()
		if err != nil {
			return out
		}
		if s, ok := tok.(string); ok {
			out = append(out, s)
		}
	}
}

// refVerifyRequest reads a verify body the slow way: one JSON object whose
// members key, env and scope (names exactly so, each at most once) are
// strings or null; null is "".
func refVerifyRequest(body []byte) (req verifyRequest, ok bool) {
	if !json.Valid(body) {
		return req, false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return req, false
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		name, _ := tok.(string)
		if err != nil || seen[name] {
			return req, false
		}
		seen[name] = true
		var dst *string
		switch name {
		case "key":
			dst = &req.Key
		case "env":
			dst = &req.Env
		case "scope":
			dst = &req.Scope
		case "cost":
			// A whole number from 0 to 10^15 in plain digits, or null.
			tok, err := dec.Token()
			if err != nil {
				return req, false
			}
			if tok == nil {
				continue
			}
			num, isNum := tok.(json.Number)
			n, err := strconv.ParseInt(string(num), 10, 64)
			if !isNum || !regexp.MustCompile(`^(0|[1-9][0-9]{0,15})$`).MatchString(string(num)) || err != nil || n > 1e15 {
				return req, false
			}
			req.Cost = verifyCost{n: n, set: true}
			continue
		default:
			return req, false
		}
		switch v, err := dec.Token(); v := v.(type) {
		case string:
			*dst = v
		case nil:
			if err != nil {
				return req, false
			} // null leaves the field as it was, as encoding/json does
		default:
			return req, false
		}
	}
	return req, true
}

type fuzzKey struct {
	view  keyView
	state string // "ok", "revoked" or "expired"
}

// Seeds of FuzzVerifyBody, also in testdata/fuzz/FuzzVerifyBody. Bodies
// with the server's real keys are added at run time.
var verifyBodySeeds = []string{
	`{"key":"khpub_` + hex16 + `.khsec_` + hex32[:31] + `"}`,
	`{"key":"kh_live_` + hex32[:31] + `","env":"live"}`,
	`{"key":"khpub_` + hex16 + `.khsec_` + hex32[:31] + `g"}`,
	`{"key":"","env":"test"}`,
	`{"key":"x","env":"prod"}`,
	`{"key":"x","scope":"a:b"}`,
	`{"key":"x","extra":true}`,
	`{"key":1}`,
	`{}`,
	`null`,
	``,
	`[]`,
	`{"key":"x"}{}`,
	`{"key":"x"`,
	`{"KEY":"x","Env":"live"}`,
	`{"key":"x"}]`,
	"\f",
	`{"key":"x","key":null,"env":null}`,
	`{"key":"x","Key":"y"}`,
	`{"k\u0065y":"\ud800","scope":"\u003c"}`,
	"{\"key\":\"\xff\"}",
}

func FuzzVerifyBody(f *testing.F) {
	te := newTestEnv(f, func(c *config) { c.keyStyle = styleSplit })
	org := mustCreate(f, te, "/orgs", `{"name":"acme"}`).ID
	const big = `"rate_limits":[{"limit":1000000000,"window":"1s"}]`
	keys := map[string]fuzzKey{}
	for _, k := range []struct{ body, state string }{
		{`{"name":"t","env":"test","scopes":["sms:send"],` + big + `}`, "ok"},
		{`{"name":"l","env":"live","scopes":["*"],` + big + `}`, "ok"},
		{`{"name":"r","env":"live",` + big + `}`, "revoked"},
		{`{"name":"e","env":"test","expires_at":"2026-11-24T21:30:00Z",` + big + `}`, "expired"},
	} {
		v := mustCreate(f, te, "/orgs/"+org+"/keys", k.body)
		keys[v.Key] = fuzzKey{v, k.state}
		if k.state == "revoked" {
			if r := te.root("POST", "/orgs/"+org+"/keys/"+v.ID+"/revoke", ""); r.status != 200 {
				f.Fatalf("revoke: %d %s", r.status, r.body)
			}
		}
		b, _ := json.Marshal(verifyRequest{Key: v.Key, Env: v.Env, Scope: "sms:send"})
		f.Add(string(b))
		b, _ = json.Marshal(verifyRequest{Key: " " + v.Key + "\n", Env: "live"})
		f.Add(string(b))
	}
	te.clock.Advance(2 * time.Hour) // past the expired key's expires_at

	for _, s := range verifyBodySeeds {
		f.Add(s)
	}

	// Every secret the server holds, as the hex that would leak it.
	var secrets []string
	for k := range keys {
		_, sec, _ := strings.Cut(k, ".khsec_")
		secrets = append(secrets, k, sec)
	}
	secrets = append(secrets, testRootToken, testRootToken[len("kh_admin_"):])
	prefixedRE, splitRE := keyShapes("kh")
	anyShape := regexp.MustCompile(strings.TrimSuffix(strings.TrimPrefix(prefixedRE.String(), "^"), "$") + "|" +
		strings.TrimSuffix(strings.TrimPrefix(splitRE.String(), "^"), "$") + `|kh_(admin|orgadmin)_[0-9a-f]{32}`)

	f.Fuzz(func(t *testing.T, body string) {
		te.t = t
		r := te.do("POST", "/v1/keys/verify", body)

		// Nothing secret comes back that the caller did not send.
		inputs := append(jsonStrings([]byte(body)), body)
		sent := func(s string) bool {
			for _, in := range inputs {
				if strings.Contains(in, s) {
					return true
				}
			}
			return false
		}
		out := append(jsonStrings(r.body), string(r.body))
		for name, vals := range r.header {
			out = append(out, name+": "+strings.Join(vals, ", "))
		}
		for _, o := range out {
			for _, s := range secrets {
				if strings.Contains(o, s) && !sent(s) {
					t.Fatalf("verify %q leaks a secret: %s", body, r.body)
				}
			}
			for _, m := range anyShape.FindAllString(o, -1) {
				if !sent(m) {
					t.Fatalf("verify %q answers a key %q it was not sent", body, m)
				}
			}
		}

		if r.status != 200 {
			checkErrorShape(t, "verify", r, 400, "invalid_request")
			return
		}
		if !json.Valid([]byte(body)) {
			t.Fatalf("verify %q is not JSON but got 200 %s", body, r.body)
		}
		req, ok := refVerifyRequest([]byte(body))
		if !ok || req.Env != "" && req.Env != envTest && req.Env != envLive {
			t.Fatalf("verify %q: 200 for a bad request: %s", body, r.body)
		}
		var ans verifyAnswer
		dec := json.NewDecoder(bytes.NewReader(r.body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&ans); err != nil {
			t.Fatalf("verify answer %s: %v", r.body, err)
		}

		// What the answer must be, from SPEC 3 and 6.
		token := strings.TrimSpace(req.Key)
		k, isKnown := keys[token]
		var want *apiError
		switch _, perr := te.s.format.parse(token); {
		case req.Key == "":
			want = errMissingAuth
		case perr != nil:
			want = malformedError(perr.Error())
		case !isKnown || k.state == "revoked":
			want = errInvalidKey
		case k.state == "expired":
			want = errExpired
		case req.Env != "" && req.Env != k.view.Env:
			want = te.s.envError
		case req.Scope != "" && !slicesContain(k.view.Scopes, req.Scope) && !slicesContain(k.view.Scopes, "*"):
			want = scopeError(req.Scope)
		}
		identified := isKnown && k.state != "revoked" && req.Key != ""
		if identified != (ans.RateLimit != nil) {
			t.Fatalf("verify %q: ratelimit %+v; key identified: %v", body, ans.RateLimit, identified)
		}
		if want != nil {
			if ans.Valid || ans.Code != want.code || ans.Message != want.message || ans.KeyID != "" {
				t.Fatalf("verify %q = %s; want %s %q", body, r.body, want.code, want.message)
			}
			return
		}
		if !ans.Valid || ans.Code != "" || ans.KeyID != k.view.ID || ans.OrgID != org || ans.Env != k.view.Env ||
			!reflect.DeepEqual(ans.Scopes, k.view.Scopes) || ans.RateLimit.Limit != 1000000000 {
			t.Fatalf("verify %q = %s; want valid key %s", body, r.body, k.view.ID)
		}
	})
}

func slicesContain(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// FuzzAppendJSONString: the hand-written answers quote strings byte for
// byte as encoding/json does, so there is one escaping rule.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", `a"b\c`, "<script>&", "\x00\x1f\x7f\n\r\t\b\f", "\u2028\u2029", "bad\xff\xfe", "é日本"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendJSONString(nil, s); string(got) != string(want) {
			t.Fatalf("appendJSONString(%q) = %s; encoding/json gives %s", s, got, want)
		}
	})
}

// FuzzNodeTakes: a batch of takes, or of an owner's answers, from another
// node is read or refused whole, never with a cost a key cannot spend, more
// than a batch or more windows than a key has, and what is read is written
// back the same.
func FuzzNodeTakes(f *testing.F) {
	reqs, _ := appendTakeRequests(nil, []takeRequest{{Lookup: "kh_live_1a2b3c4d", Key: [8]byte{1, 2}, Allowed: true, Cost: 1, Rev: 7}})
	answers, _ := appendTakeAnswers(nil, []takeAnswer{{Allowed: true, Sig: "5/1m,", Tokens: []float64{4}, HasCredits: true, Credits: 9}, {Unknown: true}})
	f.Add(reqs)
	f.Add(answers)
	f.Add([]byte{0, 0})
	f.Add([]byte{0xff, 0xff})
	f.Add(append(reqs, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		if reqs, err := decodeTakeRequests(b); err == nil {
			if len(reqs) > maxBatch {
				t.Fatalf("%d takes read; at most %d", len(reqs), maxBatch)
			}
			for _, r := range reqs {
				if r.Cost < 0 || r.Cost > maxCredits {
					t.Fatalf("cost %d read", r.Cost)
				}
			}
			if again, err := appendTakeRequests(nil, reqs); err != nil || !bytes.Equal(again, b) {
				t.Fatalf("%x read as %+v, written back as %x (%v)", b, reqs, again, err)
			}
		}
		if answers, err := decodeTakeAnswers(b); err == nil {
			for _, a := range answers {
				if len(a.Tokens) > maxWindows || slices.ContainsFunc(a.Tokens, func(tok float64) bool { return !(tok >= 0 && tok <= math.MaxFloat64) }) {
					t.Fatalf("windows %v read", a.Tokens)
				}
			}
			again, err := appendTakeAnswers(nil, answers)
			if back, err2 := decodeTakeAnswers(again); err != nil || err2 != nil || !reflect.DeepEqual(back, answers) {
				t.Fatalf("%x read as %+v, written back as %x, read again as %+v (%v, %v)", b, answers, again, back, err, err2)
			}
		}
	})
}
