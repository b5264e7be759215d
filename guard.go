package main

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// verdict is the outcome of checking one presented key.
type verdict struct {
	err     *apiError // nil: allowed
	key     *keyEntry // nil: the key was not identified
	dec     decision
	decided bool // dec holds a rate-limit state for the headers
}

// extractKey reads the key from Authorization: Bearer, else x-api-key.
// Headers are looked up by their canonical names directly, as net/http
// stores them: Values would re-canonicalize each name on every request.
func extractKey(h http.Header) (string, *apiError) {
	if auth := h["Authorization"]; len(auth) > 0 {
		return bearerToken(auth)
	}
	apiKey := h["X-Api-Key"]
	if len(apiKey) == 0 || len(apiKey) == 1 && apiKey[0] == "" {
		return "", errMissingAuth
	}
	if len(apiKey) > 1 {
		return "", malformedError(msgMalformed)
	}
	return strings.TrimSpace(apiKey[0]), nil
}

// bearerToken reads the token of one "Authorization: Bearer <token>"
// header; the admin API reads its tokens the same way.
func bearerToken(auth []string) (string, *apiError) {
	if len(auth) != 1 {
		return "", errInvalidSch
	}
	scheme, token, ok := strings.Cut(auth[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", errInvalidSch
	}
	return strings.TrimSpace(token), nil
}

// envForPath says which environment's base a path is under, or "".
func (s *server) envForPath(path string) string {
	switch {
	case strings.HasPrefix(path, s.cfg.liveBase):
		return envLive
	case strings.HasPrefix(path, s.cfg.testBase):
		return envTest
	}
	return ""
}

// checkArgs is what a request asks of a key besides the key itself.
type checkArgs struct {
	env   string // "" means any environment
	scope string // "" means none is needed
	cost  int64  // credits an allowed request spends
	// r is the request whose client address a key's allowlist is checked
	// against (clientip.go); nil: none is known, and no allowlist holds it.
	r *http.Request
	// windows, if not nil, receives every window's tokens (verify's answer).
	windows *[maxWindows]float64
}

// verify runs the checks of SPEC 3 in order: shape, key, revoked,
// disabled, expiry, client address, environment, scope, then credits and
// rate limit together. Only an allowed request takes a token and spends
// credits. A key without meta, allowlist or credits costs one load of its
// flags more than before those existed.
func (s *server) verify(token string, a *checkArgs, now time.Time) (v verdict) {
	defer func() {
		if recover() != nil {
			v = verdict{err: errVerifyFailed, key: v.key}
		}
	}()
	if c := s.store.cluster; c != nil && !c.fresh(now) {
		return verdict{err: errStale}
	}
	p, err := s.format.parse(token)
	if err != nil {
		return verdict{err: malformedError(err.Error())}
	}
	k := s.index.find(p)
	if k == nil {
		return verdict{err: errInvalidKey}
	}
	// A revoked key presented with its secret is identified: its refusals
	// are its organization's to see, with its key id.
	v.key = k
	if k.revokedAt.Load() != 0 {
		v.err = errInvalidKey
		return v
	}
	nowNano := now.UnixNano()
	flags := k.flags.Load()
	var x *keyExtra
	if flags&flagExtra != 0 {
		x = s.index.extra(k)
	}
	switch {
	case flags&flagDisabled != 0:
		v.err = errDisabled
	case k.expiresAt.Load() != 0 && nowNano >= k.expiresAt.Load():
		v.err = errExpired
	case x != nil && x.allowed != nil && !prefixesContain(x.allowed, s.clientIP(a.r)):
		v.err = errIPNotAllowed
	case a.env != "" && k.env() != a.env:
		v.err = s.envError
	case a.scope != "" && !s.index.hasScope(k, a.scope):
		v.err = scopeError(a.scope)
	}
	var exceeded bool
	// The take: at the key's owner, if that is another node (owners.go);
	// else here. The two branches are written out here and in takeFor, the
	// owner's: as a call they cost a single node's verify 5%.
	var owner *ringNode
	if c := s.store.cluster; c != nil {
		owner = c.remoteOwner(k.id)
	}
	switch {
	case owner != nil:
		var aerr *apiError
		if v.dec, exceeded, aerr = s.takeAt(owner, k, p.lookup, x, a, v.err == nil, nowNano); aerr != nil {
			v.err = aerr
		}
	case x != nil && x.credits != nil:
		v.dec, exceeded = s.credits.take(x.credits, a.cost, v.err == nil, s.limiter, k.id, s.limitsFor(k), nowNano, a.windows)
	default:
		v.dec = s.limiter.take(k.id, s.limitsFor(k), nowNano, v.err == nil, a.windows)
	}
	if exceeded {
		v.err = errUsageExceeded
	}
	v.decided = true
	if v.err == nil && !v.dec.allowed {
		v.err = &apiError{429, "rate_limited", v.dec.message()}
	}
	if v.err == nil || v.err.status == 429 {
		k.touch(nowNano)
	}
	return v
}

// decision is the rate-limit state to report, nil when none was taken.
func (v *verdict) decision() *decision {
	if !v.decided {
		return nil
	}
	return &v.dec
}

func (s *server) limitsFor(k *keyEntry) *limitSet {
	if set := s.index.limits(k); set != nil {
		return set
	}
	return s.defaultLimits
}

// checkRequest verifies the key presented on r for method and path, which
// rawPath is the escaped form of, as the upstream receives it. A request
// that an upstream could read otherwise is refused before the key is
// looked at (canonical.go).
func (s *server) checkRequest(r *http.Request, method, rawPath, path string, now time.Time) verdict {
	if aerr := checkMethod(method); aerr != nil {
		return verdict{err: aerr}
	}
	if aerr := checkPath(rawPath, path); aerr != nil {
		return verdict{err: aerr}
	}
	if aerr := checkHeaders(r.Header); aerr != nil {
		return verdict{err: aerr}
	}
	token, aerr := extractKey(r.Header)
	if aerr != nil {
		return verdict{err: aerr}
	}
	wantEnv := s.envForPath(path)
	if wantEnv == "" {
		wantEnv = "none" // outside both bases: no key may call it
	}
	// Rules name methods in upper case; a server may take "post" for POST.
	return s.verify(token, &checkArgs{env: wantEnv, scope: requiredScope(s.rules, strings.ToUpper(method), path),
		cost: 1, r: r}, now)
}

// ownHeaderNames are all the names of the headers keyhole puts on a
// guarded response: setOwnHeaders's.
var ownHeaderNames = []string{"X-Request-Id", "X-Ratelimit-Limit", "X-Ratelimit-Remaining",
	"X-Ratelimit-Reset", "Ratelimit-Policy", "Ratelimit", "Retry-After", "X-Credits-Remaining"}

// setOwnHeaders writes keyhole's headers on a guarded answer: the request
// id and, for an identified key (d not nil), the headers of SPEC 4, and a
// Retry-After on a 429 (the rate limit's, or for usage_exceeded the time
// until the credits' refill). A key with credits gets X-Credits-Remaining
// instead of the Retry-After slot when there is none: so keyhole's own
// answers stay within eight header entries, a small Go map
// (TestAnswersFitASmallHeaderMap), and a key without credits pays nothing.
// The per-request values are one allocation (ownValues); limits and
// policies are precomputed.
//
// RateLimit's t is the seconds until more quota: on a rate limit's 429
// that is Retry-After, when a token is back in the window that refused;
// otherwise X-RateLimit-Reset's, when the window is full again.
func setOwnHeaders(h http.Header, reqID string, d *decision) {
	if d == nil {
		h["X-Request-Id"] = []string{reqID}
		return
	}
	o := new(ownValues)
	b := strconv.AppendInt(o.text[:0], d.remaining, 10)
	remaining := len(b)
	b = strconv.AppendInt(b, d.reset, 10)
	reset := len(b)
	tFrom, tTo := remaining, reset // t is X-RateLimit-Reset's value…
	last := ""
	switch {
	case !d.allowed:
		b, last = strconv.AppendInt(b, d.retryAfter, 10), "Retry-After"
		tFrom, tTo = reset, len(b) // …or, on a rate limit's 429, Retry-After's
	case d.refillIn > 0:
		b, last = strconv.AppendInt(b, d.refillIn, 10), "Retry-After"
	case d.hasCredits:
		b, last = strconv.AppendInt(b, d.credits, 10), "X-Credits-Remaining"
	}
	extra := len(b)
	b = append(b, '"')
	b = append(b, d.set.limits[d.tightest].Window...)
	b = append(b, `";r=`...)
	b = append(b, b[:remaining]...)
	b = append(b, ";t="...)
	b = append(b, b[tFrom:tTo]...)
	all := o.seal(b)
	o.vals = [5]string{reqID, all[:remaining], all[remaining:reset], all[extra:], all[reset:extra]}
	h["X-Request-Id"] = o.vals[0:1:1]
	h["X-Ratelimit-Limit"] = d.set.limitValue[d.tightest]
	h["X-Ratelimit-Remaining"] = o.vals[1:2:2]
	h["X-Ratelimit-Reset"] = o.vals[2:3:3]
	h["Ratelimit-Policy"] = d.set.policy
	h["Ratelimit"] = o.vals[3:4:4]
	if last != "" {
		h[last] = o.vals[4:5:5]
	}
}

// ownValues holds an answer's header values and their text in one
// allocation, not two: a string and a slice per answer.
type ownValues struct {
	vals [5]string
	text [96]byte
}

// seal returns b, which is o.text written so far, as a string. o.text is
// never written again, so the string is as immutable as one the runtime
// had copied.
func (o *ownValues) seal(b []byte) string {
	if len(b) == 0 || &b[0] != &o.text[0] {
		return string(b) // b outgrew o.text; cannot happen with int64s and a window name
	}
	return unsafe.String(&o.text[0], len(b))
}

// identityHeaders are what keyhole tells the upstream about the caller.
var identityHeaders = []string{"X-Keyhole-Org", "X-Keyhole-Key-Id", "X-Keyhole-Env", "X-Keyhole-Scopes"}

func setIdentityHeaders(h http.Header, ix *keyIndex, k *keyEntry) {
	vals := make([]string, 3)
	vals[0], vals[1], vals[2] = ix.orgID(k), k.keyID(), k.env()
	h["X-Keyhole-Org"] = vals[0:1:1]
	h["X-Keyhole-Key-Id"] = vals[1:2:2]
	h["X-Keyhole-Env"] = vals[2:3:3]
	h["X-Keyhole-Scopes"] = ix.scopes(k).header
}

var (
	jsonContentType = []string{"application/json"}
	bufPool         = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}
)

// appendIdentity writes the members "key_id","org_id","env","scopes".
func appendIdentity(b []byte, ix *keyIndex, k *keyEntry) []byte {
	b = append(b, `"key_id":"`...)
	b = appendKeyID(b, k.id)
	b = append(b, `","org_id":"`...)
	b = append(b, ix.orgID(k)...)
	b = append(b, `","env":"`...)
	b = append(b, k.env()...)
	b = append(b, `","scopes":[`...)
	for i, sc := range ix.scopes(k).list {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, sc)
	}
	return append(b, ']')
}

// writeWhoami writes {"key_id","org_id","env","scopes"}, and "meta" for a
// key that has it, by hand from a pooled buffer: it is the hot path's
// whole body.
func writeWhoami(w http.ResponseWriter, ix *keyIndex, k *keyEntry) {
	bp := bufPool.Get().(*[]byte)
	b := append((*bp)[:0], '{')
	b = appendIdentity(b, ix, k)
	if k.flags.Load()&flagExtra != 0 {
		if x := ix.extra(k); x != nil && x.meta != nil {
			b = append(b, `,"meta":`...)
			b = append(b, x.meta...)
		}
	}
	b = append(b, "}\n"...)
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(200)
	w.Write(b)
	*bp = b
	bufPool.Put(bp)
}

// serveGuarded answers requests under the base paths: whoami, or the proxy.
func (s *server) serveGuarded(w http.ResponseWriter, r *http.Request) {
	start := s.now()
	sw := &statusWriter{ResponseWriter: w, reqID: newRequestID()}
	v := s.checkRequest(r, r.Method, r.URL.EscapedPath(), r.URL.Path, start)
	sw.dec, sw.decided = v.dec, v.decided
	// Deferred, so that a proxied response the upstream breaks off midway
	// (ReverseProxy then panics with http.ErrAbortHandler) is logged too.
	defer func() {
		status := sw.logged()
		s.metrics.observe(surfGuarded, status, s.record(r.Method, r.URL.Path, status, start, &v, sw.reqID))
	}()
	s.answerGuarded(sw, r, &v)
}

func (s *server) answerGuarded(w *statusWriter, r *http.Request, v *verdict) {
	if v.err != nil {
		writeError(w, v.err, w.reqID)
		return
	}
	if s.proxy != nil {
		s.proxy.serve(w, r, s.index, v.key)
		return
	}
	if r.Method != http.MethodGet || r.URL.Path != s.baseFor(v.key.env())+"whoami" {
		writeError(w, errNotFoundPage, w.reqID)
		return
	}
	writeWhoami(w, s.index, v.key)
}

func (s *server) baseFor(env string) string {
	if env == envLive {
		return s.cfg.liveBase
	}
	return s.cfg.testBase
}

// serveAuth is forward auth for nginx auth_request, Traefik and Caddy.
func (s *server) serveAuth(w http.ResponseWriter, r *http.Request) {
	start := s.now()
	reqID := newRequestID()
	method, rawPath, path, aerr := forwardedRequest(r.Header)
	var v verdict
	if aerr != nil {
		v.err = aerr
	} else {
		v = s.checkRequest(r, method, rawPath, path, start)
	}
	status := 200
	if v.err != nil {
		status = v.err.status
		guardedSurface.fail(w, v.err, reqID, v.decision())
	} else {
		guardedSurface.owe(w.Header(), reqID, v.decision())
		setIdentityHeaders(w.Header(), s.index, v.key)
		// net/http adds "Content-Length: 0" to an empty answer itself,
		// without another entry in the header map.
		w.WriteHeader(200)
	}
	s.metrics.observe(surfAuth, status, s.record(method, path, status, start, &v, reqID))
}

// forwardedRequest reads the method and path of the request a front proxy
// asks about. nginx sets X-Original-*, Traefik and Caddy set X-Forwarded-*,
// and each passes the client's other headers on: so a client can send the
// pair its proxy does not set, and when both are present they must agree.
// rawPath is the path as the client sent it, which the front proxy passes
// to the upstream; path is it percent-decoded.
func forwardedRequest(h http.Header) (method, rawPath, path string, aerr *apiError) {
	method, ok := forwardedValue(h, "X-Forwarded-Method", "X-Original-Method")
	if !ok {
		return "", "", "", invalidRequest("X-Forwarded-Method and X-Original-Method disagree or repeat.")
	}
	uri, ok := forwardedValue(h, "X-Forwarded-Uri", "X-Original-Uri")
	if !ok {
		return "", "", "", invalidRequest("X-Forwarded-Uri and X-Original-URI disagree or repeat.")
	}
	if method == "" || uri == "" {
		return "", "", "", invalidRequest("Forward auth needs X-Forwarded-Method and X-Forwarded-Uri, or X-Original-Method and X-Original-URI.")
	}
	if path, ok := plainRequestPath(uri); ok {
		return strings.ToUpper(method), path, path, nil
	}
	raw, _, _ := strings.Cut(uri, "?")
	u, err := url.ParseRequestURI(uri)
	if err != nil || !strings.HasPrefix(raw, "/") {
		return "", "", "", invalidRequest("X-Forwarded-Uri or X-Original-URI is not a request path.")
	}
	return strings.ToUpper(method), raw, u.Path, nil
}

// plainRequestPath is the path of a request URI that needs no decoding:
// it starts with / and holds no escape or control byte. It is what
// url.ParseRequestURI would give, without its allocations; anything else
// goes through ParseRequestURI.
func plainRequestPath(uri string) (string, bool) {
	if !strings.HasPrefix(uri, "/") {
		return "", false
	}
	path, _, _ := strings.Cut(uri, "?")
	for i := 0; i < len(path); i++ {
		if c := path[i]; c == '%' || c < 0x20 || c == 0x7f {
			return "", false
		}
	}
	return path, true
}

// forwardedValue is the value of header a or b, given by canonical name;
// ok is false when either is repeated or both are present and differ.
func forwardedValue(h http.Header, a, b string) (value string, ok bool) {
	va, vb := h[a], h[b]
	if len(va) > 1 || len(vb) > 1 {
		return "", false
	}
	if len(va) == 1 && len(vb) == 1 && va[0] != vb[0] {
		return "", false
	}
	if len(va) == 1 {
		return va[0], true
	}
	if len(vb) == 1 {
		return vb[0], true
	}
	return "", true
}

// logStatus is what a verify call is logged as: the status the key would
// have got on the guarded surface.
func logStatus(v verdict) int {
	if v.err != nil {
		return v.err.status
	}
	return 200
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
