package main

import (
	"encoding/binary"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// maxSegment is the most entries one bbolt value holds.
const maxSegment = 4096

// writeBatch is one flush of the write-behind: log entries by log name,
// usage rows (an org's and a key's) by row key, last-used times,
// rate-limit state and credit spending by key id.
type writeBatch struct {
	logs      map[string][]*pendingEntry
	retention int    // entries kept per log
	segments  []byte // encoded entries; bbolt holds values until the commit
	usage     map[string]*usageCounts
	keyUsage  map[string]*usageCounts
	lastUsed  map[[8]byte]int64
	buckets   map[[8]byte]bucketState
	tokenUse  map[string]tokenUse // org admin tokens' last use, by token id
	credits   map[[8]byte]creditState
	// pruneUsageBefore, if not 0, drops usage rows of hours before it, and
	// pruneKeyUsageBefore keys' usage rows (Unix seconds).
	pruneUsageBefore, pruneKeyUsageBefore int64
}

// WriteBehind writes a flush in one transaction.
func (st *store) WriteBehind(b *writeBatch) error {
	return st.db.Update(func(tx *bolt.Tx) error {
		if err := writeEntries(tx, b); err != nil {
			return err
		}
		if err := writeUsage(tx.Bucket(bucketUsage), b.usage); err != nil {
			return err
		}
		if err := writeUsage(tx.Bucket(bucketKeyUsage), b.keyUsage); err != nil {
			return err
		}
		if b.pruneUsageBefore != 0 {
			if err := pruneUsage(tx, b.pruneUsageBefore); err != nil {
				return err
			}
		}
		if b.pruneKeyUsageBefore != 0 {
			if err := pruneKeyUsage(tx, b.pruneKeyUsageBefore); err != nil {
				return err
			}
		}
		if err := writeTouched(tx, b); err != nil {
			return err
		}
		return writeTokenUse(tx, b.tokenUse)
	})
}

func writeTokenUse(tx *bolt.Tx, uses map[string]tokenUse) error {
	b := tx.Bucket(bucketTokenUse)
	for id, u := range uses {
		if err := b.Put([]byte(id), encodeTokenUse(u)); err != nil {
			return err
		}
	}
	return nil
}

// writeEntries appends each log's new entries to its ring as segments: one
// bbolt value of up to maxSegment entries, keyed by its first sequence
// number. One Put per segment instead of one per entry keeps the flush cheap
// at tens of thousands of requests a second. Entries older than the newest
// retention are skipped here, hidden on read, and their segments deleted
// once wholly old; freed pages are reused, so the file stops growing.
func writeEntries(tx *bolt.Tx, batch *writeBatch) error {
	logs := tx.Bucket(bucketLogs)
	keep := batch.retention
	for name, entries := range batch.logs {
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
			start := len(batch.segments)
			batch.segments = append(batch.segments, segmentV1)
			for _, e := range entries[:n] {
				batch.segments = e.appendBinary(batch.segments)
			}
			if err := b.Put(u64(first), batch.segments[start:]); err != nil {
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

func writeUsage(b *bolt.Bucket, usage map[string]*usageCounts) error {
	for key, c := range usage {
		row := []byte(key)
		if err := b.Put(row, appendUsage(nil, b.Get(row), c)); err != nil {
			return err
		}
	}
	return nil
}

func pruneUsage(tx *bolt.Tx, before int64) error {
	b := tx.Bucket(bucketUsage)
	var old [][]byte
	err := b.ForEach(func(k, _ []byte) error {
		if len(k) > 8 && int64(binary.BigEndian.Uint64(k[len(k)-8:])) < before {
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

// pruneKeyUsage deletes keys' usage rows of hours before before: they are
// at the start of their bucket, which is in hour order.
func pruneKeyUsage(tx *bolt.Tx, before int64) error {
	c := tx.Bucket(bucketKeyUsage).Cursor()
	for k, _ := c.First(); len(k) >= 8 && int64(binary.BigEndian.Uint64(k)) < before; k, _ = c.First() {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

func writeTouched(tx *bolt.Tx, b *writeBatch) error {
	lu := tx.Bucket(bucketLastUsed)
	for id, at := range b.lastUsed {
		if err := lu.Put(appendKeyID(nil, id), encodeLastUsed(at)); err != nil {
			return err
		}
	}
	lb := tx.Bucket(bucketLimits)
	for id, st := range b.buckets {
		buf, err := encodeRecord(st)
		if err != nil {
			return err
		}
		if err := lb.Put(appendKeyID(nil, id), buf); err != nil {
			return err
		}
	}
	cb := tx.Bucket(bucketCredits)
	for id, st := range b.credits {
		if err := cb.Put(appendKeyID(nil, id), encodeCreditState(st)); err != nil {
			return err
		}
	}
	return nil
}

// LoadWrittenBehind reads back last-used times, rate-limit state and
// credit spending at start, each by key id, and the admin tokens' use by
// token id.
func (st *store) LoadWrittenBehind(lastUsed func(id [8]byte, at int64), bucket func(id [8]byte, b bucketState),
	credits func(id [8]byte, c creditState), tokenUses func(id string, u tokenUse)) error {
	return st.db.View(func(tx *bolt.Tx) error {
		err := tx.Bucket(bucketTokenUse).ForEach(func(k, v []byte) error {
			if u, ok := decodeTokenUse(v); ok {
				tokenUses(string(k), u)
			}
			return nil
		})
		if err != nil {
			return err
		}
		err = tx.Bucket(bucketLastUsed).ForEach(func(k, v []byte) error {
			id, ok := parseKeyID(string(k))
			if at, valid := decodeLastUsed(v); ok && valid {
				lastUsed(id, at)
			}
			return nil
		})
		if err != nil {
			return err
		}
		err = tx.Bucket(bucketLimits).ForEach(func(k, v []byte) error {
			var st bucketState
			id, ok := parseKeyID(string(k))
			if ok && decodeRecord(v, &st) == nil {
				bucket(id, st)
			}
			return nil
		})
		if err != nil {
			return err
		}
		return tx.Bucket(bucketCredits).ForEach(func(k, v []byte) error {
			id, ok := parseKeyID(string(k))
			if st, valid := decodeCreditState(v); ok && valid {
				credits(id, st)
			}
			return nil
		})
	})
}

// ReadLogs walks one ring (an org id, or serverLog) newest first from the
// cursor, hiding entries past the retention.
func (st *store) ReadLogs(org string, retention int, q logQuery) (logPage, error) {
	page := logPage{Entries: []logEntry{}}
	err := st.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLogs).Bucket([]byte(org))
		if b == nil {
			return nil
		}
		oldest := uint64(0) // entries at or below this are past the retention
		if last := b.Sequence(); last > uint64(retention) {
			oldest = last - uint64(retention)
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
	segment = segmentEntries(segment)
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
		if !q.matches(&e) || q.beforeAt != 0 && e.at >= q.beforeAt {
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

func (st *store) ReadUsage(orgID, env string, from int64) ([]usageBucket, error) {
	out := []usageBucket{}
	err := st.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketUsage).Cursor()
		for _, e := range []string{envTest, envLive} {
			if env != "" && env != e {
				continue
			}
			prefix := usageRowPrefix(orgID, e)
			for k, v := c.Seek(append(prefix, u64(uint64(from))...)); k != nil && hasPrefix(k, prefix); k, v = c.Next() {
				hour := int64(binary.BigEndian.Uint64(k[len(prefix):]))
				c := decodeUsage(v)
				out = append(out, usageBucket{Hour: time.Unix(hour, 0).UTC().Format(time.RFC3339), Env: e,
					OK: c[0], Client: c[1], Limited: c[2], Server: c[3]})
			}
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool {
		return out[i].Hour < out[j].Hour || out[i].Hour == out[j].Hour && out[i].Env < out[j].Env
	})
	return out, err
}

// ReadKeyUsage is one key's usage, the hours from from (Unix seconds, at
// the start of an hour) to to, those that saw requests, oldest first.
func (st *store) ReadKeyUsage(orgID, keyID, env string, from, to int64) ([]usageBucket, error) {
	out := []usageBucket{}
	err := st.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKeyUsage)
		for hour := from; hour <= to; hour += 3600 {
			if v := b.Get(keyUsageRowKey(hour, orgID, keyID)); v != nil {
				c := decodeUsage(v)
				out = append(out, usageBucket{Hour: time.Unix(hour, 0).UTC().Format(time.RFC3339), Env: env,
					OK: c[0], Client: c[1], Limited: c[2], Server: c[3]})
			}
		}
		return nil
	})
	return out, err
}
