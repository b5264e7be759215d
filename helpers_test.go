package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// fakeClock is advanced by tests; nothing sleeps.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 11, 24, 20, 30, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

const testRootToken = "kh_admin_00000000000000000000000000000001"

// testEnv is one keyhole server on a real bbolt file in a temp dir. Its
// embedded client sends requests to it in-process.
type testEnv struct {
	*testClient
	s      *server
	clock  *fakeClock
	dbPath string
	cfg    config
	stdout *bytes.Buffer // what is shown to the operator once
	stderr *bytes.Buffer // the log
}

func testConfig(t testing.TB) config {
	cfg, err := parseServeFlags([]string{"--db", filepath.Join(t.TempDir(), "keyhole.db"),
		"--admin-token", testRootToken}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func newTestEnv(t testing.TB, modify ...func(*config)) *testEnv {
	t.Helper()
	cfg := testConfig(t)
	for _, m := range modify {
		m(&cfg)
	}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	te := &testEnv{clock: newFakeClock(), dbPath: cfg.dbPath, cfg: cfg, stdout: new(bytes.Buffer), stderr: new(bytes.Buffer)}
	te.testClient = &testClient{t: t, handler: te, cfg: &te.cfg}
	te.open()
	return te
}

func (te *testEnv) open() {
	te.t.Helper()
	st, err := openStore(te.dbPath, time.Second)
	if err != nil {
		te.t.Fatal(err)
	}
	s, err := newServer(te.cfg, st, te.clock.Now, zerolog.New(te.stderr))
	if err != nil {
		st.Close()
		te.t.Fatal(err)
	}
	if err := s.firstStart(te.stdout); err != nil {
		te.t.Fatal(err)
	}
	te.s = s
	te.t.Cleanup(func() { st.Close() })
}

// restart flushes, closes the db file and opens it again, as a restart does.
func (te *testEnv) restart() {
	te.t.Helper()
	if err := te.s.behind.FlushAll(); err != nil {
		te.t.Fatal(err)
	}
	if err := te.s.store.Close(); err != nil {
		te.t.Fatal(err)
	}
	te.open()
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q is not JSON: %v", r.body, err)
	}
	return m
}

func (r response) errorCode(t testing.TB) string {
	t.Helper()
	e, _ := r.json(t)["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}

// ServeHTTP is te's server, the one open made last: a restart keeps the
// clients of te.
func (te *testEnv) ServeHTTP(w http.ResponseWriter, r *http.Request) { te.s.ServeHTTP(w, r) }

// listen serves te on loopback until the test ends, and is a client of it
// over the socket.
func (te *testEnv) listen() *testClient {
	srv := httptest.NewUnstartedServer(te)
	srv.Listener = newDeadlineWatch().listen(srv.Listener, deadlineTick) // connections as keyhole's own are
	srv.Start()
	te.t.Cleanup(srv.Close)
	return &testClient{t: te.t, base: srv.URL, cfg: &te.cfg}
}

// testClient is how every test speaks HTTP: to keyhole in-process through
// its handler, or over a socket to a base URL (keyhole on loopback, a
// keyhole process, a front proxy, an upstream). Its methods fail the test
// when an answer does not arrive whole, except try, which says so. No
// failure message holds a header value: Authorization and X-Api-Key carry
// secrets. Every answer it gets from keyhole, whole or its head, is held
// to openapi.json (checkAnswer, openapi_test.go).
type testClient struct {
	t       testing.TB   // nil only in-process outside a test (fuzz set-up)
	handler http.Handler // in-process when set
	base    string       // else "http://host:port"
	http    *http.Client // over a socket; http.DefaultClient if nil
	// from is the client address: in-process its RemoteAddr, 192.0.2.1:1234
	// if empty; over a socket, the local address a raw connection (dial,
	// exchange) is made from, any if empty.
	from string
	// deadline is a raw connection's hang guard; 10s if zero.
	deadline time.Duration
	// cfg is the configuration of the keyhole that answers, whose bases
	// and upstream decide which operation of openapi.json a guarded path
	// is; nil: the defaults, without an upstream.
	cfg *config
	// foreign is set for a server that is not keyhole (a front proxy, an
	// upstream): its answers are not checked against openapi.json.
	foreign bool
}

// on is c with its failures reported to t, a subtest.
func (c *testClient) on(t testing.TB) *testClient {
	cc := *c
	cc.t = t
	return &cc
}

func (c *testClient) fatalf(format string, args ...any) {
	if c.t == nil {
		panic(fmt.Sprintf(format, args...))
	}
	c.t.Helper()
	c.t.Fatalf(format, args...)
}

// send sends one request; headers alternate name, value, and are added as
// given, repeats included. path (with any query) goes on the request line
// exactly as written: over a socket Go's client neither cleans nor
// re-escapes it. Go's client ignores a Content-Length header: one in
// headers sets the length it sends, for a body it cannot measure.
func (c *testClient) send(method, path string, body io.Reader, headers []string) (*http.Response, error) {
	var req *http.Request
	if c.handler != nil {
		req = httptest.NewRequest(method, path, body)
		req.RemoteAddr = "192.0.2.1:1234"
		if c.from != "" {
			req.RemoteAddr = c.from
		}
	} else {
		var err error
		if req, err = http.NewRequest(method, c.base, body); err != nil {
			return nil, err
		}
		req.URL.Opaque = path
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if http.CanonicalHeaderKey(headers[i]) == "Content-Length" {
			n, err := strconv.ParseInt(headers[i+1], 10, 64)
			if err != nil {
				return nil, err
			}
			req.ContentLength = n
			continue
		}
		req.Header.Add(headers[i], headers[i+1])
	}
	if c.handler != nil {
		rec := httptest.NewRecorder()
		c.handler.ServeHTTP(rec, req)
		return rec.Result(), nil
	}
	hc := c.http
	if hc == nil {
		hc = http.DefaultClient
	}
	return hc.Do(req)
}

// open sends a request and gives the answer with its body unread, for
// streams either way; the body is closed when the test ends.
func (c *testClient) open(method, path string, body io.Reader, headers ...string) *http.Response {
	if c.t != nil {
		c.t.Helper()
	}
	resp, err := c.send(method, path, body, headers)
	if err != nil {
		c.fatalf("%s %s: %v", method, path, err)
	}
	if c.t != nil {
		c.t.Cleanup(func() { resp.Body.Close() })
	}
	c.checkAnswer(method, path, resp, nil)
	return resp
}

// try sends a request and reads the whole answer; err says why it did not
// all arrive. It never fails the test: for goroutines, load that outlives a
// server, and answers expected to break.
func (c *testClient) try(method, path, body string, headers ...string) (response, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	resp, err := c.send(method, path, rd, headers)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, fmt.Errorf("reading the body: %w", err)
	}
	if b == nil {
		b = []byte{}
	}
	c.checkAnswer(method, path, resp, b)
	return response{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// do sends a request and reads the whole answer.
func (c *testClient) do(method, path, body string, headers ...string) response {
	if c.t != nil {
		c.t.Helper()
	}
	r, err := c.try(method, path, body, headers...)
	if err != nil {
		c.fatalf("%s %s: %v", method, path, err)
	}
	return r
}

// admin calls the admin API with token.
func (c *testClient) admin(token, method, path, body string) response {
	if c.t != nil {
		c.t.Helper()
	}
	return c.do(method, "/admin/v1"+path, body, "Authorization", "Bearer "+token)
}

// root calls the admin API with newTestEnv's root token.
func (c *testClient) root(method, path, body string) response {
	if c.t != nil {
		c.t.Helper()
	}
	return c.admin(testRootToken, method, path, body)
}

// hostPort is the server's address, for a raw connection.
func (c *testClient) hostPort() string {
	if c.handler != nil {
		c.fatalf("a raw connection needs a server on a socket: listen first")
	}
	return strings.TrimPrefix(c.base, "http://")
}

// dial opens a connection to the server for a test that writes its own
// bytes; it is closed when the test ends.
func (c *testClient) dial() net.Conn {
	c.t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if c.from != "" {
		local, err := net.ResolveTCPAddr("tcp", c.from)
		if err != nil {
			c.fatalf("from %s: %v", c.from, err)
		}
		d.LocalAddr = local
	}
	conn, err := d.Dial("tcp", c.hostPort())
	if err != nil {
		c.fatalf("dial %s: %v", c.hostPort(), err)
	}
	c.t.Cleanup(func() { conn.Close() })
	return conn
}

// exchange writes request, bytes as they are, on a new connection and reads
// the answer's head: for requests Go's client would clean up or refuse, and
// for those that switch protocols, whose connection is the caller's after
// that. The connection has c's deadline.
func (c *testClient) exchange(request string) (net.Conn, *bufio.Reader, *http.Response) {
	c.t.Helper()
	conn := c.dial()
	deadline := c.deadline
	if deadline == 0 {
		deadline = 10 * time.Second
	}
	conn.SetDeadline(time.Now().Add(deadline))
	if _, err := io.WriteString(conn, request); err != nil {
		c.fatalf("writing %q: %v", requestLine(request), err)
	}
	br := bufio.NewReader(conn)
	method, _, _ := strings.Cut(request, " ")
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		c.fatalf("reading the answer to %q: %v", requestLine(request), err)
	}
	// A body of known, small length is read here and checked with the
	// head; a stream or a switched connection stays the caller's.
	var body []byte
	if resp.StatusCode != http.StatusSwitchingProtocols && resp.ContentLength >= 0 && resp.ContentLength <= maxBodyBytes {
		if body, err = io.ReadAll(resp.Body); err != nil {
			c.fatalf("reading the answer to %q: %v", requestLine(request), err)
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
	}
	_, target, _ := strings.Cut(requestLine(request), " ")
	target, _, _ = strings.Cut(target, " ")
	c.checkAnswer(method, target, resp, body)
	return conn, br, resp
}

// requestLine is the first line of a raw request, which holds no header.
func requestLine(request string) string {
	line, _, _ := strings.Cut(request, "\r\n")
	return line
}

// mustStatus fails the test unless r has status want.
func mustStatus(t testing.TB, what string, r response, want int) {
	t.Helper()
	if r.status != want {
		t.Fatalf("%s = %d %s; want %d", what, r.status, r.body, want)
	}
}

func (te *testEnv) createOrg(name string) string {
	te.t.Helper()
	r := te.root("POST", "/orgs", `{"name":"`+name+`"}`)
	mustStatus(te.t, "create org", r, 201)
	return r.json(te.t)["id"].(string)
}

// createKey makes a key with the given JSON body and returns id and key.
func (te *testEnv) createKey(orgID, body string) (id, key string) {
	te.t.Helper()
	r := te.root("POST", "/orgs/"+orgID+"/keys", body)
	mustStatus(te.t, "create key "+body, r, 201)
	m := r.json(te.t)
	return m["id"].(string), m["key"].(string)
}

func bearer(key string) []string { return []string{"Authorization", "Bearer " + key} }

func (te *testEnv) whoami(env, key string) response {
	te.t.Helper()
	base := te.cfg.testBase
	if env == envLive {
		base = te.cfg.liveBase
	}
	return te.do("GET", base+"whoami", "", bearer(key)...)
}
