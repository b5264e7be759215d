package main

import (
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestValuesWrittenBeforeVersionBytes: a db written before values carried a
// version byte (records as bare JSON, usage rows of 32 bytes, last-used
// times of 8, log segments of bare entries) reads as it did.
func TestValuesWrittenBeforeVersionBytes(t *testing.T) {
	te := newTestEnv(t)
	org := te.createOrg("acme")
	keyID, key := te.createKey(org, `{"name":"k","env":"live","rate_limits":[{"limit":100,"window":"1m"}]}`)
	mustStatus(t, "whoami", te.whoami(envLive, key), 200)
	if err := te.s.behind.FlushAll(); err != nil {
		t.Fatal(err)
	}
	// Rewrite every value as the layout before version bytes wrote it.
	err := te.s.store.db.Update(func(tx *bolt.Tx) error {
		unversion := func(bucket []byte, strip func(v []byte) []byte) error {
			b := tx.Bucket(bucket)
			var keys, vals [][]byte
			b.ForEach(func(k, v []byte) error {
				if v != nil {
					keys, vals = append(keys, append([]byte(nil), k...)), append(vals, strip(append([]byte(nil), v...)))
				}
				return nil
			})
			for i := range keys {
				if err := b.Put(keys[i], vals[i]); err != nil {
					return err
				}
			}
			return nil
		}
		first := func(version byte) func([]byte) []byte {
			return func(v []byte) []byte {
				if len(v) == 0 || v[0] != version {
					t.Fatalf("a stored value lacks its version byte %#x: %q", version, v)
				}
				return v[1:]
			}
		}
		for _, b := range [][]byte{bucketOrgs, bucketKeys, bucketLimits} {
			if err := unversion(b, first(recordV1)); err != nil {
				return err
			}
		}
		if err := unversion(bucketUsage, first(usageV1)); err != nil {
			return err
		}
		if err := unversion(bucketLastUsed, first(lastUsedV1)); err != nil {
			return err
		}
		ring := tx.Bucket(bucketLogs).Bucket([]byte(org))
		k, v := ring.Cursor().First()
		if v[0] != segmentV1 {
			t.Fatalf("a log segment lacks its version byte: %q", v)
		}
		return ring.Put(append([]byte(nil), k...), append([]byte(nil), v[1:]...))
	})
	if err != nil {
		t.Fatal(err)
	}
	te.restart()
	r := te.root("GET", "/orgs/"+org+"/keys/"+keyID, "")
	mustStatus(t, "GET key", r, 200)
	if r.json(t)["last_used_at"] == nil {
		t.Errorf("last_used_at lost: %s", r.body)
	}
	if entries := readAllLogs(t, te, org); len(entries) != 1 || entries[0].KeyID != keyID {
		t.Errorf("log = %+v; want the one whoami", entries)
	}
	buckets, err := te.s.store.ReadUsage(org, envLive, 0)
	if err != nil || len(buckets) != 1 || buckets[0].OK != 1 {
		t.Errorf("usage = %+v, %v; want one 2xx", buckets, err)
	}
	mustStatus(t, "whoami after the restart", te.whoami(envLive, key), 200)
	te.clock.Advance(time.Second)
	if err := te.s.behind.FlushAll(); err != nil {
		t.Fatal(err)
	}
	buckets, _ = te.s.store.ReadUsage(org, envLive, 0)
	if len(buckets) != 1 || buckets[0].OK != 2 {
		t.Errorf("usage after adding to an old row = %+v; want 2", buckets)
	}
}
