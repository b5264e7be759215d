package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The tests in this file are hostile clients: slow, oversized, guessing,
// and clients that stop the server under them.

// serveTestEnv runs te's server on loopback the way `keyhole serve` does,
// with its timeouts and limits, and is a client of it there. stop ends it
// and returns run's error.
func serveTestEnv(t *testing.T, te *testEnv) (c *testClient, stop func() error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- te.s.run(ctx, ln) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(30 * time.Second): // a hang guard
				runErr = errors.New("run did not return within 30s after its context ended")
			}
		})
		return runErr
	}
	t.Cleanup(func() { stop() })
	return &testClient{t: t, base: "http://" + ln.Addr().String()}, stop
}

// answer is what a raw connection got back: a status (0 if none came) and
// whether the server then closed the connection.
type answer struct {
	status int
	closed bool
	err    error
}

// readAnswer reads one response from conn, then waits for the close.
func readAnswer(conn net.Conn) answer {
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return answer{closed: true, err: err}
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	_, err = br.ReadByte()
	return answer{status: resp.StatusCode, closed: err != nil, err: err}
}

// TestSlowClientsAreCutOff: a client that sends its headers, or a body
// keyhole reads itself, a byte at a time is disconnected after the timeout,
// while other clients are served as usual.
func TestSlowClientsAreCutOff(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, func(c *config) {
		c.readHeaderTimeout = 300 * time.Millisecond
		c.bodyReadTimeout = 300 * time.Millisecond
	})
	org := te.createOrg("acme")
	_, key := te.createKey(org, `{"name":"k","env":"live","rate_limits":[{"limit":1000,"window":"1m"}]}`)
	c, _ := serveTestEnv(t, te)
	root := "Authorization: Bearer " + testRootToken + "\r\n"
	badKey := "Authorization: Bearer kh_live_" + strings.Repeat("0", 32) + "\r\n"
	tests := []struct {
		name       string
		head       string // sent at once
		drip       string // then sent a byte every 20 ms, over and over
		wantStatus int    // 0: closed without an answer, or a 400 (Go's server sends
		// one when the deadline falls in the middle of a header line)
	}{
		{"headers", "GET /healthz HTTP/1.1\r\nHost: k\r\n", "X-Slow: a\r\n", 0},
		{"headers of a guarded request", "GET /api/v1/prod/whoami HTTP/1.1\r\nHost: k\r\n", "X-Slow: a\r\n", 0},
		{"admin body", "POST /admin/v1/orgs HTTP/1.1\r\nHost: k\r\n" + root + "Content-Length: 50000\r\n\r\n{\"name\":\"", "a", 400},
		{"chunked admin body", "POST /admin/v1/orgs HTTP/1.1\r\nHost: k\r\n" + root + "Transfer-Encoding: chunked\r\n\r\n", "1\r\na\r\n", 400},
		{"verify body", "POST /v1/keys/verify HTTP/1.1\r\nHost: k\r\nContent-Length: 50000\r\n\r\n{\"key\":\"", "a", 400},
		{"body of a refused guarded request", "POST /api/v1/prod/upload HTTP/1.1\r\nHost: k\r\n" + badKey + "Content-Length: 50000\r\n\r\n", "a", 401},
		{"body of an unauthenticated admin request", "POST /admin/v1/orgs HTTP/1.1\r\nHost: k\r\nContent-Length: 50000\r\n\r\n", "a", 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := c.on(t)
			conn := c.dial()
			if _, err := io.WriteString(conn, tt.head); err != nil {
				t.Fatal(err)
			}
			got := make(chan answer, 1)
			go func() { got <- readAnswer(conn) }()
			dripDone := make(chan struct{})
			go func() {
				defer close(dripDone)
				guard := time.After(15 * time.Second)
				for i := 0; ; i++ {
					select {
					case <-guard:
						return
					case <-time.After(20 * time.Millisecond):
					}
					if _, err := conn.Write([]byte{tt.drip[i%len(tt.drip)]}); err != nil {
						return
					}
				}
			}()
			// Meanwhile everyone else is served.
			for range 3 {
				mustStatus(t, "healthz during the slow client", c.do("GET", "/healthz", ""), 200)
				mustStatus(t, "whoami during the slow client", c.do("GET", "/api/v1/prod/whoami", "", bearer(key)...), 200)
			}
			var a answer
			select {
			case a = <-got:
			case <-dripDone:
				select {
				case a = <-got:
				case <-time.After(5 * time.Second):
					t.Fatal("the slow client was still connected after 15s: not cut off")
				}
			}
			if tt.wantStatus == 0 && a.status == 400 {
				a.status = 0
			}
			if a.status != tt.wantStatus || !a.closed {
				t.Fatalf("slow client got status %d, closed %v (%v); want %d and the connection closed",
					a.status, a.closed, a.err, tt.wantStatus)
			}
		})
	}
	if orgs := te.root("GET", "/orgs", "").json(t)["orgs"].([]any); len(orgs) != 1 {
		t.Fatalf("the slow requests created organizations: %v", orgs)
	}
}

// TestSlowAuthenticatedUploadStreams: the body deadline is not a limit on
// uploads through the reverse proxy by a key holder, which may take as long
// as they take.
func TestSlowAuthenticatedUploadStreams(t *testing.T) {
	t.Parallel()
	up := newUpstreamAPI(t, func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintf(w, "%d", n)
	})
	te := newTestEnv(t, func(c *config) {
		c.upstream = up.URL
		c.bodyReadTimeout = 100 * time.Millisecond
	})
	org := te.createOrg("acme")
	_, key := te.createKey(org, `{"name":"k","env":"live"}`)
	c, _ := serveTestEnv(t, te)
	pr, pw := io.Pipe()
	go func() {
		for range 8 { // 8 × 100 ms: well past the body deadline
			time.Sleep(100 * time.Millisecond)
			pw.Write([]byte(strings.Repeat("x", 1024)))
		}
		pw.Close()
	}()
	resp := c.open("POST", "/api/v1/prod/upload", pr, bearer(key)...)
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "8192" {
		t.Fatalf("slow upload by a key holder = %d %q; want 200 and all 8192 bytes at the upstream", resp.StatusCode, b)
	}
}

// TestOversizedRequests: headers over MaxHeaderBytes get 431, bodies over
// 64 KiB get 400, over a real connection; requests just under are served.
func TestOversizedRequests(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t)
	org := te.createOrg("acme")
	_, key := te.createKey(org, `{"name":"k","env":"live"}`)
	c, _ := serveTestEnv(t, te)
	big := strings.Repeat("a", 70<<10)
	tests := []struct {
		name, method, path, auth, body, header string
		want                                   int
	}{
		{"header over 64 KiB", "GET", "/healthz", "", "", strings.Repeat("b", maxHeaderBytes+8<<10), 431},
		{"header over 64 KiB on the admin API", "GET", "/admin/v1/orgs", testRootToken, "", strings.Repeat("b", maxHeaderBytes+8<<10), 431},
		{"header over 64 KiB on the guarded API", "GET", "/api/v1/prod/whoami", key, "", strings.Repeat("b", maxHeaderBytes+8<<10), 431},
		{"header of 48 KiB", "GET", "/api/v1/prod/whoami", key, "", strings.Repeat("b", 48<<10), 200},
		{"admin body over 64 KiB", "POST", "/admin/v1/orgs", testRootToken, `{"name":"` + big + `"}`, "", 400},
		{"verify body over 64 KiB", "POST", "/v1/keys/verify", "", `{"key":"` + big + `"}`, "", 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var headers []string
			if tt.auth != "" {
				headers = bearer(tt.auth)
			}
			if tt.header != "" {
				headers = append(headers, "X-Big", tt.header)
			}
			r := c.on(t).do(tt.method, tt.path, tt.body, headers...)
			if r.status != tt.want {
				t.Fatalf("%s = %d %.200s; want %d", tt.name, r.status, r.body, tt.want)
			}
		})
	}
	mustStatus(t, "a normal request after them", c.do("GET", "/api/v1/prod/whoami", "", bearer(key)...), 200)
}

// blockingUpstream holds each request until release is closed, and says
// when one has arrived.
func blockingUpstream(t *testing.T) (up *upstreamAPI, arrived chan struct{}, release chan struct{}) {
	arrived = make(chan struct{}, 16)
	release = make(chan struct{})
	up = newUpstreamAPI(t, func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		io.WriteString(w, "finished")
	})
	return up, arrived, release
}

func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(15 * time.Second): // a hang guard
		t.Fatalf("%s did not happen within 15s", what)
	}
}

// loggedRequestIDs reads the org's log as it is in the db, without the
// flush that GET …/logs does first.
func loggedRequestIDs(t *testing.T, te *testEnv, org string) map[string]bool {
	t.Helper()
	page, err := te.s.store.ReadLogs(org, te.cfg.logRetention, logQuery{limit: maxLogLimit})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, e := range page.Entries {
		ids[e.RequestID] = true
	}
	return ids
}

// TestShutdownDrainsThenFlushes: when the server is told to stop, a request
// in flight is finished, not cut, and only then is the write-behind buffer
// flushed, so that request's log entry is in the db when run returns.
func TestShutdownDrainsThenFlushes(t *testing.T) {
	t.Parallel()
	up, arrived, release := blockingUpstream(t)
	te := newTestEnv(t, func(c *config) {
		c.upstream = up.URL
		c.flushInterval = time.Hour // only the final flush writes
	})
	org := te.createOrg("acme")
	_, key := te.createKey(org, `{"name":"k","env":"live"}`)
	c, stop := serveTestEnv(t, te)

	type result struct {
		r   response
		err error
	}
	inFlight := make(chan result, 1)
	go func() {
		r, err := c.try("GET", "/api/v1/prod/slow", "", bearer(key)...)
		inFlight <- result{r: r, err: err}
	}()
	waitFor(t, arrived, "the request reaching the upstream")
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	// Shutdown has begun when new connections are refused.
	for i := 0; ; i++ {
		conn, err := net.Dial("tcp", c.hostPort())
		if err != nil {
			break
		}
		conn.Close()
		if i > 1500 {
			t.Fatal("the listener was not closed within 15s of the stop")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-stopped:
		t.Fatalf("run returned (%v) while a request was still in flight", err)
	default:
	}
	close(release)
	res := <-inFlight
	if res.err != nil || res.r.status != 200 || string(res.r.body) != "finished" {
		t.Fatalf("in-flight request = %d %q %v; want it finished", res.r.status, res.r.body, res.err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("run: %v", err)
	}
	if !loggedRequestIDs(t, te, org)[res.r.header.Get("X-Request-Id")] {
		t.Fatal("the drained request's log entry is not in the db: the final flush ran before the drain ended")
	}
}

// TestShutdownDrainIsBounded: a request that never ends cannot hold the
// shutdown past the drain timeout, and the final flush still runs.
func TestShutdownDrainIsBounded(t *testing.T) {
	t.Parallel()
	up, arrived, release := blockingUpstream(t)
	defer close(release) // after the test: the upstream's Close waits for its handlers
	te := newTestEnv(t, func(c *config) {
		c.upstream = up.URL
		c.flushInterval = time.Hour
		c.drainTimeout = 200 * time.Millisecond
	})
	org := te.createOrg("acme")
	_, key := te.createKey(org, `{"name":"k","env":"live"}`)
	c, stop := serveTestEnv(t, te)
	// One request keyhole answers itself (a live key on the test base)…
	done := c.do("GET", "/api/v1/dev/x", "", bearer(key)...)
	mustStatus(t, "live key on the test base", done, 401)
	// …and one the upstream never finishes.
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		c.try("GET", "/api/v1/prod/hang", "", bearer(key)...)
	}()
	waitFor(t, arrived, "the hanging request reaching the upstream")
	if err := stop(); err != nil { // stop's own guard fails a hang at 30s
		t.Fatalf("run: %v", err)
	}
	waitFor(t, finished, "the hanging request's client to see its connection end")
	if !loggedRequestIDs(t, te, org)[done.header.Get("X-Request-Id")] {
		t.Fatal("a request answered before the shutdown is not in the db after it")
	}
}

// securityHeaders are what every admin API answer carries.
var securityHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
	"X-Content-Type-Options":  "nosniff",
	"Referrer-Policy":         "no-referrer",
	"Cache-Control":           "no-store",
}

// TestAdminSecurityHeaders: admin API answers, errors included, and above
// all those that carry a secret, have the security headers and must not be
// stored by any cache.
func TestAdminSecurityHeaders(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t)
	org := te.createOrg("acme")
	keyID, _ := te.createKey(org, `{"name":"k","env":"live"}`)
	issued := te.root("POST", "/orgs/"+org+"/admin-tokens", `{"name":"ci"}`).json(t)
	orgToken, tokID := issued["token"].(string), issued["id"].(string)
	rollMe := te.root("POST", "/orgs/"+org+"/admin-tokens", `{"name":"roll me"}`).json(t)["id"].(string)
	tests := []struct {
		name, method, path, token, body string
		status                          int
		secret                          string // a JSON member the answer must hold
	}{
		{"create key", "POST", "/orgs/" + org + "/keys", testRootToken, `{"name":"n","env":"test"}`, 201, `"key":"kh_test_`},
		{"roll key", "POST", "/orgs/" + org + "/keys/" + keyID + "/roll", testRootToken, `{"expires_in":"1h"}`, 201, `"key":"kh_live_`},
		{"create admin token", "POST", "/orgs/" + org + "/admin-tokens", testRootToken, `{"name":"x"}`, 201, `"token":"kh_orgadmin_`},
		{"roll admin token", "POST", "/orgs/" + org + "/admin-tokens/" + rollMe + "/roll", orgToken, `{"expires_in":"1h"}`, 201, `"token":"kh_orgadmin_`},
		{"list admin tokens", "GET", "/orgs/" + org + "/admin-tokens", orgToken, "", 200, `"id":"` + tokID + `"`},
		{"org audit", "GET", "/orgs/" + org + "/audit", orgToken, "", 200, `"action":"admin_token.rolled"`},
		{"audit", "GET", "/audit", testRootToken, "", 200, `"action":"org.created"`},
		{"backup", "GET", "/backup", testRootToken, "", 200, ""},
		{"list keys", "GET", "/orgs/" + org + "/keys", testRootToken, "", 200, ""},
		{"logs as org admin", "GET", "/orgs/" + org + "/logs", orgToken, "", 200, ""},
		{"usage", "GET", "/orgs/" + org + "/usage", testRootToken, "", 200, ""},
		{"bad body", "POST", "/orgs", testRootToken, `{"nom":"x"}`, 400, ""},
		{"no token", "GET", "/orgs", "", "", 401, ""},
		{"root only", "POST", "/orgs", orgToken, `{"name":"x"}`, 403, ""},
		{"other org", "GET", "/orgs/org_nope", orgToken, "", 404, ""},
		{"no such endpoint", "GET", "/nothing", testRootToken, "", 404, ""},
		{"wrong method", "DELETE", "/orgs", testRootToken, "", 405, ""},
		{"roll root token", "POST", "/admin-token/roll", testRootToken, "", 201, `"token":"kh_admin_`}, // last: the root token changes
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var headers []string
			if tt.token != "" {
				headers = []string{"Authorization", "Bearer " + tt.token}
			}
			r := te.do(tt.method, "/admin/v1"+tt.path, tt.body, headers...)
			if r.status != tt.status {
				t.Fatalf("status %d %s; want %d", r.status, r.body, tt.status)
			}
			if tt.secret != "" && !strings.Contains(string(r.body), tt.secret) {
				t.Fatalf("answer %s lacks %s", r.body, tt.secret)
			}
			for name, want := range securityHeaders {
				if got := r.header.Values(name); len(got) != 1 || got[0] != want {
					t.Errorf("%s = %q; want %q", name, got, want)
				}
			}
		})
	}
	// Throttled: the 429 carries them too.
	for range maxFails {
		te.admin("kh_admin_"+strings.Repeat("7", 32), "GET", "/orgs", "")
	}
	r := te.root("GET", "/orgs", "")
	if r.status != 429 || r.header.Get("Cache-Control") != "no-store" || r.header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("throttled answer = %d %v; want 429 with the security headers", r.status, r.header)
	}
}

// TestAdminThrottlePerAddress: failures from one client block that client
// (even with the right token), not another. A client is an IPv4 address, or
// an IPv6 /64.
func TestAdminThrottlePerAddress(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t)
	from := func(addr, token string) int {
		te.from = addr
		return te.admin(token, "GET", "/orgs", "").status
	}
	wrong := "kh_admin_" + strings.Repeat("8", 32)
	for i := range maxFails {
		if st := from("198.51.100.7:"+strconv.Itoa(40000+i), wrong); st != 401 {
			t.Fatalf("failure %d = %d; want 401", i, st)
		}
	}
	if st := from("198.51.100.7:50000", testRootToken); st != 429 {
		t.Fatalf("the guessing address with the right token = %d; want 429 (any port)", st)
	}
	if st := from("[::ffff:198.51.100.7]:50000", testRootToken); st != 429 {
		t.Fatalf("the guessing address mapped to IPv6 = %d; want 429", st)
	}
	if st := from("198.51.100.8:50000", testRootToken); st != 200 {
		t.Fatalf("the next IPv4 address = %d; want 200", st)
	}
	for i := range maxFails {
		from(fmt.Sprintf("[2001:db8:1:2::%x]:443", i+1), wrong)
	}
	if st := from("[2001:db8:1:2:ffff::9]:443", testRootToken); st != 429 {
		t.Fatalf("another address in the guessing /64 = %d; want 429", st)
	}
	if st := from("[2001:db8:1:3::1]:443", testRootToken); st != 200 {
		t.Fatalf("the next /64 = %d; want 200", st)
	}
	te.clock.Advance(failWindow)
	if st := from("198.51.100.7:50001", testRootToken); st != 200 {
		t.Fatalf("the guessing address after the window = %d; want 200", st)
	}
}

// TestAdminThrottleBehindTrustedProxies: behind --trusted-proxies the
// throttle counts the clients the proxy forwards, so one guesser does not
// lock out everyone behind the proxy; an untrusted peer cannot escape its
// count with an X-Forwarded-For of its own.
func TestAdminThrottleBehindTrustedProxies(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, func(c *config) { c.trustedSpec = "10.0.0.1" })
	from := func(peer, xff, token string) int {
		c := *te.testClient
		c.from = peer
		return c.do("GET", "/admin/v1/orgs", "", "Authorization", "Bearer "+token, "X-Forwarded-For", xff).status
	}
	wrong := "kh_admin_" + strings.Repeat("9", 32)
	for i := range maxFails {
		from("10.0.0.1:1", "203.0.113.5", wrong)
		from("198.51.100.7:1", "203.0.113."+strconv.Itoa(100+i), wrong) // a new client each time, it says
	}
	for _, c := range []struct {
		peer, xff string
		want      int
	}{
		{"10.0.0.1:2", "203.0.113.5", 429},     // the guesser behind the proxy
		{"10.0.0.1:2", "203.0.113.6", 200},     // its neighbour behind the same proxy
		{"198.51.100.7:2", "203.0.113.1", 429}, // the untrusted guesser, whatever it says
	} {
		if st := from(c.peer, c.xff, testRootToken); st != c.want {
			t.Errorf("from %s for %s: %d; want %d", c.peer, c.xff, st, c.want)
		}
	}
}

// TestAdminThrottleKeepsBlocks: the throttle's table stays within
// maxFailClient entries, and failures from more addresses than that do not
// lift a block. Only when every entry is a live block do blocks go, those
// that end soonest first.
func TestAdminThrottleKeepsBlocks(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t)
	th := te.s.throttle
	te.from = "198.51.100.7:1"
	for range maxFails {
		te.admin("kh_admin_"+strings.Repeat("8", 32), "GET", "/orgs", "")
	}
	fail := func(client string, n int) {
		for range n {
			th.fail(client, te.clock.Now())
		}
		if len(th.fails) > maxFailClient {
			t.Fatalf("%d clients in the table; want at most %d", len(th.fails), maxFailClient)
		}
	}
	for i := range 3 * maxFailClient {
		fail(fmt.Sprintf("10.%d.%d.%d", i>>16, i>>8&255, i&255), 1)
	}
	mustStatus(t, "the blocked address after a spray of others", te.root("GET", "/orgs", ""), 429)

	// Blocks alone fill the table: the oldest, the guesser's, goes first.
	var last string
	for i := range maxFailClient {
		te.clock.Advance(time.Millisecond)
		last = fmt.Sprintf("2001:db8:%x::/64", i)
		fail(last, maxFails)
	}
	mustStatus(t, "the oldest block, once blocks fill the table", te.root("GET", "/orgs", ""), 200)
	if !th.blocked(last, te.clock.Now()) {
		t.Fatal("the newest block was dropped")
	}
}

// TestAdminTokenLookupIsBlind: the admin-token check takes no early exit
// that depends on a stored secret. The root token hash is compared with
// crypto/subtle. Org tokens live in a map, which compares keys byte by
// byte; the map is keyed by a per-process HMAC of the token hash, not the
// hash itself, so how far a guess's key agrees with a stored one says
// nothing the guesser can use. Every lookup, hit or miss, root or not, does
// the same steps.
func TestAdminTokenLookupIsBlind(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t)
	org := te.createOrg("acme")
	issued := te.root("POST", "/orgs/"+org+"/admin-tokens", `{"name":"ci"}`).json(t)
	token, tokenID := issued["token"].(string), issued["id"].(string)
	a := &te.s.admins
	hash := sha256.Sum256([]byte(token))
	a.mu.RLock()
	_, byRawHash := a.orgs[hash]
	tagKey := a.tagKey
	n := len(a.orgs)
	a.mu.RUnlock()
	if byRawHash || n != 1 {
		t.Fatalf("org tokens are keyed by their plain SHA-256 (%v) or missing (%d)", byRawHash, n)
	}
	if tagKey == ([32]byte{}) {
		t.Fatal("the map key's HMAC key is zero")
	}
	other := newTestEnv(t)
	other.s.admins.addOrgToken(&tokenRecord{ID: tokenID, OrgID: org, Hash: hash})
	if other.s.admins.tagKey == tagKey {
		t.Fatal("two servers share the HMAC key")
	}
	// A guess whose SHA-256 shares its first two bytes with the token's.
	var near string
	for i := 0; near == ""; i++ {
		g := fmt.Sprintf("kh_orgadmin_%032x", i)
		if h := sha256.Sum256([]byte(g)); h[0] == hash[0] && h[1] == hash[1] && g != token {
			near = g
		}
	}
	tests := []struct {
		token  string
		ok     bool
		caller caller
	}{
		{token, true, caller{orgID: org, tokenID: tokenID, tokenName: "ci"}},
		{testRootToken, true, caller{root: true}},
		{near, false, caller{}},
		{token[:len(token)-1], false, caller{}},
		{"", false, caller{}},
	}
	for _, tt := range tests {
		c, ok := a.lookup(tt.token, te.clock.Now().UnixNano())
		if ok != tt.ok || c != tt.caller {
			t.Errorf("lookup(%.20q…) = %+v, %v; want %+v, %v", tt.token, c, ok, tt.caller, tt.ok)
		}
	}
}

// TestExpectContinueRefusedAtOnce: a client that sends
// "Expect: 100-continue" waits for the go-ahead before its body. A refusal,
// guarded or admin, is its answer at once; net/http must not send the 100
// and wait for the body until the body deadline (here an hour).
func TestExpectContinueRefusedAtOnce(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, func(c *config) { c.bodyReadTimeout = time.Hour })
	c, _ := serveTestEnv(t, te)
	badKey := "Authorization: Bearer kh_live_" + strings.Repeat("0", 32) + "\r\n"
	tests := []struct {
		name, head string
		want       int
	}{
		{"guarded, no key", "POST /api/v1/prod/upload HTTP/1.1\r\n", 401},
		{"guarded, unknown key", "POST /api/v1/prod/upload HTTP/1.1\r\n" + badKey, 401},
		{"guarded, ambiguous path", "POST /api/v1/prod/..;/upload HTTP/1.1\r\n" + badKey, 400},
		{"admin, no token", "POST /admin/v1/orgs HTTP/1.1\r\n", 401},
		{"admin, wrong token", "POST /admin/v1/orgs HTTP/1.1\r\nAuthorization: Bearer wrong\r\n", 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// exchange's deadline is the hang guard: without an answer
			// before the body, it fails.
			_, _, resp := c.on(t).exchange(tt.head + "Host: k\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n")
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d; want %d at once, without a 100 Continue", resp.StatusCode, tt.want)
			}
		})
	}
}

// TestStrangersCannotPinMemory: a queued log entry keeps a copy of what it
// logs (a method of at most maxMethodLen bytes, a path of at most
// maxLoggedPath), not the request line it was cut from, so unauthenticated
// requests with 60 KB methods or paths, waiting for the flush, hold a few
// hundred bytes each. The limit is per entry: 900 entries show it as well
// as thousands, in a third of the time.
func TestStrangersCannotPinMemory(t *testing.T) {
	te := newTestEnv(t)
	c := te.listen() // no flusher: every entry stays queued
	long := strings.Repeat("a", 60_000)
	requests := []string{
		long + " /api/v1/prod/x HTTP/1.1\r\n",
		"GET /api/v1/prod/" + long + " HTTP/1.1\r\n",
		"GET /api/v1/prod/x?q=" + long + " HTTP/1.1\r\n",
	}
	const each = 300
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	conn := c.dial()
	br := bufio.NewReader(conn)
	for i := 0; i < each; i++ {
		for _, line := range requests {
			io.WriteString(conn, line+"Host: k\r\n\r\n")
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	if n := len(te.s.behind.pending); n != each*len(requests) {
		t.Fatalf("%d entries queued; want %d", n, each*len(requests))
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	// Pinned request lines would be 54 MB; the entries' own copies are
	// at most ~1.2 KB each.
	if limit := int64(each * len(requests) * 2 << 10); grown > limit {
		t.Errorf("the heap grew by %d MB for %d queued entries; want under %d MB", grown>>20, each*len(requests), limit>>20)
	}
}
