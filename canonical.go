package main

import (
	"slices"
	"strings"
	"unicode/utf8"
)

// What keyhole checks must be what the upstream serves. Servers read the
// same bytes differently: servlet containers strip ";" parameters before
// resolving "..", some routers take "\" for "/", some decode twice, WSGI and
// CGI fold "_" into "-" in header names, and an upgraded connection is no
// longer checked request by request. A request that any of them could read
// otherwise than keyhole does is refused here, before the key is looked at
// (SECURITY.md lists each class with its test).

// maxMethodLen bounds a request method: the longest registered ones
// (UPDATEREDIRECTREF, BASELINE-CONTROL) are 17 bytes.
const maxMethodLen = 32

// checkMethod refuses a method that is not an HTTP token, or too long to
// log. net/http checks a request line's method; forward auth's comes from
// a header.
func checkMethod(method string) *apiError {
	if method == "" || len(method) > maxMethodLen {
		return invalidRequest("Request method must be 1 to %d bytes.", maxMethodLen)
	}
	for i := 0; i < len(method); i++ {
		if !isTokenByte(method[i]) {
			return invalidRequest("Request method must be an HTTP token.")
		}
	}
	return nil
}

// isTokenByte is RFC 9110's tchar.
func isTokenByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// checkPath refuses a request path that servers could resolve to different
// resources. raw is the path as the upstream receives it, still escaped;
// path is it decoded, which the bases and rules are matched against.
func checkPath(raw, path string) *apiError {
	if !strings.HasPrefix(raw, "/") {
		return invalidRequest("Request path must start with /.")
	}
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; {
		case c <= ' ' || c == 0x7f:
			return invalidRequest("Request path must not contain spaces or control characters.")
		case c == ';' || c == '\\' || c == '#':
			return invalidRequest("Request path must not contain %q: servers read it differently.", string(c))
		case c == '%':
			if aerr := checkEscape(raw[i:]); aerr != nil {
				return aerr
			}
		}
	}
	if !isCanonicalPath(path) {
		return errNotCanonical
	}
	if !utf8.ValidString(path) {
		return invalidRequest("Request path must be valid UTF-8 once decoded.")
	}
	return nil
}

// checkEscape refuses the escapes that servers decode differently: an
// escaped "%" (decoded once or twice), "/" (a separator to some, not to
// others), "\" and ";" (see checkPath), and control characters (a NUL
// ends the path in C). Other escapes decode the same everywhere.
func checkEscape(esc string) *apiError {
	if len(esc) < 3 || unhex(esc[1]) < 0 || unhex(esc[2]) < 0 {
		return invalidRequest("Request path has a malformed %%-escape.")
	}
	c := byte(unhex(esc[1])<<4 | unhex(esc[2]))
	if c < 0x20 || c == 0x7f || c == '%' || c == '/' || c == '\\' || c == ';' {
		return invalidRequest("Request path must not contain the escape %s: servers decode it differently.", esc[:3])
	}
	return nil
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c - 'a' + 10)
	case 'A' <= c && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}

// isCanonicalPath refuses paths an upstream might resolve to another base.
func isCanonicalPath(path string) bool {
	if !strings.HasPrefix(path, "/") {
		return false
	}
	return !strings.Contains(path, "//") && !strings.Contains(path, "/./") &&
		!strings.Contains(path, "/../") && !strings.HasSuffix(path, "/.") &&
		!strings.HasSuffix(path, "/..")
}

// readNames are the headers keyhole reads from a guarded request, or sets on
// the one it forwards, besides identityHeaders and the proxy headers.
var readNames = []string{"Authorization", "X-Api-Key", "X-Request-Id"}

// The proxy headers are those by which a proxy tells the upstream about
// the client and the request it saw (X-Forwarded-For, -Proto, -Ssl,
// -Method, -Uri, X-Original-URI, X-Real-IP, Forwarded…). keyhole is that
// proxy: it reads them from its front proxy for forward auth and sets its
// own for the upstream, and an upstream may trust them from its address
// (gunicorn takes the scheme from X-Forwarded-Ssl sent by 127.0.0.1).
var (
	proxyHeaderPrefixes = []string{"X-Forwarded-", "X-Original-"}
	proxyHeaderNames    = []string{"Forwarded", "X-Real-Ip"}
)

// isProxyHeader says whether a canonical header name is a proxy header.
func isProxyHeader(name string) bool {
	return hasAnyPrefix(name, proxyHeaderPrefixes) || slices.Contains(proxyHeaderNames, name)
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// methodOverrides are the headers with which frameworks (Express's
// method-override, Symfony, ASP.NET, Google's APIs) serve a POST as another
// method: the scope rules would be matched against one method and the
// upstream run another.
var methodOverrides = []string{"X-Http-Method-Override", "X-Http-Method", "X-Method-Override"}

// foldedNames and foldedPrefixes are those names as WSGI, CGI and PHP see
// them: upper case, "-" as "_". "X_KEYHOLE_" covers keyhole's own headers,
// present and future.
var (
	foldedNames    = foldAll(identityHeaders, readNames, proxyHeaderNames, methodOverrides)
	foldedPrefixes = foldEach(append([]string{"X-Keyhole-"}, proxyHeaderPrefixes...))
)

func foldAll(lists ...[]string) map[string]bool {
	m := make(map[string]bool)
	for _, names := range lists {
		for _, f := range foldEach(names) {
			m[f] = true
		}
	}
	return m
}

func foldEach(names []string) []string {
	folded := make([]string, len(names))
	for i, n := range names {
		folded[i] = foldHeaderName(n)
	}
	return folded
}

func foldHeaderName(name string) string {
	return strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// checkHeaders refuses headers that an upstream could read as another
// request or as one of keyhole's own:
//   - a name with "_" that folds into a header keyhole reads or sets, which
//     WSGI, CGI and PHP would merge with, or take for, the real one;
//   - a method override (methodOverrides), in any spelling;
//   - an Upgrade to anything but WebSocket, or HTTP2-Settings: an upstream
//     that switches to h2c would serve every later request on the
//     connection without keyhole seeing it.
//
// net/http has canonicalised every other spelling (any case) to one name,
// which the proxy replaces and forward auth's proxy configurations drop.
func checkHeaders(h map[string][]string) *apiError {
	for name, values := range h {
		if aerr := checkHeader(name, values); aerr != nil {
			return aerr
		}
	}
	return nil
}

// checkHeader refuses one header by its canonical name. One pass with a
// switch costs less than looking up each refused name in the map: the
// lookups were half of checkHeaders's time on the hot path.
func checkHeader(name string, values []string) *apiError {
	switch name {
	case "X-Http-Method-Override", "X-Http-Method", "X-Method-Override": // methodOverrides
		return invalidRequest("Header %s is not allowed: the rules are matched against the request's own method.", name)
	case "Upgrade":
		if len(values) == 1 && strings.EqualFold(strings.TrimSpace(values[0]), "websocket") {
			return nil
		}
		return invalidRequest("Only WebSocket upgrades are allowed.")
	case "Http2-Settings":
		return invalidRequest("HTTP2-Settings is not allowed: keyhole does not upgrade to h2c.")
	}
	if strings.IndexByte(name, '_') < 0 {
		return nil
	}
	if f := foldHeaderName(name); foldedNames[f] || hasAnyPrefix(f, foldedPrefixes) {
		return invalidRequest("Header %q is not allowed: servers may read it as %s.", name, strings.ReplaceAll(name, "_", "-"))
	}
	return nil
}
