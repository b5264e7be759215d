package main

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

var testTrusted = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("2001:db8::/32")}

// TestForwardedClient: the right-most X-Forwarded-For entry that is not a
// trusted proxy's, across the header's lines; none for an entry that is
// not an address.
func TestForwardedClient(t *testing.T) {
	peer := netip.MustParseAddr("10.1.1.1")
	for _, c := range []struct {
		values []string
		want   string // "" for none
	}{
		{nil, "10.1.1.1"},
		{[]string{""}, "10.1.1.1"},
		{[]string{"203.0.113.5"}, "203.0.113.5"},
		{[]string{"203.0.113.5, 10.2.2.2"}, "203.0.113.5"},
		{[]string{"198.51.100.9, 203.0.113.5"}, "203.0.113.5"}, // the left is the client's word
		{[]string{"spoofed-garbage, 203.0.113.5"}, "203.0.113.5"},
		{[]string{"203.0.113.5", "10.2.2.2, 192.0.2.7"}, "203.0.113.5"},
		{[]string{"203.0.113.5,,10.2.2.2 , "}, "203.0.113.5"},
		{[]string{"10.3.3.3, 10.2.2.2"}, "10.3.3.3"}, // all trusted: the left-most
		{[]string{"203.0.113.5:4711"}, "203.0.113.5"},
		{[]string{"[2001:db8::1]:80, [2606:4700::1]"}, "2606:4700::1"},
		{[]string{"2606:4700::1, 2001:db8::1"}, "2606:4700::1"},
		{[]string{"::ffff:203.0.113.5"}, "203.0.113.5"},
		{[]string{"fe80::1%eth0"}, "fe80::1"},
		{[]string{"203.0.113.5, unknown"}, ""},
		{[]string{"203.0.113.5, 10.2.2.2, _hidden"}, ""},
		{[]string{"unknown, 10.2.2.2"}, ""},
	} {
		got := forwardedClient(c.values, peer, testTrusted)
		if want := c.want; (want == "") != !got.IsValid() || got.IsValid() && got.String() != want {
			t.Errorf("forwardedClient(%q) = %v; want %q", c.values, got, want)
		}
	}
}

// refForwardedClient is forwardedClient the slow way.
func refForwardedClient(values []string, peer netip.Addr, trusted []netip.Prefix) netip.Addr {
	var items []string
	for _, v := range values {
		for _, item := range strings.Split(v, ",") {
			if item = strings.Trim(item, " \t"); item != "" {
				items = append(items, item)
			}
		}
	}
	client := peer
	for i := len(items) - 1; i >= 0; i-- {
		a := forwardedAddr(items[i])
		if !a.IsValid() {
			return netip.Addr{}
		}
		client = a
		if !prefixesContain(trusted, a) {
			return a
		}
	}
	return client
}

// FuzzForwardedFor: the X-Forwarded-For parser agrees with a plain split,
// and the client it finds is never an address the peer could not vouch
// for: from an untrusted peer, the peer; else an entry of the list, with
// only trusted proxies to its right.
func FuzzForwardedFor(f *testing.F) {
	for _, s := range [][3]string{
		{"10.1.1.1:1", "203.0.113.5, 10.2.2.2", ""},
		{"10.1.1.1:1", "198.51.100.9", "203.0.113.5, 192.0.2.1"},
		{"198.51.100.1:1", "203.0.113.5", ""},
		{"[2001:db8::5]:443", "[2606:4700::1]:80,2001:db8::9", ""},
		{"10.1.1.1:1", "a,,b", " , "},
		{"10.1.1.1:1", "::ffff:10.0.0.1, ::ffff:8.8.8.8", "\t"},
		{"bad", "203.0.113.5", ""},
	} {
		f.Add(s[0], s[1], s[2])
	}
	s := &server{cfg: config{trustedProxies: testTrusted}}
	f.Fuzz(func(t *testing.T, remote, xff1, xff2 string) {
		values := []string{xff1, xff2}
		peer := peerAddr(remote)
		r := newRequest(remote, values)
		got := s.clientIP(r)
		if !prefixesContain(testTrusted, peer) {
			if got != peer {
				t.Fatalf("untrusted peer %q with X-Forwarded-For %q: client %v; want the peer", remote, values, got)
			}
			return
		}
		if want := refForwardedClient(values, peer, testTrusted); got != want {
			t.Fatalf("X-Forwarded-For %q from %q: %v; the plain split gives %v", values, remote, got, want)
		}
		if got.IsValid() && got != got.Unmap() || got.Zone() != "" {
			t.Fatalf("client %v is mapped or zoned", got)
		}
	})
}

func newRequest(remote string, xff []string) *http.Request {
	return &http.Request{RemoteAddr: remote, Header: http.Header{"X-Forwarded-For": xff}}
}

// TestAllowlistBehindTrustedProxies: behind --trusted-proxies a key's
// allowlist is checked against the client that X-Forwarded-For names, on
// every surface; from any other peer, and without the flag, against the
// connection's address whatever the header says.
func TestAllowlistBehindTrustedProxies(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, func(c *config) { c.trustedSpec = "192.0.2.0/24, 2001:db8::1" })
	org := te.createOrg("acme")
	_, key := te.createKey(org, `{"name":"k","env":"live","allowed_ips":["203.0.113.0/24"],"rate_limits":[{"limit":1000,"window":"1m"}]}`)
	plain := newTestEnv(t)
	_, plainKey := plain.createKey(plain.createOrg("acme"), `{"name":"k","env":"live","allowed_ips":["203.0.113.0/24"]}`)
	for _, c := range []struct {
		from, xff string
		want      int
	}{
		{"203.0.113.5:1", "", 200},                            // no proxy
		{"192.0.2.1:1", "203.0.113.5", 200},                   // one trusted proxy
		{"192.0.2.1:1", "203.0.113.5, 192.0.2.9", 200},        // two
		{"192.0.2.1:1", "198.51.100.1, 203.0.113.5", 200},     // the client's own word on the left is not read
		{"192.0.2.1:1", "203.0.113.5, 198.51.100.1", 403},     // the right-most untrusted is the client
		{"192.0.2.1:1", "", 403},                              // the proxy itself
		{"192.0.2.1:1", "not-an-address", 403},                // unreadable: no address
		{"198.51.100.1:1", "203.0.113.5", 403},                // an untrusted peer's header is not read
		{"[2001:db8::1]:1", "203.0.113.7", 200},               // an IPv6 proxy
		{"[2001:db8::2]:1", "203.0.113.7", 403},               // not that one
		{"[::ffff:192.0.2.1]:1", "[::ffff:203.0.113.5]", 200}, // mapped addresses are compared unmapped
	} {
		var headers []string
		if c.xff != "" {
			headers = []string{"X-Forwarded-For", c.xff}
		}
		client := *te.testClient
		client.from = c.from
		r := client.do("GET", "/api/v1/prod/whoami", "", append(bearer(key), headers...)...)
		if r.status != c.want || c.want == 403 && r.errorCode(t) != "ip_not_allowed" {
			t.Errorf("whoami from %s, X-Forwarded-For %q = %d %s; want %d", c.from, c.xff, r.status, r.body, c.want)
		}
		r = client.do("GET", "/v1/auth", "", append(append(bearer(key), headers...),
			"X-Original-Method", "GET", "X-Original-URI", "/api/v1/prod/x")...)
		if r.status != c.want {
			t.Errorf("forward auth from %s, X-Forwarded-For %q = %d %s; want %d", c.from, c.xff, r.status, r.body, c.want)
		}
		r = client.do("POST", "/v1/keys/verify", `{"key":"`+key+`"}`, headers...)
		if valid := strings.Contains(string(r.body), `"valid":true`); valid != (c.want == 200) {
			t.Errorf("verify from %s, X-Forwarded-For %q = %s; want valid %v", c.from, c.xff, r.body, c.want == 200)
		}
		// Without --trusted-proxies the header is never read.
		pc := *plain.testClient
		pc.from = c.from
		wantPlain := 403
		if c.from == "203.0.113.5:1" {
			wantPlain = 200
		}
		if r := pc.do("GET", "/api/v1/prod/whoami", "", append(bearer(plainKey), headers...)...); r.status != wantPlain {
			t.Errorf("without --trusted-proxies, whoami from %s, X-Forwarded-For %q = %d; want %d", c.from, c.xff, r.status, wantPlain)
		}
	}
}

// TestTrustedProxiesFlag: --trusted-proxies and KEYHOLE_TRUSTED_PROXIES
// take CIDRs and addresses, and refuse what is neither.
func TestTrustedProxiesFlag(t *testing.T) {
	env := func(v string) func(string) string {
		return func(name string) string {
			if name == "KEYHOLE_TRUSTED_PROXIES" {
				return v
			}
			return ""
		}
	}
	cfg, err := parseServeFlags([]string{"--trusted-proxies", "10.0.0.0/8, 127.0.0.1,::1"}, env(""))
	if err != nil || len(cfg.trustedProxies) != 3 || cfg.trustedProxies[1].String() != "127.0.0.1/32" {
		t.Fatalf("--trusted-proxies = %v, %v", cfg.trustedProxies, err)
	}
	if cfg, err := parseServeFlags(nil, env("192.0.2.0/24")); err != nil || len(cfg.trustedProxies) != 1 {
		t.Fatalf("KEYHOLE_TRUSTED_PROXIES = %v, %v", cfg.trustedProxies, err)
	}
	if cfg, err := parseServeFlags(nil, env("")); err != nil || cfg.trustedProxies != nil {
		t.Fatalf("the default = %v, %v; want none", cfg.trustedProxies, err)
	}
	for _, bad := range []string{"10.0.0.1/8", "proxy.local", "10.0.0.0/33", "10.0.0.0/8,"} {
		if _, err := parseServeFlags([]string{"--trusted-proxies", bad}, env("")); err == nil || !strings.Contains(err.Error(), "--trusted-proxies") {
			t.Errorf("--trusted-proxies %q: %v; want an error naming the flag", bad, err)
		}
	}
}
