package main

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// rateLimit is one window: at most Limit requests per Window, as a token
// bucket of capacity Limit that refills Limit tokens per Window.
type rateLimit struct {
	Limit  int64  `json:"limit"`
	Window string `json:"window"`
}

const (
	maxWindow  = 366 * 24 * time.Hour
	maxLimit   = 1_000_000_000
	maxWindows = 8 // per key
)

// seconds is the window length; windows are validated to whole seconds.
func (r rateLimit) seconds() int64 {
	d, _ := parseWindow(r.Window)
	return int64(d / time.Second)
}

// parseWindow accepts Go durations ("90s", "1m", "1h") and days ("1d").
func parseWindow(s string) (time.Duration, error) {
	var d time.Duration
	var err error
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n int64
		n, err = strconv.ParseInt(days, 10, 32)
		d = time.Duration(n) * 24 * time.Hour
	} else {
		d, err = time.ParseDuration(s)
	}
	switch {
	case err != nil:
		return 0, fmt.Errorf("window %q is not a duration like 1m or 1h", s)
	case d < time.Second || d%time.Second != 0:
		return 0, fmt.Errorf("window %q must be a whole number of seconds, at least 1s", s)
	case d > maxWindow:
		return 0, fmt.Errorf("window %q is longer than 366d", s)
	}
	return d, nil
}

// windowName is the canonical name of a window, as in RateLimit-Policy.
func windowName(d time.Duration) string {
	s := int64(d / time.Second)
	switch {
	case s%86400 == 0:
		return strconv.FormatInt(s/86400, 10) + "d"
	case s%3600 == 0:
		return strconv.FormatInt(s/3600, 10) + "h"
	case s%60 == 0:
		return strconv.FormatInt(s/60, 10) + "m"
	}
	return strconv.FormatInt(s, 10) + "s"
}

// normalizeLimits validates windows and gives each its canonical name.
func normalizeLimits(limits []rateLimit) ([]rateLimit, error) {
	if len(limits) > maxWindows {
		return nil, fmt.Errorf("at most %d windows", maxWindows)
	}
	out := make([]rateLimit, len(limits))
	for i, r := range limits {
		if r.Limit < 1 || r.Limit > maxLimit {
			return nil, fmt.Errorf("limit must be between 1 and %d", maxLimit)
		}
		d, err := parseWindow(r.Window)
		if err != nil {
			return nil, err
		}
		out[i] = rateLimit{Limit: r.Limit, Window: windowName(d)}
	}
	return out, nil
}

// parseRateLimits reads the --rate-limits list, "5/1m,100/1h".
func parseRateLimits(spec string) ([]rateLimit, error) {
	var limits []rateLimit
	for _, item := range strings.Split(spec, ",") {
		n, w, ok := strings.Cut(strings.TrimSpace(item), "/")
		limit, err := strconv.ParseInt(n, 10, 64)
		if !ok || err != nil {
			return nil, fmt.Errorf("rate limit %q is not LIMIT/DURATION like 5/1m", item)
		}
		limits = append(limits, rateLimit{Limit: limit, Window: w})
	}
	limits, err := normalizeLimits(limits)
	if err != nil {
		return nil, fmt.Errorf("rate limits %q: %w", spec, err)
	}
	if len(limits) == 0 {
		return nil, fmt.Errorf("rate limits %q: at least one window", spec)
	}
	return limits, nil
}

// limitsSignature names a set of windows, so a persisted bucket state built
// for other windows is not reused.
func limitsSignature(limits []rateLimit) string {
	var b strings.Builder
	for _, r := range limits {
		b.WriteString(strconv.FormatInt(r.Limit, 10))
		b.WriteByte('/')
		b.WriteString(r.Window)
		b.WriteByte(',')
	}
	return b.String()
}

// limitSet is a set of windows with what the hot path needs of it computed
// once: its signature, refill rates and header values. Header value slices
// have len == cap, so a later append (the proxy adds upstream headers) copies
// instead of writing into the shared array.
type limitSet struct {
	limits     []rateLimit
	sig        string
	perNano    []float64 // tokens per nanosecond
	secs       []float64 // window lengths in seconds
	policy     []string  // RateLimit-Policy
	limitValue [][]string
}

func newLimitSet(limits []rateLimit) *limitSet {
	set := &limitSet{limits: limits, sig: limitsSignature(limits),
		policy: []string{policyHeader(limits)}}
	for _, r := range limits {
		set.perNano = append(set.perNano, float64(r.Limit)/float64(r.seconds()*int64(time.Second)))
		set.secs = append(set.secs, float64(r.seconds()))
		set.limitValue = append(set.limitValue, []string{strconv.FormatInt(r.Limit, 10)})
	}
	return set
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

// bucketState is the persisted state of one key's buckets.
type bucketState struct {
	Signature string    `json:"sig"`
	Tokens    []float64 `json:"tokens"`
	Updated   int64     `json:"updated"` // Unix nanoseconds
}

type keyBuckets struct {
	mu    sync.Mutex
	state bucketState
	dirty bool
}

// decision is the outcome of one take, with what the headers report; for
// a key with credits (credits.go), also the credits left.
type decision struct {
	allowed    bool
	hasCredits bool
	set        *limitSet
	tightest   int   // index of the window with the fewest tokens left
	remaining  int64 // whole tokens left in that window
	reset      int64 // seconds until that window is full again
	retryAfter int64 // when denied: seconds until a token is back
	credits    int64 // with hasCredits: credits left
	refillIn   int64 // usage_exceeded: seconds until the refill; 0: none
}

// limiter holds every key's buckets in memory; the write-behind flusher
// persists the ones that changed.
type limiter struct {
	mu    sync.Mutex
	keys  map[[8]byte]*keyBuckets
	dirty [][8]byte
}

func newLimiter() *limiter {
	return &limiter{keys: make(map[[8]byte]*keyBuckets)}
}

// restore installs persisted state at start.
func (l *limiter) restore(keyID [8]byte, st bucketState) {
	l.mu.Lock()
	l.keys[keyID] = &keyBuckets{state: st}
	l.mu.Unlock()
}

func (l *limiter) buckets(keyID [8]byte) *keyBuckets {
	l.mu.Lock()
	kb := l.keys[keyID]
	if kb == nil {
		kb = &keyBuckets{}
		l.keys[keyID] = kb
	}
	l.mu.Unlock()
	return kb
}

// take removes one token from every window, or from none when any window is
// empty. With consume false it only reports the state (for requests that
// were refused before the rate limit). windows, if not nil, receives every
// window's tokens after the take.
func (l *limiter) take(keyID [8]byte, set *limitSet, now int64, consume bool, windows *[maxWindows]float64) decision {
	limits := set.limits
	kb := l.buckets(keyID)
	kb.mu.Lock()
	defer kb.mu.Unlock()
	refill(&kb.state, set, now)
	d := decision{allowed: true, set: set}
	for i := range limits {
		if kb.state.Tokens[i] < 1 {
			d.allowed = false
		}
	}
	if consume && d.allowed {
		for i := range limits {
			kb.state.Tokens[i]--
		}
		if !kb.dirty {
			kb.dirty = true
			l.markDirty(keyID)
		}
	}
	d.report(kb.state.Tokens)
	if windows != nil {
		copy(windows[:], kb.state.Tokens)
	}
	return d
}

func (l *limiter) markDirty(keyID [8]byte) {
	l.mu.Lock()
	l.dirty = append(l.dirty, keyID)
	l.mu.Unlock()
}

// refill brings the buckets up to now, starting full for a new key or
// changed windows.
func refill(st *bucketState, set *limitSet, now int64) {
	limits := set.limits
	if st.Signature != set.sig || len(st.Tokens) != len(limits) {
		st.Signature = set.sig
		st.Tokens = make([]float64, len(limits))
		for i, r := range limits {
			st.Tokens[i] = float64(r.Limit)
		}
		st.Updated = now
		return
	}
	elapsed := float64(now - st.Updated)
	if elapsed <= 0 {
		return
	}
	for i, r := range limits {
		st.Tokens[i] = min(float64(r.Limit), st.Tokens[i]+elapsed*set.perNano[i])
	}
	st.Updated = now
}

// report picks the window to show: the fewest whole tokens left; when
// denied, the empty window that takes longest to give a token back.
func (d *decision) report(tokens []float64) {
	d.tightest = 0
	limits := d.set.limits
	for i := range limits {
		if !d.allowed {
			if tokens[i] < 1 && (tokens[d.tightest] >= 1 || d.secondsToToken(tokens, i) > d.secondsToToken(tokens, d.tightest)) {
				d.tightest = i
			}
			continue
		}
		if int64(tokens[i]) < int64(tokens[d.tightest]) {
			d.tightest = i
		}
	}
	i := d.tightest
	d.remaining = int64(tokens[i])
	d.reset = d.set.resetIn(i, tokens[i])
	if !d.allowed {
		d.retryAfter = max(1, d.secondsToToken(tokens, i))
	}
}

func (d *decision) secondsToToken(tokens []float64, i int) int64 {
	return ceilSeconds((1 - tokens[i]) * d.set.secs[i] / float64(d.set.limits[i].Limit))
}

// resetIn is the seconds until window i, with tokens left, is full again.
func (set *limitSet) resetIn(i int, tokens float64) int64 {
	r := set.limits[i]
	return ceilSeconds((float64(r.Limit) - tokens) * set.secs[i] / float64(r.Limit))
}

func ceilSeconds(s float64) int64 {
	if s <= 0 {
		return 0
	}
	n := int64(s)
	if float64(n) < s-1e-9 {
		n++
	}
	return n
}

// message is the 429 message of SPEC 3 for the denying window.
func (d *decision) message() string {
	switch d.set.secs[d.tightest] {
	case 60:
		return "Rate limit exceeded. Wait a minute before retrying."
	case 3600:
		return "Hourly rate limit exceeded."
	}
	return "Rate limit exceeded for the " + d.set.limits[d.tightest].Window + " window."
}

// takeDirty returns the states changed since the last call, for the flusher.
func (l *limiter) takeDirty() map[[8]byte]bucketState {
	l.mu.Lock()
	ids := l.dirty
	l.dirty = nil
	l.mu.Unlock()
	out := make(map[[8]byte]bucketState, len(ids))
	for _, id := range ids {
		kb := l.buckets(id)
		kb.mu.Lock()
		st := kb.state
		st.Tokens = append([]float64(nil), st.Tokens...)
		kb.dirty = false
		kb.mu.Unlock()
		out[id] = st
	}
	return out
}

// redirty marks a key's state for the next flush again, after a flush of it
// failed; the state in memory is the newest anyway.
func (l *limiter) redirty(keyID [8]byte) {
	kb := l.buckets(keyID)
	kb.mu.Lock()
	if !kb.dirty {
		kb.dirty = true
		l.markDirty(keyID)
	}
	kb.mu.Unlock()
}
