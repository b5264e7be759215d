package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The tests in this file put keyhole's reverse proxy in front of real API
// servers on loopback, each running an echo app from testdata/upstreams
// that reports what the server made of a request, and send through keyhole
// requests that such a server reads differently from Go's net/http: paths
// that resolve elsewhere, header names that fold into keyhole's, routes
// matched case-insensitively, and a switch to h2c. Each test first shows,
// asking the server directly, that the difference is real.

// echoReport is what an echo app answers about one request it served.
type echoReport struct {
	Server string `json:"server"`
	Type   string `json:"type"` // hypercorn: "http" or "websocket"
	Method string `json:"method"`
	Path   string `json:"path"` // the path the app routed on
	// Tomcat: the mapping the container chose, and the rest of the path.
	ServletPath string `json:"servlet_path"`
	PathInfo    string `json:"path_info"`
	RequestURI  string `json:"request_uri"`
	// Express: the route matched and its params.
	Route  string            `json:"route"`
	Params map[string]string `json:"params"`
	// hypercorn: the HTTP version the request arrived with.
	HTTPVersion string `json:"http_version"`
	// The headers as received, in order; a WSGI app has only its
	// environ's HTTP_* keys instead.
	Headers [][2]string       `json:"headers"`
	Environ map[string]string `json:"environ"`
}

func parseEcho(t *testing.T, what string, body []byte) echoReport {
	t.Helper()
	var e echoReport
	if err := json.Unmarshal(body, &e); err != nil || e.Server == "" {
		t.Fatalf("%s: the answer is not an echo app's: %v %.300q", what, err, body)
	}
	return e
}

// header is what the app received, as an http.Header. From a WSGI environ,
// HTTP_X_KEYHOLE_ORG becomes one X-Keyhole-Org, holding whatever the server
// merged into it (from X-Keyhole-Org and X_Keyhole_Org alike).
func (e echoReport) header() http.Header {
	h := http.Header{}
	for _, kv := range e.Headers {
		h.Add(kv[0], kv[1])
	}
	for k, v := range e.Environ {
		h.Add(strings.ReplaceAll(strings.TrimPrefix(k, "HTTP_"), "_", "-"), v)
	}
	return h
}

// resolved says where the app thought the request went, for a failure
// message; it never holds header values, which may hold a key.
func (e echoReport) resolved() string {
	switch {
	case e.ServletPath != "" || e.PathInfo != "":
		return fmt.Sprintf("%s: servlet path %q, path info %q", e.Server, e.ServletPath, e.PathInfo)
	case e.Route != "":
		return fmt.Sprintf("%s: route %q, params %v", e.Server, e.Route, e.Params)
	}
	return fmt.Sprintf("%s: path %q", e.Server, e.Path)
}

// echoServer is a real server on loopback running an echo app, and a
// client of it.
type echoServer struct {
	*testClient
	name string // what its Server header says, in lower case
}

// served is how many requests the app has served, other than these
// questions, which are asked directly. A request the server refuses
// itself (Tomcat's 400 for a path it rejects) is not counted.
func (es echoServer) served(t *testing.T) int {
	t.Helper()
	r := es.on(t).do("GET", "/__count", "")
	var c struct{ Count *int }
	if err := json.Unmarshal(r.body, &c); r.status != 200 || err != nil || c.Count == nil {
		t.Fatalf("GET %s/__count = %d %q", es.name, r.status, r.body)
	}
	return *c.Count
}

// startEcho runs cmd, a server that listens on addr, with startFront.
func startEcho(t *testing.T, name, addr string, cmd *exec.Cmd) echoServer {
	t.Helper()
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	startFront(t, name, addr, nil, cmd, nil)
	return echoServer{testClient: &testClient{t: t, base: "http://" + addr, foreign: true}, name: name}
}

func upstreamsDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("testdata", "upstreams"))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

const tomcatJar = "/usr/share/java/tomcat10-embed-core.jar"

// startTomcat compiles EchoServlet.java against Debian's embedded Tomcat
// 10.1 and runs it.
func startTomcat(t *testing.T) echoServer {
	t.Helper()
	if _, err := os.Stat(tomcatJar); err != nil {
		integrationMissing(t, tomcatJar+" is missing (Debian package libtomcat10-embed-java)")
	}
	for _, tool := range []string{"javac", "java"} {
		if _, err := exec.LookPath(tool); err != nil {
			integrationMissing(t, tool+" is not installed (Debian package default-jdk-headless)")
		}
	}
	classes, work := t.TempDir(), t.TempDir()
	javac := exec.Command("javac", "-nowarn", "-d", classes, "-cp", tomcatJar,
		filepath.Join(upstreamsDir(t), "EchoServlet.java"))
	if out, err := javac.CombinedOutput(); err != nil {
		t.Fatalf("javac EchoServlet.java: %v\n%s", err, out)
	}
	addr := freeLoopbackAddr(t)
	return startEcho(t, "tomcat", addr, exec.Command("java", "-XX:+UseSerialGC",
		"-cp", classes+string(os.PathListSeparator)+tomcatJar, "EchoServlet", portOf(addr), work))
}

// Debian's Python, which has the Debian packages gunicorn and hypercorn;
// the python3 first on PATH may be another.
const debianPython = "/usr/bin/python3"

// startGunicorn runs echo_wsgi.py on gunicorn with one sync worker, so
// that one process counts every request.
func startGunicorn(t *testing.T) echoServer {
	t.Helper()
	if err := exec.Command(debianPython, "-c", "import gunicorn").Run(); err != nil {
		integrationMissing(t, "gunicorn is not installed for "+debianPython+" (Debian package python3-gunicorn)")
	}
	addr := freeLoopbackAddr(t)
	return startEcho(t, "gunicorn", addr, exec.Command(debianPython, "-m", "gunicorn", "--bind", addr,
		"--workers", "1", "--worker-class", "sync", "--chdir", upstreamsDir(t), "echo_wsgi:app"))
}

// startWSGIRef runs echo_wsgi.py on Python's wsgiref.simple_server.
func startWSGIRef(t *testing.T) echoServer {
	t.Helper()
	if _, err := os.Stat(debianPython); err != nil {
		integrationMissing(t, debianPython+" is missing (Debian package python3)")
	}
	addr := freeLoopbackAddr(t)
	cmd := exec.Command(debianPython, "echo_wsgi.py", portOf(addr))
	cmd.Dir = upstreamsDir(t)
	return startEcho(t, "wsgiserver", addr, cmd)
}

const hypercornBin = "/usr/bin/hypercorn"

// startHypercorn runs echo_asgi.py on hypercorn.
func startHypercorn(t *testing.T) echoServer {
	t.Helper()
	if _, err := os.Stat(hypercornBin); err != nil {
		integrationMissing(t, hypercornBin+" is missing (Debian package python3-hypercorn)")
	}
	addr := freeLoopbackAddr(t)
	cmd := exec.Command(hypercornBin, "--bind", addr, "--workers", "1", "echo_asgi:app")
	cmd.Dir = upstreamsDir(t)
	return startEcho(t, "hypercorn", addr, cmd)
}

// startExpress runs express/echo.js on Node; .ci/run installs Express there.
func startExpress(t *testing.T) echoServer {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		integrationMissing(t, "node is not installed")
	}
	dir := filepath.Join(upstreamsDir(t), "express")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "express")); err != nil {
		integrationMissing(t, "Express is not installed: run npm install --no-audit --no-fund in testdata/upstreams/express")
	}
	addr := freeLoopbackAddr(t)
	cmd := exec.Command("node", "echo.js", portOf(addr))
	cmd.Dir = dir
	return startEcho(t, "express", addr, cmd)
}

// upstreamEnv is keyhole with testRules in front of one echo server, and
// its keys: live with sms:send, live without scopes, and test.
type upstreamEnv struct {
	*proxyEnv
	echo                              echoServer
	sms, smsID, plain, plainID, testK string
}

func newUpstreamEnv(t *testing.T, es echoServer) *upstreamEnv {
	t.Helper()
	ue := &upstreamEnv{proxyEnv: newProxyEnvTo(t, es.base), echo: es}
	const limits = `"rate_limits":[{"limit":1000,"window":"1m"}]`
	ue.smsID, ue.sms = ue.createKey(ue.org, `{"name":"sms","env":"live","scopes":["sms:send"],`+limits+`}`)
	ue.plainID, ue.plain = ue.createKey(ue.org, `{"name":"plain","env":"live",`+limits+`}`)
	_, ue.testK = ue.createKey(ue.org, `{"name":"test","env":"test","scopes":["sms:send"],`+limits+`}`)
	return ue
}

// identity is what the upstream must be told for the sms key.
func (ue *upstreamEnv) identity() map[string]string {
	return map[string]string{"X-Keyhole-Org": ue.org, "X-Keyhole-Key-Id": ue.smsID,
		"X-Keyhole-Env": "live", "X-Keyhole-Scopes": "sms:send"}
}

// allowed sends a request through keyhole that must reach the app once and
// come back 200, and gives keyhole's answer and the app's report. Requests
// here carry no body: a proxied body can race with a fast upstream's answer
// (the transport's last read of it may find it closed, and cut the answer),
// which is not what these tests are about.
func (ue *upstreamEnv) allowed(t *testing.T, method, path string, headers ...string) (response, echoReport) {
	t.Helper()
	before := ue.echo.served(t)
	r := ue.wire.on(t).do(method, path, "", headers...)
	mustStatus(t, method+" "+path+" through keyhole", r, 200)
	if n := ue.echo.served(t) - before; n != 1 {
		t.Fatalf("%s served %d requests; want 1", ue.echo.name, n)
	}
	return r, parseEcho(t, method+" "+path, r.body)
}

// refused sends a request through keyhole that keyhole must answer itself
// with wantStatus and wantCode, without asking the upstream.
func (ue *upstreamEnv) refused(t *testing.T, method, path string, wantStatus int, wantCode string, headers ...string) {
	t.Helper()
	before := ue.echo.served(t)
	r := ue.wire.on(t).do(method, path, "", headers...)
	if n := ue.echo.served(t) - before; n != 0 {
		what := fmt.Sprintf("%d %.200q", r.status, r.body)
		var e echoReport
		if json.Unmarshal(r.body, &e) == nil && e.Server != "" {
			what = fmt.Sprintf("%d from %s", r.status, e.resolved())
		}
		t.Errorf("%s %s reached the upstream: %s; want keyhole's %d %s", method, path, what, wantStatus, wantCode)
		return
	}
	var e errorBody
	if r.status != wantStatus || json.Unmarshal(r.body, &e) != nil || e.Error.Code != wantCode {
		t.Errorf("%s %s = %d %.200q; want keyhole's %d %s", method, path, r.status, r.body, wantStatus, wantCode)
	}
}

// runCommon sends every server the same allowed and refused requests:
// keyhole's identity headers arrive, once each, whatever copies or
// Connection options the client sent.
func (ue *upstreamEnv) runCommon(t *testing.T) {
	t.Run("allowed", func(t *testing.T) {
		_, e := ue.allowed(t, "GET", "/api/v1/prod/things", bearer(ue.sms)...)
		checkForwardedIdentity(t, e.header(), ue.identity())
	})
	t.Run("POST with its scope", func(t *testing.T) {
		_, e := ue.allowed(t, "POST", "/api/v1/prod/sms/send", bearer(ue.sms)...)
		checkForwardedIdentity(t, e.header(), ue.identity())
	})
	t.Run("missing scope", func(t *testing.T) {
		ue.refused(t, "POST", "/api/v1/prod/sms/send", 403, "insufficient_scope", bearer(ue.plain)...)
	})
	t.Run("exact-name identity copies are replaced", func(t *testing.T) {
		_, e := ue.allowed(t, "GET", "/api/v1/prod/things", append(bearer(ue.sms),
			"X-Keyhole-Org", "org_evil", "X-Keyhole-Org", "org_evil2", "X-Keyhole-Key-Id", "key_evil",
			"X-Keyhole-Env", "test", "x-keyhole-scopes", "*")...)
		checkForwardedIdentity(t, e.header(), ue.identity())
	})
	// keyhole forwards its request id as X-Request-Id, replacing a client's.
	t.Run("client's X-Request-Id is replaced", func(t *testing.T) {
		r, e := ue.allowed(t, "GET", "/api/v1/prod/things", append(bearer(ue.sms), "X-Request-Id", "req_evil")...)
		want := ue.identity()
		want["X-Request-Id"] = r.header.Get("X-Request-Id")
		checkForwardedIdentity(t, e.header(), want)
	})
	// A client may name headers in Connection to have a proxy drop them;
	// that must not remove any keyhole sets.
	t.Run("Connection names keyhole's headers", func(t *testing.T) {
		r, e := ue.allowed(t, "GET", "/api/v1/prod/things", append(bearer(ue.sms),
			"Connection", "X-Keyhole-Org, X-Keyhole-Key-Id, X-Keyhole-Env, X-Keyhole-Scopes, X-Request-Id")...)
		want := ue.identity()
		want["X-Request-Id"] = r.header.Get("X-Request-Id")
		checkForwardedIdentity(t, e.header(), want)
	})
}

// TestTomcatUpstream: Tomcat drops ";params" from each path segment before
// it resolves "..", so a path keyhole reads under one base or rule is served
// under another.
func TestTomcatUpstream(t *testing.T) {
	t.Parallel()
	ue := newUpstreamEnv(t, startTomcat(t))
	ue.runCommon(t)
	t.Run("allowed lands where keyhole checked", func(t *testing.T) {
		_, e := ue.allowed(t, "POST", "/api/v1/prod/sms/send", bearer(ue.sms)...)
		if e.ServletPath != "/api/v1/prod" || e.PathInfo != "/sms/send" {
			t.Errorf("Tomcat resolved it to %s; want /api/v1/prod and /sms/send", e.resolved())
		}
	})

	tests := []struct {
		name, method, path string
		key                string
		// tomcat is what Tomcat does with the path when asked directly:
		// "servlet path|path info", or "400" when it refuses it itself.
		tomcat string
	}{
		{"dot-dot-semicolon out of the test base", "GET", "/api/v1/dev/..;/prod/x", ue.testK, "/api/v1/prod|/x"},
		{"path parameter on the sms rule", "POST", "/api/v1/prod/sms/send;x=1", ue.plain, "/api/v1/prod|/sms/send"},
		{"escaped dot-dot-semicolon", "GET", "/api/v1/dev/%2e%2e;/prod/x", ue.testK, "/api/v1/prod|/x"},
		{"backslash", "GET", `/api/v1/dev/..\prod/x`, ue.testK, "400"},
		{"escaped backslash", "GET", "/api/v1/dev/..%5Cprod/x", ue.testK, "400"},
		{"escaped backslash, lower case", "GET", "/api/v1/dev/..%5cprod/x", ue.testK, "400"},
		// Tomcat decodes once, as keyhole does: an app that decodes its path
		// info again climbs out of the test base.
		{"double-escaped dot-dot", "GET", "/api/v1/dev/%252e%252e/prod/x", ue.testK, "/api/v1/dev|/%2e%2e/prod/x"},
		{"double-escaped slash", "GET", "/api/v1/dev/..%252fprod/x", ue.testK, "/api/v1/dev|/..%2fprod/x"},
		{"escaped slash", "POST", "/api/v1/prod%2Fx/sms/send", ue.plain, "400"},
		{"escaped NUL", "POST", "/api/v1/prod/sms/send%00", ue.plain, "400"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			direct := ue.echo.on(t).do(tt.method, tt.path, "")
			got := fmt.Sprint(direct.status)
			if direct.status == 200 {
				e := parseEcho(t, "directly", direct.body)
				got = e.ServletPath + "|" + e.PathInfo
			}
			if got != tt.tomcat {
				t.Errorf("asked directly, Tomcat gives %s; the test expects %s", got, tt.tomcat)
			}
			ue.refused(t, tt.method, tt.path, 400, "invalid_request", bearer(tt.key)...)
		})
	}
}

// TestWSGIUpstreams: a WSGI server names each header HTTP_ plus its name
// in upper case with "-" made "_", and joins headers whose names meet there
// with commas: X_Keyhole_Org lands in HTTP_X_KEYHOLE_ORG beside keyhole's
// X-Keyhole-Org.
func TestWSGIUpstreams(t *testing.T) {
	t.Parallel()
	for _, server := range []struct {
		name  string
		start func(*testing.T) echoServer
	}{{"gunicorn", startGunicorn}, {"wsgiref", startWSGIRef}} {
		t.Run(server.name, func(t *testing.T) {
			es := server.start(t)
			direct := es.on(t).do("GET", "/api/v1/prod/things", "",
				"X-Keyhole-Org", "org_real", "X_Keyhole_Org", "org_evil")
			mustStatus(t, "GET directly", direct, 200)
			if got := parseEcho(t, "directly", direct.body).Environ["HTTP_X_KEYHOLE_ORG"]; !strings.Contains(got, "org_evil") {
				t.Errorf("asked directly, %s gives HTTP_X_KEYHOLE_ORG %q; the test expects X_Keyhole_Org merged in", es.name, got)
			}

			ue := newUpstreamEnv(t, es)
			ue.runCommon(t)
			for _, h := range [][2]string{
				{"X_Keyhole_Org", "org_evil"},
				{"x_keyhole_scopes", "*"},
				{"X-Keyhole_Env", "test"},
				{"X_Keyhole_Key_Id", "key_evil"},
				{"X_Api_Key", ue.sms},
				{"X_Request_Id", "req_evil"},
				{"X_Forwarded_For", "203.0.113.7"},
				// gunicorn takes X-Forwarded-Ssl from 127.0.0.1 for the
				// scheme: keyhole drops the client's, under any spelling.
				{"X_Forwarded_Ssl", "on"},
				{"X_Forwarded_Protocol", "https"},
				{"X_Real_IP", "203.0.113.7"},
				{"X_Original_Uri", "/api/v1/dev/things"},
			} {
				t.Run(h[0], func(t *testing.T) {
					ue.refused(t, "GET", "/api/v1/prod/things", 400, "invalid_request", append(bearer(ue.sms), h[0], h[1])...)
				})
			}
		})
	}
}

// TestExpressUpstream: Express routes case-insensitively, ignores a
// trailing slash, and decodes %2F inside a route parameter, where keyhole's
// rules match exact segments of the decoded path.
func TestExpressUpstream(t *testing.T) {
	t.Parallel()
	ue := newUpstreamEnv(t, startExpress(t))
	ue.runCommon(t)
	for _, path := range []string{"/api/v1/prod/SMS/send", "/api/v1/prod/sms/send/", "/api/v1/prod/Sms/Send/"} {
		t.Run(path, func(t *testing.T) {
			direct := ue.echo.on(t).do("POST", path, "")
			mustStatus(t, "POST directly", direct, 200)
			if e := parseEcho(t, "directly", direct.body); e.Route != "sms/send" {
				t.Errorf("asked directly, %s; the test expects the sms/send route", e.resolved())
			}
			ue.refused(t, "POST", path, 403, "insufficient_scope", bearer(ue.plain)...)
			_, e := ue.allowed(t, "POST", path, bearer(ue.sms)...)
			if e.Route != "sms/send" {
				t.Errorf("with sms:send, %s; want the sms/send route", e.resolved())
			}
			checkForwardedIdentity(t, e.header(), ue.identity())
		})
	}
	t.Run("escaped slash in the env parameter", func(t *testing.T) {
		const path = "/api/v1/prod%2Fx/sms/send"
		direct := ue.echo.on(t).do("POST", path, "")
		mustStatus(t, "POST directly", direct, 200)
		if e := parseEcho(t, "directly", direct.body); e.Route != "sms/send" || e.Params["env"] != "prod/x" {
			t.Errorf("asked directly, %s; the test expects the sms/send route with env prod/x", e.resolved())
		}
		ue.refused(t, "POST", path, 400, "invalid_request", bearer(ue.plain)...)
	})
}

// h2cUpgrade is a body-less request asking to switch to HTTP/2 in clear
// text, with a header line for each of headers.
func h2cUpgrade(path string, headers ...string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n" +
		"Connection: Upgrade, HTTP2-Settings\r\n" + strings.Join(headers, "") + "\r\n"
}

// smuggleH2 speaks HTTP/2 on a connection switched to h2c: the client
// preface, empty SETTINGS and a second request, GET path on stream 3,
// with no key. It returns the bodies of the answers on streams 1 (the
// upgraded request) and 3.
func smuggleH2(t *testing.T, conn net.Conn, br *bufio.Reader, path string) (upgraded, smuggled []byte) {
	t.Helper()
	frame := func(typ, flags byte, stream uint32, payload []byte) []byte {
		n := len(payload)
		head := []byte{byte(n >> 16), byte(n >> 8), byte(n), typ, flags, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(head[5:], stream)
		return append(head, payload...)
	}
	var block []byte // HPACK: each a literal without indexing, no Huffman
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":path", path}, {":authority", "x"}} {
		block = append(append(append(append(block, 0, byte(len(f[0]))), f[0]...), byte(len(f[1]))), f[1]...)
	}
	out := []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	out = append(out, frame(0x4, 0, 0, nil)...)     // SETTINGS
	out = append(out, frame(0x1, 0x5, 3, block)...) // HEADERS, END_STREAM|END_HEADERS
	if _, err := conn.Write(out); err != nil {
		t.Fatal(err)
	}
	bodies := map[uint32][]byte{}
	for ended := 0; ended < 2; {
		var head [9]byte
		if _, err := io.ReadFull(br, head[:]); err != nil {
			t.Fatalf("reading HTTP/2 frames: %v", err)
		}
		payload := make([]byte, int(head[0])<<16|int(head[1])<<8|int(head[2]))
		if _, err := io.ReadFull(br, payload); err != nil {
			t.Fatalf("reading HTTP/2 frames: %v", err)
		}
		typ, flags, stream := head[3], head[4], binary.BigEndian.Uint32(head[5:])&0x7fffffff
		switch {
		case typ == 0x7: // GOAWAY
			t.Fatalf("the server sent GOAWAY %x", payload)
		case typ == 0x0 && (stream == 1 || stream == 3): // DATA
			bodies[stream] = append(bodies[stream], payload...)
			if flags&0x1 != 0 {
				ended++
			}
		}
	}
	return bodies[1], bodies[3]
}

// readWSText reads one unmasked WebSocket text frame, as a server sends.
func readWSText(t *testing.T, br *bufio.Reader) []byte {
	t.Helper()
	var head [2]byte
	if _, err := io.ReadFull(br, head[:]); err != nil || head[0] != 0x81 {
		t.Fatalf("WebSocket frame starts %x, %v; want a final text frame", head, err)
	}
	n := uint64(head[1] & 0x7f)
	if n >= 126 {
		ext := make([]byte, 2+6*(n-126)) // 2 bytes of length, or 8
		if _, err := io.ReadFull(br, ext); err != nil {
			t.Fatalf("reading a WebSocket frame: %v", err)
		}
		n = 0
		for _, b := range ext {
			n = n<<8 | uint64(b)
		}
	}
	payload := make([]byte, min(n, 1<<20))
	if _, err := io.ReadFull(br, payload); err != nil {
		t.Fatalf("reading a WebSocket frame: %v", err)
	}
	return payload
}

// TestHypercornUpstream: hypercorn switches a body-less request with
// Upgrade: h2c to HTTP/2, and a proxy that relays the 101 hands the client
// a connection on which it can send the upstream any request, unchecked.
func TestHypercornUpstream(t *testing.T) {
	t.Parallel()
	es := startHypercorn(t)
	t.Run("h2c directly", func(t *testing.T) {
		conn, br, resp := es.on(t).exchange(h2cUpgrade("/api/v1/prod/things"))
		if resp.StatusCode != 101 || !strings.EqualFold(resp.Header.Get("Upgrade"), "h2c") {
			t.Fatalf("hypercorn answers the h2c upgrade with %d, Upgrade %q; the test expects 101 h2c", resp.StatusCode, resp.Header.Get("Upgrade"))
		}
		upgraded, smuggled := smuggleH2(t, conn, br, "/api/v1/prod/smuggled")
		if e := parseEcho(t, "the upgraded request", upgraded); e.HTTPVersion != "2" || e.Path != "/api/v1/prod/things" {
			t.Errorf("the upgraded request: HTTP/%s %s; want HTTP/2 /api/v1/prod/things", e.HTTPVersion, e.Path)
		}
		if e := parseEcho(t, "the second request", smuggled); e.HTTPVersion != "2" || e.Path != "/api/v1/prod/smuggled" {
			t.Errorf("the second request: HTTP/%s %s; want HTTP/2 /api/v1/prod/smuggled", e.HTTPVersion, e.Path)
		}
	})

	ue := newUpstreamEnv(t, es)
	ue.runCommon(t)
	t.Run("h2c through keyhole", func(t *testing.T) {
		before := es.served(t)
		conn, br, resp := ue.wire.on(t).exchange(h2cUpgrade("/api/v1/prod/things", "Authorization: Bearer "+ue.sms+"\r\n"))
		if resp.StatusCode == 101 {
			_, smuggled := smuggleH2(t, conn, br, "/api/v1/prod/smuggled")
			e := parseEcho(t, "the smuggled request", smuggled)
			t.Fatalf("keyhole relayed the switch to h2c (101); a second request with no key then reached the upstream: HTTP/%s %s", e.HTTPVersion, e.Path)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if n := es.served(t) - before; n != 0 {
			t.Errorf("the h2c request reached the upstream (%d %.200q)", resp.StatusCode, body)
		}
		var e errorBody
		if resp.StatusCode != 400 || json.Unmarshal(body, &e) != nil || e.Error.Code != "invalid_request" {
			t.Errorf("h2c upgrade through keyhole = %d %.200q; want keyhole's 400 invalid_request", resp.StatusCode, body)
		}
	})
	t.Run("WebSocket through keyhole", func(t *testing.T) {
		_, br, resp := ue.wire.on(t).exchange("GET /api/v1/prod/ws HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + ue.sms +
			"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
		if resp.StatusCode != 101 {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 500))
			t.Fatalf("WebSocket through keyhole = %d %q; want 101", resp.StatusCode, body)
		}
		e := parseEcho(t, "the WebSocket", readWSText(t, br))
		h := e.header()
		if e.Type != "websocket" || e.Path != "/api/v1/prod/ws" || !strings.EqualFold(h.Get("Upgrade"), "websocket") {
			t.Errorf("hypercorn saw %s %s with Upgrade %q; want a websocket at /api/v1/prod/ws", e.Type, e.Path, h.Get("Upgrade"))
		}
		checkForwardedIdentity(t, h, ue.identity())
	})
}
