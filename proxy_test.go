package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The tests in this file put keyhole's reverse proxy in front of a real
// upstream server on loopback, and check forward auth's headers.

// testRules require sms:send to POST to /sms/send under either base.
const testRules = `[{"method":"POST","path":"/api/v1/*/sms/send","scope":"sms:send"}]`

func writeRules(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rules.json")
	if err := os.WriteFile(path, []byte(testRules), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// seenRequest is what one request looked like when it reached the upstream.
type seenRequest struct {
	method string
	uri    string
	header http.Header
}

// upstreamAPI is a real HTTP server on loopback standing for the guarded API.
// It records every request that reaches it, then runs handler.
type upstreamAPI struct {
	*httptest.Server
	mu   sync.Mutex
	seen []seenRequest
}

func newUpstreamAPI(t *testing.T, handler http.HandlerFunc) *upstreamAPI {
	t.Helper()
	if handler == nil {
		handler = func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"upstream":true,"path":%q}`+"\n", r.URL.Path)
		}
	}
	u := &upstreamAPI{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.seen = append(u.seen, seenRequest{method: r.Method, uri: r.RequestURI, header: r.Header.Clone()})
		u.mu.Unlock()
		handler(w, r)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstreamAPI) requests() []seenRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seenRequest(nil), u.seen...)
}

// last is the newest request the upstream saw; the test fails if none came.
func (u *upstreamAPI) last(t *testing.T) seenRequest {
	t.Helper()
	seen := u.requests()
	if len(seen) == 0 {
		t.Fatal("the upstream was not reached")
	}
	return seen[len(seen)-1]
}

// checkForwardedIdentity fails unless h carries exactly the X-Keyhole-*
// values wanted, no key, and none of the client's copies. Header values are
// never printed for Authorization or X-Api-Key: they hold key secrets.
func checkForwardedIdentity(t *testing.T, h http.Header, want map[string]string) {
	t.Helper()
	for _, name := range []string{"Authorization", "X-Api-Key"} {
		if _, ok := h[name]; ok {
			t.Errorf("the upstream received %s; want it removed", name)
		}
	}
	for name, v := range want {
		if got := h.Values(name); len(got) != 1 || got[0] != v {
			t.Errorf("upstream %s = %q; want [%q]", name, got, v)
		}
	}
}

// proxyEnv is keyhole in-process with --upstream, served on loopback: its
// embedded testEnv's client calls it in-process (the admin API), wire over
// the socket.
type proxyEnv struct {
	*testEnv
	up   *upstreamAPI
	wire *testClient
	org  string
}

func newProxyEnv(t *testing.T, handler http.HandlerFunc) *proxyEnv {
	t.Helper()
	up := newUpstreamAPI(t, handler)
	pe := newProxyEnvTo(t, up.URL)
	pe.up = up
	return pe
}

// newProxyEnvTo is keyhole with testRules in front of the upstream at
// upstream, a URL; pe.up is nil.
func newProxyEnvTo(t *testing.T, upstream string) *proxyEnv {
	t.Helper()
	rules := writeRules(t)
	te := newTestEnv(t, func(c *config) {
		c.upstream = upstream
		c.rulesPath = rules
	})
	return &proxyEnv{testEnv: te, wire: te.listen(), org: te.createOrg("acme")}
}

// loggedStatus is the status the org's request log holds for requestID.
func (pe *proxyEnv) loggedStatus(requestID string) int {
	pe.t.Helper()
	status, ok := pe.logEntry(requestID)
	if !ok {
		pe.t.Fatalf("no log entry has request_id %q", requestID)
	}
	return status
}

func (pe *proxyEnv) hasLogEntry(requestID string) bool {
	pe.t.Helper()
	_, ok := pe.logEntry(requestID)
	return ok
}

func (pe *proxyEnv) logEntry(requestID string) (status int, ok bool) {
	pe.t.Helper()
	r := pe.root("GET", "/orgs/"+pe.org+"/logs?limit=1000", "")
	mustStatus(pe.t, "GET logs", r, 200)
	var page struct {
		Entries []struct {
			Status    int    `json:"status"`
			RequestID string `json:"request_id"`
		} `json:"entries"`
	}
	if err := json.Unmarshal(r.body, &page); err != nil {
		pe.t.Fatal(err)
	}
	for _, e := range page.Entries {
		if e.RequestID == requestID {
			return e.Status, true
		}
	}
	return 0, false
}

// TestProxyForwardsTrustedClient: behind a proxy in --trusted-proxies the
// upstream's X-Forwarded-For is the client that proxy named (the address
// allowlists are checked against), and nothing the client wrote to its
// left; from an untrusted peer it stays the connection's.
func TestProxyForwardsTrustedClient(t *testing.T) {
	t.Parallel()
	up := newUpstreamAPI(t, nil)
	te := newTestEnv(t, func(c *config) {
		c.upstream = up.URL
		c.rulesPath = writeRules(t)
		c.trustedSpec = "127.0.0.1/32"
	})
	wire := te.listen()
	_, key := te.createKey(te.createOrg("acme"), `{"name":"k","env":"live","scopes":["sms:send"]}`)
	for _, c := range []struct{ xff, want string }{
		{"10.9.9.9, 203.0.113.7", "203.0.113.7"},
		{"", "127.0.0.1"}, // the trusted proxy itself
	} {
		headers := bearer(key)
		if c.xff != "" {
			headers = append(headers, "X-Forwarded-For", c.xff)
		}
		mustStatus(t, "proxied POST", wire.do("POST", "/api/v1/prod/sms/send", `{}`, headers...), 200)
		if got := up.last(t).header.Values("X-Forwarded-For"); len(got) != 1 || got[0] != c.want {
			t.Errorf("X-Forwarded-For %q: upstream got %q; want [%s]", c.xff, got, c.want)
		}
	}
}

func TestProxyHeaders(t *testing.T) {
	t.Parallel()
	pe := newProxyEnv(t, nil)
	keyID, key := pe.createKey(pe.org, `{"name":"k","env":"live","scopes":["sms:send","whoami:read"],"rate_limits":[{"limit":100,"window":"1m"}]}`)
	want := map[string]string{"X-Keyhole-Org": pe.org, "X-Keyhole-Key-Id": keyID,
		"X-Keyhole-Env": "live", "X-Keyhole-Scopes": "sms:send,whoami:read"}
	spoofed := []string{"X-Keyhole-Org", "org_evil", "X-Keyhole-Org", "org_evil2",
		"X-Keyhole-Key-Id", "key_evil", "X-Keyhole-Env", "live", "x-keyhole-scopes", "*"}
	tests := []struct {
		name    string
		headers []string
	}{
		{"bearer", bearer(key)},
		{"x-api-key", []string{"x-api-key", key}},
		{"bearer with spoofed identity", append(bearer(key), spoofed...)},
		{"x-api-key with spoofed identity", append([]string{"X-Api-Key", key}, spoofed...)},
		// A client may name headers in Connection to have a proxy drop them;
		// that must not remove the identity keyhole sets.
		{"connection names identity headers", append(bearer(key),
			"Connection", "X-Keyhole-Org, X-Keyhole-Key-Id, X-Keyhole-Env, X-Keyhole-Scopes, X-Request-Id")},
		{"client's own request id", append(bearer(key), "X-Request-Id", "req_forged")},
		{"client's proxy headers", append(bearer(key), "X-Forwarded-Ssl", "on", "X-Forwarded-Protocol", "https",
			"X-Forwarded-For", "10.9.9.9", "Forwarded", "for=10.9.9.9;proto=https", "X-Real-Ip", "10.9.9.9", "X-Original-Uri", "/api/v1/dev/x")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(pe.up.requests())
			r := pe.wire.do("POST", "/api/v1/prod/sms/send?to=%2B15550100&x=1", `{"text":"hi"}`, tt.headers...)
			mustStatus(t, "proxied POST", r, 200)
			if n := len(pe.up.requests()); n != before+1 {
				t.Fatalf("upstream saw %d requests; want %d", n, before+1)
			}
			seen := pe.up.last(t)
			if seen.method != "POST" || seen.uri != "/api/v1/prod/sms/send?to=%2B15550100&x=1" {
				t.Errorf("upstream got %s %s; want POST /api/v1/prod/sms/send?to=%%2B15550100&x=1", seen.method, seen.uri)
			}
			checkForwardedIdentity(t, seen.header, want)
			for _, name := range []string{"X-Forwarded-Ssl", "X-Forwarded-Protocol", "Forwarded", "X-Real-Ip", "X-Original-Uri"} {
				if got := seen.header.Values(name); len(got) != 0 {
					t.Errorf("upstream %s = %q; want the client's dropped", name, got)
				}
			}
			if got := seen.header.Values("X-Forwarded-For"); len(got) != 1 || got[0] != "127.0.0.1" {
				t.Errorf("upstream X-Forwarded-For = %q; want keyhole's [127.0.0.1]", got)
			}
			// The upstream's logs and keyhole's join on the request id.
			if got, sent := seen.header.Values("X-Request-Id"), r.header.Get("X-Request-Id"); len(got) != 1 || got[0] != sent {
				t.Errorf("upstream X-Request-Id = %q; want keyhole's %q", got, sent)
			}
		})
	}
}

func TestProxyEmptyScopes(t *testing.T) {
	t.Parallel()
	pe := newProxyEnv(t, nil)
	_, key := pe.createKey(pe.org, `{"name":"k","env":"test"}`)
	r := pe.wire.do("GET", "/api/v1/dev/things", "", append(bearer(key), "X-Keyhole-Scopes", "*")...)
	mustStatus(t, "proxied GET", r, 200)
	if got := pe.up.last(t).header.Values("X-Keyhole-Scopes"); len(got) != 1 || got[0] != "" {
		t.Fatalf("upstream X-Keyhole-Scopes = %q; want one empty value", got)
	}
}

// TestProxyStreamsUpload sends 8 MiB whose second part the client writes
// only after the upstream has read the first: a proxy that buffered whole
// bodies could never deliver it.
func TestProxyStreamsUpload(t *testing.T) {
	t.Parallel()
	const first, total = 1 << 20, 8 << 20
	gotFirst := make(chan struct{})
	pe := newProxyEnv(t, func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		if _, err := io.CopyN(h, r.Body, first); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		close(gotFirst)
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintf(w, "%d %x %d", first+n, h.Sum(nil), r.ContentLength)
	})
	_, key := pe.createKey(pe.org, `{"name":"k","env":"live"}`)

	data := make([]byte, total)
	rng := rand.NewChaCha8([32]byte{1})
	rng.Read(data)
	sum := sha256.Sum256(data)
	pr, pw := io.Pipe()
	go func() {
		pw.Write(data[:first])
		select {
		case <-gotFirst:
		case <-time.After(30 * time.Second): // a hang guard, not a timing check
			pw.CloseWithError(fmt.Errorf("the upstream never received the first MiB: the upload was buffered"))
			return
		}
		pw.Write(data[first:])
		pw.Close()
	}()
	resp := pe.wire.open("PUT", "/api/v1/prod/files/big.bin", pr, append(bearer(key), "Content-Length", strconv.Itoa(total))...)
	body, _ := io.ReadAll(resp.Body)
	want := fmt.Sprintf("%d %x %d", total, sum, total)
	if resp.StatusCode != 200 || string(body) != want {
		t.Fatalf("upload = %d %q; want 200 %q", resp.StatusCode, body, want)
	}
}

// TestProxyStreamsResponse has the upstream write each chunk only after the
// client has read the one before it, so the response must be relayed as it
// comes, flushed, not buffered.
func TestProxyStreamsResponse(t *testing.T) {
	t.Parallel()
	const chunks = 4
	next := make(chan struct{})
	pe := newProxyEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; i < chunks; i++ {
			fmt.Fprintf(w, "data: chunk %d\n", i)
			http.NewResponseController(w).Flush()
			select {
			case <-next:
			case <-r.Context().Done():
				return
			}
		}
	})
	_, key := pe.createKey(pe.org, `{"name":"k","env":"test"}`)
	resp := pe.wire.open("GET", "/api/v1/dev/events", nil, bearer(key)...)
	if resp.StatusCode != 200 {
		t.Fatalf("GET events = %d; want 200", resp.StatusCode)
	}
	if resp.ContentLength != -1 || len(resp.TransferEncoding) == 0 || resp.TransferEncoding[0] != "chunked" {
		t.Errorf("response length %d, transfer encoding %q; want a chunked stream", resp.ContentLength, resp.TransferEncoding)
	}
	if resp.Header.Get("X-Ratelimit-Remaining") != "4" {
		t.Errorf("streamed response X-RateLimit-Remaining = %q; want 4", resp.Header.Get("X-Ratelimit-Remaining"))
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	for i := 0; i < chunks; i++ {
		select {
		case line := <-lines:
			if want := fmt.Sprintf("data: chunk %d", i); line != want {
				t.Fatalf("line %d = %q; want %q", i, line, want)
			}
		case <-time.After(30 * time.Second): // a hang guard, not a timing check
			t.Fatalf("chunk %d never arrived: the response was buffered", i)
		}
		next <- struct{}{}
	}
	if line, ok := <-lines; ok {
		t.Fatalf("extra line %q after the stream", line)
	}
}

// TestProxyLargeResponse relays 8 MiB from the upstream intact.
func TestProxyLargeResponse(t *testing.T) {
	t.Parallel()
	data := make([]byte, 8<<20)
	rng := rand.NewChaCha8([32]byte{2})
	rng.Read(data)
	sum := sha256.Sum256(data)
	pe := newProxyEnv(t, func(w http.ResponseWriter, r *http.Request) {
		for rest := data; len(rest) > 0; rest = rest[min(len(rest), 100_000):] {
			w.Write(rest[:min(len(rest), 100_000)])
		}
	})
	_, key := pe.createKey(pe.org, `{"name":"k","env":"live"}`)
	r := pe.wire.do("GET", "/api/v1/prod/download", "", bearer(key)...)
	if got := sha256.Sum256(r.body); r.status != 200 || got != sum {
		t.Fatalf("download = %d, %d bytes, sha256 %s; want 200, %d bytes, %s",
			r.status, len(r.body), hex.EncodeToString(got[:8]), len(data), hex.EncodeToString(sum[:8]))
	}
}

func TestProxyUpstreamFailures(t *testing.T) {
	t.Parallel()
	// A port that refuses: listen, note the port, close.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + ln.Addr().String()
	ln.Close()
	// A server that accepts and hangs up at once.
	hangup, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hangup.Close() })
	go func() {
		for {
			c, err := hangup.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	// A server that never answers until the test ends.
	release := make(chan struct{})
	slow := newUpstreamAPI(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	t.Cleanup(func() { close(release) })

	tests := []struct {
		name       string
		upstream   string
		wantStatus int
		wantCode   string
	}{
		{"connection refused", refused, 502, "bad_gateway"},
		{"connection closed", "http://" + hangup.Addr().String(), 502, "bad_gateway"},
		{"no response in time", slow.URL, 504, "upstream_timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			te := newTestEnv(t, func(c *config) { c.upstream = tt.upstream })
			te.s.proxy.transport.ResponseHeaderTimeout = 200 * time.Millisecond
			pe := &proxyEnv{testEnv: te, wire: te.listen(), org: te.createOrg("acme")}
			_, key := pe.createKey(pe.org, `{"name":"k","env":"live"}`)
			r := pe.wire.do("GET", "/api/v1/prod/x", "", bearer(key)...)
			mustStatus(t, "GET via failing upstream", r, tt.wantStatus)
			if got := r.errorCode(t); got != tt.wantCode {
				t.Errorf("code = %q; want %q", got, tt.wantCode)
			}
			reqID := r.header.Get("X-Request-Id")
			if got := r.json(t)["request_id"]; got != reqID || reqID == "" {
				t.Errorf("body request_id = %v; want the X-Request-Id %q", got, reqID)
			}
			if r.header.Get("X-Ratelimit-Remaining") != "4" || r.header.Get("Ratelimit-Policy") == "" {
				t.Errorf("rate-limit headers missing from the %d: %v", r.status, r.header)
			}
			if got := pe.loggedStatus(reqID); got != tt.wantStatus {
				t.Errorf("logged status = %d; want %d", got, tt.wantStatus)
			}
		})
	}
}

// TestProxyLogsBrokenResponse has the upstream hang up halfway through its
// body: the client sees the cut, and the request is still logged, with the
// status that was sent.
func TestProxyLogsBrokenResponse(t *testing.T) {
	t.Parallel()
	pe := newProxyEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(200)
		io.WriteString(w, "only part")
		http.NewResponseController(w).Flush()
		if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
			c.Close()
		}
	})
	_, key := pe.createKey(pe.org, `{"name":"k","env":"live"}`)
	// keyhole may not have flushed the headers when the upstream hangs up,
	// so the cut shows either as an error or as a short body.
	if _, err := pe.wire.try("GET", "/api/v1/prod/broken", "", bearer(key)...); err == nil {
		t.Fatal("the client read a whole body; want it cut off")
	}
	r := pe.root("GET", "/orgs/"+pe.org+"/logs?limit=1", "")
	mustStatus(t, "GET logs", r, 200)
	var page logPage
	if err := json.Unmarshal(r.body, &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Entries) != 1 || page.Entries[0].Path != "/api/v1/prod/broken" || page.Entries[0].Status != 200 {
		t.Fatalf("newest log entries = %+v; want GET /api/v1/prod/broken with status 200", page.Entries)
	}
}

// TestProxyResponseHeadersAndLog checks that keyhole's rate-limit headers
// and request id are on the proxied response, replacing any the upstream
// sent, and that the log holds the upstream's status.
func TestProxyResponseHeadersAndLog(t *testing.T) {
	t.Parallel()
	pe := newProxyEnv(t, func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		if r.URL.Path == "/api/v1/prod/early" {
			h.Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
		}
		h.Set("X-Ratelimit-Remaining", "999")
		h.Set("Ratelimit", `"upstream";r=999;t=0`)
		h.Set("X-Request-Id", "upstream-id")
		h.Set("X-Upstream", "yes")
		switch r.URL.Path {
		case "/api/v1/prod/created":
			w.WriteHeader(201)
		case "/api/v1/prod/teapot":
			w.WriteHeader(418)
		case "/api/v1/prod/broken":
			w.WriteHeader(503)
		}
		io.WriteString(w, "from upstream\n")
	})
	_, key := pe.createKey(pe.org, `{"name":"k","env":"live","rate_limits":[{"limit":4,"window":"1m"},{"limit":100,"window":"1h"}]}`)
	tests := []struct {
		path          string
		wantStatus    int
		wantRemaining string
	}{
		{"/api/v1/prod/created", 201, "3"},
		{"/api/v1/prod/teapot", 418, "2"},
		{"/api/v1/prod/early", 200, "1"},
		{"/api/v1/prod/broken", 503, "0"},
	}
	for _, tt := range tests {
		r := pe.wire.do("GET", tt.path, "", bearer(key)...)
		mustStatus(t, "GET "+tt.path, r, tt.wantStatus)
		h := r.header
		if string(r.body) != "from upstream\n" || h.Get("X-Upstream") != "yes" {
			t.Errorf("GET %s: body %q, X-Upstream %q; want the upstream's", tt.path, r.body, h.Get("X-Upstream"))
		}
		wantHeaders := map[string]string{
			"X-Ratelimit-Limit":     "4",
			"X-Ratelimit-Remaining": tt.wantRemaining,
			"Ratelimit-Policy":      `"1m";q=4;w=60, "1h";q=100;w=3600`,
		}
		for name, want := range wantHeaders {
			if got := h.Values(name); len(got) != 1 || got[0] != want {
				t.Errorf("GET %s: %s = %q; want [%q]", tt.path, name, got, want)
			}
		}
		if got := h.Values("Ratelimit"); len(got) != 1 || !strings.HasPrefix(got[0], `"1m";r=`+tt.wantRemaining+";") {
			t.Errorf("GET %s: RateLimit = %q; want keyhole's one", tt.path, got)
		}
		reqID := h.Values("X-Request-Id")
		if len(reqID) != 1 || !strings.HasPrefix(reqID[0], "req_") {
			t.Fatalf("GET %s: X-Request-Id = %q; want keyhole's one", tt.path, reqID)
		}
		if got := pe.loggedStatus(reqID[0]); got != tt.wantStatus {
			t.Errorf("GET %s: logged status = %d; want the upstream's %d", tt.path, got, tt.wantStatus)
		}
	}
	// The bucket is now empty: 429 from keyhole, and the upstream not asked.
	before := len(pe.up.requests())
	r := pe.wire.do("GET", "/api/v1/prod/created", "", bearer(key)...)
	mustStatus(t, "GET over the limit", r, 429)
	if r.header.Get("Retry-After") == "" || r.header.Get("X-Ratelimit-Remaining") != "0" {
		t.Errorf("429 headers = %v; want Retry-After and X-RateLimit-Remaining 0", r.header)
	}
	if got := pe.loggedStatus(r.header.Get("X-Request-Id")); got != 429 {
		t.Errorf("logged status = %d; want 429", got)
	}
	if n := len(pe.up.requests()); n != before {
		t.Errorf("the upstream saw a rate-limited request")
	}
}

// TestProxyBlockedNeverReachesUpstream sends requests keyhole must refuse.
func TestProxyBlockedNeverReachesUpstream(t *testing.T) {
	t.Parallel()
	pe := newProxyEnv(t, nil)
	_, live := pe.createKey(pe.org, `{"name":"live","env":"live","scopes":["sms:send"]}`)
	_, test := pe.createKey(pe.org, `{"name":"test","env":"test","scopes":["sms:send"]}`)
	_, noScope := pe.createKey(pe.org, `{"name":"plain","env":"live"}`)

	tests := []struct {
		name       string
		method     string
		path       string
		headers    []string
		wantStatus int
		wantCode   string
	}{
		// SPEC 3's rows are TestErrorRows's; these are the paths and
		// headers an upstream could read otherwise than keyhole does.
		{"dot-dot into the test base", "GET", "/api/v1/prod/../dev/x", bearer(live), 400, "invalid_request"},
		{"dot-dot out of the test base", "GET", "/api/v1/dev/../prod/x", bearer(test), 400, "invalid_request"},
		{"escaped dot-dot", "GET", "/api/v1/dev/%2e%2e/prod/x", bearer(test), 400, "invalid_request"},
		{"escaped slash dot-dot", "GET", "/api/v1/dev/x%2F..%2F..%2Fprod/x", bearer(test), 400, "invalid_request"},
		{"dot segment", "GET", "/api/v1/prod/./x", bearer(live), 400, "invalid_request"},
		{"double slash", "GET", "/api/v1/prod//x", bearer(live), 400, "invalid_request"},
		// Paths that servers resolve differently (canonical.go).
		{"path parameter dot-dot", "GET", "/api/v1/dev/..;/prod/x", bearer(test), 400, "invalid_request"},
		{"path parameter", "POST", "/api/v1/prod/sms/send;x=1", bearer(noScope), 400, "invalid_request"},
		{"escaped semicolon", "POST", "/api/v1/prod/sms/send%3Bx=1", bearer(noScope), 400, "invalid_request"},
		{"escaped backslash", "GET", "/api/v1/dev/..%5Cprod/x", bearer(test), 400, "invalid_request"},
		{"double-escaped dots", "GET", "/api/v1/dev/%252e%252e/prod/x", bearer(test), 400, "invalid_request"},
		{"double-escaped slash", "GET", "/api/v1/dev/x%252f..%252fprod/x", bearer(test), 400, "invalid_request"},
		{"escaped slash", "GET", "/api/v1/prod/sms%2Fsend", bearer(noScope), 400, "invalid_request"},
		{"escaped NUL", "GET", "/api/v1/prod/x%00.json", bearer(live), 400, "invalid_request"},
		{"overlong UTF-8 dot", "GET", "/api/v1/dev/%c0%ae%c0%ae/prod/x", bearer(test), 400, "invalid_request"},
		{"method past its bound", strings.Repeat("M", maxMethodLen+1), "/api/v1/prod/x", bearer(live), 400, "invalid_request"},
		// Headers an upstream could read as another request or as keyhole's.
		{"h2c upgrade", "GET", "/api/v1/prod/x", append(bearer(live), "Connection", "Upgrade, HTTP2-Settings",
			"Upgrade", "h2c", "HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"), 400, "invalid_request"},
		{"HTTP2-Settings alone", "GET", "/api/v1/prod/x", append(bearer(live), "HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"), 400, "invalid_request"},
		{"upgrade list", "GET", "/api/v1/prod/x", append(bearer(live), "Connection", "Upgrade", "Upgrade", "websocket, h2c"), 400, "invalid_request"},
		{"underscore identity", "GET", "/api/v1/prod/x", append(bearer(live), "X_Keyhole_Org", "org_evil"), 400, "invalid_request"},
		{"underscore scopes", "GET", "/api/v1/prod/x", append(bearer(live), "x_keyhole_scopes", "*"), 400, "invalid_request"},
		{"mixed separators", "GET", "/api/v1/prod/x", append(bearer(live), "X-Keyhole_Env", "live"), 400, "invalid_request"},
		{"a future keyhole header", "GET", "/api/v1/prod/x", append(bearer(live), "X_Keyhole_Meta", "{}"), 400, "invalid_request"},
		{"underscore api key", "GET", "/api/v1/prod/x", append(bearer(live), "X_Api_Key", test), 400, "invalid_request"},
		{"underscore request id", "GET", "/api/v1/prod/x", append(bearer(live), "X_Request_Id", "req_forged"), 400, "invalid_request"},
		{"underscore forwarded for", "GET", "/api/v1/prod/x", append(bearer(live), "X_Forwarded_For", "10.0.0.1"), 400, "invalid_request"},
		{"underscore forwarded ssl", "GET", "/api/v1/prod/x", append(bearer(live), "X_Forwarded_Ssl", "on"), 400, "invalid_request"},
		{"method override", "GET", "/api/v1/prod/sms/send", append(bearer(noScope), "X-HTTP-Method-Override", "POST"), 400, "invalid_request"},
	}
	before := len(pe.up.requests())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := pe.wire.do(tt.method, tt.path, "", tt.headers...)
			mustStatus(t, tt.method+" "+tt.path, r, tt.wantStatus)
			if got := r.errorCode(t); got != tt.wantCode {
				t.Errorf("code = %q; want %q", got, tt.wantCode)
			}
		})
	}
	if n := len(pe.up.requests()) - before; n != 0 {
		t.Fatalf("the upstream was reached %d times by refused requests", n)
	}
}

// TestProxyPassesAllowedMethods sends each method with a body and checks
// that the upstream receives it unchanged.
func TestProxyPassesAllowedMethods(t *testing.T) {
	t.Parallel()
	pe := newProxyEnv(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s", r.Method, body)
	})
	_, key := pe.createKey(pe.org, `{"name":"k","env":"live","rate_limits":[{"limit":100,"window":"1m"}]}`)
	for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
		r := pe.wire.do(m, "/api/v1/prod/things/1", "payload", bearer(key)...)
		if want := m + " payload"; r.status != 200 || string(r.body) != want {
			t.Errorf("%s = %d %q; want 200 %q", m, r.status, r.body, want)
		}
	}
}

// TestProxyUpgrade switches a connection to another protocol through the
// proxy, as a WebSocket does: the 101 carries keyhole's request id, the
// bytes flow both ways, and the log says 101.
func TestProxyUpgrade(t *testing.T) {
	t.Parallel()
	pe := newProxyEnv(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "want Upgrade: websocket", 400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Request-Id: upstream-id\r\n\r\n")
		brw.Flush()
		line, _ := brw.ReadString('\n')
		brw.WriteString("echo " + line)
		brw.Flush()
	})
	_, key := pe.createKey(pe.org, `{"name":"k","env":"live"}`)
	conn, br, resp := pe.wire.exchange(
		"GET /api/v1/prod/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key + "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	reqID := resp.Header.Values("X-Request-Id")
	if resp.StatusCode != 101 || len(reqID) != 1 || !strings.HasPrefix(reqID[0], "req_") {
		t.Fatalf("status %d, X-Request-Id %q; want 101 and keyhole's id", resp.StatusCode, reqID)
	}
	io.WriteString(conn, "ping\n")
	if line, err := br.ReadString('\n'); err != nil || line != "echo ping\n" {
		t.Fatalf("through the upgraded connection: %q, %v; want \"echo ping\\n\"", line, err)
	}
	conn.Close()
	// The handler logs when both sides have closed, just after this.
	deadline := time.Now().Add(5 * time.Second)
	for !pe.hasLogEntry(reqID[0]) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := pe.loggedStatus(reqID[0]); got != 101 {
		t.Errorf("logged status = %d; want 101", got)
	}
}

// TestOwnHeaderNames keeps the names the proxy clears from an upstream's
// 101 in step with every header keyhole sets: a 429's, and a key with
// credits' X-Credits-Remaining.
func TestOwnHeaderNames(t *testing.T) {
	te := newTestEnv(t)
	org := te.createOrg("acme")
	_, key := te.createKey(org, `{"name":"k","env":"live","rate_limits":[{"limit":1,"window":"1m"}]}`)
	_, credited := te.createKey(org, `{"name":"c","env":"live","credits":{"remaining":5}}`)
	te.s.verify(key, &checkArgs{cost: 1}, time.Now())
	v := te.s.verify(key, &checkArgs{cost: 1}, time.Now())
	if v.err == nil || v.err.status != 429 {
		t.Fatalf("second call: %v; want 429", v.err)
	}
	c := te.s.verify(credited, &checkArgs{cost: 1}, time.Now())
	if c.err != nil {
		t.Fatalf("key with credits: %v", c.err)
	}
	set := map[string]bool{}
	for _, a := range []struct {
		v      verdict
		status int
	}{{v, 429}, {c, 200}} {
		w := &statusWriter{ResponseWriter: httptest.NewRecorder(), reqID: "req_x", dec: a.v.dec, decided: true}
		w.WriteHeader(a.status)
		for name := range w.Header() {
			if !slices.Contains(ownHeaderNames, name) {
				t.Errorf("%s is set but not in ownHeaderNames", name)
			}
			set[name] = true
		}
	}
	if len(set) != len(ownHeaderNames) {
		t.Errorf("the answers set %d headers; ownHeaderNames has %d", len(set), len(ownHeaderNames))
	}
}
