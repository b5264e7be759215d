package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
)

// benchEnv has one org and a live key whose limits never trip.
func benchEnv(b *testing.B) (*testEnv, string) {
	te := newTestEnv(b)
	org := te.createOrg("bench")
	_, key := te.createKey(org, `{"name":"b","env":"live","rate_limits":[{"limit":1000000000,"window":"1s"}]}`)
	return te, key
}

// BenchmarkVerify is the guarded path below HTTP: parse, look up, compare,
// rate limit, last used.
func BenchmarkVerify(b *testing.B) {
	te, key := benchEnv(b)
	now := te.clock.Now()
	b.ReportAllocs()
	for b.Loop() {
		if v := te.s.verify(key, envLive, "", now); v.err != nil {
			b.Fatal(v.err)
		}
	}
}

// BenchmarkWhoami is one whole guarded request through the handler,
// including the log entry and usage count.
func BenchmarkWhoami(b *testing.B) {
	te, key := benchEnv(b)
	req := httptest.NewRequest("GET", "/api/v1/prod/whoami", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	serveEach(b, te, req, nil)
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
	te, key := benchEnv(b)
	body := []byte(`{"key":"` + key + `","env":"live"}`)
	rd := &resettableBody{bytes.NewReader(body)}
	req := httptest.NewRequest("POST", "/v1/keys/verify", rd)
	serveEach(b, te, req, func() { rd.Reset(body) })
}

// BenchmarkForwardAuth is GET /v1/auth as nginx sends it.
func BenchmarkForwardAuth(b *testing.B) {
	te, key := benchEnv(b)
	req := httptest.NewRequest("GET", "/v1/auth", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("X-Original-URI", "/api/v1/prod/sms/send?to=1")
	req.Header.Set("X-Original-Method", "POST")
	serveEach(b, te, req, nil)
}

// serveEach sends req through the handler once per iteration and wants a
// 200; reset, if not nil, rewinds the request's body first.
func serveEach(b *testing.B, te *testEnv, req *http.Request, reset func()) {
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		if reset != nil {
			reset()
		}
		clear(w.h)
		te.s.ServeHTTP(w, req)
		if w.status != 200 {
			b.Fatal(w.status)
		}
		flushIfLarge(b, te)
	}
}

// flushIfLarge writes the pending log outside the timer, as the flusher
// would in its own goroutine.
func flushIfLarge(b *testing.B, te *testEnv) {
	te.s.logs.mu.Lock()
	n := len(te.s.logs.pending)
	te.s.logs.mu.Unlock()
	if n > 50000 {
		b.StopTimer()
		te.s.flush()
		b.StartTimer()
	}
}
