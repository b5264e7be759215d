package main

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"strings"
	"sync"
	"sync/atomic"
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
	if strings.Contains(token, ".") || f.style == styleSplit && !strings.HasPrefix(token, f.brand+"_") {
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
	rest, ok := strings.CutPrefix(token, f.brand+"_")
	if !ok || len(token) > maxKeyLen {
		return parsedKey{}, f.malformed()
	}
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
	pubHex, ok1 := strings.CutPrefix(public, f.brand+"pub_")
	secHex, ok2 := strings.CutPrefix(secret, f.brand+"sec_")
	if !ok1 || !ok2 || !isLowerHex(pubHex, 16) || !isLowerHex(secHex, 32) {
		return parsedKey{}, bad
	}
	return parsedKey{lookup: public, whole: token}, nil
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

func hashKey(s string) [32]byte { return sha256.Sum256([]byte(s)) }

// keyEntry is the hot-path view of a key. It is immutable: a revoke or roll
// replaces the entry in the index, so readers never see a half-updated key.
type keyEntry struct {
	id        string
	orgID     string
	env       string
	lookup    string
	hash      [32]byte
	scopes    []string
	limits    []rateLimit // nil: the server default
	expiresAt int64
	revokedAt int64
	lastUsed  *atomic.Int64 // shared by every version of the entry
}

func newKeyEntry(rec keyRecord, lastUsed *atomic.Int64) *keyEntry {
	if lastUsed == nil {
		lastUsed = new(atomic.Int64)
	}
	return &keyEntry{
		id: rec.ID, orgID: rec.OrgID, env: rec.Env, lookup: rec.Prefix, hash: rec.Hash,
		scopes: rec.Scopes, limits: rec.RateLimits, expiresAt: rec.ExpiresAt,
		revokedAt: rec.RevokedAt, lastUsed: lastUsed,
	}
}

func (e *keyEntry) hasScope(scope string) bool {
	for _, s := range e.scopes {
		if s == "*" || s == scope {
			return true
		}
	}
	return false
}

// keyIndex is the in-memory copy of every key, by lookup part. bbolt is the
// durable copy; the index is updated only after a commit.
type keyIndex struct {
	mu       sync.RWMutex
	byLookup map[string][]*keyEntry // prefixes are 32 bits: collisions happen
}

func newKeyIndex() *keyIndex {
	return &keyIndex{byLookup: make(map[string][]*keyEntry)}
}

// put adds an entry or replaces the one with the same id.
func (ix *keyIndex) put(e *keyEntry) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	list := ix.byLookup[e.lookup]
	for i, old := range list {
		if old.id == e.id {
			updated := append([]*keyEntry(nil), list...)
			updated[i] = e
			ix.byLookup[e.lookup] = updated
			return
		}
	}
	ix.byLookup[e.lookup] = append(list[:len(list):len(list)], e)
}

// find returns the entry whose hash matches the presented key. Each candidate
// is compared in constant time, and all candidates are compared.
func (ix *keyIndex) find(p parsedKey) *keyEntry {
	hash := hashKey(p.whole)
	ix.mu.RLock()
	list := ix.byLookup[p.lookup]
	ix.mu.RUnlock()
	var found *keyEntry
	for _, e := range list {
		if subtle.ConstantTimeCompare(e.hash[:], hash[:]) == 1 {
			found = e
		}
	}
	return found
}

// byID returns the current entry for a key record, for its last-used time.
func (ix *keyIndex) byID(lookup, id string) *keyEntry {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	for _, e := range ix.byLookup[lookup] {
		if e.id == id {
			return e
		}
	}
	return nil
}

func (ix *keyIndex) len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	n := 0
	for _, list := range ix.byLookup {
		n += len(list)
	}
	return n
}
