package main

import (
	"encoding/binary"

	bolt "go.etcd.io/bbolt"
)

// The store's verbs for the audit log. An entry is written only by
// putAuditTx, inside the transaction of the change it records; Record is
// for an entry of no change (a backup). Entries are keyed by a sequence
// number, so they are in commit order, and indexed under their
// organization.

// putAuditTx appends a in tx.
func putAuditTx(tx *bolt.Tx, a auditEntry) error {
	b := tx.Bucket(bucketAudit)
	b.FillPercent = 0.95 // appended in key order: pages fill up
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	buf, err := encodeRecord(a)
	if err != nil {
		return err
	}
	if err := b.Put(u64(seq), buf); err != nil {
		return err
	}
	if a.OrgID == "" {
		return nil
	}
	ix := tx.Bucket(bucketAuditOrgs)
	ix.FillPercent = 0.95
	return ix.Put(auditOrgKey(a.OrgID, seq), []byte{})
}

func auditOrgKey(orgID string, seq uint64) []byte {
	return append([]byte(orgID+"/"), u64(seq)...)
}

// Record writes an entry that records no change of a record: a backup.
func (st *store) Record(a auditEntry) error {
	if st.cluster != nil {
		return st.cluster.record(a)
	}
	return st.commit.do(func(tx *bolt.Tx) error { return putAuditTx(tx, a) })
}

// ReadAudit walks the entries newest first from the cursor: all of them,
// or one organization's through its index.
func (st *store) ReadAudit(q auditQuery) (auditPage, error) {
	page := auditPage{Entries: []auditView{}}
	err := st.db.View(func(tx *bolt.Tx) error {
		entries := tx.Bucket(bucketAudit)
		if q.org == "" {
			return walkBack(entries.Cursor(), nil, q.before, func(k []byte) (bool, error) {
				return page.collect(entries, binary.BigEndian.Uint64(k), &q)
			})
		}
		prefix := []byte(q.org + "/")
		return walkBack(tx.Bucket(bucketAuditOrgs).Cursor(), prefix, q.before, func(k []byte) (bool, error) {
			return page.collect(entries, binary.BigEndian.Uint64(k[len(prefix):]), &q)
		})
	})
	return page, err
}

// walkBack calls fn for the keys of c that start with prefix, then a
// sequence number below before (any, if 0), newest first, until fn says
// it is done.
func walkBack(c *bolt.Cursor, prefix []byte, before uint64, fn func(k []byte) (done bool, err error)) error {
	if before == 0 {
		before = 1<<64 - 1
	}
	k, _ := c.Seek(append(append([]byte(nil), prefix...), u64(before)...))
	if k == nil {
		k, _ = c.Last()
	} else {
		k, _ = c.Prev()
	}
	for ; k != nil && hasPrefix(k, prefix) && len(k) == len(prefix)+8; k, _ = c.Prev() {
		if done, err := fn(k); done || err != nil {
			return err
		}
	}
	return nil
}

// collect adds entry seq if it matches; done says the page is full and
// another entry matched.
func (page *auditPage) collect(entries *bolt.Bucket, seq uint64, q *auditQuery) (done bool, err error) {
	v := entries.Get(u64(seq))
	if v == nil {
		return false, nil // an index key without its entry: never written so, but not worth failing for
	}
	var a auditEntry
	if err := decodeRecord(v, &a); err != nil {
		return true, err
	}
	if !q.matches(&a) {
		return false, nil
	}
	if len(page.Entries) == q.limit {
		next := page.Entries[len(page.Entries)-1].ID
		page.Next = &next
		return true, nil
	}
	page.Entries = append(page.Entries, viewAudit(seq, &a))
	return false, nil
}

// PruneAudit deletes, oldest first, up to max entries written before
// before (Unix nanoseconds), with their index keys, and says how many.
// Entries are in commit order, and their times in the order of their
// calls: the first entry that is new enough ends the walk.
func (st *store) PruneAudit(before int64, max int) (n int, err error) {
	err = st.db.Update(func(tx *bolt.Tx) error {
		n = 0
		entries, index := tx.Bucket(bucketAudit), tx.Bucket(bucketAuditOrgs)
		c := entries.Cursor()
		for k, v := c.First(); k != nil && n < max; k, v = c.First() {
			var a auditEntry
			if err := decodeRecord(v, &a); err != nil {
				return err
			}
			if a.At >= before {
				return nil
			}
			if a.OrgID != "" {
				if err := index.Delete(auditOrgKey(a.OrgID, binary.BigEndian.Uint64(k))); err != nil {
					return err
				}
			}
			if err := c.Delete(); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}
