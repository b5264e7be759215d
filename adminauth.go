package main

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/julienschmidt/httprouter"
)

// caller is who presented an admin token, in which request and from
// where: what the audit entry of a change it makes records.
type caller struct {
	root      bool
	orgID     string // for an org admin token
	tokenID   string // the org admin token's id and name
	tokenName string
	client    string // the client's address, without the port
	reqID     string
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
		adminSurface.owe(w.Header(), reqID, nil) // on every answer, not only errors
		c, aerr := s.authenticate(r)
		c.reqID = reqID
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
// token hashes; bbolt holds the durable copy. It changes only after the
// change has committed (admintokens.go), so that a revoked token is
// refused from the next request on.
type adminTokens struct {
	mu     sync.RWMutex
	root   [32]byte
	orgs   map[[32]byte]*orgToken // tokens not revoked, by tag(hash); see lookup
	byID   map[string]*orgToken   // every token, revoked ones too, for their last use
	tagKey [32]byte               // made with the map, never stored

	usedMu sync.Mutex
	used   map[*orgToken]struct{} // used since the last flush (writeBehind)
}

// orgToken is an org admin token as lookup needs it.
type orgToken struct {
	hash            [32]byte
	id, orgID, name string
	expiresAt       atomic.Int64 // 0: never; a rolled token's end of grace
	lastUsed        atomic.Int64
	prefix          atomic.Pointer[string] // nil: issued before prefixes were kept, not used since
}

func (a *adminTokens) setRoot(hash [32]byte) {
	a.mu.Lock()
	a.root = hash
	a.mu.Unlock()
}

// addOrgToken makes a committed token known: usable unless revoked.
func (a *adminTokens) addOrgToken(rec *tokenRecord) {
	t := &orgToken{hash: rec.Hash, id: rec.ID, orgID: rec.OrgID, name: rec.Name}
	t.expiresAt.Store(rec.ExpiresAt)
	if rec.Prefix != "" {
		t.prefix.Store(&rec.Prefix)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.orgs == nil {
		a.orgs = make(map[[32]byte]*orgToken)
		a.byID = make(map[string]*orgToken)
		rand.Read(a.tagKey[:])
	}
	a.byID[t.id] = t
	if rec.RevokedAt == 0 {
		a.orgs[a.tag(t.hash)] = t
	}
}

// update applies a committed revoke or roll of a token. Revocation is for
// good and an expiry only ever comes sooner, so an update that arrives
// after a later one (two calls racing once their commits are done)
// cannot bring a token back.
func (a *adminTokens) update(rec *tokenRecord) {
	a.mu.Lock()
	defer a.mu.Unlock()
	t := a.byID[rec.ID]
	if t == nil {
		return
	}
	if rec.RevokedAt != 0 {
		delete(a.orgs, a.tag(t.hash))
	}
	if at := t.expiresAt.Load(); rec.ExpiresAt != 0 && (at == 0 || rec.ExpiresAt < at) {
		t.expiresAt.Store(rec.ExpiresAt)
	}
}

// tag is the map key for a token hash: an HMAC under a key made at start.
func (a *adminTokens) tag(hash [32]byte) (t [32]byte) {
	m := hmac.New(sha256.New, a.tagKey[:])
	m.Write(hash[:])
	m.Sum(t[:0])
	return t
}

// lookup says whom a presented token stands for at now, in a time that
// does not depend on the stored secrets. The root hash is compared in
// constant time. Org tokens are in a map, whose key comparisons stop at
// the first byte that differs: keyed by the token hash itself, a guess's
// timing would tell how far the SHA-256 of a chosen string agrees with a
// stored hash. Keyed by an HMAC of the hash under a random key, it tells
// only how far two values agree that the guesser cannot compute; the hash
// found is then compared in constant time as well. Every lookup does the
// same work, root or not. A rolled token past its grace is refused; a
// found token's use is noted for the write-behind (touch).
func (a *adminTokens) lookup(token string, now int64) (caller, bool) {
	hash := sha256.Sum256([]byte(token))
	a.mu.RLock()
	isRoot := subtle.ConstantTimeCompare(hash[:], a.root[:]) == 1
	t, found := a.orgs[a.tag(hash)]
	var stored [32]byte
	if found {
		stored = t.hash
	}
	a.mu.RUnlock()
	isOrg := subtle.ConstantTimeCompare(hash[:], stored[:])&boolInt(found) == 1
	switch {
	case isRoot:
		return caller{root: true}, true
	case isOrg && (t.expiresAt.Load() == 0 || now < t.expiresAt.Load()):
		a.touch(t, token, now)
		return caller{orgID: t.orgID, tokenID: t.id, tokenName: t.name}, true
	}
	return caller{}, false
}

// touch notes that t, presented as token, was used at now: written behind,
// at most once a flush, never in the request. A token issued before
// prefixes were kept gets its prefix now.
func (a *adminTokens) touch(t *orgToken, token string, now int64) {
	t.lastUsed.Store(now)
	if t.prefix.Load() == nil {
		if p := tokenPrefix(token); p != "" {
			t.prefix.Store(&p)
		}
	}
	a.usedMu.Lock()
	if a.used == nil {
		a.used = make(map[*orgToken]struct{})
	}
	a.used[t] = struct{}{}
	a.usedMu.Unlock()
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (s *server) authenticate(r *http.Request) (caller, *apiError) {
	client := s.throttleClient(r)
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
	c, ok := s.admins.lookup(token, s.now().UnixNano())
	if !ok {
		s.throttle.fail(client, s.now())
		return caller{}, errAdminToken
	}
	c.client = clientIP(r)
	return c, nil
}

// throttleClient is who the admin-token throttle counts: the client's
// address (clientip.go: behind --trusted-proxies, the one the proxies
// forward), IPv4, or the /64 of an IPv6 one, since one IPv6 client is
// given a whole /64. An address that cannot be told is counted as the
// connection's RemoteAddr as it is.
func (s *server) throttleClient(r *http.Request) string {
	a := s.clientIP(r)
	if !a.IsValid() {
		return r.RemoteAddr
	}
	if a.Is4() {
		return a.String()
	}
	p, _ := a.Prefix(64)
	return p.String()
}

// failThrottle slows down guessing of admin tokens: after maxFails failures
// in a minute from one client (an IPv4 address or an IPv6 /64), that client
// is refused for the rest of the minute, whatever it sends.
type failThrottle struct {
	mu    sync.Mutex
	fails map[string]*failCount
}

type failCount struct {
	n     int
	since time.Time
}

const (
	maxFails      = 10
	failWindow    = time.Minute
	maxFailClient = 10000
	// failKeep is how many live blocks a full table keeps, at most.
	failKeep = maxFailClient - maxFailClient/8
)

func newFailThrottle() *failThrottle {
	return &failThrottle{fails: make(map[string]*failCount)}
}

func (f *failCount) live(now time.Time) bool { return now.Sub(f.since) < failWindow }

func (t *failThrottle) blocked(client string, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.fails[client]
	return f != nil && f.live(now) && f.n >= maxFails
}

func (t *failThrottle) fail(client string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.fails[client]
	if f == nil || !f.live(now) {
		if f == nil && len(t.fails) >= maxFailClient {
			t.evict(now)
		}
		f = &failCount{since: now}
		t.fails[client] = f
	}
	f.n++
}

// evict makes room in a full table without forgetting the worst offenders,
// so that failures from many addresses cannot lift the blocks of others: it
// drops entries whose window has passed and entries that are not blocked,
// and then, only if blocks still fill more than failKeep, the blocks that
// end soonest. Freeing an eighth of the table at a time, not one entry,
// spares a spray of new addresses a scan of the whole table each.
func (t *failThrottle) evict(now time.Time) {
	for c, f := range t.fails {
		if !f.live(now) || f.n < maxFails {
			delete(t.fails, c)
		}
	}
	excess := len(t.fails) - failKeep
	if excess <= 0 {
		return
	}
	starts := make([]int64, 0, len(t.fails))
	for _, f := range t.fails {
		starts = append(starts, f.since.UnixNano())
	}
	slices.Sort(starts) // a window's start orders blocks by their end
	cutoff := starts[excess-1]
	for c, f := range t.fails {
		if excess > 0 && f.since.UnixNano() <= cutoff {
			delete(t.fails, c)
			excess--
		}
	}
}
