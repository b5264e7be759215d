package main

import (
	"net/http"
	"net/url"
	"path"
	"strings"
	"testing"
)

// Seeds of FuzzCheckPath: raw paths as an upstream would receive them.
var checkPathSeeds = []string{
	"/api/v1/prod/x", "/api/v1/dev/..;/prod/x", "/api/v1/prod/sms/send;x=1", "/a/%2e%2e/b",
	"/a/%252e%252e/b", "/a%2fb", "/a%5cb", `/a\b`, "/a%00b", "/a%3bb", "/a/b/", "/a/./b", "/a//b",
	"/%c0%ae%c0%ae/x", "/caf%C3%A9", "/a%zz", "/a%2", "/a#b", "/a b", "", "x/y", "/é/ü",
}

// FuzzCheckPath: a path checkPath accepts reads the same to every server
// reading of UPSTREAMS.md, so whatever keyhole checked is what is served:
// decoding it once or twice, stripping ";" parameters before resolving dot
// segments (servlet containers), taking "\" for "/" (some routers), or
// resolving dot segments at all.
func FuzzCheckPath(f *testing.F) {
	for _, s := range checkPathSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		decoded, err := url.PathUnescape(raw)
		if err != nil {
			if checkPath(raw, raw) == nil {
				t.Fatalf("checkPath accepted %q, which does not decode: %v", raw, err)
			}
			return
		}
		if checkPath(raw, decoded) != nil {
			return
		}
		readings := map[string]string{
			"decoded twice":         unescapeOrSelf(decoded),
			"servlet parameters":    stripPathParameters(raw),
			"backslash as a slash":  strings.ReplaceAll(decoded, `\`, "/"),
			"dot segments resolved": cleanKeepingSlash(decoded),
		}
		for name, got := range readings {
			if got != decoded {
				t.Fatalf("checkPath accepted %q: keyhole reads %q, %s gives %q", raw, decoded, name, got)
			}
		}
	})
}

func unescapeOrSelf(s string) string {
	if u, err := url.PathUnescape(s); err == nil {
		return u
	}
	return s
}

// stripPathParameters is a servlet container's reading: ";…" cut from each
// segment of the raw path, then decoded and dot segments resolved.
func stripPathParameters(raw string) string {
	segs := strings.Split(raw, "/")
	for i, s := range segs {
		segs[i], _, _ = strings.Cut(s, ";")
	}
	return cleanKeepingSlash(unescapeOrSelf(strings.Join(segs, "/")))
}

func cleanKeepingSlash(p string) string {
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

// TestCheckHeaders: names that WSGI, CGI or PHP would fold into a header
// keyhole reads or sets are refused, whatever keyhole adds in future under
// X-Keyhole-; other names with "_" pass, and so do WebSocket upgrades.
func TestCheckHeaders(t *testing.T) {
	tests := []struct {
		header []string
		ok     bool
	}{
		{[]string{"X_Keyhole_Org", "org_evil"}, false},
		{[]string{"x_keyhole_key_id", "key_evil"}, false},
		{[]string{"X-Keyhole_Scopes", "*"}, false},
		{[]string{"X_KEYHOLE_ANYTHING_NEW", "1"}, false},
		{[]string{"Authorization_", "x"}, true}, // AUTHORIZATION_ is not AUTHORIZATION
		{[]string{"X_Api_Key", "k"}, false},
		{[]string{"X_Original_URI", "/api/v1/dev/x"}, false},
		{[]string{"X_Forwarded_Method", "GET"}, false},
		{[]string{"X_Request_Id", "req_x"}, false},
		{[]string{"X_Forwarded_Ssl", "on"}, false},
		{[]string{"x_forwarded_anything_new", "1"}, false},
		{[]string{"X_Real_IP", "10.0.0.1"}, false},
		{[]string{"X_Original_Host", "evil"}, false},
		{[]string{"X_Custom_Thing", "1"}, true},
		{[]string{"X-Keyhole-Org", "org_evil"}, true}, // the exact name is replaced or dropped
		{[]string{"X-HTTP-Method-Override", "DELETE"}, false},
		{[]string{"x-http-method", "DELETE"}, false},
		{[]string{"X-Method-Override", "PUT"}, false},
		{[]string{"X_HTTP_Method_Override", "DELETE"}, false},
		{[]string{"Upgrade", "websocket"}, true},
		{[]string{"Upgrade", "WebSocket "}, true},
		{[]string{"Upgrade", "h2c"}, false},
		{[]string{"Upgrade", "websocket, h2c"}, false},
		{[]string{"Upgrade", "websocket", "Upgrade", "h2c"}, false},
		{[]string{"Http2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"}, false},
	}
	for _, tt := range tests {
		h := http.Header{}
		for i := 0; i+1 < len(tt.header); i += 2 {
			h.Add(tt.header[i], tt.header[i+1])
		}
		if err := checkHeaders(h); (err == nil) != tt.ok {
			t.Errorf("checkHeaders(%q) = %v; want ok %v", tt.header, err, tt.ok)
		} else if err != nil && (err.status != 400 || err.code != "invalid_request") {
			t.Errorf("checkHeaders(%q) = %d %s; want 400 invalid_request", tt.header, err.status, err.code)
		}
	}
	// checkHeader's switch names the overrides again; it must name them all.
	for _, name := range methodOverrides {
		if checkHeaders(http.Header{name: {"DELETE"}}) == nil {
			t.Errorf("method override %s passed", name)
		}
	}
}

func TestCheckMethod(t *testing.T) {
	for m, ok := range map[string]bool{"GET": true, "M-SEARCH": true, "BASELINE-CONTROL": true,
		"": false, "GET /x": false, "G\x00T": false, strings.Repeat("A", maxMethodLen): true,
		strings.Repeat("A", maxMethodLen+1): false} {
		if err := checkMethod(m); (err == nil) != ok {
			t.Errorf("checkMethod(%.40q) = %v; want ok %v", m, err, ok)
		}
	}
}

// BenchmarkCheckHeaders: the headers of a forward-auth call from nginx.
func BenchmarkCheckHeaders(b *testing.B) {
	h := http.Header{"Authorization": {"Bearer x"}, "User-Agent": {"curl/8"}, "Accept": {"*/*"},
		"X-Original-Method": {"GET"}, "X-Original-Uri": {"/api/v1/prod/x"}, "Connection": {"close"}}
	for b.Loop() {
		if checkHeaders(h) != nil {
			b.Fatal("refused")
		}
	}
}
