package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

const (
	envTest = "test"
	envLive = "live"

	stylePrefixed = "prefixed"
	styleSplit    = "split"

	maxKeyLen = 256
)

// keyFormat knows how keys of one brand look. A server accepts both styles
// so that changing --key-style does not lock out keys issued before.
type keyFormat struct {
	brand string
	style string
}

// parsedKey is a presented key split into its lookup part and the string
// that is hashed.
type parsedKey struct {
	lookup string // prefixed: "kh_live_1a2b3c4d"; split: "khpub_<16 hex>"
	env    string // from the key text; empty for split keys
	whole  string
}

// errMalformed carries the message of the malformed_token row, which depends
// on the style the caller tried.
type errMalformed struct{ message string }

func (e errMalformed) Error() string { return e.message }

const (
	msgMalformed      = "API key is malformed."
	msgMalformedSplit = "Authorization token must be provided as <public>.<secret>"
)

// parse checks a presented key's shape without touching any secret state.
func (f keyFormat) parse(token string) (parsedKey, error) {
	if strings.Contains(token, ".") || f.style == styleSplit && !hasBrandPrefix(token, f.brand, "_") {
		return f.parseSplit(token)
	}
	return f.parsePrefixed(token)
}

func (f keyFormat) malformed() error {
	if f.style == styleSplit {
		return errMalformed{msgMalformedSplit}
	}
	return errMalformed{msgMalformed}
}

func (f keyFormat) parsePrefixed(token string) (parsedKey, error) {
	if !hasBrandPrefix(token, f.brand, "_") || len(token) > maxKeyLen {
		return parsedKey{}, f.malformed()
	}
	rest := token[len(f.brand)+1:]
	env, secret, ok := strings.Cut(rest, "_")
	if !ok || (env != envTest && env != envLive) || !isLowerHex(secret, 32) {
		return parsedKey{}, f.malformed()
	}
	return parsedKey{lookup: token[:len(token)-24], env: env, whole: token}, nil
}

func (f keyFormat) parseSplit(token string) (parsedKey, error) {
	bad := errMalformed{msgMalformedSplit}
	if len(token) > maxKeyLen {
		return parsedKey{}, bad
	}
	public, secret, ok := strings.Cut(token, ".")
	if !ok {
		return parsedKey{}, bad
	}
	if !hasBrandPrefix(public, f.brand, "pub_") || !hasBrandPrefix(secret, f.brand, "sec_") ||
		!isLowerHex(public[len(f.brand)+4:], 16) || !isLowerHex(secret[len(f.brand)+4:], 32) {
		return parsedKey{}, bad
	}
	return parsedKey{lookup: public, whole: token}, nil
}

// hasBrandPrefix reports whether s starts with brand+sep, without building
// that string on the hot path.
func hasBrandPrefix(s, brand, sep string) bool {
	return len(s) >= len(brand)+len(sep) && s[:len(brand)] == brand && s[len(brand):len(brand)+len(sep)] == sep
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// newKey returns a fresh key string and its lookup part for env.
func (f keyFormat) newKey(env string) (key, lookup string) {
	if f.style == styleSplit {
		public := f.brand + "pub_" + randomHex(8)
		return public + "." + f.brand + "sec_" + randomHex(16), public
	}
	key = f.brand + "_" + env + "_" + randomHex(16)
	return key, key[:len(key)-24]
}

// randomHex returns 2n hex digits of crypto/rand. crypto/rand.Read never
// returns an error on supported platforms (Go 1.24+); it crashes instead.
func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func newID(kind string) string { return kind + "_" + randomHex(8) }

// hashKey is the SHA-256 of a key. The copy into a stack buffer spares the
// hot path the heap allocation of []byte(s).
func hashKey(s string) [32]byte {
	var buf [maxKeyLen]byte
	if len(s) <= len(buf) {
		n := copy(buf[:], s)
		return sha256.Sum256(buf[:n])
	}
	return sha256.Sum256([]byte(s))
}

// keyEntry is the hot-path view of a key, kept small because a server may
// hold a million: about 100 bytes, in chunks that are never moved. What
// changes after creation (revoked, expiry, last use, and what a PATCH
// edits) is atomic, so readers need no lock once they have the entry. What
// many keys share (org id, scopes, windows) is interned and referred to by
// number, the name is a reference into a byte arena, and the next entry of
// a chain is referred to by its place: an entry holds no pointer, so the
// garbage collector does not scan the index (at a million keys it marked
// ~150 MiB at every cycle, about 75 ms of CPU). What few keys have (meta,
// an IP allowlist, credits) is in the index's extras, looked up only when
// flags says the key has some.
type keyEntry struct {
	hash      [32]byte
	id        [8]byte // "key_" + hex of these
	org       uint32  // in the index's orgIDs
	live      bool
	scopeSet  atomic.Uint32 // in the index's scopeSets
	limitSet  atomic.Uint32 // 1 + its place in the index's limitSets; 0: the server default
	flags     atomic.Uint32 // flagDisabled, flagExtra
	name      atomic.Uint64 // in the index's names (nameArena.put)
	expiresAt atomic.Int64
	revokedAt atomic.Int64
	lastUsed  atomic.Int64
	next      uint32 // 1 + the place of the next key with the same lookup value; 0: none
}

const (
	flagDisabled = 1 << iota // enabled: false
	flagExtra                // the key has meta, allowed IPs or credits: see keyIndex.extra
)

// keyExtra is what few keys have, looked up by key id when the entry's
// flagExtra says so. It is replaced whole, never changed, except the
// credits it points to, which are the credit book's (credits.go).
type keyExtra struct {
	meta    []byte         // the JSON object, as the answers write it; nil: none
	allowed []netip.Prefix // nil: any address
	credits *keyCredits    // nil: no usage limit
}

func (ix *keyIndex) orgID(e *keyEntry) string { return ix.orgIDs.get(e.org) }

// lastUsedStep is how far a key's last use moves before it is stored
// again. A store on every request made both cores write the same cache
// line, which also holds what every request reads (hash, expiry); last
// use is shown to the millisecond.
const lastUsedStep = int64(time.Millisecond)

// touch records a use of the key at now (Unix nanoseconds).
func (e *keyEntry) touch(now int64) {
	if now-e.lastUsed.Load() >= lastUsedStep {
		e.lastUsed.Store(now)
	}
}

func (e *keyEntry) env() string { return envName(e.live) }

func envName(live bool) string {
	if live {
		return envLive
	}
	return envTest
}

func (ix *keyIndex) scopes(e *keyEntry) *scopeSet { return ix.scopeSets.get(e.scopeSet.Load()) }

// limits is the key's own windows, or nil for the server default (also
// when its stored windows could not be read).
func (ix *keyIndex) limits(e *keyEntry) *limitSet {
	n := e.limitSet.Load()
	if n == 0 {
		return nil
	}
	return ix.limitSets.get(n - 1)
}

// name is the key's name, a string over the arena's bytes.
func (ix *keyIndex) name(e *keyEntry) string { return ix.names.get(e.name.Load()) }

// extra is the key's meta, allowlist and credits, or nil.
func (ix *keyIndex) extra(e *keyEntry) *keyExtra {
	ix.extrasMu.RLock()
	x := ix.extras[e.id]
	ix.extrasMu.RUnlock()
	return x
}

// keyID is the key's id as a string, built on the stack: one allocation.
func (e *keyEntry) keyID() string {
	var b [20]byte
	copy(b[:], "key_")
	hex.Encode(b[4:], e.id[:])
	return string(b[:])
}

func appendKeyID(b []byte, id [8]byte) []byte {
	b = append(b, "key_"...)
	return hex.AppendEncode(b, id[:])
}

// parseKeyID reads "key_<16 hex>", the form newID gives.
func parseKeyID(s string) (id [8]byte, ok bool) {
	raw, found := strings.CutPrefix(s, "key_")
	if !found || !isLowerHex(raw, 16) {
		return id, false
	}
	hex.Decode(id[:], []byte(raw))
	return id, true
}

func (ix *keyIndex) hasScope(e *keyEntry, scope string) bool {
	for _, s := range ix.scopes(e).list {
		if s == "*" || s == scope {
			return true
		}
	}
	return false
}

// scopeSet is an interned list of scopes with its X-Keyhole-Scopes value.
type scopeSet struct {
	list   []string
	header []string // len == cap: see limitSet
}

// lookupValue maps a key's lookup part to the index's map key: the 8 hex of
// a prefixed key with its env, or the 16 hex of a split key's public part.
// Two keys may share a value; the hash decides.
func lookupValue[T string | []byte](lookup T) uint64 {
	i := len(lookup) - 1
	for i >= 0 && lookup[i] != '_' {
		i--
	}
	digits := lookup[i+1:]
	var v uint64
	for j := 0; j < len(digits) && j < 16; j++ {
		c := digits[j]
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		}
		v = v<<4 | uint64(c&0xf)
	}
	if len(digits) == 8 { // prefixed: brand_env_XXXXXXXX
		v |= 1 << 40
		if i >= 4 && string(lookup[i-4:i]) == envLive {
			v |= 1 << 32
		}
	}
	return v
}

const chunkSize = 4096

// keyIndex is the in-memory copy of every key. bbolt is the durable copy;
// the index changes only after a commit.
type keyIndex struct {
	mu       sync.RWMutex
	byLookup map[uint64]uint32 // 1 + the place of the newest entry
	chunks   [][]keyEntry
	n        int

	// What keys share is interned once, in tables that only grow (org ids,
	// scope lists and window sets are few next to keys), and read by number
	// without a lock.
	orgIDs    internTable[string]
	scopeSets internTable[*scopeSet]
	limitSets internTable[*limitSet]
	names     nameArena

	extrasMu sync.RWMutex
	extras   map[[8]byte]*keyExtra // only keys with flagExtra
}

// newKeyIndex makes an index with room for about n keys.
func newKeyIndex(n int) *keyIndex {
	return &keyIndex{byLookup: make(map[uint64]uint32, n)}
}

// entry is the entry at place+1 = ref, in chunks read under ix.mu.
func entry(chunks [][]keyEntry, ref uint32) *keyEntry {
	return &chunks[(ref-1)/chunkSize][(ref-1)%chunkSize]
}

// addRow adds the key of a row, with its credits (nil: none). Interned
// values are looked up with the row's bytes, so a start with a million
// keys allocates little per key.
func (ix *keyIndex) addRow(row *hotRow, credits *keyCredits) *keyEntry {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if ix.n%chunkSize == 0 {
		ix.chunks = append(ix.chunks, make([]keyEntry, chunkSize))
	}
	ix.n++
	e := entry(ix.chunks, uint32(ix.n))
	e.hash = row.hash
	if len(row.id) == 20 {
		hex.Decode(e.id[:], row.id[4:])
	}
	e.org = ix.orgIDs.intern(row.orgID, func() string { return string(row.orgID) })
	e.live = row.env == 1
	ix.set(e, row, credits)
	lv := lookupValue(row.prefix)
	e.next = ix.byLookup[lv]
	ix.byLookup[lv] = uint32(ix.n)
	return e
}

// updateRow applies a committed change of a key (revoke, expiry, a PATCH)
// to its entry: the very next request sees it.
func (ix *keyIndex) updateRow(row *hotRow, credits *keyCredits) {
	if e := ix.get(string(row.prefix), string(row.id)); e != nil {
		ix.set(e, row, credits)
	}
}

// set makes e what row says. The extras are in place before the flags that
// send a request to them.
func (ix *keyIndex) set(e *keyEntry, row *hotRow, credits *keyCredits) {
	e.scopeSet.Store(ix.scopeSets.intern(row.scopes, func() *scopeSet { return newScopeSet(row.scopes) }))
	var limits uint32
	if len(row.limits) > 0 {
		limits = ix.internLimits(row.limits)
	}
	e.limitSet.Store(limits)
	if ix.names.get(e.name.Load()) != string(row.name) {
		e.name.Store(ix.names.put(row.name))
	}
	e.expiresAt.Store(row.expiresAt)
	e.revokedAt.Store(row.revokedAt)
	var flags uint32
	if row.flags&rowDisabled != 0 {
		flags |= flagDisabled
	}
	if len(row.meta) > 0 || len(row.allowed) > 0 || credits != nil {
		x := &keyExtra{credits: credits}
		if len(row.meta) > 0 {
			x.meta = bytes.Clone(row.meta)
		}
		if len(row.allowed) > 0 {
			// Written by canonicalCIDRs; one that does not parse allows nobody.
			x.allowed, _ = parseCIDRs(strings.Split(string(row.allowed), ","))
			if x.allowed == nil {
				x.allowed = []netip.Prefix{}
			}
		}
		ix.extrasMu.Lock()
		if ix.extras == nil {
			ix.extras = make(map[[8]byte]*keyExtra)
		}
		ix.extras[e.id] = x
		ix.extrasMu.Unlock()
		flags |= flagExtra
	} else if e.flags.Load()&flagExtra != 0 {
		ix.extrasMu.Lock()
		delete(ix.extras, e.id)
		ix.extrasMu.Unlock()
	}
	e.flags.Store(flags)
}

func newScopeSet(joined []byte) *scopeSet {
	set := &scopeSet{list: []string{}, header: []string{string(joined)}}
	if len(joined) > 0 {
		set.list = strings.Split(string(joined), ",")
	}
	return set
}

// internLimits shares one limitSet among keys with the same windows, and
// returns 1 + its place. sig was written by limitsSignature of validated
// windows; unreadable ones intern as nil, the server default.
func (ix *keyIndex) internLimits(sig []byte) uint32 {
	return 1 + ix.limitSets.intern(sig, func() *limitSet {
		limits, err := parseRateLimits(strings.TrimSuffix(string(sig), ","))
		if err != nil {
			return nil
		}
		return newLimitSet(limits)
	})
}

// find returns the entry whose hash matches the presented key. Each candidate
// is compared in constant time, and all candidates are compared.
func (ix *keyIndex) find(p parsedKey) *keyEntry {
	hash := hashKey(p.whole)
	lv := lookupValue(p.lookup)
	ix.mu.RLock()
	ref, chunks := ix.byLookup[lv], ix.chunks
	ix.mu.RUnlock()
	var found *keyEntry
	for ref != 0 {
		e := entry(chunks, ref)
		if subtle.ConstantTimeCompare(e.hash[:], hash[:]) == 1 {
			found = e
		}
		ref = e.next
	}
	return found
}

// get returns the entry of a key record, for its last-used time.
func (ix *keyIndex) get(lookup, keyID string) *keyEntry {
	id, ok := parseKeyID(keyID)
	if !ok {
		return nil
	}
	return ix.getID(lookup, id)
}

// getID is get with the key id's bytes.
func (ix *keyIndex) getID(lookup string, id [8]byte) *keyEntry {
	ix.mu.RLock()
	ref, chunks := ix.byLookup[lookupValue(lookup)], ix.chunks
	ix.mu.RUnlock()
	for ref != 0 {
		e := entry(chunks, ref)
		if e.id == id {
			return e
		}
		ref = e.next
	}
	return nil
}

func (ix *keyIndex) len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.n
}

const internChunk = 4096

// internTable numbers values by a byte key. Readers call get with a number
// they found in an entry published under the index's lock, after intern
// stored the value: so get needs no lock of its own, only an atomic load of
// the list of chunks, which intern replaces (never changes) to add one.
type internTable[T any] struct {
	mu     sync.Mutex
	byKey  map[string]uint32
	chunks atomic.Pointer[[]*[internChunk]T]
	n      uint32
}

func (t *internTable[T]) intern(key []byte, value func() T) uint32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if i, ok := t.byKey[string(key)]; ok {
		return i
	}
	if t.byKey == nil {
		t.byKey = make(map[string]uint32)
	}
	i := t.n
	if i%internChunk == 0 {
		var chunks []*[internChunk]T
		if old := t.chunks.Load(); old != nil {
			chunks = slices.Clone(*old)
		}
		chunks = append(chunks, new([internChunk]T))
		t.chunks.Store(&chunks)
	}
	(*t.chunks.Load())[i/internChunk][i%internChunk] = value()
	t.n++
	t.byKey[string(key)] = i
	return i
}

func (t *internTable[T]) get(i uint32) T {
	return (*t.chunks.Load())[i/internChunk][i%internChunk]
}

const nameChunk = 64 << 10

// nameArena holds key names back to back in chunks of bytes, which hold no
// pointer: a million names are a few chunks for the collector, not a
// million strings. A name is referred to by chunk, offset and length
// packed in a uint64, and read as a string over the chunk's bytes, which
// are never written again once put. A rename puts the new name and leaves
// the old bytes unused: edits are rare next to keys.
type nameArena struct {
	mu     sync.Mutex
	chunks atomic.Pointer[[]*[nameChunk]byte]
	used   int // bytes used in the last chunk
}

// put stores name (cut to 255 bytes; names are at most 200) and returns
// its reference.
func (a *nameArena) put(name []byte) uint64 {
	name = name[:min(len(name), 255)]
	if len(name) == 0 {
		return 0
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	old := a.chunks.Load()
	if old == nil || a.used+len(name) > nameChunk {
		var chunks []*[nameChunk]byte
		if old != nil {
			chunks = slices.Clone(*old)
		}
		chunks = append(chunks, new([nameChunk]byte))
		a.chunks.Store(&chunks)
		a.used = 0
	}
	chunks := *a.chunks.Load()
	c := len(chunks) - 1
	copy(chunks[c][a.used:], name)
	ref := uint64(c)<<32 | uint64(a.used)<<8 | uint64(len(name))
	a.used += len(name)
	return ref
}

// get is the name put under ref, without a copy.
func (a *nameArena) get(ref uint64) string {
	n := int(ref & 0xff)
	if n == 0 {
		return ""
	}
	chunk := (*a.chunks.Load())[ref>>32]
	off := int(ref>>8) & 0xffffff
	return unsafe.String(&chunk[off], n)
}
