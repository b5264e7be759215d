package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// neverTrips is a rate limit no benchmark reaches.
const neverTrips = `[{"limit":1000000000,"window":"1s"}]`

// benchEnv has one org and a live key with the given rate_limits.
func benchEnv(b testing.TB, rateLimits string) (*testEnv, string) {
	te := newTestEnv(b)
	org := te.createOrg("bench")
	_, key := te.createKey(org, `{"name":"b","env":"live","rate_limits":`+rateLimits+`}`)
	return te, key
}

// BenchmarkVerify is the guarded path below HTTP: parse, look up, compare,
// rate limit, last used.
func BenchmarkVerify(b *testing.B) {
	te, key := benchEnv(b, neverTrips)
	now := te.clock.Now()
	b.ReportAllocs()
	for b.Loop() {
		if v := te.s.verify(key, &checkArgs{env: envLive, cost: 1}, now); v.err != nil {
			b.Fatal(v.err)
		}
	}
}

// BenchmarkWhoami is one whole guarded request through the handler,
// including the log entry and usage count.
func BenchmarkWhoami(b *testing.B) {
	te, key := benchEnv(b, neverTrips)
	req := httptest.NewRequest("GET", "/api/v1/prod/whoami", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	serveEach(b, te, req, 200, nil)
}

// BenchmarkRateLimited is whoami for a key over its limit: what a client
// that keeps calling after its 429s costs.
func BenchmarkRateLimited(b *testing.B) {
	te, key := benchEnv(b, `[{"limit":1,"window":"1h"}]`)
	req := httptest.NewRequest("GET", "/api/v1/prod/whoami", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	te.s.ServeHTTP(&discardWriter{h: http.Header{}}, req)
	serveEach(b, te, req, 429, nil)
}

// keyOptions are the options BenchmarkWhoamiOptions and
// BenchmarkVerifyOptions measure a key with, one at a time and all
// together: what a key that has them pays (BENCHMARKS.md).
var keyOptions = []struct{ name, body string }{
	{"none", ``},
	{"allowlist", `,"allowed_ips":["198.51.100.0/24","2001:db8::/32","192.0.2.1"]`},
	{"credits", `,"credits":{"remaining":1000000000000000,"refill":{"amount":1,"interval":"monthly"}}`},
	{"meta", `,"meta":{"customer":"cus_123","plan":"pro"}`},
	{"all", `,"allowed_ips":["192.0.2.1"],"credits":{"remaining":1000000000000000},"meta":{"customer":"cus_123"}`},
}

func optionsEnv(b *testing.B, options string) (*testEnv, string) {
	te := newTestEnv(b)
	_, key := te.createKey(te.createOrg("bench"), `{"name":"b","env":"live","rate_limits":`+neverTrips+options+`}`)
	return te, key
}

// BenchmarkVerifyKeyOptions is BenchmarkVerify (the checks below HTTP)
// for keys with each option: the work an option adds, without net/http's.
func BenchmarkVerifyKeyOptions(b *testing.B) {
	for _, o := range keyOptions {
		b.Run(o.name, func(b *testing.B) {
			te, key := optionsEnv(b, o.body)
			now := te.clock.Now()
			req := httptest.NewRequest("GET", "/api/v1/prod/whoami", nil)
			b.ReportAllocs()
			for b.Loop() {
				if v := te.s.verify(key, &checkArgs{env: envLive, cost: 1, r: req}, now); v.err != nil {
					b.Fatal(v.err)
				}
			}
		})
	}
}

// BenchmarkWhoamiOptions is BenchmarkWhoami for keys with each option.
func BenchmarkWhoamiOptions(b *testing.B) {
	for _, o := range keyOptions {
		b.Run(o.name, func(b *testing.B) {
			te, key := optionsEnv(b, o.body)
			req := httptest.NewRequest("GET", "/api/v1/prod/whoami", nil)
			req.Header.Set("Authorization", "Bearer "+key)
			serveEach(b, te, req, 200, nil)
		})
	}
}

// BenchmarkVerifyOptions is BenchmarkVerifyEndpoint for keys with each
// option.
func BenchmarkVerifyOptions(b *testing.B) {
	for _, o := range keyOptions {
		b.Run(o.name, func(b *testing.B) {
			te, key := optionsEnv(b, o.body)
			body := []byte(`{"key":"` + key + `","env":"live"}`)
			rd := &resettableBody{bytes.NewReader(body)}
			req := httptest.NewRequest("POST", "/v1/keys/verify", rd)
			serveEach(b, te, req, 200, func() { rd.Reset(body) })
		})
	}
}

// resettableBody lets one request be sent again without allocating.
type resettableBody struct{ *bytes.Reader }

func (resettableBody) Close() error { return nil }

type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(status int)      { w.status = status }

// BenchmarkVerifyEndpoint is POST /v1/keys/verify through the handler.
func BenchmarkVerifyEndpoint(b *testing.B) {
	te, key := benchEnv(b, neverTrips)
	body := []byte(`{"key":"` + key + `","env":"live"}`)
	rd := &resettableBody{bytes.NewReader(body)}
	req := httptest.NewRequest("POST", "/v1/keys/verify", rd)
	serveEach(b, te, req, 200, func() { rd.Reset(body) })
}

// BenchmarkForwardAuth is GET /v1/auth as nginx sends it.
func BenchmarkForwardAuth(b *testing.B) {
	te, key := benchEnv(b, neverTrips)
	req := httptest.NewRequest("GET", "/v1/auth", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("X-Original-URI", "/api/v1/prod/sms/send?to=1")
	req.Header.Set("X-Original-Method", "POST")
	serveEach(b, te, req, 200, nil)
}

// hotPathAllocs pins the allocations of one answer on each guarded
// surface, as the benchmarks above measure them: each was earned by
// removing one (BENCHMARKS.md), and a change that adds one back fails here.
var hotPathAllocs = []struct {
	name   string
	limits string
	status int
	allocs float64
	build  func(key string) (*http.Request, func())
}{
	{"whoami", neverTrips, 200, 4, func(key string) (*http.Request, func()) {
		return keyedRequest("GET", "/api/v1/prod/whoami", key), nil
	}},
	{"whoami over its limit", `[{"limit":1,"window":"1h"}]`, 429, 7, func(key string) (*http.Request, func()) {
		return keyedRequest("GET", "/api/v1/prod/whoami", key), nil
	}},
	{"forward auth", neverTrips, 200, 5, func(key string) (*http.Request, func()) {
		req := keyedRequest("GET", "/v1/auth", key)
		req.Header.Set("X-Original-URI", "/api/v1/prod/sms/send?to=1")
		req.Header.Set("X-Original-Method", "POST")
		return req, nil
	}},
	{"verify", neverTrips, 200, 4, func(key string) (*http.Request, func()) {
		body := []byte(`{"key":"` + key + `","env":"live"}`)
		rd := &resettableBody{bytes.NewReader(body)}
		return httptest.NewRequest("POST", "/v1/keys/verify", rd), func() { rd.Reset(body) }
	}},
}

func keyedRequest(method, path, key string) *http.Request {
	req := httptest.NewRequest(method, path, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	return req
}

// The keys have no meta, allowlist or credits: the options other keys may
// have cost such a key nothing but a flag check.
func TestHotPathAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector; .ci/run runs this test without it")
	}
	t.Run("verify below HTTP", func(t *testing.T) {
		te, key := benchEnv(t, neverTrips)
		now := te.clock.Now()
		got := testing.AllocsPerRun(200, func() {
			if v := te.s.verify(key, &checkArgs{env: envLive, cost: 1}, now); v.err != nil {
				t.Fatal(v.err)
			}
		})
		if got != 0 {
			t.Errorf("%v allocations; want none", got)
		}
	})
	for _, tt := range hotPathAllocs {
		t.Run(tt.name, func(t *testing.T) {
			te := newTestEnv(t)
			org := te.createOrg("allocs")
			_, key := te.createKey(org, `{"name":"a","env":"live","rate_limits":`+tt.limits+`}`)
			req, reset := tt.build(key)
			w := &discardWriter{h: http.Header{}}
			serve := func() {
				if reset != nil {
					reset()
				}
				clear(w.h)
				te.s.ServeHTTP(w, req)
			}
			for range 1000 { // the pending log's buffers reach their size
				serve()
			}
			te.s.behind.Flush()
			if got := testing.AllocsPerRun(500, serve); got > tt.allocs || w.status != tt.status {
				t.Errorf("%d answer, %v allocations; want %d and at most %v", w.status, got, tt.status, tt.allocs)
			}
		})
	}
}

// serveEach sends req through the handler once per iteration and wants
// status want; reset, if not nil, rewinds the request's body first.
func serveEach(b *testing.B, te *testEnv, req *http.Request, want int, reset func()) {
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		if reset != nil {
			reset()
		}
		clear(w.h)
		te.s.ServeHTTP(w, req)
		if w.status != want {
			b.Fatal(w.status)
		}
		flushIfLarge(b, te)
	}
}

// flushIfLarge writes the pending log outside the timer, as the flusher
// would in its own goroutine.
func flushIfLarge(b *testing.B, te *testEnv) {
	te.s.behind.mu.Lock()
	n := len(te.s.behind.pending)
	te.s.behind.mu.Unlock()
	if n > 50000 {
		b.StopTimer()
		te.s.behind.Flush()
		b.StartTimer()
	}
}

// smallHeaderMap is how many entries a Go map holds in its one small
// group; the ninth turns it into a table. BenchmarkHeaderMap shows what
// that costs an answer, and `bench headers` what it costs a server.
const smallHeaderMap = 8

// TestAnswersFitASmallHeaderMap keeps the answers keyhole writes itself
// on the hot path within a small header map: past eight entries net/http's
// header work (grow, clone in WriteHeader, sort, write) costs about 2 µs
// more, some 15% of a whole request on two cores (BENCHMARKS.md). Forward
// auth's 200 is the exception the contract makes: its nine SPEC headers
// and the request id are a table whatever keyhole does.
func TestAnswersFitASmallHeaderMap(t *testing.T) {
	te := newTestEnv(t)
	org := te.createOrg("acme")
	_, key := te.createKey(org, `{"name":"k","env":"live","rate_limits":[{"limit":1,"window":"1m"},{"limit":5,"window":"1h"}]}`)
	// Keys with credits: X-Credits-Remaining takes the place of a
	// Retry-After, never an entry more.
	_, credits := te.createKey(org, `{"name":"c","env":"live","rate_limits":[{"limit":2,"window":"1m"}],"credits":{"remaining":1}}`)
	_, refill := te.createKey(org, `{"name":"r","env":"live","credits":{"remaining":0,"refill":{"amount":1,"interval":"daily"}}}`)
	_, limited := te.createKey(org, `{"name":"l","env":"live","rate_limits":[{"limit":1,"window":"1m"}],"credits":{"remaining":9}}`)
	answers := []struct {
		name string
		r    response
		want int
	}{
		{"whoami", te.whoami(envLive, key), 200},
		{"whoami, rate limited", te.whoami(envLive, key), 429},
		{"whoami, credits", te.whoami(envLive, credits), 200},
		{"whoami, no credits left", te.whoami(envLive, credits), 429},
		{"verify, credits", te.do("POST", "/v1/keys/verify", `{"key":"`+limited+`"}`), 200},
		{"whoami, credits, rate limited", te.whoami(envLive, limited), 429},
		{"whoami, no credits left until the refill", te.whoami(envLive, refill), 429},
		{"verify", te.do("POST", "/v1/keys/verify", `{"key":"`+key+`"}`), 200},
		{"verify, unknown key", te.do("POST", "/v1/keys/verify", `{"key":"kh_live_`+strings.Repeat("0", 32)+`"}`), 200},
		{"whoami, no key", te.whoami(envLive, ""), 401},
		{"forward auth, no key", te.do("GET", "/v1/auth", "", "X-Original-Method", "GET", "X-Original-URI", "/api/v1/prod/x"), 401},
	}
	for _, a := range answers {
		mustStatus(t, a.name, a.r, a.want)
		if len(a.r.header) > smallHeaderMap {
			t.Errorf("%s: %d header entries %v; more than %d make net/http's header map a table", a.name,
				len(a.r.header), slices.Sorted(maps.Keys(a.r.header)), smallHeaderMap)
		}
	}
}

// BenchmarkHeaderMap is net/http's work on an answer's headers, set, cloned
// at WriteHeader, sorted and written, with eight entries and with nine.
func BenchmarkHeaderMap(b *testing.B) {
	for _, n := range []int{smallHeaderMap, smallHeaderMap + 1} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			names := make([]string, n)
			for i := range names {
				names[i] = fmt.Sprintf("X-Header-%02d", i)
			}
			value := []string{"a value of twenty b."}
			w := bufio.NewWriter(io.Discard)
			b.ReportAllocs()
			for b.Loop() {
				h := make(http.Header)
				for _, name := range names {
					h[name] = value
				}
				h.Clone().Write(w)
			}
		})
	}
}

// TestJSONAnswersAreNotChunked: over the wire, a small JSON answer gets its
// Content-Length from net/http and a large one from writeJSON; neither is
// sent chunked.
func TestJSONAnswersAreNotChunked(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t)
	org := te.createOrg("acme")
	for i := range 40 {
		te.createOrg(fmt.Sprintf("org %02d with a name long enough to make the list long", i))
	}
	_, key := te.createKey(org, `{"name":"k","env":"live","rate_limits":[{"limit":1,"window":"1m"}]}`)
	client, _ := serveTestEnv(t, te)
	for _, c := range []struct {
		name, path, token string
		status            int
	}{
		{"whoami", "/api/v1/prod/whoami", key, 200},
		{"a 429", "/api/v1/prod/whoami", key, 429},
		{"a 401", "/api/v1/prod/whoami", "", 401},
		{"a long admin list", "/admin/v1/orgs", testRootToken, 200},
	} {
		var auth []string
		if c.token != "" {
			auth = bearer(c.token)
		}
		r := client.do("GET", c.path, "", auth...)
		mustStatus(t, c.name, r, c.status)
		// A chunked answer has no Content-Length.
		if got := r.header.Get("Content-Length"); got != strconv.Itoa(len(r.body)) {
			t.Errorf("%s: Content-Length %q for a %d-byte body; want its length, not chunked", c.name, got, len(r.body))
		}
		if c.name == "a long admin list" && len(r.body) <= measuredByNetHTTP {
			t.Errorf("the admin list is %d bytes; the test wants one longer than %d", len(r.body), measuredByNetHTTP)
		}
	}
}

// BenchmarkWhoamiParallel is whoami from every core at once, one key: the
// locks a request takes (the pending log, the key's buckets, the index's
// read lock) under contention. -mutexprofile shows what they cost.
func BenchmarkWhoamiParallel(b *testing.B) {
	te, key := benchEnv(b, neverTrips)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := keyedRequest("GET", "/api/v1/prod/whoami", key)
		w := &discardWriter{h: http.Header{}}
		for i := 0; pb.Next(); i++ {
			clear(w.h)
			te.s.ServeHTTP(w, req)
			if w.status != 200 {
				b.Error(w.status)
				return
			}
			if i%4096 == 0 {
				flushIfLarge(b, te)
			}
		}
	})
}
