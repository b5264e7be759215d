package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// writeBehind holds what the guarded surface writes behind its answers: log
// entries, usage counts, last-used times and (from the limiter) rate-limit
// state; and the admin tokens' last use, so that no admin request waits
// on a write of its own either. The request path adds to memory under one short lock; Flush hands
// everything to the store, which writes it in one transaction; Run flushes
// every interval and once more when it ends. When the disk falls behind by
// more than maxPending entries, new log entries are dropped and counted;
// usage counts, rate-limit state and last-used times are aggregates of
// bounded size and are never dropped.
type writeBehind struct {
	store     *store
	index     *keyIndex // the org ids of entries and usage rows
	limiter   *limiter
	admins    *adminTokens // their last use
	retention int          // --log-retention
	now       func() time.Time

	mu      sync.Mutex
	pending []pendingEntry
	usage   map[usageKey]*usageCounts
	// lastRowKey and lastRow are the usage row Add found last; Flush,
	// which replaces usage, forgets them.
	lastRowKey usageKey
	lastRow    *usageCounts
	touched    map[*keyEntry]struct{}
	folds      map[foldKey]*fold // identified keys' refusals past the budget
	dropped    atomic.Uint64
	kick       chan struct{}
	classes    usageCounts // every guarded request by status class, for /metrics

	flushes, flushErrors, flushNanos atomic.Uint64

	flushMu   sync.Mutex // one flush at a time
	lastPrune time.Time
	spare     []pendingEntry // the other half of pending's double buffer
	segments  []byte         // encoded entries of the flush under way
}

func newWriteBehind(st *store, ix *keyIndex, lim *limiter, admins *adminTokens, retention int, now func() time.Time) *writeBehind {
	return &writeBehind{
		store: st, index: ix, limiter: lim, admins: admins, retention: retention, now: now,
		usage:   make(map[usageKey]*usageCounts),
		touched: make(map[*keyEntry]struct{}),
		folds:   make(map[foldKey]*fold),
		kick:    make(chan struct{}, 1),
	}
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
func (wb *writeBehind) admitRefusal(e *pendingEntry) bool {
	fk := foldKey{e.key, e.status}
	minute := e.at / int64(time.Minute)
	f := wb.folds[fk]
	if f == nil {
		f = &fold{minute: minute}
		wb.folds[fk] = f
	}
	if f.minute != minute {
		wb.appendFolded(f)
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
func (wb *writeBehind) appendFolded(f *fold) {
	if f.last.count > 0 {
		wb.appendPending(f.last)
		f.last = pendingEntry{}
	}
}

// releaseFolds queues the counts of the minutes that are over, or with all
// of them every count, and forgets those folds.
func (wb *writeBehind) releaseFolds(now time.Time, all bool) {
	minute := now.UnixNano() / int64(time.Minute)
	wb.mu.Lock()
	defer wb.mu.Unlock()
	for fk, f := range wb.folds {
		if all || f.minute < minute {
			wb.appendFolded(f)
			delete(wb.folds, fk)
		}
	}
}

func (wb *writeBehind) appendPending(e pendingEntry) {
	if len(wb.pending) < maxPending {
		wb.pending = append(wb.pending, e)
	} else {
		wb.dropped.Add(1)
	}
}

// usageCounts is the row of uk, made if new. Requests come in runs of one
// organization and hour, so the last row found is kept at hand: a map
// lookup with a struct key was a third of Add's time. Called with mu held.
func (wb *writeBehind) usageCounts(uk usageKey) *usageCounts {
	if wb.lastRow != nil && wb.lastRowKey == uk {
		return wb.lastRow
	}
	c := wb.usage[uk]
	if c == nil {
		c = new(usageCounts)
		wb.usage[uk] = c
	}
	wb.lastRowKey, wb.lastRow = uk, c
	return c
}

func (wb *writeBehind) Add(e pendingEntry, start time.Time, refused bool) {
	wb.mu.Lock()
	if !refused || e.key == nil || wb.admitRefusal(&e) {
		wb.appendPending(e)
	}
	wb.classes[statusClass(e.status)]++
	if e.key != nil {
		wb.usageCounts(usageKey{org: e.key.org, live: e.key.live, hour: start.Unix() / 3600 * 3600})[statusClass(e.status)]++
		if e.touched {
			wb.touched[e.key] = struct{}{}
		}
	}
	n := len(wb.pending)
	wb.mu.Unlock()
	if n == flushEarlyAt {
		select {
		case wb.kick <- struct{}{}:
		default:
		}
	}
}

// Run flushes every interval and when kicked until ctx ends, and then once
// more with FlushAll: what the last requests added is written.
func (wb *writeBehind) Run(ctx context.Context, interval time.Duration, log zerolog.Logger) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return wb.FlushAll()
		case <-t.C:
		case <-wb.kick:
		}
		if err := wb.Flush(); err != nil {
			log.Error().Err(err).Msg("flushing logs and counters")
		}
	}
}

// FlushAll is the last flush before exit: the refusal counts of the
// minute under way are written too.
func (wb *writeBehind) FlushAll() error {
	wb.releaseFolds(wb.now(), true)
	return wb.Flush()
}

// Flush writes everything held in memory in one transaction. On failure the
// batch is put back, so a passing disk error loses nothing.
func (wb *writeBehind) Flush() (err error) {
	wb.releaseFolds(wb.now(), false)
	wb.flushMu.Lock()
	defer wb.flushMu.Unlock()
	start := time.Now()
	defer func() {
		wb.flushes.Add(1)
		wb.flushNanos.Add(uint64(time.Since(start)))
		if err != nil {
			wb.flushErrors.Add(1)
		}
	}()
	wb.mu.Lock()
	pending, usage, touched := wb.pending, wb.usage, wb.touched
	wb.pending, wb.spare = wb.spare[:0], nil
	wb.usage, wb.lastRow = make(map[usageKey]*usageCounts), nil
	wb.touched = make(map[*keyEntry]struct{})
	wb.mu.Unlock()
	buckets := wb.limiter.takeDirty()
	tokenUses := wb.admins.takeUsed()
	if len(pending) == 0 && len(usage) == 0 && len(touched) == 0 && len(buckets) == 0 && len(tokenUses) == 0 {
		return nil
	}
	now := wb.now()
	b := wb.batch(pending, usage, touched, buckets)
	b.tokenUse = tokenUses
	if prune := now.Sub(wb.lastPrune) > time.Hour; prune {
		b.pruneUsageBefore = now.Add(-usageRetention).Unix()
	}
	if err = wb.store.WriteBehind(b); err != nil {
		wb.putBack(pending, usage, touched)
		for id := range buckets {
			wb.limiter.redirty(id)
		}
		wb.admins.putBackUsed(tokenUses)
		return err
	}
	if b.pruneUsageBefore != 0 {
		wb.lastPrune = now
	}
	wb.segments = b.segments
	clear(pending) // drop the key pointers
	wb.mu.Lock()
	wb.spare = pending[:0]
	wb.mu.Unlock()
	return nil
}

// batch is what a flush hands the store, by name: entries by log, usage
// and last-used rows by their keys.
func (wb *writeBehind) batch(pending []pendingEntry, usage map[usageKey]*usageCounts,
	touched map[*keyEntry]struct{}, buckets map[[8]byte]bucketState) *writeBatch {
	b := &writeBatch{logs: map[string][]*pendingEntry{}, retention: wb.retention,
		segments: wb.segments[:0], usage: make(map[string]*usageCounts, len(usage)),
		lastUsed: make(map[[8]byte]int64, len(touched)), buckets: buckets}
	for i := range pending {
		name := pending[i].logName(wb.index)
		b.logs[name] = append(b.logs[name], &pending[i])
	}
	for k, c := range usage {
		b.usage[string(usageRowKey(wb.index, k))] = c
	}
	for k := range touched {
		b.lastUsed[k.id] = k.lastUsed.Load()
	}
	return b
}

func (wb *writeBehind) putBack(pending []pendingEntry, usage map[usageKey]*usageCounts, touched map[*keyEntry]struct{}) {
	wb.mu.Lock()
	defer wb.mu.Unlock()
	if room := maxPending - len(wb.pending); len(pending) > room {
		wb.dropped.Add(uint64(len(pending) - max(room, 0)))
		pending = pending[:max(room, 0)]
	}
	wb.pending = append(pending, wb.pending...)
	for k, c := range usage {
		if cur := wb.usage[k]; cur != nil {
			for i := range c {
				cur[i] += c[i]
			}
		} else {
			wb.usage[k] = c
		}

	}
	for k := range touched {
		wb.touched[k] = struct{}{}
	}
}
