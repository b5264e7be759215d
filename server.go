package main

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
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
	credits *creditBook // usage-limited keys' credits
	// keyUpdates puts committed key changes into the index one at a time.
	keyUpdates sync.Mutex
	// defaultLimits are --rate-limits, for keys without their own.
	defaultLimits *limitSet
	behind        *writeBehind // logs, usage, last-used and rate-limit state, written behind
	metrics       *promMetrics
	rules         []scopeRule
	format        keyFormat
	envError      *apiError
	proxy         *proxy
	now           func() time.Time
	log           zerolog.Logger
	router        *httprouter.Router
	admins        adminTokens
	throttle      *failThrottle
	conns         *deadlineWatch // the connections run accepts, and their read deadlines
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
	if r.URL.Path == verifyPath && r.Method == http.MethodPost { // likewise
		s.serveVerify(w, r)
		return
	}
	s.serveRouted(w, r)
}

func (s *server) routes() {
	rt := httprouter.New()
	rt.RedirectTrailingSlash = false
	rt.RedirectFixedPath = false
	rt.HandleOPTIONS = false
	rt.NotFound = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		adminSurface.fail(w, errNotFoundPage, newRequestID(), nil)
	})
	rt.MethodNotAllowed = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		adminSurface.fail(w, errBadMethod, newRequestID(), nil)
	})
	rt.PanicHandler = func(w http.ResponseWriter, r *http.Request, v any) {
		s.log.Error().Interface("panic", v).Str("path", r.URL.Path).Msg("handler panicked")
		adminSurface.fail(w, errInternal, newRequestID(), nil)
	}

	for _, m := range []string{"GET", "HEAD"} { // HEAD: load balancers' and uptime checkers' probes
		rt.HandlerFunc(m, "/healthz", s.serveHealth)
		rt.HandlerFunc(m, "/readyz", s.serveReady)
	}
	rt.HandlerFunc("GET", "/metrics", s.serveMetrics)
	for _, m := range []string{"GET", "HEAD"} {
		rt.HandlerFunc(m, "/openapi.json", s.serveOpenAPI)
	}
	rt.HandlerFunc("POST", verifyPath, s.serveVerify)
	for _, m := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"} {
		rt.HandlerFunc(m, "/v1/auth", s.serveAuth)
	}

	const a = "/admin/v1"
	rt.POST(a+"/orgs", s.admin(rootOnly, s.createOrg))
	rt.GET(a+"/orgs", s.admin(anyAdmin, s.listOrgs))
	rt.GET(a+"/orgs/:org", s.admin(orgAdmin, s.getOrg))
	rt.POST(a+"/orgs/:org/admin-tokens", s.admin(rootOnly, s.createAdminToken))
	rt.GET(a+"/orgs/:org/admin-tokens", s.admin(orgAdmin, s.listAdminTokens))
	rt.POST(a+"/orgs/:org/admin-tokens/:token/revoke", s.admin(orgAdmin, s.revokeAdminToken))
	rt.POST(a+"/orgs/:org/admin-tokens/:token/roll", s.admin(orgAdmin, s.rollAdminToken))
	rt.POST(a+"/admin-token/roll", s.admin(rootOnly, s.rollRootToken))
	rt.POST(a+"/orgs/:org/keys", s.admin(orgAdmin, s.createKey))
	rt.GET(a+"/orgs/:org/keys", s.admin(orgAdmin, s.listKeys))
	rt.GET(a+"/orgs/:org/keys/:key", s.admin(orgAdmin, s.getKey))
	rt.PATCH(a+"/orgs/:org/keys/:key", s.admin(orgAdmin, s.patchKey))
	rt.POST(a+"/orgs/:org/keys/:key/revoke", s.admin(orgAdmin, s.revokeKey))
	rt.POST(a+"/orgs/:org/keys/:key/roll", s.admin(orgAdmin, s.rollKey))
	rt.GET(a+"/orgs/:org/logs", s.admin(orgAdmin, s.orgLogs))
	rt.GET(a+"/orgs/:org/usage", s.admin(orgAdmin, s.orgUsage))
	rt.GET(a+"/orgs/:org/audit", s.admin(orgAdmin, s.orgAudit))
	rt.GET(a+"/logs", s.admin(rootOnly, s.serverLogs))
	rt.GET(a+"/audit", s.admin(rootOnly, s.allAudit))
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
	if c := s.store.cluster; c != nil && !c.fresh(s.now()) {
		writeJSON(w, 503, map[string]string{"status": "stale: not confirmed current with the cluster within --max-staleness"})
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

// run serves on ln until ctx ends; then in-flight requests get up to the
// drain timeout to finish, and only then is everything held in memory
// written, so the last requests' log entries are in the final flush.
//
// There is no ReadTimeout or WriteTimeout for the whole request: the reverse
// proxy streams uploads and downloads of any size and duration, and
// GET /admin/v1/backup streams the whole db. Headers are bounded by
// ReadHeaderTimeout and MaxHeaderBytes, bodies keyhole reads itself by
// limitBodyReads (and the 64 KiB body limits), idle connections by
// IdleTimeout.
func (s *server) run(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.limitBodyReads(s, orDefault(s.cfg.bodyReadTimeout, defaultBodyReadTimeout)),
		ReadHeaderTimeout: orDefault(s.cfg.readHeaderTimeout, defaultReadHeaderTimeout),
		IdleTimeout:       orDefault(s.cfg.idleTimeout, defaultIdleTimeout),
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          stdLogger(s.log),
	}
	flushCtx, stopFlusher := context.WithCancel(context.Background())
	flushed := make(chan error, 1)
	go func() { flushed <- s.behind.Run(flushCtx, s.cfg.flushInterval, s.log) }()
	stopPruner := s.startAuditPruner()
	defer stopPruner() // it ends before the store closes
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(s.conns.listen(ln, deadlineTick)) }()

	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
	}
	drainCtx, cancel := context.WithTimeout(context.Background(), orDefault(s.cfg.drainTimeout, defaultDrainTimeout))
	defer cancel()
	if shutErr := srv.Shutdown(drainCtx); shutErr != nil {
		s.log.Warn().Err(shutErr).Msg("drain timed out; closing connections")
		srv.Close()
	}
	stopFlusher() // Run's last flush comes after the drain: the last requests' entries are in it
	if ferr := <-flushed; ferr != nil {
		return fmt.Errorf("final flush: %w", ferr)
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// limitBodyReads gives a request body timeout to arrive, so a client that
// trickles one cannot hold a connection for ever. Only requests that have a
// body get a deadline: on a request without one the server is already
// watching the idle connection, and a deadline there would cancel a long
// response (a backup, a proxied download). The next request on the
// connection sets its own deadlines.
//
// The body is left as net/http made it: net/http discards an unread body
// after the answer, unless it is still waiting for "Expect: 100-continue",
// which it recognises by the body's type. Wrapped, a refusal would wait for
// a body the client holds back until the deadline. A guarded request's body
// is read only by the reverse proxy, which lifts the deadline once the key
// has verified (proxy.serve): an upload by a key holder streams for as long
// as it takes, while a refused request's body stays bounded. Bodies keyhole
// reads itself are small and read at once.
func (s *server) limitBodyReads(next http.Handler, timeout time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
			http.NewResponseController(w).SetReadDeadline(time.Now().Add(timeout))
		}
		next.ServeHTTP(w, r)
	})
}

// newServer builds the in-memory state from the db.
func newServer(cfg config, st *store, now func() time.Time, logger zerolog.Logger) (*server, error) {
	rules, err := loadRules(cfg.rulesPath)
	if err != nil {
		return nil, err
	}
	s := &server{
		cfg: cfg, store: st, limiter: newLimiter(), credits: newCreditBook(), conns: newDeadlineWatch(),
		rules: rules, format: keyFormat{brand: cfg.brand, style: cfg.keyStyle}, now: now,
		log: logger, throttle: newFailThrottle(), defaultLimits: newLimitSet(cfg.rateLimits),
		envError: &apiError{401, "environment_mismatch", "A test key must be used with " + cfg.testBase +
			" and a live key with " + cfg.liveBase + "."},
	}
	if cfg.upstream != "" {
		if s.proxy, err = newProxy(cfg.upstream, s); err != nil {
			return nil, err
		}
	}
	// A damage to the file that checkDBFile cannot see surfaces here, as
	// bbolt reads every key row: an error, not a crash.
	if err := guardDB(s.loadState); err != nil {
		return nil, fmt.Errorf("reading %s: %w", cfg.dbPath, err)
	}
	s.behind = newWriteBehind(st, s.index, s.limiter, &s.admins, s.credits, cfg.logRetention, now)
	s.metrics = newMetrics(s)
	s.routes()
	return s, nil
}

// addKeyRow makes the key of a row usable: its index entry and, if it has
// them, its credits.
func (s *server) addKeyRow(row *hotRow) *keyEntry {
	return s.index.addRow(row, s.configureCredits(row))
}

// addKey makes a committed new key usable.
func (s *server) addKey(rec *keyRecord) *keyEntry {
	if s.store.cluster != nil {
		return s.upsertKey(rec) // the watch may have added it already
	}
	return s.addKeyRow(recordRow(rec))
}

// updateKey applies a committed change of a key (revoke, roll, a PATCH) to
// the index before the change is answered: the very next request sees it.
// Two writes of one key may commit in one order and get here in the other,
// so it applies what the store holds now, one key change at a time: the
// last to run applies the newest commit.
func (s *server) updateKey(rec *keyRecord) {
	s.keyUpdates.Lock()
	defer s.keyUpdates.Unlock()
	cur, err := s.store.Key(rec.OrgID, rec.ID)
	if err != nil {
		s.log.Error().Err(err).Str("key_id", rec.ID).Msg("rereading a key after its commit")
		cur = *rec
	}
	s.applyKey(&cur)
}

// applyKey makes the index what rec says of its key.
func (s *server) applyKey(rec *keyRecord) {
	row := recordRow(rec)
	s.index.updateRow(row, s.configureCredits(row))
}

// configureCredits sets a row's key's credits in the book, or drops them.
func (s *server) configureCredits(row *hotRow) *keyCredits {
	id, ok := parseKeyID(string(row.id))
	if !ok {
		return nil
	}
	set, ok := decodeCreditSetting(row.credits)
	if !ok {
		s.credits.drop(id)
		return nil
	}
	return s.credits.configure(id, &set)
}

// recordRow is a record's row, decoded: the one path from a record to the
// index, at start and after a commit alike.
func recordRow(rec *keyRecord) *hotRow {
	var row hotRow
	if err := row.decode(appendHotRow(nil, rec)); err != nil {
		panic(err) // appendHotRow and decode disagree: a bug, caught by every test
	}
	return &row
}

// loadState builds the in-memory index from the db.
func (s *server) loadState() error {
	count, err := s.store.KeyCount()
	if err != nil {
		return fmt.Errorf("loading keys: %w", err)
	}
	s.index = newKeyIndex(int(count))
	var lastUsed map[[8]byte]*atomic.Int64 // nil when none were written
	if has, err := s.store.HasLastUsed(); err != nil || has {
		lastUsed = make(map[[8]byte]*atomic.Int64, count)
	}
	var old []string // keys of version 1 rows, by path
	err = s.store.EachKeyRow(func(row *hotRow) error {
		e := s.addKeyRow(row)
		if lastUsed != nil {
			lastUsed[e.id] = &e.lastUsed
		}
		if row.version == hotRowV1 {
			old = append(old, keyPath(string(row.orgID), string(row.id)))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("loading keys: %w", err)
	}
	if len(old) > 0 {
		// The collector is held off while the index loads (serve): what a
		// batch decoded is garbage, collected after it, so that a million
		// records are not all held at once.
		err := s.store.UpgradeKeyRows(old, func(recs []*keyRecord) {
			for _, rec := range recs {
				s.applyKey(rec)
			}
			runtime.GC()
		})
		if err != nil {
			return fmt.Errorf("upgrading key rows: %w", err)
		}
		s.log.Info().Int("keys", len(old)).Msg("rewrote key rows written by an earlier keyhole")
	}
	tokens, err := s.store.Tokens()
	if err != nil {
		return fmt.Errorf("loading admin tokens: %w", err)
	}
	for i := range tokens {
		s.admins.addOrgToken(&tokens[i])
	}
	err = s.store.LoadWrittenBehind(func(id [8]byte, at int64) {
		if lu := lastUsed[id]; lu != nil {
			lu.Store(at)
		}
	}, s.limiter.restore, s.credits.restore, s.admins.restoreUse)
	if err != nil {
		return fmt.Errorf("loading usage state: %w", err)
	}
	if err := s.store.DropMappedPages(); err != nil {
		s.log.Warn().Err(err).Msg("dropping mapped db pages after load")
	}
	return nil
}
