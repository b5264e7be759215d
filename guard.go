package main

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// verdict is the outcome of checking one presented key.
type verdict struct {
	err      *apiError // nil: allowed
	key      *keyEntry // nil: the key was not identified
	dec      decision
	decided  bool // dec holds a rate-limit state for the headers
	required string
}

// extractKey reads the key from Authorization: Bearer, else x-api-key.
func extractKey(h http.Header) (string, *apiError) {
	if auth := h.Values("Authorization"); len(auth) > 0 {
		if len(auth) > 1 {
			return "", errInvalidSch
		}
		scheme, token, ok := strings.Cut(auth[0], " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return "", errInvalidSch
		}
		return strings.TrimSpace(token), nil
	}
	apiKey := h.Values("X-Api-Key")
	if len(apiKey) == 0 || len(apiKey) == 1 && apiKey[0] == "" {
		return "", errMissingAuth
	}
	if len(apiKey) > 1 {
		return "", malformedError(msgMalformed)
	}
	return strings.TrimSpace(apiKey[0]), nil
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

// verify runs the checks of SPEC 3 in order: shape, key, expiry,
// environment, scope, rate limit. wantEnv "" means any environment; scope ""
// means none is needed. Only an allowed request takes a token.
func (s *server) verify(token, wantEnv, scope string, now time.Time) (v verdict) {
	defer func() {
		if recover() != nil {
			v = verdict{err: errVerifyFailed, key: v.key}
		}
	}()
	p, err := s.format.parse(token)
	if err != nil {
		return verdict{err: malformedError(err.Error())}
	}
	k := s.index.find(p)
	if k == nil || k.revokedAt != 0 {
		return verdict{err: errInvalidKey}
	}
	v.key = k
	nowNano := now.UnixNano()
	switch {
	case k.expiresAt != 0 && nowNano >= k.expiresAt:
		v.err = errExpired
	case wantEnv != "" && k.env != wantEnv:
		v.err = s.envError
	case scope != "" && !k.hasScope(scope):
		v.err = scopeError(scope)
	}
	v.dec = s.limiter.take(k.id, s.limitsFor(k), nowNano, v.err == nil)
	v.decided = true
	if v.err == nil && !v.dec.allowed {
		v.err = &apiError{429, "rate_limited", v.dec.message()}
	}
	if v.err == nil || v.err.status == 429 {
		k.lastUsed.Store(nowNano)
	}
	return v
}

func (s *server) limitsFor(k *keyEntry) []rateLimit {
	if k.limits != nil {
		return k.limits
	}
	return s.cfg.rateLimits
}

// checkRequest verifies the key presented on r for method and path.
func (s *server) checkRequest(r *http.Request, method, path string, now time.Time) verdict {
	if !isCanonicalPath(path) {
		return verdict{err: errNotCanonical}
	}
	token, aerr := extractKey(r.Header)
	if aerr != nil {
		return verdict{err: aerr}
	}
	wantEnv := s.envForPath(path)
	if wantEnv == "" {
		wantEnv = "none" // outside both bases: no key may call it
	}
	return s.verify(token, wantEnv, requiredScope(s.rules, method, path), now)
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

// setRateLimitHeaders writes the headers of SPEC 4 for an identified key.
func setRateLimitHeaders(h http.Header, d *decision) {
	r := d.limits[d.tightest]
	h["X-Ratelimit-Limit"] = []string{strconv.FormatInt(r.Limit, 10)}
	h["X-Ratelimit-Remaining"] = []string{strconv.FormatInt(d.remaining, 10)}
	h["X-Ratelimit-Reset"] = []string{strconv.FormatInt(d.reset, 10)}
	h["Ratelimit-Policy"] = []string{policyHeader(d.limits)}
	h["Ratelimit"] = []string{`"` + r.Window + `";r=` + strconv.FormatInt(d.remaining, 10) +
		";t=" + strconv.FormatInt(d.reset, 10)}
	if !d.allowed {
		h["Retry-After"] = []string{strconv.FormatInt(d.retryAfter, 10)}
	}
}

func policyHeader(limits []rateLimit) string {
	var b strings.Builder
	for i, r := range limits {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(`"` + r.Window + `";q=` + strconv.FormatInt(r.Limit, 10) + ";w=" + strconv.FormatInt(r.seconds(), 10))
	}
	return b.String()
}

// identityHeaders are what keyhole tells the upstream about the caller.
var identityHeaders = []string{"X-Keyhole-Org", "X-Keyhole-Key-Id", "X-Keyhole-Env", "X-Keyhole-Scopes"}

func setIdentityHeaders(h http.Header, k *keyEntry) {
	h["X-Keyhole-Org"] = []string{k.orgID}
	h["X-Keyhole-Key-Id"] = []string{k.id}
	h["X-Keyhole-Env"] = []string{k.env}
	h["X-Keyhole-Scopes"] = []string{strings.Join(k.scopes, ",")}
}

type whoamiBody struct {
	KeyID  string   `json:"key_id"`
	OrgID  string   `json:"org_id"`
	Env    string   `json:"env"`
	Scopes []string `json:"scopes"`
}

// serveGuarded answers requests under the base paths: whoami, or the proxy.
func (s *server) serveGuarded(w http.ResponseWriter, r *http.Request) {
	start := s.now()
	reqID := newRequestID()
	w.Header()["X-Request-Id"] = []string{reqID}
	v := s.checkRequest(r, r.Method, r.URL.Path, start)
	status := s.answerGuarded(w, r, &v, reqID)
	s.record(r.Method, r.URL.Path, status, start, &v, reqID)
}

func (s *server) answerGuarded(w http.ResponseWriter, r *http.Request, v *verdict, reqID string) int {
	if v.decided {
		setRateLimitHeaders(w.Header(), &v.dec)
	}
	if v.err != nil {
		writeError(w, v.err, reqID)
		return v.err.status
	}
	if s.proxy != nil {
		return s.proxy.serve(w, r, v.key)
	}
	if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/whoami") ||
		r.URL.Path != s.baseFor(v.key.env)+"whoami" {
		writeError(w, errNotFoundPage, reqID)
		return 404
	}
	writeJSON(w, 200, whoamiBody{KeyID: v.key.id, OrgID: v.key.orgID, Env: v.key.env, Scopes: nonNil(v.key.scopes)})
	return 200
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
	w.Header()["X-Request-Id"] = []string{reqID}
	method, uri := forwardedRequest(r.Header)
	path, _, _ := strings.Cut(uri, "?")
	var v verdict
	if path == "" {
		v.err = invalidRequest("Forward auth needs X-Forwarded-Uri or X-Original-URI.")
	} else {
		v = s.checkRequest(r, method, path, start)
	}
	if v.decided {
		setRateLimitHeaders(w.Header(), &v.dec)
	}
	status := 200
	if v.err != nil {
		status = v.err.status
		writeError(w, v.err, reqID)
	} else {
		setIdentityHeaders(w.Header(), v.key)
		w.Header()["Content-Length"] = []string{"0"}
		w.WriteHeader(200)
	}
	s.record(method, path, status, start, &v, reqID)
}

func forwardedRequest(h http.Header) (method, uri string) {
	method = h.Get("X-Forwarded-Method")
	if method == "" {
		method = h.Get("X-Original-Method")
	}
	uri = h.Get("X-Forwarded-Uri")
	if uri == "" {
		uri = h.Get("X-Original-Uri")
	}
	if method == "" {
		method = http.MethodGet
	}
	return strings.ToUpper(method), uri
}

type verifyRequest struct {
	Key   string `json:"key"`
	Env   string `json:"env"`
	Scope string `json:"scope"`
}

type verifyAnswer struct {
	Valid     bool          `json:"valid"`
	KeyID     string        `json:"key_id,omitempty"`
	OrgID     string        `json:"org_id,omitempty"`
	Env       string        `json:"env,omitempty"`
	Scopes    []string      `json:"scopes,omitempty"`
	RateLimit *verifyLimits `json:"ratelimit,omitempty"`
	Code      string        `json:"code,omitempty"`
	Message   string        `json:"message,omitempty"`
}

type verifyLimits struct {
	Limit     int64 `json:"limit"`
	Remaining int64 `json:"remaining"`
	Reset     int64 `json:"reset"`
}

// serveVerify is POST /v1/keys/verify: 200 with valid true or false.
func (s *server) serveVerify(w http.ResponseWriter, r *http.Request) {
	start := s.now()
	reqID := newRequestID()
	w.Header()["X-Request-Id"] = []string{reqID}
	var req verifyRequest
	if aerr := decodeStrict(w, r, &req, false); aerr != nil {
		writeError(w, aerr, reqID)
		return
	}
	if req.Env != "" && req.Env != envTest && req.Env != envLive {
		writeError(w, invalidRequest(`Field "env" must be "test" or "live".`), reqID)
		return
	}
	v := s.verify(strings.TrimSpace(req.Key), req.Env, req.Scope, start)
	if req.Key == "" {
		v = verdict{err: errMissingAuth}
	}
	ans := verifyAnswer{Valid: v.err == nil}
	if v.decided {
		setRateLimitHeaders(w.Header(), &v.dec)
		ans.RateLimit = &verifyLimits{Limit: v.dec.limits[v.dec.tightest].Limit, Remaining: v.dec.remaining, Reset: v.dec.reset}
	}
	if v.err != nil {
		ans.Code, ans.Message = v.err.code, v.err.message
	} else {
		ans.KeyID, ans.OrgID, ans.Env, ans.Scopes = v.key.id, v.key.orgID, v.key.env, nonNil(v.key.scopes)
	}
	writeJSON(w, 200, ans)
	s.record(r.Method, r.URL.Path, logStatus(v), start, &v, reqID)
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
