package main

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"
)

// logEntry is one guarded request as SPEC 7 describes it. It never holds a
// key, a query string or a body.
type logEntry struct {
	ID        string  `json:"id"`
	Time      string  `json:"time"`
	Method    string  `json:"method"`
	Path      string  `json:"path"`
	Status    int     `json:"status"`
	LatencyMS float64 `json:"latency_ms"`
	KeyID     string  `json:"key_id"`
	OrgID     string  `json:"org_id"`
	Env       string  `json:"env"`
	RequestID string  `json:"request_id"`
	// Count is how many refusals of this key with this status the entry
	// stands for, when more than the first refusalBudget of a minute came:
	// it is the newest of them (absent: one request).
	Count uint32 `json:"count,omitempty"`
	// Node is the cluster node that served the request; absent on one node.
	Node string `json:"node,omitempty"`
	at   int64  // Time, in Unix nanoseconds
}

// pendingEntry is a log entry waiting in memory for the next flush.
type pendingEntry struct {
	at      int64
	latency time.Duration
	method  string
	path    string
	status  int
	key     *keyEntry // nil: unidentified
	env     string
	reqID   string
	count   uint32 // refusals folded into this one; 0 is 1
}

const (
	serverLog       = "_server" // the log bucket for unidentified requests
	maxPending      = 100_000   // log entries held in memory at most
	flushEarlyAt    = 16_384    // pending entries that wake the flusher early
	usageRetention  = 90 * 24 * time.Hour
	maxLoggedPath   = 1024
	defaultLogLimit = 50
	maxLogLimit     = 1000
)

// keyUsageRetention is how long one key's hourly counts are kept: a server
// may have many more keys than organizations.
const keyUsageRetention = 7 * 24 * time.Hour

// record queues the log entry and usage count of one guarded request.
// The entry keeps copies of what it logs: method and path are cut from the
// request line or a header, and a substring would hold all of it (up to
// 64 KiB a request) until the flush.
func (s *server) record(method, path string, status int, start time.Time, v *verdict, reqID string) time.Duration {
	e := pendingEntry{at: start.UnixNano(), latency: s.now().Sub(start), method: ownedMethod(method),
		path: ownedPath(path), status: status, key: v.key, env: s.envForPath(path), reqID: reqID}
	if v.key != nil {
		e.env = v.key.env()
	}
	s.behind.Add(e, start, v.err != nil)
	return e.latency
}

// ownedMethod is method as its own string, cut to maxMethodLen: the
// common ones are constants, others a copy.
func ownedMethod(method string) string {
	switch method {
	case "GET":
		return "GET"
	case "POST":
		return "POST"
	case "HEAD":
		return "HEAD"
	case "PUT":
		return "PUT"
	case "PATCH":
		return "PATCH"
	case "DELETE":
		return "DELETE"
	case "OPTIONS":
		return "OPTIONS"
	}
	return strings.Clone(method[:min(len(method), maxMethodLen)])
}

// ownedPath is path as its own string, cut to maxLoggedPath; verify's is
// a constant.
func ownedPath(path string) string {
	if path == verifyPath {
		return verifyPath
	}
	return strings.Clone(path[:min(len(path), maxLoggedPath)])
}

func (e *pendingEntry) logName(ix *keyIndex) string {
	if e.key != nil {
		return ix.orgID(e.key)
	}
	return serverLog
}

// logQuery is the filters and cursor of a logs request.
type logQuery struct {
	limit  int
	before uint64 // 0: from the newest
	keyID  string
	env    string
	status string // "429" or a class like "4xx"
	// beforeAt, if not 0, keeps only entries older than it (Unix
	// nanoseconds): a cluster's cursor, which is a time (fanout.go).
	beforeAt int64
}

// parsePage reads the page size and cursor of a paged listing (the
// request log, the audit log): limit, and before, a "next" it answered.
func parsePage(v url.Values) (limit int, before uint64, aerr *apiError) {
	limit = defaultLogLimit
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxLogLimit {
			return 0, 0, invalidRequest(`Parameter "limit" must be between 1 and %d.`, maxLogLimit)
		}
		limit = n
	}
	if s := v.Get("before"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || n == 0 {
			return 0, 0, invalidRequest(`Parameter "before" must be a cursor from "next".`)
		}
		before = n
	}
	return limit, before, nil
}

func parseLogQuery(v url.Values) (logQuery, *apiError) {
	q := logQuery{keyID: v.Get("key_id"), env: v.Get("env"), status: v.Get("status")}
	var aerr *apiError
	if q.limit, q.before, aerr = parsePage(v); aerr != nil {
		return q, aerr
	}
	if q.env != "" && q.env != envTest && q.env != envLive {
		return q, invalidRequest(`Parameter "env" must be "test" or "live".`)
	}
	if q.status != "" && !validStatusFilter(q.status) {
		return q, invalidRequest(`Parameter "status" must be a status like 429 or a class like 4xx.`)
	}
	return q, nil
}

func validStatusFilter(s string) bool {
	if len(s) != 3 || s[0] < '1' || s[0] > '5' {
		return false
	}
	if s[1:] == "xx" {
		return true
	}
	_, err := strconv.Atoi(s)
	return err == nil
}

func (q *logQuery) matches(e *logEntry) bool {
	if q.keyID != "" && e.KeyID != q.keyID || q.env != "" && e.Env != q.env {
		return false
	}
	if q.status == "" {
		return true
	}
	st := strconv.Itoa(e.Status)
	if q.status[1:] == "xx" {
		return st[0] == q.status[0]
	}
	return st == q.status
}

type logPage struct {
	Entries []logEntry `json:"entries"`
	Next    *string    `json:"next"`
	// Missing names the cluster nodes that did not answer (fanout.go).
	Missing []string `json:"missing_nodes,omitempty"`
}

func (s *server) serveLogs(w http.ResponseWriter, r *http.Request, org string) *apiError {
	q, aerr := parseLogQuery(r.URL.Query())
	if aerr != nil {
		return aerr
	}
	if s.store.cluster != nil {
		return s.clusterLogs(w, r, org, q)
	}
	page, aerr := s.readLogs(org, q)
	if aerr != nil {
		return aerr
	}
	writeJSON(w, 200, page)
	return nil
}

// readLogs is a page of this node's log of org.
func (s *server) readLogs(org string, q logQuery) (logPage, *apiError) {
	if err := s.behind.Flush(); err != nil { // so a reader sees its own requests
		return logPage{}, s.internal(err, "flushing logs")
	}
	page, err := s.store.ReadLogs(org, s.cfg.logRetention, q)
	if err != nil {
		return logPage{}, s.internal(err, "reading logs")
	}
	return page, nil
}

func (s *server) orgLogs(w http.ResponseWriter, r *http.Request, p httprouter.Params, _ caller) *apiError {
	return s.serveLogs(w, r, p.ByName("org"))
}

func (s *server) serverLogs(w http.ResponseWriter, r *http.Request, _ httprouter.Params, _ caller) *apiError {
	return s.serveLogs(w, r, serverLog)
}
