package main

import (
	"crypto/hmac"
	crand "crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/julienschmidt/httprouter"
	"github.com/rs/zerolog"
)

// server holds all of keyhole's state; nothing lives in package variables.
type server struct {
	cfg     config
	store   *store
	index   *keyIndex
	limiter *limiter
	// defaultLimits are --rate-limits, for keys without their own.
	defaultLimits *limitSet
	behind        *writeBehind // logs, usage, last-used and rate-limit state, written behind
	rules         []scopeRule
	format        keyFormat
	envError      *apiError
	proxy         *proxy
	now           func() time.Time
	log           zerolog.Logger
	router        *httprouter.Router
	admins        adminTokens
	throttle      *failThrottle
	demoKeys      []demoKey
	demoOrg       string
}

// ServeHTTP sends the base paths to the guarded surface and the rest to the
// router, so a configurable base can never collide with a route.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.envForPath(r.URL.Path) != "" {
		s.serveGuarded(w, r)
		return
	}
	// Forward auth is asked once per request of the API in front: it skips
	// the router's lookup. (The router also routes it, for every method.)
	if r.URL.Path == "/v1/auth" {
		s.serveAuth(w, r)
		return
	}
	s.router.ServeHTTP(w, r)
}

func (s *server) routes() {
	rt := httprouter.New()
	rt.RedirectTrailingSlash = false
	rt.RedirectFixedPath = false
	rt.HandleOPTIONS = false
	rt.NotFound = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setAPISecurityHeaders(w.Header())
		writeError(w, errNotFoundPage, newRequestID())
	})
	rt.MethodNotAllowed = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setAPISecurityHeaders(w.Header())
		writeError(w, errBadMethod, newRequestID())
	})
	rt.PanicHandler = func(w http.ResponseWriter, r *http.Request, v any) {
		s.log.Error().Interface("panic", v).Str("path", r.URL.Path).Msg("handler panicked")
		setAPISecurityHeaders(w.Header())
		writeError(w, errInternal, newRequestID())
	}

	rt.HandlerFunc("GET", "/healthz", s.serveHealth)
	rt.HandlerFunc("GET", "/readyz", s.serveReady)
	rt.HandlerFunc("GET", "/metrics", s.serveMetrics)
	rt.HandlerFunc("POST", verifyPath, s.serveVerify)
	for _, m := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"} {
		rt.HandlerFunc(m, "/v1/auth", s.serveAuth)
	}

	const a = "/admin/v1"
	rt.POST(a+"/orgs", s.admin(rootOnly, s.createOrg))
	rt.GET(a+"/orgs", s.admin(anyAdmin, s.listOrgs))
	rt.GET(a+"/orgs/:org", s.admin(orgAdmin, s.getOrg))
	rt.POST(a+"/orgs/:org/admin-tokens", s.admin(rootOnly, s.createAdminToken))
	rt.POST(a+"/orgs/:org/keys", s.admin(orgAdmin, s.createKey))
	rt.GET(a+"/orgs/:org/keys", s.admin(orgAdmin, s.listKeys))
	rt.GET(a+"/orgs/:org/keys/:key", s.admin(orgAdmin, s.getKey))
	rt.POST(a+"/orgs/:org/keys/:key/revoke", s.admin(orgAdmin, s.revokeKey))
	rt.POST(a+"/orgs/:org/keys/:key/roll", s.admin(orgAdmin, s.rollKey))
	rt.GET(a+"/orgs/:org/logs", s.admin(orgAdmin, s.orgLogs))
	rt.GET(a+"/orgs/:org/usage", s.admin(orgAdmin, s.orgUsage))
	rt.GET(a+"/logs", s.admin(rootOnly, s.serverLogs))
	rt.GET(a+"/backup", s.admin(rootOnly, s.backup))
	s.routeConsole(rt)
	s.router = rt
}

func (s *server) serveHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, 200, map[string]string{"status": "ok"})
}

func (s *server) serveReady(w http.ResponseWriter, r *http.Request) {
	if _, err := s.store.IsEmpty(); err != nil {
		writeJSON(w, 503, map[string]string{"status": "db unavailable"})
		return
	}
	writeJSON(w, 200, map[string]string{"status": "ready"})
}

// newRequestID is unique enough to find a request in logs; it is not a secret.
func newRequestID() string {
	var raw [8]byte
	binary.LittleEndian.PutUint64(raw[:], rand.Uint64())
	var b [20]byte
	copy(b[:], "req_")
	hex.Encode(b[4:], raw[:])
	return string(b[:])
}

// caller is who presented an admin token.
type caller struct {
	root  bool
	orgID string // for an org admin token
}

type access int

const (
	rootOnly access = iota // the root token only
	anyAdmin               // root or any org admin
	orgAdmin               // root, or the admin of :org (others get 404)
)

type adminHandler func(w http.ResponseWriter, r *http.Request, p httprouter.Params, c caller) *apiError

// The admin API's security headers. Its answers are JSON for the console
// and scripts, never a page: nothing may run, load or frame them, a browser
// must not guess another type, and no cache (browser or proxy) may keep one:
// some carry a secret shown once (a new key, a new admin token, the backup).
var (
	hdrAPICSP     = []string{"default-src 'none'; frame-ancestors 'none'"}
	hdrNoSniff    = []string{"nosniff"}
	hdrNoReferrer = []string{"no-referrer"}
	hdrNoStore    = []string{"no-store"}
)

func setAPISecurityHeaders(h http.Header) {
	h["Content-Security-Policy"] = hdrAPICSP
	h["X-Content-Type-Options"] = hdrNoSniff
	h["Referrer-Policy"] = hdrNoReferrer
	h["Cache-Control"] = hdrNoStore
}

// admin wraps an admin endpoint: who is calling, may they, does :org exist.
func (s *server) admin(need access, h adminHandler) httprouter.Handle {
	return func(w http.ResponseWriter, r *http.Request, p httprouter.Params) {
		reqID := newRequestID()
		hdr := w.Header()
		hdr["X-Request-Id"] = []string{reqID}
		setAPISecurityHeaders(hdr)
		c, aerr := s.authenticate(r)
		if aerr == nil {
			aerr = s.authorize(c, need, p.ByName("org"))
		}
		if aerr == nil {
			aerr = h(w, r, p, c)
		}
		if aerr != nil {
			writeError(w, aerr, reqID)
		}
	}
}

func (s *server) authorize(c caller, need access, orgID string) *apiError {
	if need == rootOnly && !c.root {
		return errRootOnly
	}
	if orgID == "" {
		return nil
	}
	if !c.root && c.orgID != orgID {
		return notFound("Organization")
	}
	if _, err := s.store.Org(orgID); err != nil {
		if errors.Is(err, errNotFound) {
			return notFound("Organization")
		}
		s.log.Error().Err(err).Msg("loading org")
		return errInternal
	}
	return nil
}

// adminTokens is the in-memory copy of the root token hash and org admin
// token hashes; bbolt holds the durable copy.
type adminTokens struct {
	mu     sync.RWMutex
	root   [32]byte
	orgs   map[[32]byte]orgToken // by tag(hash); see lookup
	tagKey [32]byte              // made with the map, never stored
}

type orgToken struct {
	hash  [32]byte
	orgID string
}

func (a *adminTokens) setRoot(hash [32]byte) {
	a.mu.Lock()
	a.root = hash
	a.mu.Unlock()
}

func (a *adminTokens) addOrgToken(hash [32]byte, orgID string) {
	a.mu.Lock()
	if a.orgs == nil {
		a.orgs = make(map[[32]byte]orgToken)
		crand.Read(a.tagKey[:])
	}
	a.orgs[a.tag(hash)] = orgToken{hash: hash, orgID: orgID}
	a.mu.Unlock()
}

// tag is the map key for a token hash: an HMAC under a key made at start.
func (a *adminTokens) tag(hash [32]byte) (t [32]byte) {
	m := hmac.New(sha256.New, a.tagKey[:])
	m.Write(hash[:])
	m.Sum(t[:0])
	return t
}

// lookup says whom a presented token stands for, in a time that does not
// depend on the stored secrets. The root hash is compared in constant time.
// Org tokens are in a map, whose key comparisons stop at the first byte that
// differs: keyed by the token hash itself, a guess's timing would tell how
// far the SHA-256 of a chosen string agrees with a stored hash. Keyed by an
// HMAC of the hash under a random key, it tells only how far two values
// agree that the guesser cannot compute; the hash found is then compared in
// constant time as well. Every lookup does the same work, root or not.
func (a *adminTokens) lookup(token string) (caller, bool) {
	hash := sha256.Sum256([]byte(token))
	a.mu.RLock()
	defer a.mu.RUnlock()
	isRoot := subtle.ConstantTimeCompare(hash[:], a.root[:]) == 1
	org, found := a.orgs[a.tag(hash)]
	isOrg := subtle.ConstantTimeCompare(hash[:], org.hash[:])&boolInt(found) == 1
	switch {
	case isRoot:
		return caller{root: true}, true
	case isOrg:
		return caller{orgID: org.orgID}, true
	}
	return caller{}, false
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (s *server) authenticate(r *http.Request) (caller, *apiError) {
	client := clientAddr(r)
	if s.throttle.blocked(client, s.now()) {
		return caller{}, &apiError{429, "rate_limited", "Too many failed admin token attempts. Wait a minute before retrying."}
	}
	auth := r.Header.Values("Authorization")
	if len(auth) == 0 {
		return caller{}, errMissingAuth
	}
	token, aerr := bearerToken(auth)
	if aerr != nil {
		return caller{}, aerr
	}
	c, ok := s.admins.lookup(token)
	if !ok {
		s.throttle.fail(client, s.now())
		return caller{}, errAdminToken
	}
	return c, nil
}

// clientAddr is who the admin-token throttle counts: the IPv4 address, or
// the /64 of an IPv6 one, since one IPv6 client is given a whole /64. The
// port is dropped; an address that does not parse is counted as it is.
func clientAddr(r *http.Request) string {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	a := ap.Addr().Unmap()
	if a.Is4() {
		return a.String()
	}
	p, _ := a.WithZone("").Prefix(64)
	return p.String()
}
