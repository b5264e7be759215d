package main

import (
	"math/rand/v2"
	"sync"
	"time"
)

// Credits make a usage-limited key: each allowed request spends one (a
// verify call its "cost"), and at zero the key is refused with 429
// usage_exceeded until a refill, if it has one, sets remaining to the
// refill's amount again, daily at 00:00 UTC or monthly on a day (a day past
// a month's end is its last day).
//
// The setting (remaining, refill) is the key record's, committed like the
// rest of it; the spending is written behind like the rate limits: kept
// here, flushed with the logs every --flush-interval, and read back at
// start. A crash loses at most one flush interval of spending, which the
// key can then spend again; never more, and never a setting.

const (
	refillDaily   = "daily"
	refillMonthly = "monthly"

	// maxCredits keeps every count exact in a JavaScript number (2^53).
	maxCredits = 1_000_000_000_000_000
)

// creditSetting is a key's credits as its record keeps them: what an admin
// set, when, and a generation that tells the spending written behind for
// this setting from that of an earlier one.
type creditSetting struct {
	Remaining int64         `json:"remaining"`
	Refill    *creditRefill `json:"refill,omitempty"`
	Gen       uint64        `json:"gen"`
	SetAt     int64         `json:"set_at"`
}

// creditRefill is a schedule: Amount credits daily, or monthly on Day.
type creditRefill struct {
	Amount   int64  `json:"amount"`
	Interval string `json:"interval"`
	Day      int    `json:"day,omitempty"` // monthly only, 1–31
}

// creditsRequest is "credits" in a create or PATCH body.
type creditsRequest struct {
	Remaining *int64         `json:"remaining"`
	Refill    *refillRequest `json:"refill"`
}

type refillRequest struct {
	Amount   *int64 `json:"amount"`
	Interval string `json:"interval"`
	Day      *int   `json:"day"`
}

// creditsView is a key's credits as the API shows them: remaining as it is
// now.
type creditsView struct {
	Remaining int64         `json:"remaining"`
	Refill    *creditRefill `json:"refill"`
}

// validCredits checks a "credits" value and makes it a new setting.
func validCredits(req *creditsRequest, now time.Time) (*creditSetting, *apiError) {
	if req.Remaining == nil {
		return nil, invalidRequest(`Field "credits" needs "remaining", a whole number of requests.`)
	}
	if *req.Remaining < 0 || *req.Remaining > maxCredits {
		return nil, invalidRequest(`Field "credits": "remaining" must be between 0 and %d.`, int64(maxCredits))
	}
	set := &creditSetting{Remaining: *req.Remaining, Gen: rand.Uint64() | 1, SetAt: now.UnixNano()}
	if r := req.Refill; r != nil {
		if r.Amount == nil || *r.Amount < 1 || *r.Amount > maxCredits {
			return nil, invalidRequest(`Field "credits": "refill" needs "amount" between 1 and %d.`, int64(maxCredits))
		}
		set.Refill = &creditRefill{Amount: *r.Amount, Interval: r.Interval}
		switch r.Interval {
		case refillDaily:
			if r.Day != nil {
				return nil, invalidRequest(`Field "credits": "refill" takes "day" only with "interval":"monthly".`)
			}
		case refillMonthly:
			set.Refill.Day = 1
			if r.Day != nil {
				if *r.Day < 1 || *r.Day > 31 {
					return nil, invalidRequest(`Field "credits": "refill" "day" must be between 1 and 31.`)
				}
				set.Refill.Day = *r.Day
			}
		default:
			return nil, invalidRequest(`Field "credits": "refill" "interval" must be "daily" or "monthly".`)
		}
	}
	return set, nil
}

// nextRefill is the first refill of r strictly after t (Unix nanoseconds),
// or 0 for none.
func nextRefill(r *creditRefill, t int64) int64 {
	if r == nil {
		return 0
	}
	at := time.Unix(0, t).UTC()
	switch r.Interval {
	case refillDaily:
		return time.Date(at.Year(), at.Month(), at.Day()+1, 0, 0, 0, 0, time.UTC).UnixNano()
	case refillMonthly:
		if this := refillDate(at.Year(), at.Month(), r.Day); this.After(at) {
			return this.UnixNano()
		}
		return refillDate(at.Year(), at.Month()+1, r.Day).UnixNano()
	}
	return 0
}

// refillDate is day of month m at 00:00 UTC, or the month's last day when
// it has fewer days.
func refillDate(year int, m time.Month, day int) time.Time {
	first := time.Date(year, m, 1, 0, 0, 0, 0, time.UTC) // normalizes month 13
	last := first.AddDate(0, 1, -1).Day()
	return time.Date(first.Year(), first.Month(), min(day, last), 0, 0, 0, 0, time.UTC)
}

// keyCredits is one key's credits as they are now.
type keyCredits struct {
	id         [8]byte
	mu         sync.Mutex
	gen        uint64
	remaining  int64
	refill     *creditRefill // never changed; replaced by configure
	refilledAt int64         // when remaining was last set or refilled
	next       int64         // the next refill, 0: none
	dirty      bool
}

// refillTo applies the refill due by now, if any; it says whether remaining
// changed. Called with mu held.
func (kc *keyCredits) refillTo(now int64) bool {
	if kc.next == 0 || now < kc.next {
		return false
	}
	kc.remaining = kc.refill.Amount
	kc.refilledAt = now
	kc.next = nextRefill(kc.refill, now)
	return true
}

// creditBook holds every usage-limited key's credits; the write-behind
// flusher persists those that changed, as it does the limiter's buckets.
type creditBook struct {
	mu    sync.Mutex
	keys  map[[8]byte]*keyCredits
	dirty [][8]byte
}

func newCreditBook() *creditBook { return &creditBook{keys: make(map[[8]byte]*keyCredits)} }

// configure makes id's credits follow set, and returns them. The same
// setting (its generation) keeps what was spent; a new one starts from
// its remaining.
func (b *creditBook) configure(id [8]byte, set *creditSetting) *keyCredits {
	b.mu.Lock()
	kc := b.keys[id]
	if kc == nil {
		kc = &keyCredits{id: id}
		b.keys[id] = kc
	}
	b.mu.Unlock()
	kc.mu.Lock()
	defer kc.mu.Unlock()
	if kc.gen != set.Gen {
		kc.gen, kc.remaining, kc.refilledAt = set.Gen, set.Remaining, set.SetAt
		kc.refill = set.Refill
		kc.next = nextRefill(set.Refill, set.SetAt)
	}
	return kc
}

// drop forgets id's credits: the key has no usage limit any more.
func (b *creditBook) drop(id [8]byte) {
	b.mu.Lock()
	delete(b.keys, id)
	b.mu.Unlock()
}

// restore installs spending written behind, at start, if it counts from
// the setting the key has.
func (b *creditBook) restore(id [8]byte, st creditState) { b.install(id, st, false) }

// merge takes spending another node shared, if it counts from the same
// setting and is further along: a later refill, or less remaining since
// the same one. Spending only lowers remaining between refills.
func (b *creditBook) merge(id [8]byte, st creditState) { b.install(id, st, true) }

// install makes id's credits st if st counts from the key's setting and,
// with onlyFurther, is further along than what the book has.
func (b *creditBook) install(id [8]byte, st creditState, onlyFurther bool) {
	b.mu.Lock()
	kc := b.keys[id]
	b.mu.Unlock()
	if kc == nil {
		return
	}
	kc.mu.Lock()
	defer kc.mu.Unlock()
	further := st.refilledAt > kc.refilledAt || st.refilledAt == kc.refilledAt && st.remaining < kc.remaining
	if kc.gen == st.gen && (further || !onlyFurther) {
		kc.remaining, kc.refilledAt = st.remaining, st.refilledAt
		kc.next = nextRefill(kc.refill, st.refilledAt)
	}
}

// markDirty queues kc for the next flush. Called with kc.mu held.
func (b *creditBook) markDirty(kc *keyCredits) {
	if kc.dirty {
		return
	}
	kc.dirty = true
	b.mu.Lock()
	b.dirty = append(b.dirty, kc.id)
	b.mu.Unlock()
}

// take is the credit check and the rate limit as one all-or-none step,
// under the key's credit lock: with allowed (every earlier check passed)
// and cost credits left, it takes the windows' tokens and, if they allow,
// spends cost; with fewer left it refuses (exceeded) and takes nothing.
// The decision reports the credits left after it.
func (b *creditBook) take(kc *keyCredits, cost int64, allowed bool, lim *limiter, id [8]byte, set *limitSet,
	now int64, windows *[maxWindows]float64) (d decision, exceeded bool) {
	kc.mu.Lock()
	defer kc.mu.Unlock()
	if kc.refillTo(now) {
		b.markDirty(kc)
	}
	if allowed && kc.remaining < cost {
		allowed, exceeded = false, true
	}
	d = lim.take(id, set, now, allowed, windows)
	if allowed && d.allowed && cost > 0 {
		kc.remaining -= cost
		b.markDirty(kc)
	}
	d.hasCredits, d.credits = true, kc.remaining
	if exceeded && kc.next != 0 {
		d.refillIn = max(1, ceilSeconds(float64(kc.next-now)/float64(time.Second)))
	}
	return d, exceeded
}

// view is id's credits as they are at now, refill applied, for the admin
// API and the verify answer; nil when the key has none.
func (b *creditBook) view(id [8]byte, now int64) *creditsView {
	b.mu.Lock()
	kc := b.keys[id]
	b.mu.Unlock()
	if kc == nil {
		return nil
	}
	kc.mu.Lock()
	defer kc.mu.Unlock()
	if kc.refillTo(now) {
		b.markDirty(kc)
	}
	return &creditsView{Remaining: kc.remaining, Refill: kc.refill}
}

// refillOf is kc's refill schedule, nil for none.
func (kc *keyCredits) refillOf() *creditRefill {
	kc.mu.Lock()
	defer kc.mu.Unlock()
	return kc.refill
}

// takeDirty returns the spending changed since the last call, for the
// flusher.
func (b *creditBook) takeDirty() map[[8]byte]creditState {
	b.mu.Lock()
	ids := b.dirty
	b.dirty = nil
	out := make(map[[8]byte]creditState, len(ids))
	kcs := make([]*keyCredits, 0, len(ids))
	for _, id := range ids {
		if kc := b.keys[id]; kc != nil {
			kcs = append(kcs, kc)
		}
	}
	b.mu.Unlock()
	for _, kc := range kcs {
		kc.mu.Lock()
		out[kc.id] = creditState{gen: kc.gen, remaining: kc.remaining, refilledAt: kc.refilledAt}
		kc.dirty = false
		kc.mu.Unlock()
	}
	return out
}

// redirty queues id again after a flush of it failed; what is in memory is
// the newest anyway.
func (b *creditBook) redirty(id [8]byte) {
	b.mu.Lock()
	kc := b.keys[id]
	b.mu.Unlock()
	if kc != nil {
		kc.mu.Lock()
		b.markDirty(kc)
		kc.mu.Unlock()
	}
}
