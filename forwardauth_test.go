package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The tests in this file put a real nginx, Caddy or Traefik in front of a
// real upstream on loopback, asking a real keyhole process at /v1/auth. The
// snippets are the ones the README gives, and the cases include clients that
// try to forge, merge or strip the headers the upstream trusts.

// nginxSnippet is the README's nginx configuration; KEYHOLE, API and LISTEN
// are filled in with loopback addresses.
const nginxSnippet = `
upstream keyhole { server KEYHOLE; }
upstream api     { server API; }

server {
    listen LISTEN;

    location /api/ {
        auth_request /_keyhole;
        auth_request_set $keyhole_org        $upstream_http_x_keyhole_org;
        auth_request_set $keyhole_key_id     $upstream_http_x_keyhole_key_id;
        auth_request_set $keyhole_env        $upstream_http_x_keyhole_env;
        auth_request_set $keyhole_scopes     $upstream_http_x_keyhole_scopes;
        auth_request_set $keyhole_request_id $upstream_http_x_request_id;
        auth_request_set $keyhole_status     $upstream_status;
        auth_request_set $keyhole_retry      $upstream_http_retry_after;
        auth_request_set $keyhole_rl_limit   $upstream_http_x_ratelimit_limit;
        auth_request_set $keyhole_rl_left    $upstream_http_x_ratelimit_remaining;
        auth_request_set $keyhole_rl_reset   $upstream_http_x_ratelimit_reset;
        auth_request_set $keyhole_rl_policy  $upstream_http_ratelimit_policy;
        auth_request_set $keyhole_rl         $upstream_http_ratelimit;
        auth_request_set $keyhole_credits    $upstream_http_x_credits_remaining;
        error_page 500 = @keyhole_error;

        proxy_set_header X-Keyhole-Org    $keyhole_org;
        proxy_set_header X-Keyhole-Key-Id $keyhole_key_id;
        proxy_set_header X-Keyhole-Env    $keyhole_env;
        proxy_set_header X-Keyhole-Scopes $keyhole_scopes;
        proxy_set_header X-Request-Id     $keyhole_request_id;
        proxy_set_header Authorization    "";
        proxy_set_header X-Api-Key        "";
        proxy_set_header HTTP2-Settings   "";
        proxy_pass http://api;

        # keyhole's rate-limit headers on the answer, in place of any the
        # upstream sends (an empty value adds nothing)
        proxy_hide_header X-RateLimit-Limit;
        proxy_hide_header X-RateLimit-Remaining;
        proxy_hide_header X-RateLimit-Reset;
        proxy_hide_header RateLimit-Policy;
        proxy_hide_header RateLimit;
        proxy_hide_header X-Credits-Remaining;
        add_header X-RateLimit-Limit     $keyhole_rl_limit always;
        add_header X-RateLimit-Remaining $keyhole_rl_left always;
        add_header X-RateLimit-Reset     $keyhole_rl_reset always;
        add_header RateLimit-Policy      $keyhole_rl_policy always;
        add_header RateLimit             $keyhole_rl always;
        add_header X-Credits-Remaining   $keyhole_credits always;
    }

    location = /_keyhole {
        internal;
        proxy_pass http://keyhole/v1/auth;
        proxy_pass_request_body off;
        proxy_set_header Content-Length    "";
        proxy_set_header X-Original-Method $request_method;
        proxy_set_header X-Original-URI    $request_uri;
        proxy_set_header X-Forwarded-For   $proxy_add_x_forwarded_for;
    }

    # auth_request passes on only 401 and 403 and turns any other answer
    # into 500: give keyhole's 429 and 400 back as they are.
    location @keyhole_error {
        if ($keyhole_status = 429) {
            add_header Retry-After           $keyhole_retry always;
            add_header X-RateLimit-Limit     $keyhole_rl_limit always;
            add_header X-RateLimit-Remaining $keyhole_rl_left always;
            add_header X-RateLimit-Reset     $keyhole_rl_reset always;
            add_header RateLimit-Policy      $keyhole_rl_policy always;
            add_header RateLimit             $keyhole_rl always;
            return 429;
        }
        if ($keyhole_status = 400) {
            return 400;
        }
        return 500;
    }
}
`

// caddySnippet is the README's Caddy route; KEYHOLE and API are filled in.
const caddySnippet = `
	route /api/* {
		# Some Caddy versions' copy_headers leave the client's copy of a
		# header keyhole answers empty: remove them all first.
		request_header -X-Keyhole-Org
		request_header -X-Keyhole-Key-Id
		request_header -X-Keyhole-Env
		request_header -X-Keyhole-Scopes
		request_header -X-Request-Id
		request_header -X-RateLimit-*
		request_header -RateLimit*
		forward_auth KEYHOLE {
			uri /v1/auth
			copy_headers X-Keyhole-Org X-Keyhole-Key-Id X-Keyhole-Env X-Keyhole-Scopes X-Request-Id X-RateLimit-Limit X-RateLimit-Remaining X-RateLimit-Reset RateLimit-Policy RateLimit
		}
		# copy_headers puts keyhole's rate-limit headers on the request:
		# move them to the answer.
		header X-RateLimit-Limit {http.request.header.X-RateLimit-Limit}
		header X-RateLimit-Remaining {http.request.header.X-RateLimit-Remaining}
		header X-RateLimit-Reset {http.request.header.X-RateLimit-Reset}
		header RateLimit-Policy {http.request.header.RateLimit-Policy}
		header RateLimit {http.request.header.RateLimit}
		request_header -X-RateLimit-*
		request_header -RateLimit*
		# reverse_proxy drops the headers a client's Connection header
		# names, keyhole's too, and passes on any Upgrade, h2c too: keep
		# Connection only for a WebSocket upgrade, and only as that.
		@websocket {
			header_regexp Connection (?i)(^|,)\s*upgrade\s*(,|$)
			header_regexp Upgrade (?i)^websocket$
		}
		@not_websocket not {
			header_regexp Connection (?i)(^|,)\s*upgrade\s*(,|$)
			header_regexp Upgrade (?i)^websocket$
		}
		request_header @websocket Connection Upgrade
		request_header @websocket Upgrade websocket
		request_header @not_websocket -Connection
		request_header -HTTP2-Settings
		# Some servers read X_Keyhole_Org as X-Keyhole-Org: drop every
		# name with an underscore, as nginx does.
		request_header -*_*
		reverse_proxy API {
			header_up -Authorization
			header_up -X-Api-Key
			# keyhole's rate-limit headers stand, not the upstream's
			header_down -X-RateLimit-*
			header_down -RateLimit*
		}
	}
`

// traefikSnippet is the README's Traefik dynamic configuration; KEYHOLE and
// API are filled in.
const traefikSnippet = `http:
  routers:
    api:
      # Traefik passes any Upgrade on, h2c too: only WebSocket's may.
      rule: 'PathPrefix("/api/") && (!HeaderRegexp("Upgrade", ".") || HeaderRegexp("Upgrade", "(?i)^websocket$"))'
      middlewares: [keyhole, drop-headers]   # keyhole first: it needs the key
      service: api
  middlewares:
    keyhole:
      forwardAuth:
        address: "http://KEYHOLE/v1/auth"
        authResponseHeaders:   # replaces any copies the client sent
          - X-Keyhole-Org
          - X-Keyhole-Key-Id
          - X-Keyhole-Env
          - X-Keyhole-Scopes
          - X-Request-Id
          # upstream only: Traefik cannot put them on the answer
          - X-RateLimit-Limit
          - X-RateLimit-Remaining
          - X-RateLimit-Reset
          - RateLimit-Policy
          - RateLimit
    drop-headers:
      headers:
        customRequestHeaders:  # an empty value removes the header
          Authorization: ""
          X-Api-Key: ""
          HTTP2-Settings: ""
  services:
    api:
      loadBalancer:
        servers:
          - url: "http://API"
`

// TestReadmeForwardAuthSnippets checks that the snippets the tests below run
// are, placeholders filled in with the README's addresses, the README's own.
func TestReadmeForwardAuthSnippets(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	block := func(lang string) string {
		t.Helper()
		_, rest, ok := strings.Cut(string(readme), "\n```"+lang+"\n")
		body, _, ok2 := strings.Cut(rest, "\n```\n")
		if !ok || !ok2 {
			t.Fatalf("README.md has no %s block", lang)
		}
		if strings.Contains(rest[len(body):], "\n```"+lang+"\n") {
			t.Fatalf("README.md has more than one %s block", lang)
		}
		return body + "\n"
	}
	fill := strings.NewReplacer("KEYHOLE", "127.0.0.1:8080", "API", "127.0.0.1:9000", "LISTEN", "80")
	for _, c := range []struct{ lang, readme, test string }{
		{"nginx", block("nginx"), fill.Replace(strings.TrimPrefix(nginxSnippet, "\n"))},
		{"caddyfile", block("caddyfile"), "api.example.com {\n" + fill.Replace(strings.TrimPrefix(caddySnippet, "\n")) + "}\n"},
		{"yaml", block("yaml"), fill.Replace(traefikSnippet)},
	} {
		if c.readme != c.test {
			t.Errorf("README.md's %s block differs from the test's snippet:\nREADME:\n%s\ntest:\n%s", c.lang, c.readme, c.test)
		}
	}
}

func TestNginxAuthRequest(t *testing.T) {
	bin := "/usr/sbin/nginx"
	if _, err := os.Stat(bin); err != nil {
		if bin, err = exec.LookPath("nginx"); err != nil {
			integrationMissing(t, "nginx is not installed (Debian package nginx)")
		}
	}
	fe := newFrontEnv(t)
	dir := t.TempDir()
	listen := freeLoopbackAddr(t)
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // workers must read and write the temp dir
	}
	conf := fmt.Sprintf(`%s
daemon off;
worker_processes 1;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log info;
events { worker_connections 64; }
http {
    access_log %[2]s/access.log;
    client_body_temp_path %[2]s/client_body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
%s
}
`, user, dir, strings.NewReplacer("KEYHOLE", fe.kh.addr, "API", fe.up.Listener.Addr().String(),
		"LISTEN", listen).Replace(nginxSnippet))
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := func() string {
		errLog, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		return string(errLog)
	}
	startFront(t, "nginx", listen, logs,
		exec.Command(bin, "-p", dir, "-c", confPath, "-e", filepath.Join(dir, "error.log")), nil)
	fe.run(t, front{
		addr:             listen,
		spoof:            "X-Forwarded-Uri",
		underscoreStatus: 200, // nginx drops the names before keyhole sees them
		upgradeStatus:    400,
		rateLimitAnswer:  true,
		creditsAnswer:    true,
	})
}

func TestCaddyForwardAuth(t *testing.T) {
	bin, err := exec.LookPath("caddy")
	if err != nil {
		integrationMissing(t, "caddy is not installed (Debian package caddy)")
	}
	if out, err := exec.Command(bin, "version").Output(); err == nil {
		t.Logf("caddy version: %s", bytes.TrimSpace(out))
	}
	fe := newFrontEnv(t)
	dir := t.TempDir()
	listen := freeLoopbackAddr(t)
	conf := fmt.Sprintf(`{
	admin off
	auto_https off
}

http://%s {
	bind 127.0.0.1
%s
}
`, listen, strings.NewReplacer("KEYHOLE", fe.kh.addr, "API", fe.up.Listener.Addr().String()).Replace(caddySnippet))
	confPath := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", confPath, "--adapter", "caddyfile")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+dir, "XDG_DATA_HOME="+dir)
	startFront(t, "caddy", listen, nil, cmd, nil)
	fe.run(t, front{
		addr:             listen,
		spoof:            "X-Original-URI",
		bodies:           true,
		websocket:        true,
		underscoreStatus: 400,
		upgradeStatus:    400,
		rateLimitAnswer:  true,
	})
}

// TestTraefikForwardAuth runs the README's Traefik configuration with a
// traefik binary from PATH. Debian has no Traefik package and CI does not
// build it, so this skips without one even under
// KEYHOLE_REQUIRE_INTEGRATION=1.
func TestTraefikForwardAuth(t *testing.T) {
	bin, err := exec.LookPath("traefik")
	if err != nil {
		t.Skip("skipping: no traefik on PATH; CI does not build Traefik, so this skips even with " +
			"KEYHOLE_REQUIRE_INTEGRATION=1 (put a traefik v3.6.12 binary on PATH to run it)")
	}
	if out, err := exec.Command(bin, "version").Output(); err == nil {
		t.Logf("traefik version:\n%s", bytes.TrimSpace(out))
	}
	fe := newFrontEnv(t)
	dir := t.TempDir()
	listen := freeLoopbackAddr(t)
	dynamic := filepath.Join(dir, "dynamic.yml")
	if err := os.WriteFile(dynamic, []byte(strings.NewReplacer("KEYHOLE", fe.kh.addr,
		"API", fe.up.Listener.Addr().String()).Replace(traefikSnippet)), 0o600); err != nil {
		t.Fatal(err)
	}
	static := filepath.Join(dir, "traefik.yml")
	if err := os.WriteFile(static, []byte(fmt.Sprintf(`global:
  checkNewVersion: false
  sendAnonymousUsage: false
entryPoints:
  web:
    address: "%s"
providers:
  file:
    filename: "%s"
log:
  level: INFO
`, listen, dynamic)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--configFile="+static)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+dir)
	// Traefik sends no Server header, and listens before its file provider
	// has loaded the router: it is ready when keyhole answers through it.
	startFront(t, "traefik", listen, nil, cmd, func(c *testClient) (bool, error) {
		r, err := c.try("GET", "/api/v1/prod/things", "")
		return err == nil && r.status == 401 && strings.Contains(string(r.body), `"missing_authorization"`), nil
	})
	fe.run(t, front{
		addr:             listen,
		spoof:            "X-Original-URI",
		bodies:           true,
		websocket:        true,
		underscoreStatus: 400,
		upgradeStatus:    404, // the router's rule, before keyhole is asked
		cleansPaths:      true,
		rateLimitToAPI:   true, // and not to the client: authResponseHeaders go upstream only
	})
}

// front is what a front proxy does as the README's snippet sets it up, where
// the proxies differ.
type front struct {
	addr string // host:port on loopback
	// spoof is the forward-auth URI header this proxy does not set itself,
	// which a client might add.
	spoof string
	// bodies says whether keyhole's JSON error reaches the client.
	bodies bool
	// websocket says whether a WebSocket upgrade gets through to the API.
	websocket bool
	// underscoreStatus answers names like x_keyhole_scopes: 200 when the
	// proxy drops them before asking keyhole, else keyhole's 400.
	underscoreStatus int
	// upgradeStatus answers an h2c upgrade: keyhole's 400, or the proxy's
	// own refusal.
	upgradeStatus int
	// cleansPaths says the proxy resolves /../ itself before asking keyhole.
	cleansPaths bool
	// rateLimitAnswer says keyhole's rate-limit headers of a 200 reach the
	// client on the API's answer (in place of the API's own).
	rateLimitAnswer bool
	// rateLimitToAPI says they reach the API instead.
	rateLimitToAPI bool
	// creditsAnswer says a key's X-Credits-Remaining of a 200 reaches the
	// client on the API's answer.
	creditsAnswer bool
}

// frontEnv is a keyhole process with a rules file, its keys, and the
// upstream API that a front proxy guards with it.
type frontEnv struct {
	kh                         *child
	up                         *upstreamAPI
	token, org                 string
	live, liveID, test, testID string
	plain, plainID, once       string
	here, far                  string // allowed_ips: the client's address, and elsewhere
	metered                    string // credits: 1000 to begin with
}

// frontClient is the address the cases that check allowed_ips connect to
// the front proxy from: not the proxy's own, which keyhole trusts.
const frontClient = "127.0.0.2"

func newFrontEnv(t *testing.T) *frontEnv {
	t.Helper()
	const token = "kh_admin_f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0"
	fe := &frontEnv{up: newUpstreamAPI(t, frontUpstream), token: token}
	fe.kh = startKeyhole(t, "--db", filepath.Join(t.TempDir(), "keyhole.db"), "--admin-token", token,
		"--rules", writeRules(t), "--flush-interval", "50ms", "--trusted-proxies", "127.0.0.1")
	call := func(path, body string) map[string]any {
		r := fe.kh.admin(token, "POST", path, body)
		var m map[string]any
		if err := json.Unmarshal(r.body, &m); err != nil || r.status != 201 {
			t.Fatalf("POST %s = %d, %v; want 201", path, r.status, err)
		}
		return m
	}
	fe.org = call("/orgs", `{"name":"acme"}`)["id"].(string)
	key := func(body string) (id, key string) {
		m := call("/orgs/"+fe.org+"/keys", body)
		return m["id"].(string), m["key"].(string)
	}
	fe.liveID, fe.live = key(`{"name":"live","env":"live","scopes":["sms:send"],"rate_limits":[{"limit":100,"window":"1m"}]}`)
	fe.testID, fe.test = key(`{"name":"test","env":"test","scopes":["sms:send"],"rate_limits":[{"limit":100,"window":"1m"}]}`)
	fe.plainID, fe.plain = key(`{"name":"plain","env":"live","rate_limits":[{"limit":100,"window":"1m"}]}`)
	_, fe.once = key(`{"name":"once","env":"live","rate_limits":[{"limit":1,"window":"1m"}]}`)
	_, fe.here = key(`{"name":"here","env":"live","allowed_ips":["` + frontClient + `"],"rate_limits":[{"limit":100,"window":"1m"}]}`)
	_, fe.far = key(`{"name":"far","env":"live","allowed_ips":["192.0.2.0/24"],"rate_limits":[{"limit":100,"window":"1m"}]}`)
	_, fe.metered = key(`{"name":"metered","env":"live","credits":{"remaining":1000},"rate_limits":[{"limit":100,"window":"1m"}]}`)
	return fe
}

// frontUpstream is the API behind the front proxy. It switches to whatever
// protocol a request asks to upgrade to, as an API that speaks h2c would,
// then echoes one line; anything else gets a JSON answer.
func frontUpstream(w http.ResponseWriter, r *http.Request) {
	upgrade := r.Header.Get("Upgrade")
	if upgrade == "" || !hasToken(r.Header.Values("Connection"), "upgrade") {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-RateLimit-Remaining", "5000") // an API's own, which keyhole's replace where they can
		w.Header().Set("RateLimit", upstreamRateLimit)
		fmt.Fprintf(w, `{"upstream":true,"path":%q}`+"\n", r.URL.Path)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\n\r\n", upgrade)
	brw.Flush()
	line, _ := brw.ReadString('\n')
	brw.WriteString("echo " + line)
	brw.Flush()
}

const upstreamRateLimit = `"api";r=5000;t=1`

// keyholeRateLimit is what keyhole's rate-limit headers look like for a key
// of 100/1m that has been used.
var keyholeRateLimit = map[string]*regexp.Regexp{
	"X-Ratelimit-Limit":     regexp.MustCompile(`^100$`),
	"X-Ratelimit-Remaining": regexp.MustCompile(`^\d{1,2}$`),
	"X-Ratelimit-Reset":     regexp.MustCompile(`^\d+$`),
	"Ratelimit-Policy":      regexp.MustCompile(`^"1m";q=100;w=60$`),
	"Ratelimit":             regexp.MustCompile(`^"1m";r=\d{1,2};t=\d+$`),
}

// checkRateLimitHeaders fails unless h has keyhole's rate-limit headers,
// one of each, that agree with each other.
func checkRateLimitHeaders(t *testing.T, where string, h http.Header) {
	t.Helper()
	for name, re := range keyholeRateLimit {
		if got := h.Values(name); len(got) != 1 || !re.MatchString(got[0]) {
			t.Errorf("%s: %s = %q; want one of keyhole's, matching %s", where, name, got, re)
		}
	}
	if want := `"1m";r=` + h.Get("X-Ratelimit-Remaining") + ";t=" + h.Get("X-Ratelimit-Reset"); h.Get("Ratelimit") != want {
		t.Errorf("%s: RateLimit = %q; want %q, as the X-RateLimit-* say", where, h.Get("Ratelimit"), want)
	}
}

// checkAnswerRateLimit checks the rate-limit headers of an answer of the
// API that got through f: keyhole's where f can deliver them, else the
// API's own, as they were.
func checkAnswerRateLimit(t *testing.T, f front, h http.Header) {
	t.Helper()
	if f.rateLimitAnswer {
		checkRateLimitHeaders(t, "the answer to the client", h)
	} else if got := h.Values("Ratelimit"); len(got) != 1 || got[0] != upstreamRateLimit {
		t.Errorf("the answer's RateLimit = %q; want the API's own %q", got, upstreamRateLimit)
	}
}

// hasToken says whether a comma-separated header holds token, in any case.
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for _, tok := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), token) {
				return true
			}
		}
	}
	return false
}

// frontResponse is what a front proxy answered; after a 101, echo is what
// came back through the switched connection for "ping\n".
type frontResponse struct {
	response
	echo string
}

// send writes one request to the front proxy byte for byte, so that a
// header can be repeated or spelt as a client chooses, and reads the answer.
// headers are name, value pairs; a POST carries a small JSON body.
func (f front) send(t *testing.T, method, path string, headers ...string) frontResponse {
	t.Helper()
	return f.sendFrom(t, "", method, path, headers...)
}

// sendFrom is send on a connection from the local address from ("": any).
func (f front) sendFrom(t *testing.T, from, method, path string, headers ...string) frontResponse {
	t.Helper()
	body := ""
	if method == "POST" {
		body = `{"to":"+15550100"}`
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n",
		method, path, f.addr, len(body))
	for i := 0; i+1 < len(headers); i += 2 {
		fmt.Fprintf(&b, "%s: %s\r\n", headers[i], headers[i+1])
	}
	b.WriteString("\r\n" + body)
	c := &testClient{t: t, base: "http://" + f.addr, deadline: 20 * time.Second, from: from, foreign: true}
	conn, br, resp := c.exchange(b.String())
	r := frontResponse{response: response{status: resp.StatusCode, header: resp.Header}}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		io.WriteString(conn, "ping\n")
		r.echo, _ = br.ReadString('\n')
		return r
	}
	defer resp.Body.Close()
	var err error
	if r.body, err = io.ReadAll(resp.Body); err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return r
}

// checkNothingSmuggled fails if the API received what a client must not get
// through a front proxy: a name with _ that folds onto a header keyhole sets
// or reads, an h2c upgrade, or HTTP2-Settings.
func checkNothingSmuggled(t *testing.T, h http.Header) {
	t.Helper()
	for name, values := range h {
		folded := strings.ReplaceAll(strings.ToLower(name), "_", "-")
		switch {
		case strings.Contains(name, "_") && (strings.HasPrefix(folded, "x-keyhole-") ||
			strings.HasPrefix(folded, "x-forwarded-") || strings.HasPrefix(folded, "x-original-") ||
			folded == "authorization" || folded == "x-api-key" || folded == "x-request-id"):
			t.Errorf("the upstream received %s, which some servers read as %s", name, folded)
		case folded == "http2-settings":
			t.Errorf("the upstream received HTTP2-Settings")
		case folded == "upgrade" && strings.Contains(strings.ToLower(strings.Join(values, ",")), "h2c"):
			t.Errorf("the upstream received Upgrade: %q", values)
		}
	}
}

// checkRequestID fails unless h carries one X-Request-Id of keyhole's shape
// that is not the client's.
func checkRequestID(t *testing.T, h http.Header, client string) string {
	t.Helper()
	ids := h.Values("X-Request-Id")
	if len(ids) != 1 || !strings.HasPrefix(ids[0], "req_") || ids[0] == client {
		t.Errorf("upstream X-Request-Id = %q; want one req_ id from keyhole", ids)
		return ""
	}
	return ids[0]
}

// run sends the cases through the front proxy f.
func (fe *frontEnv) run(t *testing.T, f front) {
	spoofed := []string{"X-Keyhole-Org", "org_evil", "X-Keyhole-Key-Id", "key_evil",
		"X-Keyhole-Env", "live", "X-Keyhole-Scopes", "*"}
	with := func(a []string, b ...string) []string { return append(append([]string(nil), a...), b...) }
	const clientID = "req_00000000c0ffee00"
	// reached checks the one request a case got through to the upstream.
	reached := func(t *testing.T, before int, method, path, wantID, wantEnv, wantScopes string) seenRequest {
		t.Helper()
		if n := len(fe.up.requests()); n != before+1 {
			t.Fatalf("upstream saw %d requests; want %d", n, before+1)
		}
		seen := fe.up.last(t)
		if seen.method != method || seen.uri != path {
			t.Errorf("upstream got %s %s; want %s %s", seen.method, seen.uri, method, path)
		}
		want := map[string]string{"X-Keyhole-Org": fe.org, "X-Keyhole-Key-Id": wantID, "X-Keyhole-Env": wantEnv}
		if wantScopes != "" {
			want["X-Keyhole-Scopes"] = wantScopes
		} else if got := seen.header.Values("X-Keyhole-Scopes"); len(got) > 1 || len(got) == 1 && got[0] != "" {
			t.Errorf("upstream X-Keyhole-Scopes = %q; want none or empty", got)
		}
		checkForwardedIdentity(t, seen.header, want)
		checkRequestID(t, seen.header, clientID)
		checkNothingSmuggled(t, seen.header)
		if f.rateLimitToAPI {
			checkRateLimitHeaders(t, "the request to the API", seen.header)
		}
		return seen
	}
	// refused checks a refusal that never reached the upstream.
	refused := func(t *testing.T, before int, r frontResponse, wantStatus int, wantCode string) {
		t.Helper()
		if r.status != wantStatus {
			t.Fatalf("status %d %q; want %d", r.status, r.body, wantStatus)
		}
		if n := len(fe.up.requests()); n != before {
			t.Fatalf("the upstream was reached by a request that was refused")
		}
		if retry := r.header.Get("Retry-After"); wantStatus == 429 && (retry == "" ||
			r.header.Get("X-Ratelimit-Remaining") != "0" || r.header.Get("Ratelimit") != `"1m";r=0;t=`+retry) {
			t.Errorf("429 Retry-After %q, X-RateLimit-Remaining %q, RateLimit %q; want RateLimit's t to be Retry-After, nothing left",
				retry, r.header.Get("X-Ratelimit-Remaining"), r.header.Get("Ratelimit"))
		}
		// A refusal of an identified key carries its rate-limit headers.
		if identified := wantCode == "environment_mismatch" || wantCode == "insufficient_scope"; identified &&
			(f.bodies || f.rateLimitAnswer) && r.header.Get("X-Ratelimit-Limit") == "" {
			t.Errorf("%d %s without keyhole's rate-limit headers", wantStatus, wantCode)
		}
		if !f.bodies || wantCode == "" {
			return
		}
		var e errorBody
		if err := json.Unmarshal(r.body, &e); err != nil || e.Error.Code != wantCode {
			t.Errorf("body = %q; want keyhole's error %q", r.body, wantCode)
		}
	}

	allowed := []struct {
		name       string
		method     string
		path       string
		headers    []string
		wantID     string
		wantEnv    string
		wantScopes string
	}{
		{"live key", "GET", "/api/v1/prod/things?page=2", bearer(fe.live), fe.liveID, "live", "sms:send"},
		{"live key with spoofed identity", "GET", "/api/v1/prod/things", with(bearer(fe.live), spoofed...), fe.liveID, "live", "sms:send"},
		{"live key with its scope", "POST", "/api/v1/prod/sms/send", bearer(fe.live), fe.liveID, "live", "sms:send"},
		{"x-api-key", "GET", "/api/v1/prod/things", []string{"X-Api-Key", fe.live}, fe.liveID, "live", "sms:send"},
		{"test key on the test base", "POST", "/api/v1/dev/sms/send", bearer(fe.test), fe.testID, "test", "sms:send"},
		{"key without scopes, spoofing some", "GET", "/api/v1/prod/things", with(bearer(fe.plain), spoofed...), fe.plainID, "live", ""},
		{"client's own request id", "GET", "/api/v1/prod/things", with(bearer(fe.live), "X-Request-Id", clientID), fe.liveID, "live", "sms:send"},
		{"client's own rate-limit headers", "GET", "/api/v1/prod/things", with(bearer(fe.live), "RateLimit", `"1m";r=5000;t=0`,
			"X-RateLimit-Remaining", "5000", "RateLimit-Policy", `"1m";q=5000;w=60`), fe.liveID, "live", "sms:send"},
		// A proxy that drops the headers a client's Connection header names,
		// after setting keyhole's, sends the API no identity, or the client's.
		{"Connection naming keyhole's headers", "GET", "/api/v1/prod/things",
			with(bearer(fe.live), "Connection", "X-Keyhole-Org, X-Keyhole-Key-Id, X-Keyhole-Env, X-Keyhole-Scopes, X-Request-Id"),
			fe.liveID, "live", "sms:send"},
		{"Connection naming keyhole's headers, in a second Connection header", "GET", "/api/v1/prod/things",
			with(bearer(fe.live), append(spoofed, "Connection", "keep-alive",
				"Connection", "X-Keyhole-Org, X-Keyhole-Key-Id, X-Keyhole-Env, X-Keyhole-Scopes, X-Request-Id")...),
			fe.liveID, "live", "sms:send"},
		{"Connection naming keyhole's headers, without a scope", "GET", "/api/v1/prod/things",
			with(bearer(fe.plain), "X-Keyhole-Scopes", "*", "Connection", "X-Keyhole-Scopes"), fe.plainID, "live", ""},
	}
	for _, tt := range allowed {
		t.Run(tt.name, func(t *testing.T) {
			before := len(fe.up.requests())
			r := f.send(t, tt.method, tt.path, tt.headers...)
			if r.status != 200 || !strings.Contains(string(r.body), `"upstream":true`) {
				t.Fatalf("%s %s = %d %q; want 200 from the upstream", tt.method, tt.path, r.status, r.body)
			}
			reached(t, before, tt.method, tt.path, tt.wantID, tt.wantEnv, tt.wantScopes)
			checkAnswerRateLimit(t, f, r.header)
		})
	}

	t.Run("request id in keyhole's log", func(t *testing.T) {
		r := f.send(t, "GET", "/api/v1/prod/things", bearer(fe.live)...)
		if r.status != 200 {
			t.Fatalf("status %d %q; want 200", r.status, r.body)
		}
		id := checkRequestID(t, fe.up.last(t).header, clientID)
		if id == "" {
			return
		}
		deadline := time.Now().Add(10 * time.Second)
		for !fe.logged(t, id) {
			if time.Now().After(deadline) {
				t.Fatalf("keyhole's request log has no entry %s, the id the upstream received", id)
			}
			time.Sleep(20 * time.Millisecond) // polling for the log flush, not timing a result
		}
	})

	// The first request of the 1/1m key uses up its minute.
	if r := f.send(t, "GET", "/api/v1/prod/things", bearer(fe.once)...); r.status != 200 {
		t.Fatalf("first request of a 1/1m key = %d %q; want 200", r.status, r.body)
	}
	dotDot, dotDotCode := 400, "invalid_request"
	if f.cleansPaths {
		dotDot, dotDotCode = 401, "environment_mismatch" // keyhole checks /api/v1/prod/things
	}
	blocked := []struct {
		name       string
		method     string
		path       string
		headers    []string
		wantStatus int
		wantCode   string
	}{
		{"no key", "GET", "/api/v1/prod/things", nil, 401, "missing_authorization"},
		{"unknown key", "GET", "/api/v1/prod/things", bearer("kh_live_" + strings.Repeat("0", 32)), 401, "invalid_or_revoked"},
		{"test key on the live base", "GET", "/api/v1/prod/things", bearer(fe.test), 401, "environment_mismatch"},
		{"live key on the test base", "GET", "/api/v1/dev/things", bearer(fe.live), 401, "environment_mismatch"},
		{"missing scope", "POST", "/api/v1/prod/sms/send", bearer(fe.plain), 403, "insufficient_scope"},
		{"spoofed forward-auth path", "GET", "/api/v1/prod/things",
			with(bearer(fe.test), f.spoof, "/api/v1/dev/things"), 400, "invalid_request"},
		{"dot-dot out of the test base", "GET", "/api/v1/dev/../prod/things", bearer(fe.test), dotDot, dotDotCode},
		{"rate limited", "GET", "/api/v1/prod/things", bearer(fe.once), 429, "rate_limited"},
	}
	for _, tt := range blocked {
		t.Run(tt.name, func(t *testing.T) {
			before := len(fe.up.requests())
			refused(t, before, f.send(t, tt.method, tt.path, tt.headers...), tt.wantStatus, tt.wantCode)
		})
	}

	// Servers that fold _ into - (WSGI, CGI, PHP) would read these as
	// keyhole's headers, merged with keyhole's own values.
	t.Run("names with underscores", func(t *testing.T) {
		before := len(fe.up.requests())
		r := f.send(t, "GET", "/api/v1/prod/things", with(bearer(fe.live), "X_Keyhole_Org", "org_evil",
			"x_keyhole_scopes", "*", "X-Keyhole_Env", "test", "X_Request_Id", clientID)...)
		if f.underscoreStatus != 200 {
			refused(t, before, r, f.underscoreStatus, "invalid_request")
			return
		}
		if r.status != 200 {
			t.Fatalf("status %d %q; want 200 from the upstream", r.status, r.body)
		}
		reached(t, before, "GET", "/api/v1/prod/things", fe.liveID, "live", "sms:send")
	})

	// An h2c upgrade that reaches the API would turn the connection into an
	// HTTP/2 one no proxy looks into, with no identity of keyhole's on its
	// streams.
	const settings = "AAMAAABkAARAAAAAAAIAAAAA"
	upgrades := []struct {
		name    string
		headers []string
		refused bool
	}{
		{"h2c upgrade", []string{"Connection", "Upgrade, HTTP2-Settings", "Upgrade", "h2c", "HTTP2-Settings", settings}, true},
		{"h2c upgrade, HTTP2-Settings not named in Connection", []string{"Connection", "Upgrade", "Upgrade", "h2c", "HTTP2-Settings", settings}, true},
		{"h2c upgrade after websocket", []string{"Connection", "Upgrade, HTTP2-Settings", "Upgrade", "websocket", "Upgrade", "h2c", "HTTP2-Settings", settings}, false},
		{"h2c upgrade before websocket", []string{"Connection", "Upgrade", "Upgrade", "h2c", "Upgrade", "websocket"}, false},
		{"h2c upgrade with websocket in one header", []string{"Connection", "Upgrade", "Upgrade", "websocket, h2c"}, false},
	}
	for _, tt := range upgrades {
		t.Run(tt.name, func(t *testing.T) {
			before := len(fe.up.requests())
			r := f.send(t, "GET", "/api/v1/prod/things", with(bearer(fe.live), tt.headers...)...)
			for _, seen := range fe.up.requests()[before:] {
				checkNothingSmuggled(t, seen.header)
			}
			if r.status == http.StatusSwitchingProtocols && !strings.EqualFold(r.header.Get("Upgrade"), "websocket") {
				t.Fatalf("101 to Upgrade: %q", r.header.Values("Upgrade"))
			}
			if !tt.refused {
				return
			}
			code := "invalid_request"
			if f.upgradeStatus != 400 {
				code = "" // the proxy's own refusal, not keyhole's
			}
			refused(t, before, r, f.upgradeStatus, code)
		})
	}

	t.Run("websocket upgrade", func(t *testing.T) {
		before := len(fe.up.requests())
		r := f.send(t, "GET", "/api/v1/prod/things", with(bearer(fe.live), append(spoofed,
			"Connection", "keep-alive, Upgrade, X-Keyhole-Org, X-Keyhole-Key-Id, X-Request-Id",
			"Upgrade", "websocket", "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version", "13")...)...)
		switch {
		case f.websocket && r.status != 101:
			t.Fatalf("status %d %q; want 101 from the upstream", r.status, r.body)
		case f.websocket && r.echo != "echo ping\n":
			t.Fatalf("through the upgraded connection: %q; want \"echo ping\\n\"", r.echo)
		case !f.websocket && r.status != 200:
			t.Fatalf("status %d %q; want 200 from the upstream, not upgraded", r.status, r.body)
		}
		seen := reached(t, before, "GET", "/api/v1/prod/things", fe.liveID, "live", "sms:send")
		if got := seen.header.Values("Upgrade"); f.websocket && (len(got) != 1 || got[0] != "websocket") || !f.websocket && len(got) != 0 {
			t.Errorf("upstream Upgrade = %q", got)
		}
	})

	// keyhole trusts the proxy (--trusted-proxies 127.0.0.1), so a key's
	// allowlist is checked against the client the proxy forwards, never
	// against an X-Forwarded-For the client wrote.
	t.Run("allowed_ips see the client through the proxy", func(t *testing.T) {
		from := net.JoinHostPort(frontClient, "0")
		for _, c := range []struct {
			name, key, xff string
			want           int
		}{
			{"the client's address", fe.here, "", 200},
			{"the client's address, a forged header beside it", fe.here, "192.0.2.9", 200},
			{"elsewhere", fe.far, "", 403},
			{"elsewhere, a forged header that would be inside", fe.far, "192.0.2.9", 403},
		} {
			headers := []string{"Authorization", "Bearer " + c.key}
			if c.xff != "" {
				headers = append(headers, "X-Forwarded-For", c.xff)
			}
			before := len(fe.up.requests())
			r := f.sendFrom(t, from, "GET", "/api/v1/prod/things", headers...)
			if r.status != c.want {
				t.Errorf("%s: %d %s; want %d", c.name, r.status, r.body, c.want)
			}
			if reached := len(fe.up.requests()) - before; reached != map[bool]int{true: 1}[c.want == 200] {
				t.Errorf("%s: the upstream saw %d requests", c.name, reached)
			}
			if c.want == 403 && f.bodies && !strings.Contains(string(r.body), `"ip_not_allowed"`) {
				t.Errorf("%s: body %s; want ip_not_allowed", c.name, r.body)
			}
		}
	})

	// A key with credits: what it has left reaches the client where the
	// proxy can pass it on, and a key without sends none.
	t.Run("credits left reach the client", func(t *testing.T) {
		for i, want := range []string{"999", "998"} {
			r := f.send(t, "GET", "/api/v1/prod/things", "Authorization", "Bearer "+fe.metered)
			got := r.header.Values("X-Credits-Remaining")
			switch {
			case r.status != 200:
				t.Fatalf("request %d: %d %s", i, r.status, r.body)
			case f.creditsAnswer && (len(got) != 1 || got[0] != want):
				t.Errorf("request %d: X-Credits-Remaining %q; want [%s]", i, got, want)
			case !f.creditsAnswer && len(got) != 0:
				t.Errorf("request %d: X-Credits-Remaining %q; this proxy was not expected to pass it", i, got)
			}
		}
		if r := f.send(t, "GET", "/api/v1/prod/things", "Authorization", "Bearer "+fe.live); r.header.Get("X-Credits-Remaining") != "" {
			t.Errorf("a key without credits: X-Credits-Remaining %q; want none", r.header.Get("X-Credits-Remaining"))
		}
	})

	t.Run("the upstream never saw a smuggled header", func(t *testing.T) {
		for _, seen := range fe.up.requests() {
			checkNothingSmuggled(t, seen.header)
		}
	})
}

// logged says whether keyhole's request log for the org has an entry with
// request id id.
func (fe *frontEnv) logged(t *testing.T, id string) bool {
	t.Helper()
	r := fe.kh.on(t).admin(fe.token, "GET", "/orgs/"+fe.org+"/logs?limit=100", "")
	var page struct {
		Entries []struct {
			RequestID string `json:"request_id"`
		} `json:"entries"`
	}
	if err := json.Unmarshal(r.body, &page); err != nil || r.status != 200 {
		t.Fatalf("GET logs = %d, %v; want 200", r.status, err)
	}
	for _, e := range page.Entries {
		if e.RequestID == id {
			return true
		}
	}
	return false
}

// freeLoopbackAddr is a loopback address with a port that was free a moment
// ago, for a server that cannot report the port it bound.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// lockedBuffer collects a process's output while tests read it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startFront runs cmd in its own process group, which is killed when the
// test ends, and waits until ready says it answers on addr; a nil ready
// waits for an answer whose Server header names name. logs, if not nil,
// adds the process's log files to a failure message.
func startFront(t *testing.T, name, addr string, logs func() string, cmd *exec.Cmd,
	ready func(c *testClient) (bool, error)) {
	t.Helper()
	out := new(lockedBuffer)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // the group: nginx's workers too
		<-done
	})
	report := func() string {
		s := out.String()
		if logs != nil {
			s += logs()
		}
		return s
	}
	if ready == nil {
		// Ask over HTTP and check who answers, in case something else took
		// the port first.
		ready = func(c *testClient) (bool, error) {
			r, err := c.try("GET", "/", "")
			if err != nil {
				return false, nil
			}
			if server := r.header.Get("Server"); !strings.Contains(strings.ToLower(server), name) {
				return false, fmt.Errorf("%s is answered by %q, not %s", addr, server, name)
			}
			return true, nil
		}
	}
	client := &testClient{t: t, base: "http://" + addr, http: &http.Client{Timeout: 5 * time.Second}, foreign: true}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-done:
			t.Fatalf("%s exited before listening on %s:\n%s", name, addr, report())
		default:
		}
		ok, err := ready(client)
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, report())
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not listen on %s within 30s:\n%s", name, addr, report())
		}
		time.Sleep(20 * time.Millisecond) // polling for readiness, not timing a result
	}
}
