package main

import (
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"golang.org/x/sys/unix"
)

// The bbolt layout. Every value starts with a version byte, and records
// are JSON after it unless noted (codec.go has every encoding); times are
// Unix nanoseconds so they survive a round trip exactly.
//
//	meta/
//	  version          -> "1"
//	  root_token_hash  -> [32]byte SHA-256 of the root admin token
//	  flag_token_hash  -> [32]byte SHA-256 of the --admin-token value last applied
//	orgs/
//	  <orgID>          -> orgRecord
//	tokens/
//	  <tokenID>        -> tokenRecord (org admin tokens; hash only)
//	tokenuse/
//	  <tokenID>        -> last used and the prefix learned on use, binary (written behind)
//	keys/
//	  <orgID>/<keyID>  -> keyRecord (hash only, never the key)
//	keyrows/
//	  <seq uint64 BE>  -> hotRow, binary: what the in-memory index needs of
//	                      a key, in creation order, read at start
//	lastused/
//	  <keyID>          -> int64 BE Unix nanoseconds (written behind)
//	buckets/
//	  <keyID>          -> limiterState (written behind)
//	credits/
//	  <keyID>          -> creditState, binary: a key's spending (written behind)
//	logs/
//	  <orgID>|_server/ -> bucket: <seq uint64 BE> -> a segment of binary
//	                      log entries, keyed by the first one's seq (a ring)
//	usage/
//	  <orgID>/<env>/<hour uint64 BE> -> usageCounts, 4 × uint64 BE (written behind)
//	audit/
//	  <seq uint64 BE>  -> auditEntry, written in the transaction of the change it records
//	auditorgs/
//	  <orgID>/<seq uint64 BE> -> empty: the org's entries, newest last
//	keyusage/
//	  <hour uint64 BE><orgID>/<keyID> -> usageCounts of one key (written behind)
var (
	bucketMeta      = []byte("meta")
	bucketOrgs      = []byte("orgs")
	bucketTokens    = []byte("tokens")
	bucketKeys      = []byte("keys")
	bucketKeyRows   = []byte("keyrows")
	bucketLastUsed  = []byte("lastused")
	bucketLimits    = []byte("buckets")
	bucketLogs      = []byte("logs")
	bucketUsage     = []byte("usage")
	bucketTokenUse  = []byte("tokenuse")
	bucketAudit     = []byte("audit")
	bucketAuditOrgs = []byte("auditorgs")
	bucketCredits   = []byte("credits")
	bucketKeyUsage  = []byte("keyusage")

	metaVersion   = []byte("version")
	metaRootToken = []byte("root_token_hash")
	metaFlagToken = []byte("flag_token_hash")

	allBuckets = [][]byte{bucketMeta, bucketOrgs, bucketTokens, bucketKeys, bucketKeyRows,
		bucketLastUsed, bucketLimits, bucketLogs, bucketUsage, bucketTokenUse, bucketAudit, bucketAuditOrgs,
		bucketCredits, bucketKeyUsage}
)

const layoutVersion = "1"

// errNotFound is what the store returns for a missing record; callers test it
// with errors.Is.
var errNotFound = fs.ErrNotExist

type orgRecord struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	CreatedAt int64  `json:"created_at"`
}

// tokenRecord is an org admin token. Tokens issued before prefixes,
// expiry and revocation were kept read with those zero: no prefix (it is
// learned on the token's next use, see adminTokens.touch), never expiring,
// not revoked.
type tokenRecord struct {
	ID        string   `json:"id"`
	OrgID     string   `json:"org_id"`
	Name      string   `json:"name"`
	Prefix    string   `json:"prefix,omitempty"` // the displayable start, kh_orgadmin_1a2b3c4d
	Hash      [32]byte `json:"hash"`             // SHA-256 of the whole token
	CreatedAt int64    `json:"created_at"`
	ExpiresAt int64    `json:"expires_at,omitempty"` // a rolled token's end of grace
	RevokedAt int64    `json:"revoked_at,omitempty"`
}

type keyRecord struct {
	ID         string      `json:"id"`
	OrgID      string      `json:"org_id"`
	Name       string      `json:"name"`
	Env        string      `json:"env"`
	Prefix     string      `json:"prefix"` // the lookup part, plaintext
	Hash       [32]byte    `json:"hash"`   // SHA-256 of the whole key
	Scopes     []string    `json:"scopes"`
	RateLimits []rateLimit `json:"rate_limits,omitempty"`
	CreatedAt  int64       `json:"created_at"`
	ExpiresAt  int64       `json:"expires_at,omitempty"`
	RevokedAt  int64       `json:"revoked_at,omitempty"`
	Row        uint64      `json:"row"` // its key in keyrows
	// What a PATCH sets besides the above; absent in records written
	// before keys could be edited, which read as enabled with none.
	Disabled   bool            `json:"disabled,omitempty" audit:"enabled"`
	Meta       json.RawMessage `json:"meta,omitempty"`        // a JSON object, as answers write it
	AllowedIPs []string        `json:"allowed_ips,omitempty"` // canonical CIDRs
	Credits    *creditSetting  `json:"credits,omitempty"`
}

// store is keyhole's bbolt file, and the only code that opens a
// transaction on it. Methods that write return only after the transaction
// has committed (fsync included).
//
// The verbs for the authoritative records, which a second engine (a
// cluster's shared store) would have to implement, are few: PutOrg, Org,
// Orgs; PutToken, UpdateToken, Tokens, OrgTokens; PutKey, UpdateKey, Key,
// OrgKeys, EachKeyRow, KeyCount; RootTokenHash, SetRootTokenHash,
// ApplyAdminTokenFlag; Record, ReadAudit, PruneAudit (auditstore.go);
// IsEmpty. Every verb that changes a record takes the audit entry of the
// change and writes both in one transaction: no change exists without its
// entry, and no entry without its change. The rest is this file's own
// business: what is written behind (logstore.go), bulk seeding, backup and
// the page cache.
type store struct {
	db     *bolt.DB
	commit committer // admin writes, group-committed
	// cluster, in cluster mode only, is the second engine: the verbs that
	// change an authoritative record commit it to etcd instead, and the
	// file holds a replica that only the cluster's applier writes
	// (cluster.go). Reads are the file's in both modes.
	cluster *cluster
}

// openStore opens or creates the db file with mode 0600. A second process on
// the same file fails after the lock timeout instead of hanging. A file that
// is not keyhole's, or is damaged, is refused with an error and left as it
// is: checkDBFile looks before bbolt does, and a panic or memory fault inside
// bbolt on a damage it did not catch becomes an error too.
func openStore(path string, lockTimeout time.Duration) (*store, error) {
	db, err := openBolt(path, &bolt.Options{Timeout: lockTimeout, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, err
	}
	s := &store{db: db, commit: committer{db: db}}
	if err := guardDB(s.init); err != nil {
		guardDB(db.Close)
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return s, nil
}

// openStoreReadOnly opens an existing db file without writing to it, under a
// shared lock: what a backup of a stopped server needs.
func openStoreReadOnly(path string, lockTimeout time.Duration) (*store, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("open %s: %w", path, errors.Unwrap(err))
	}
	db, err := openBolt(path, &bolt.Options{ReadOnly: true, Timeout: lockTimeout, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, err
	}
	s := &store{db: db, commit: committer{db: db}}
	err = guardDB(func() error {
		return db.View(func(tx *bolt.Tx) error {
			meta := tx.Bucket(bucketMeta)
			if meta == nil {
				return errNotKeyhole
			}
			if v := meta.Get(metaVersion); string(v) != layoutVersion {
				return fmt.Errorf("db layout version %q; this keyhole reads %q", v, layoutVersion)
			}
			return nil
		})
	})
	if err != nil {
		guardDB(db.Close)
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return s, nil
}

// openBolt checks the file, then opens it; errors name the file.
func openBolt(path string, opts *bolt.Options) (db *bolt.DB, err error) {
	if err := checkDBFile(path); err != nil {
		return nil, err
	}
	err = guardDB(func() error {
		db, err = bolt.Open(path, 0o600, opts)
		return err
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("open %s: %w; gave up after %v", path, errLocked, opts.Timeout)
	}
	var pathErr *fs.PathError
	if errors.As(err, &pathErr) {
		err = pathErr.Err // "permission denied", "not a directory": the path is said once, below
	}
	if err != nil {
		// After a panic inside bbolt.Open there is no handle to close; the
		// caller is about to exit.
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return db, nil
}

var (
	errNotKeyhole = errors.New("a bbolt file, but not a keyhole db file")
	errLocked     = errors.New("the file is locked by another process (is keyhole already running on it?)")
)

// guardDB runs fn, which reads or writes the db, turning a panic or memory
// fault inside bbolt into an error.
func guardDB(fn func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("the file is damaged (%v); restore it from a backup", v)
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	return fn()
}

// bbolt's meta page, as checkDBFile reads it: after the 16-byte page header,
// magic, version, page size, flags, root bucket (16 bytes), freelist page,
// high-water page id, transaction id, then an FNV-64a checksum of all that.
// bbolt writes it in the machine's byte order; keyhole runs on little-endian
// machines (amd64, arm64).
const (
	boltMagic       = 0xED0CDAED
	boltVersion     = 2
	boltMetaOffset  = 16
	boltMetaSumLen  = 56
	boltMetaLen     = 64
	boltMinPageSize = 1024
	boltMaxPageSize = 16 << 20
)

type boltMeta struct {
	pageSize uint64
	highMark uint64 // pages [0, highMark) are in use
	txid     uint64
	valid    bool
}

func parseBoltMeta(page []byte) (m boltMeta) {
	if len(page) < boltMetaOffset+boltMetaLen {
		return m
	}
	b := page[boltMetaOffset : boltMetaOffset+boltMetaLen]
	le := binary.LittleEndian
	sum := fnv.New64a()
	sum.Write(b[:boltMetaSumLen])
	ps := uint64(le.Uint32(b[8:]))
	if le.Uint32(b[0:]) != boltMagic || le.Uint32(b[4:]) != boltVersion || sum.Sum64() != le.Uint64(b[56:]) ||
		ps < boltMinPageSize || ps > boltMaxPageSize || ps&(ps-1) != 0 {
		return m
	}
	return boltMeta{pageSize: ps, highMark: le.Uint64(b[40:]), txid: le.Uint64(b[48:]), valid: true}
}

// checkDBFile refuses, before bbolt can touch it, a file that exists but is
// not a bbolt file, or whose meta pages are both damaged, or that is shorter
// than its last commit says it is (bbolt would map past its end and fault or
// panic on the first read there).
func checkDBFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", path, errors.Unwrap(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	if st.IsDir() {
		return fmt.Errorf("open %s: is a directory", path)
	}
	size := st.Size()
	if size == 0 {
		return nil // bbolt writes a new db into an empty file
	}
	head := make([]byte, 4096)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	if n < boltMetaOffset+4 || binary.LittleEndian.Uint32(head[boltMetaOffset:]) != boltMagic {
		return fmt.Errorf("open %s: not a keyhole db file", path)
	}
	// The second meta page is one page in; like bbolt, try every page size
	// when the first meta page cannot say which it is.
	m0, m1 := parseBoltMeta(head), boltMeta{}
	for ps := int64(boltMinPageSize); ps <= boltMaxPageSize && ps < size; ps *= 2 {
		if m0.valid && uint64(ps) != m0.pageSize {
			continue
		}
		page := make([]byte, boltMetaOffset+boltMetaLen)
		if _, err := f.ReadAt(page, ps); err == nil {
			if m1 = parseBoltMeta(page); m1.valid {
				break
			}
		}
	}
	use := m0
	if !m0.valid || m1.valid && m1.txid > m0.txid {
		use = m1
	}
	if !use.valid {
		return fmt.Errorf("open %s: the file is damaged (both bbolt meta pages are invalid); restore it from a backup", path)
	}
	if use.highMark > uint64(size)/use.pageSize {
		return fmt.Errorf("open %s: the file is truncated: its last commit needs %d bytes and it has %d; "+
			"restore it from a backup", path, use.highMark*use.pageSize, size)
	}
	return nil
}

// init creates keyhole's buckets in a new db and checks the layout version
// of an existing one. A bbolt file that holds other buckets but no keyhole
// meta belongs to some other program: it is refused, not written to.
func (s *store) init() error {
	err := s.db.View(func(tx *bolt.Tx) error {
		if meta := tx.Bucket(bucketMeta); meta != nil {
			if v := meta.Get(metaVersion); v != nil && string(v) != layoutVersion {
				return fmt.Errorf("db layout version %q; this keyhole reads %q", v, layoutVersion)
			}
			return nil
		}
		if name, _ := tx.Cursor().First(); name != nil {
			return errNotKeyhole
		}
		return nil
	})
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if meta.Get(metaVersion) == nil {
			return meta.Put(metaVersion, []byte(layoutVersion))
		}
		return nil
	})
}

func (s *store) Close() error { return s.db.Close() }

// IsEmpty reports whether no organization and no root token exist yet.
func (s *store) IsEmpty() (bool, error) {
	empty := true
	err := s.db.View(func(tx *bolt.Tx) error {
		k, _ := tx.Bucket(bucketOrgs).Cursor().First()
		empty = k == nil && tx.Bucket(bucketMeta).Get(metaRootToken) == nil
		return nil
	})
	return empty, err
}

func (s *store) RootTokenHash() (hash [32]byte, ok bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketMeta).Get(metaRootToken)
		if len(v) == 32 {
			copy(hash[:], v)
			ok = true
		}
		return nil
	})
	return hash, ok, err
}

// SetRootTokenHash replaces the root token, with its audit entry.
func (s *store) SetRootTokenHash(hash [32]byte, a auditEntry) error {
	if s.cluster != nil {
		return s.cluster.setRootTokenHash(hash, a)
	}
	return s.commit.do(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketMeta).Put(metaRootToken, hash[:]); err != nil {
			return err
		}
		return putAuditTx(tx, a)
	})
}

// ApplyAdminTokenFlag makes hash, that of an --admin-token value, the root
// token's, unless that value was applied before: a root token rolled or
// reset since stays, until --admin-token gives another value. a is
// written only when the root token changes.
func (s *store) ApplyAdminTokenFlag(hash [32]byte, a auditEntry) error {
	if s.cluster != nil {
		return s.cluster.applyAdminTokenFlag(hash, a)
	}
	return s.commit.do(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if string(meta.Get(metaFlagToken)) == string(hash[:]) {
			return nil
		}
		if err := meta.Put(metaFlagToken, hash[:]); err != nil {
			return err
		}
		if string(meta.Get(metaRootToken)) == string(hash[:]) {
			return nil // a db from before the flag's hash was kept, started with the same value
		}
		if err := meta.Put(metaRootToken, hash[:]); err != nil {
			return err
		}
		return putAuditTx(tx, a)
	})
}

// putNew writes one new JSON record and its audit entry in one
// group-committed transaction.
func (s *store) putNew(bucket []byte, key string, v any, a auditEntry) error {
	if s.cluster != nil {
		return s.cluster.putNew(string(bucket)+"/"+key, v, a)
	}
	buf, err := encodeRecord(v)
	if err != nil {
		return err
	}
	return s.commit.do(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucket).Put([]byte(key), buf); err != nil {
			return err
		}
		return putAuditTx(tx, a)
	})
}

// get reads one JSON record; a missing one is errNotFound.
func (s *store) get(bucket []byte, key string, v any) error {
	return s.db.View(func(tx *bolt.Tx) error {
		buf := tx.Bucket(bucket).Get([]byte(key))
		if buf == nil {
			return errNotFound
		}
		return decodeRecord(buf, v)
	})
}

// PutOrg writes a new organization; a gets its id and fields.
func (s *store) PutOrg(o orgRecord, a auditEntry) error {
	return s.putNew(bucketOrgs, o.ID, o, a.about(o.ID, changedFields(&orgRecord{}, &o), o.ID))
}

func (s *store) Org(id string) (orgRecord, error) {
	var o orgRecord
	return o, s.get(bucketOrgs, id, &o)
}

func (s *store) Orgs() ([]orgRecord, error) {
	orgs := []orgRecord{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOrgs).ForEach(func(_, v []byte) error {
			var o orgRecord
			if err := decodeRecord(v, &o); err != nil {
				return err
			}
			orgs = append(orgs, o)
			return nil
		})
	})
	return orgs, err
}

// PutToken writes a new org admin token; a gets its ids and fields.
func (s *store) PutToken(t tokenRecord, a auditEntry) error {
	return s.putNew(bucketTokens, t.ID, t, a.about(t.OrgID, changedFields(&tokenRecord{}, &t), t.ID))
}

// UpdateToken is UpdateKey for an org admin token of orgID: one
// read-modify-write, with the new tokens change returns (a roll's), and
// the audit entry, in one transaction; a change that changes nothing
// writes nothing.
func (s *store) UpdateToken(orgID, tokenID string, a auditEntry, change func(t *tokenRecord) ([]*tokenRecord, error)) (tokenRecord, []*tokenRecord, error) {
	if s.cluster != nil {
		return s.cluster.updateToken(orgID, tokenID, a, change)
	}
	var t tokenRecord
	var added []*tokenRecord
	err := s.commit.do(func(tx *bolt.Tx) error {
		var err error
		t, added, err = readModifyWrite(tx, bucketTokens, tokenID, orgID, a, change, putTokenTx)
		return err
	})
	return t, added, err
}

func putTokenTx(tx *bolt.Tx, t *tokenRecord) error {
	buf, err := encodeRecord(t)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketTokens).Put([]byte(t.ID), buf)
}

// OrgTokens lists one organization's admin tokens, oldest first.
func (s *store) OrgTokens(orgID string) ([]tokenRecord, error) {
	all, err := s.Tokens()
	tokens := []tokenRecord{}
	for _, t := range all {
		if t.OrgID == orgID {
			tokens = append(tokens, t)
		}
	}
	slices.SortFunc(tokens, func(a, b tokenRecord) int {
		return cmp.Or(cmp.Compare(a.CreatedAt, b.CreatedAt), cmp.Compare(a.ID, b.ID))
	})
	return tokens, err
}

func (s *store) Tokens() ([]tokenRecord, error) {
	var tokens []tokenRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTokens).ForEach(func(_, v []byte) error {
			var t tokenRecord
			if err := decodeRecord(v, &t); err != nil {
				return err
			}
			tokens = append(tokens, t)
			return nil
		})
	})
	return tokens, err
}

func keyPath(orgID, keyID string) string { return orgID + "/" + keyID }

// PutKey writes a new key record, its row and its audit entry in one
// group-committed transaction. The record gets its row number here.
func (s *store) PutKey(k *keyRecord, a auditEntry) error {
	a = a.about(k.OrgID, changedFields(&keyRecord{}, k), k.ID)
	if s.cluster != nil {
		k.Row = 0 // each node numbers its own rows
		return s.cluster.putNew(keyETCDPath(k), k, a)
	}
	return s.commit.do(func(tx *bolt.Tx) error {
		k.Row = 0 // a retried transaction starts over
		if err := putKeyTx(tx, k); err != nil {
			return err
		}
		return putAuditTx(tx, a)
	})
}

// PutBulk writes many records in one transaction of its own, outside the
// group commit: for seeding a benchmark db, where one commit per batch of
// thousands is the point.
func (s *store) PutBulk(orgs []orgRecord, keys []*keyRecord) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, o := range orgs {
			buf, err := encodeRecord(o)
			if err != nil {
				return err
			}
			if err := tx.Bucket(bucketOrgs).Put([]byte(o.ID), buf); err != nil {
				return err
			}
		}
		for _, k := range keys {
			if err := putKeyTx(tx, k); err != nil {
				return err
			}
		}
		return nil
	})
}

// UpdateKey reads a key record, lets change edit it, and writes it back,
// with the new records change returns (a roll's new key) and the audit
// entry a, in one group-committed transaction: a read-modify-write that no
// other write comes between. change runs on the record as stored, maybe
// more than once (see committer.do): it must build what it returns afresh
// each time. An error from it is returned as it is, and nothing is written.
//
// The store completes a: its organization, its targets (this key, then
// the new ones) and the names of the fields change changed, found by
// comparing the record before and after (changedFields). So an edit
// records which fields it changed, never their values, without saying so
// itself; a change that changes nothing and adds nothing writes nothing,
// entry included.
func (s *store) UpdateKey(orgID, keyID string, a auditEntry, change func(k *keyRecord) ([]*keyRecord, error)) (keyRecord, []*keyRecord, error) {
	if s.cluster != nil {
		return s.cluster.updateKey(orgID, keyID, a, change)
	}
	var k keyRecord
	var added []*keyRecord
	err := s.commit.do(func(tx *bolt.Tx) error {
		var err error
		k, added, err = readModifyWrite(tx, bucketKeys, keyPath(orgID, keyID), orgID, a, change, putKeyTx)
		return err
	})
	return k, added, err
}

// auditable is a record an audit entry can name: a key or a token.
type auditable interface {
	recordID() string
	recordOrg() string
}

func (k *keyRecord) recordID() string    { return k.ID }
func (k *keyRecord) recordOrg() string   { return k.OrgID }
func (t *tokenRecord) recordID() string  { return t.ID }
func (t *tokenRecord) recordOrg() string { return t.OrgID }

// readModifyWrite is UpdateKey's and UpdateToken's transaction: read the
// record at key of bucket (of orgID), let change edit a copy, and write
// it, the records change added and a, completed, with put.
func readModifyWrite[T any, P interface {
	*T
	auditable
}](tx *bolt.Tx, bucket []byte, key, orgID string, a auditEntry, change func(P) ([]P, error), put func(*bolt.Tx, P) error) (T, []P, error) {
	v := tx.Bucket(bucket).Get([]byte(key))
	if v == nil {
		var none T
		return none, nil, errNotFound
	}
	rec, added, fields, err := editRecord(v, orgID, change)
	if err != nil || len(fields) == 0 && len(added) == 0 {
		return rec, nil, err
	}
	targets := []string{P(&rec).recordID()}
	for _, r := range append([]P{&rec}, added...) {
		if err := put(tx, r); err != nil {
			return rec, nil, err
		}
		if r != &rec {
			targets = append(targets, r.recordID())
		}
	}
	return rec, added, putAuditTx(tx, a.about(orgID, fields, targets...))
}

// editRecord is the edit of a read-modify-write, in bbolt or in etcd
// (clusterUpdate): decode the stored record v, refuse it unless it is
// orgID's, let change edit a copy, and name the fields it changed.
func editRecord[T any, P interface {
	*T
	auditable
}](v []byte, orgID string, change func(P) ([]P, error)) (rec T, added []P, fields []string, err error) {
	var before T
	if err := decodeRecord(v, &before); err != nil {
		return rec, nil, nil, err
	}
	if err := decodeRecord(v, &rec); err != nil { // a copy of its own: change may edit its slices
		return rec, nil, nil, err
	}
	if P(&rec).recordOrg() != orgID {
		return rec, nil, nil, errNotFound
	}
	if added, err = change(&rec); err != nil {
		return rec, nil, nil, err
	}
	return rec, added, changedFields(&before, &rec), nil
}

// putKeyTx writes the record and its row; rows are appended in creation
// order, so their pages fill up (FillPercent) and a start reads them densely.
func putKeyTx(tx *bolt.Tx, k *keyRecord) error {
	rows := tx.Bucket(bucketKeyRows)
	if k.Row == 0 {
		rows.FillPercent = 0.95
		seq, err := rows.NextSequence()
		if err != nil {
			return err
		}
		k.Row = seq
	}
	buf, err := encodeRecord(k)
	if err != nil {
		return err
	}
	if err := tx.Bucket(bucketKeys).Put([]byte(keyPath(k.OrgID, k.ID)), buf); err != nil {
		return err
	}
	return rows.Put(u64(k.Row), appendHotRow(nil, k))
}

func (s *store) Key(orgID, keyID string) (keyRecord, error) {
	var k keyRecord
	return k, s.get(bucketKeys, keyPath(orgID, keyID), &k)
}

// OrgKeys lists one organization's keys in id order.
func (s *store) OrgKeys(orgID string) ([]keyRecord, error) {
	keys := []keyRecord{}
	prefix := []byte(orgID + "/")
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketKeys).Cursor()
		for k, v := c.Seek(prefix); k != nil && hasPrefix(k, prefix); k, v = c.Next() {
			var rec keyRecord
			if err := decodeRecord(v, &rec); err != nil {
				return err
			}
			keys = append(keys, rec)
		}
		return nil
	})
	return keys, err
}

// UpgradeKeyRows rewrites the rows of the keys at paths (org id/key id)
// from their records, in the current row version, and gives fn each
// committed batch of records: version 1 rows lack what the index now
// keeps (the name, what a PATCH sets). It runs once, at the first start
// after an upgrade, in transactions of seedBatch keys.
func (s *store) UpgradeKeyRows(paths []string, fn func([]*keyRecord)) error {
	for len(paths) > 0 {
		batch := paths[:min(len(paths), seedBatch)]
		paths = paths[len(batch):]
		var recs []*keyRecord
		err := s.db.Update(func(tx *bolt.Tx) error {
			recs = recs[:0]
			keys, rows := tx.Bucket(bucketKeys), tx.Bucket(bucketKeyRows)
			for _, path := range batch {
				v := keys.Get([]byte(path))
				if v == nil {
					return fmt.Errorf("key row of %s: %w", path, errNotFound)
				}
				k := new(keyRecord)
				if err := decodeRecord(v, k); err != nil {
					return fmt.Errorf("key %s: %w", path, err)
				}
				if err := rows.Put(u64(k.Row), appendHotRow(nil, k)); err != nil {
					return err
				}
				recs = append(recs, k)
			}
			return nil
		})
		if err != nil {
			return err
		}
		fn(recs)
	}
	return nil
}

// EachKeyRow calls fn for every key's row, in creation order: it is how the
// in-memory index is built at start. fn must not keep the row's strings'
// bytes beyond the call unless it copies them.
func (s *store) EachKeyRow(fn func(*hotRow) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		var row hotRow
		return tx.Bucket(bucketKeyRows).ForEach(func(k, v []byte) error {
			if err := row.decode(v); err != nil {
				return fmt.Errorf("key row %d: %w", binary.BigEndian.Uint64(k), err)
			}
			return fn(&row)
		})
	})
}

// DropMappedPages tells the kernel this process no longer needs the db
// file's pages mapped: a start reads every key row once, and without this
// those pages (and, by fault-around, their neighbours) stay in the resident
// set. They stay in the page cache and are mapped again when read.
func (s *store) DropMappedPages() error {
	st, err := os.Stat(s.db.Path())
	if err != nil {
		return err
	}
	data := s.db.Info().Data
	size := uintptr(st.Size()) &^ uintptr(os.Getpagesize()-1)
	if data == 0 || size == 0 {
		return nil
	}
	if _, _, errno := unix.Syscall(unix.SYS_MADVISE, data, size, unix.MADV_DONTNEED); errno != 0 {
		return errno
	}
	return nil
}

// HasLastUsed reports whether any last-used time was ever written.
func (s *store) HasLastUsed() (has bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		k, _ := tx.Bucket(bucketLastUsed).Cursor().First()
		has = k != nil
		return nil
	})
	return has, err
}

// KeyCount is the number of keys ever created, revoked ones included.
func (s *store) KeyCount() (n uint64, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketKeyRows).Sequence()
		return nil
	})
	return n, err
}

// WriteTo streams a consistent copy of the whole db file.
func (s *store) WriteTo(w io.Writer) (int64, error) {
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}

// snapshot writes a consistent copy of the db to a temporary file, next to
// the db (the same disk, which has room for it) or else in the system's
// temporary directory, and returns it open and rewound. The file is
// unlinked at once: nothing is left behind, whatever happens next.
func (s *store) snapshot() (*os.File, int64, error) {
	f, err := os.CreateTemp(filepath.Dir(s.db.Path()), ".keyhole-backup-*")
	if err != nil {
		if f, err = os.CreateTemp("", "keyhole-backup-*"); err != nil {
			return nil, 0, err
		}
	}
	os.Remove(f.Name())
	n, err := s.WriteTo(f)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, n, nil
}

func hasPrefix(b, prefix []byte) bool {
	return len(b) >= len(prefix) && string(b[:len(prefix)]) == string(prefix)
}

func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}
