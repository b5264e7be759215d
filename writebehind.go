package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// writeBehind holds what the guarded surface writes behind its answers: log
// entries, usage counts (each key's, and from them its organization's),
// last-used times, and (from the limiter and the credit book) rate-limit
// state and credit spending; and the admin tokens' last use, so that no
// admin request waits on a write of its own either. The request path adds to memory under one short lock; Flush hands
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
	credits   *creditBook
	retention int // --log-retention
	now       func() time.Time
	// shareCredits, on a cluster node, hands the credit spending a flush
	// wrote to the other nodes (owners.go); nil on one node.
	shareCredits func(map[[8]byte]creditState)

	mu      sync.Mutex
	pending []pendingEntry
	// usage is every identified request's count by key and hour: the keys
	// in it are the keys whose last-used time changed, and a flush adds
	// their counts up into their organizations' rows.
	usage map[keyHour]*usageCounts
	// lastRowKey and lastRow are the usage row Add found last; Flush,
	// which replaces usage, forgets them.
	lastRowKey keyHour
	lastRow    *usageCounts
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

func newWriteBehind(st *store, ix *keyIndex, lim *limiter, admins *adminTokens, credits *creditBook,
	retention int, now func() time.Time) *writeBehind {
	return &writeBehind{
		store: st, index: ix, limiter: lim, admins: admins, credits: credits, retention: retention, now: now,
		usage: make(map[keyHour]*usageCounts),
		folds: make(map[foldKey]*fold),
		kick:  make(chan struct{}, 1),
	}
}

// keyHour names one key's counts of one hour (Unix seconds at its start).
type keyHour struct {
	key  *keyEntry
	hour int64
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

// usageCounts is the row of kh, made if new. Requests come in runs of one
// key, so the last row found is kept at hand: a map lookup with a struct
// key was a third of Add's time. Called with mu held.
func (wb *writeBehind) usageCounts(uk keyHour) *usageCounts {
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
		wb.usageCounts(keyHour{key: e.key, hour: start.Unix() / 3600 * 3600})[statusClass(e.status)]++
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
	pending, usage := wb.pending, wb.usage
	wb.pending, wb.spare = wb.spare[:0], nil
	wb.usage, wb.lastRow = make(map[keyHour]*usageCounts), nil
	wb.mu.Unlock()
	buckets := wb.limiter.takeDirty()
	credits := wb.credits.takeDirty()
	tokenUses := wb.admins.takeUsed()
	if len(pending) == 0 && len(usage) == 0 && len(buckets) == 0 && len(credits) == 0 && len(tokenUses) == 0 {
		return nil
	}
	now := wb.now()
	b := wb.batch(pending, usage, buckets, credits)
	b.tokenUse = tokenUses
	if prune := now.Sub(wb.lastPrune) > time.Hour; prune {
		b.pruneUsageBefore = now.Add(-usageRetention).Unix()
		b.pruneKeyUsageBefore = now.Add(-keyUsageRetention).Unix()
	}
	if err = wb.store.WriteBehind(b); err != nil {
		wb.putBack(pending, usage)
		for id := range buckets {
			wb.limiter.redirty(id)
		}
		wb.admins.putBackUsed(tokenUses)
		for id := range credits {
			wb.credits.redirty(id)
		}
		return err
	}
	if wb.shareCredits != nil && len(credits) > 0 {
		wb.shareCredits(credits)
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
// rows (each key's, and their sums by organization) and last-used times by
// their keys.
func (wb *writeBehind) batch(pending []pendingEntry, usage map[keyHour]*usageCounts,
	buckets map[[8]byte]bucketState, credits map[[8]byte]creditState) *writeBatch {
	b := &writeBatch{logs: map[string][]*pendingEntry{}, retention: wb.retention,
		segments: wb.segments[:0], usage: make(map[string]*usageCounts),
		keyUsage: make(map[string]*usageCounts, len(usage)),
		lastUsed: make(map[[8]byte]int64, len(usage)), buckets: buckets, credits: credits}
	for i := range pending {
		name := pending[i].logName(wb.index)
		b.logs[name] = append(b.logs[name], &pending[i])
	}
	for kh, c := range usage {
		k := kh.key
		row := string(usageRowKey(wb.index, usageKey{org: k.org, live: k.live, hour: kh.hour}))
		sum := b.usage[row]
		if sum == nil {
			sum = new(usageCounts)
			b.usage[row] = sum
		}
		for i := range c {
			sum[i] += c[i]
		}
		b.keyUsage[string(keyUsageRowKey(kh.hour, wb.index.orgID(k), k.keyID()))] = c
		b.lastUsed[k.id] = k.lastUsed.Load()
	}
	return b
}

func (wb *writeBehind) putBack(pending []pendingEntry, usage map[keyHour]*usageCounts) {
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
}
