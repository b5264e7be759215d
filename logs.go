package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/julienschmidt/httprouter"
	bolt "go.etcd.io/bbolt"
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

// usageKey names one hourly counter row. The org is its interned number,
// so counting a request hashes 16 bytes, not two strings.
type usageKey struct {
	org  uint32 // in orgIDs
	live bool
	hour int64 // Unix seconds at the start of the hour
}

// usageCounts are the status classes of SPEC 7: 2xx, 4xx, 429, 5xx.
type usageCounts [4]uint64

func statusClass(status int) int {
	switch {
	case status == 429:
		return 2
	case status >= 500:
		return 3
	case status >= 400:
		return 1
	}
	return 0 // 1xx and 3xx count with 2xx: the request was served
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

// logWriter is the write-behind buffer: the request path appends to memory
// under one short lock, and flush writes everything in one bbolt transaction.
// When the disk falls behind by more than maxPending entries, new log entries
// are dropped and counted; usage counts, rate-limit state and last-used times
// are aggregates of bounded size and are never dropped.
type logWriter struct {
	mu      sync.Mutex
	pending []pendingEntry
	usage   map[usageKey]*usageCounts
	touched map[*keyEntry]struct{}
	folds   map[foldKey]*fold // identified keys' refusals past the budget
	dropped atomic.Uint64
	kick    chan struct{}
	classes usageCounts // every guarded request by status class, for /metrics

	flushes, flushErrors, flushNanos atomic.Uint64

	flushMu   sync.Mutex // one flush at a time
	lastPrune time.Time
	spare     []pendingEntry // the other half of pending's double buffer
	segments  []byte         // encoded entries of the flush under way
}

func newLogWriter() *logWriter {
	return &logWriter{
		usage:   make(map[usageKey]*usageCounts),
		touched: make(map[*keyEntry]struct{}),
		folds:   make(map[foldKey]*fold),
		kick:    make(chan struct{}, 1),
	}
}

// record queues the log entry and usage count of one guarded request.
// The entry keeps copies of what it logs: method and path are cut from the
// request line or a header, and a substring would hold all of it (up to
// 64 KiB a request) until the flush.
func (s *server) record(method, path string, status int, start time.Time, v *verdict, reqID string) {
	e := pendingEntry{at: start.UnixNano(), latency: s.now().Sub(start), method: ownedMethod(method),
		path: ownedPath(path), status: status, key: v.key, env: s.envForPath(path), reqID: reqID}
	if v.key != nil {
		e.env = v.key.env()
	}
	s.logs.add(e, start, v.err != nil)
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

// refusalBudget is how many refusals of one key with one status its
// organization's log keeps one by one in a minute. Beyond it they are
// counted into one entry, written when the minute is over, so that a key
// holder flooding refusals (expired, revoked, out of scope, rate-limited)
// adds at most refusalBudget+1 entries a minute per status to the ring and
// cannot push out the organization's other entries. Usage counts every one.
const refusalBudget = 10

// foldKey names the refusals of one key with one status.
type foldKey struct {
	key    *keyEntry
	status int
}

// fold is a minute of one key's refusals of one status.
type fold struct {
	minute int64
	logged int
	last   pendingEntry // the newest refusal past the budget; count says how many
}

// admitRefusal says whether a refusal of an identified key is logged one by
// one; if not, it is folded into its minute's count. Called with mu held.
func (lw *logWriter) admitRefusal(e *pendingEntry) bool {
	fk := foldKey{e.key, e.status}
	minute := e.at / int64(time.Minute)
	f := lw.folds[fk]
	if f == nil {
		f = &fold{minute: minute}
		lw.folds[fk] = f
	}
	if f.minute != minute {
		lw.appendFolded(f)
		*f = fold{minute: minute}
	}
	if f.logged < refusalBudget {
		f.logged++
		return true
	}
	count := f.last.count + 1
	f.last = *e
	f.last.count = count
	return false
}

// appendFolded queues a fold's count as an entry, if it has one. Called
// with mu held.
func (lw *logWriter) appendFolded(f *fold) {
	if f.last.count > 0 {
		lw.appendPending(f.last)
		f.last = pendingEntry{}
	}
}

// releaseFolds queues the counts of the minutes that are over, or with all
// of them every count, and forgets those folds.
func (lw *logWriter) releaseFolds(now time.Time, all bool) {
	minute := now.UnixNano() / int64(time.Minute)
	lw.mu.Lock()
	defer lw.mu.Unlock()
	for fk, f := range lw.folds {
		if all || f.minute < minute {
			lw.appendFolded(f)
			delete(lw.folds, fk)
		}
	}
}

func (lw *logWriter) appendPending(e pendingEntry) {
	if len(lw.pending) < maxPending {
		lw.pending = append(lw.pending, e)
	} else {
		lw.dropped.Add(1)
	}
}

func (lw *logWriter) add(e pendingEntry, start time.Time, refused bool) {
	lw.mu.Lock()
	if !refused || e.key == nil || lw.admitRefusal(&e) {
		lw.appendPending(e)
	}
	lw.classes[statusClass(e.status)]++
	if e.key != nil {
		uk := usageKey{org: e.key.org, live: e.key.live, hour: start.Unix() / 3600 * 3600}
		c := lw.usage[uk]
		if c == nil {
			c = new(usageCounts)
			lw.usage[uk] = c
		}
		c[statusClass(e.status)]++
		lw.touched[e.key] = struct{}{}
	}
	n := len(lw.pending)
	lw.mu.Unlock()
	if n == flushEarlyAt {
		select {
		case lw.kick <- struct{}{}:
		default:
		}
	}
}

// run flushes every interval and when kicked, and once more when ctx ends.
func (s *server) runFlusher(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.logs.kick:
		}
		if err := s.flush(); err != nil {
			s.log.Error().Err(err).Msg("flushing logs and counters")
		}
	}
}

// flushAll is the last flush before exit: the refusal counts of the
// minute under way are written too.
func (s *server) flushAll() error {
	s.logs.releaseFolds(s.now(), true)
	return s.flush()
}

// flush writes everything held in memory in one transaction. On failure the
// batch is put back, so a passing disk error loses nothing.
func (s *server) flush() (err error) {
	lw := s.logs
	lw.releaseFolds(s.now(), false)
	lw.flushMu.Lock()
	defer lw.flushMu.Unlock()
	start := time.Now()
	defer func() {
		lw.flushes.Add(1)
		lw.flushNanos.Add(uint64(time.Since(start)))
		if err != nil {
			lw.flushErrors.Add(1)
		}
	}()
	lw.mu.Lock()
	pending, usage, touched := lw.pending, lw.usage, lw.touched
	lw.pending, lw.spare = lw.spare[:0], nil
	lw.usage = make(map[usageKey]*usageCounts)
	lw.touched = make(map[*keyEntry]struct{})
	lw.mu.Unlock()
	buckets := s.limiter.takeDirty()
	if len(pending) == 0 && len(usage) == 0 && len(touched) == 0 && len(buckets) == 0 {
		return nil
	}
	now := s.now()
	prune := now.Sub(lw.lastPrune) > time.Hour
	err = s.store.db.Update(func(tx *bolt.Tx) error {
		if err := s.writeEntries(tx, pending); err != nil {
			return err
		}
		if err := writeUsage(tx, s.index, usage); err != nil {
			return err
		}
		if prune {
			if err := pruneUsage(tx, now.Add(-usageRetention)); err != nil {
				return err
			}
		}
		return writeTouched(tx, touched, buckets)
	})
	if err != nil {
		lw.putBack(pending, usage, touched)
		for id := range buckets {
			s.limiter.redirty(id)
		}
		return err
	}
	if prune {
		lw.lastPrune = now
	}
	clear(pending) // drop the key pointers
	lw.mu.Lock()
	lw.spare = pending[:0]
	lw.mu.Unlock()
	return nil
}

func (lw *logWriter) putBack(pending []pendingEntry, usage map[usageKey]*usageCounts, touched map[*keyEntry]struct{}) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if room := maxPending - len(lw.pending); len(pending) > room {
		lw.dropped.Add(uint64(len(pending) - max(room, 0)))
		pending = pending[:max(room, 0)]
	}
	lw.pending = append(pending, lw.pending...)
	for k, c := range usage {
		if cur := lw.usage[k]; cur != nil {
			for i := range c {
				cur[i] += c[i]
			}
		} else {
			lw.usage[k] = c
		}
	}
	for k := range touched {
		lw.touched[k] = struct{}{}
	}
}

// maxSegment is the most entries one bbolt value holds.
const maxSegment = 4096

// writeEntries appends each org's new entries to its ring as segments: one
// bbolt value of up to maxSegment entries, keyed by its first sequence
// number. One Put per segment instead of one per entry keeps the flush cheap
// at tens of thousands of requests a second. Entries older than the newest
// --log-retention are skipped here, hidden on read, and their segments
// deleted once wholly old; freed pages are reused, so the file stops growing.
func (s *server) writeEntries(tx *bolt.Tx, pending []pendingEntry) error {
	lw := s.logs
	// bbolt holds values until the commit: the segments share one buffer,
	// reused from flush to flush (flushMu).
	lw.segments = lw.segments[:0]
	byLog := map[string][]*pendingEntry{}
	for i := range pending {
		name := pending[i].logName(s.index)
		byLog[name] = append(byLog[name], &pending[i])
	}
	logs := tx.Bucket(bucketLogs)
	keep := s.cfg.logRetention
	for name, entries := range byLog {
		b, err := logs.CreateBucketIfNotExists([]byte(name))
		if err != nil {
			return err
		}
		first := b.Sequence() + 1
		if err := b.SetSequence(b.Sequence() + uint64(len(entries))); err != nil {
			return err
		}
		if skip := len(entries) - keep; skip > 0 {
			entries, first = entries[skip:], first+uint64(skip)
		}
		for len(entries) > 0 {
			n := min(len(entries), maxSegment)
			start := len(lw.segments)
			for _, e := range entries[:n] {
				lw.segments = e.appendBinary(lw.segments)
			}
			buf := lw.segments[start:]
			if err := b.Put(u64(first), buf); err != nil {
				return err
			}
			entries, first = entries[n:], first+uint64(n)
		}
		if err := trimRing(b, uint64(keep)); err != nil {
			return err
		}
	}
	return nil
}

func (e *pendingEntry) logName(ix *keyIndex) string {
	if e.key != nil {
		return ix.orgID(e.key)
	}
	return serverLog
}

// appendJSONString quotes s as JSON: control characters escaped, invalid
// UTF-8 replaced, as encoding/json does (less its HTML escaping).
func appendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			b = append(b, c)
			i++
			continue
		}
		if c < utf8.RuneSelf {
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

// trimRing deletes the segments whose entries are all older than the newest
// keep.
func trimRing(b *bolt.Bucket, keep uint64) error {
	last := b.Sequence()
	if last <= keep {
		return nil
	}
	cutoff := last - keep // entries with seq <= cutoff are gone
	var old [][]byte
	c := b.Cursor()
	for k, _ := c.First(); k != nil; {
		next, _ := c.Next()
		if next == nil || binary.BigEndian.Uint64(next)-1 > cutoff {
			break
		}
		old = append(old, append([]byte(nil), k...))
		k = next
	}
	for _, k := range old {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func usageRowKey(ix *keyIndex, k usageKey) []byte {
	return append([]byte(ix.orgIDs.get(k.org)+"/"+envName(k.live)+"/"), u64(uint64(k.hour))...)
}

func writeUsage(tx *bolt.Tx, ix *keyIndex, usage map[usageKey]*usageCounts) error {
	b := tx.Bucket(bucketUsage)
	for k, c := range usage {
		row := usageRowKey(ix, k)
		var buf [32]byte
		if old := b.Get(row); len(old) == 32 {
			copy(buf[:], old)
		}
		for i := range c {
			binary.BigEndian.PutUint64(buf[i*8:], binary.BigEndian.Uint64(buf[i*8:])+c[i])
		}
		if err := b.Put(row, buf[:]); err != nil {
			return err
		}
	}
	return nil
}

func pruneUsage(tx *bolt.Tx, before time.Time) error {
	b := tx.Bucket(bucketUsage)
	var old [][]byte
	err := b.ForEach(func(k, _ []byte) error {
		if len(k) > 8 && int64(binary.BigEndian.Uint64(k[len(k)-8:])) < before.Unix() {
			old = append(old, append([]byte(nil), k...))
		}
		return nil
	})
	for _, k := range old {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return err
}

func writeTouched(tx *bolt.Tx, touched map[*keyEntry]struct{}, buckets map[[8]byte]bucketState) error {
	lu := tx.Bucket(bucketLastUsed)
	for k := range touched {
		if err := lu.Put(appendKeyID(nil, k.id), u64(uint64(k.lastUsed.Load()))); err != nil {
			return err
		}
	}
	lb := tx.Bucket(bucketLimits)
	for id, st := range buckets {
		buf, err := json.Marshal(st)
		if err != nil {
			return err
		}
		if err := lb.Put(appendKeyID(nil, id), buf); err != nil {
			return err
		}
	}
	return nil
}

// loadWrittenBehind restores last-used times and bucket states at start.
func (s *server) loadWrittenBehind(lastUsed map[[8]byte]*atomic.Int64) error {
	return s.store.db.View(func(tx *bolt.Tx) error {
		err := tx.Bucket(bucketLastUsed).ForEach(func(k, v []byte) error {
			id, _ := parseKeyID(string(k))
			if lu := lastUsed[id]; lu != nil && len(v) == 8 {
				lu.Store(int64(binary.BigEndian.Uint64(v)))
			}
			return nil
		})
		if err != nil {
			return err
		}
		return tx.Bucket(bucketLimits).ForEach(func(k, v []byte) error {
			var st bucketState
			id, ok := parseKeyID(string(k))
			if ok && json.Unmarshal(v, &st) == nil {
				s.limiter.restore(id, st)
			}
			return nil
		})
	})
}

// logQuery is the filters and cursor of a logs request.
type logQuery struct {
	limit  int
	before uint64 // 0: from the newest
	keyID  string
	env    string
	status string // "429" or a class like "4xx"
}

func parseLogQuery(r *http.Request) (logQuery, *apiError) {
	v := r.URL.Query()
	q := logQuery{limit: defaultLogLimit, keyID: v.Get("key_id"), env: v.Get("env"), status: v.Get("status")}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxLogLimit {
			return q, invalidRequest(`Parameter "limit" must be between 1 and %d.`, maxLogLimit)
		}
		q.limit = n
	}
	if s := v.Get("before"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || n == 0 {
			return q, invalidRequest(`Parameter "before" must be a cursor from "next".`)
		}
		q.before = n
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
}

// readLogs walks one ring newest first from the cursor.
func (s *server) readLogs(org string, q logQuery) (logPage, error) {
	page := logPage{Entries: []logEntry{}}
	err := s.store.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLogs).Bucket([]byte(org))
		if b == nil {
			return nil
		}
		oldest := uint64(0) // entries at or below this are past the retention
		if last := b.Sequence(); last > uint64(s.cfg.logRetention) {
			oldest = last - uint64(s.cfg.logRetention)
		}
		c := b.Cursor()
		var k, v []byte
		if q.before == 0 {
			k, v = c.Last()
		} else {
			c.Seek(u64(q.before))
			k, v = c.Prev()
		}
		for ; k != nil; k, v = c.Prev() {
			done, err := page.collect(v, binary.BigEndian.Uint64(k), oldest, orgOf(org), &q)
			if done || err != nil {
				return err
			}
		}
		return nil
	})
	return page, err
}

// collect adds a segment's matching entries, newest first; done says the
// page is full.
func (page *logPage) collect(segment []byte, first, oldest uint64, org string, q *logQuery) (done bool, err error) {
	offsets, err := entryOffsets(segment)
	if err != nil {
		return true, err
	}
	for i := len(offsets) - 1; i >= 0; i-- {
		seq := first + uint64(i)
		if seq <= oldest {
			return true, nil
		}
		if q.before != 0 && seq >= q.before {
			continue
		}
		e := decodeEntry(segment[offsets[i]:], seq, org)
		if !q.matches(&e) {
			continue
		}
		if len(page.Entries) == q.limit {
			next := page.Entries[len(page.Entries)-1].ID
			page.Next = &next
			return true, nil
		}
		page.Entries = append(page.Entries, e)
	}
	return false, nil
}

func (s *server) serveLogs(w http.ResponseWriter, r *http.Request, org string) *apiError {
	q, aerr := parseLogQuery(r)
	if aerr != nil {
		return aerr
	}
	if err := s.flush(); err != nil { // so a reader sees its own requests
		return s.internal(err, "flushing logs")
	}
	page, err := s.readLogs(org, q)
	if err != nil {
		return s.internal(err, "reading logs")
	}
	writeJSON(w, 200, page)
	return nil
}

func (s *server) orgLogs(w http.ResponseWriter, r *http.Request, p httprouter.Params, _ caller) *apiError {
	return s.serveLogs(w, r, p.ByName("org"))
}

func (s *server) serverLogs(w http.ResponseWriter, r *http.Request, _ httprouter.Params, _ caller) *apiError {
	return s.serveLogs(w, r, serverLog)
}

type usageBucket struct {
	Hour    string `json:"hour"`
	Env     string `json:"env"`
	OK      uint64 `json:"2xx"`
	Client  uint64 `json:"4xx"`
	Limited uint64 `json:"429"`
	Server  uint64 `json:"5xx"`
}

const maxUsageHours = 90 * 24

// orgUsage answers the hours that saw traffic, oldest first, test and live apart.
func (s *server) orgUsage(w http.ResponseWriter, r *http.Request, p httprouter.Params, _ caller) *apiError {
	q := r.URL.Query()
	env := q.Get("env")
	if env != "" && env != envTest && env != envLive {
		return invalidRequest(`Parameter "env" must be "test" or "live".`)
	}
	hours := 48
	if h := q.Get("hours"); h != "" {
		n, err := strconv.Atoi(h)
		if err != nil || n < 1 || n > maxUsageHours {
			return invalidRequest(`Parameter "hours" must be between 1 and %d.`, maxUsageHours)
		}
		hours = n
	}
	if err := s.flush(); err != nil {
		return s.internal(err, "flushing usage")
	}
	from := s.now().Unix()/3600*3600 - int64(hours-1)*3600
	buckets, err := s.readUsage(p.ByName("org"), env, from)
	if err != nil {
		return s.internal(err, "reading usage")
	}
	writeJSON(w, 200, map[string][]usageBucket{"buckets": buckets})
	return nil
}

func (s *server) readUsage(orgID, env string, from int64) ([]usageBucket, error) {
	out := []usageBucket{}
	err := s.store.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketUsage).Cursor()
		for _, e := range []string{envTest, envLive} {
			if env != "" && env != e {
				continue
			}
			prefix := []byte(orgID + "/" + e + "/")
			for k, v := c.Seek(append(prefix, u64(uint64(from))...)); k != nil && hasPrefix(k, prefix); k, v = c.Next() {
				hour := int64(binary.BigEndian.Uint64(k[len(prefix):]))
				out = append(out, usageBucket{Hour: time.Unix(hour, 0).UTC().Format(time.RFC3339), Env: e,
					OK: binary.BigEndian.Uint64(v), Client: binary.BigEndian.Uint64(v[8:]),
					Limited: binary.BigEndian.Uint64(v[16:]), Server: binary.BigEndian.Uint64(v[24:])})
			}
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool {
		return out[i].Hour < out[j].Hour || out[i].Hour == out[j].Hour && out[i].Env < out[j].Env
	})
	return out, err
}
