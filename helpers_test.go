package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
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

// testEnv is one keyhole server on a real bbolt file in a temp dir.
type testEnv struct {
	t      testing.TB
	s      *server
	clock  *fakeClock
	dbPath string
	cfg    config
	stderr *bytes.Buffer
	addr   string // the client address rawDo sends from; 192.0.2.1:1234 if empty
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
	te := &testEnv{t: t, clock: newFakeClock(), dbPath: cfg.dbPath, cfg: cfg, stderr: new(bytes.Buffer)}
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
	if err := s.firstStart(te.stderr); err != nil {
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

// rawDo sends one request through the server's handler, without a
// *testing.T (fuzz set-up runs outside f.Fuzz).
func rawDo(te *testEnv, method, path, body string, headers ...string) response {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, rd)
	req.RemoteAddr = "192.0.2.1:1234"
	if te.addr != "" {
		req.RemoteAddr = te.addr
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	rec := httptest.NewRecorder()
	te.s.ServeHTTP(rec, req)
	return response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
}

// do sends one request through the server's handler. headers alternate
// name, value.
func (te *testEnv) do(method, path, body string, headers ...string) response {
	te.t.Helper()
	return rawDo(te, method, path, body, headers...)
}

// admin calls the admin API with token.
func (te *testEnv) admin(token, method, path, body string) response {
	te.t.Helper()
	return te.do(method, "/admin/v1"+path, body, "Authorization", "Bearer "+token)
}

func (te *testEnv) root(method, path, body string) response {
	te.t.Helper()
	return te.admin(testRootToken, method, path, body)
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
