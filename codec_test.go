package main

import (
	"fmt"
	"strings"
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

// TestLogEntryCodec round-trips entries with hostile paths through the
// stored form, and refuses damaged segments.
func TestLogEntryCodec(t *testing.T) {
	k := &keyEntry{id: [8]byte{0xab, 1}, live: true} // the org is its log bucket's name, not in the entry
	paths := []string{"/api/v1/prod/x", `/a"b\c`, "/\x00\x01\x1f\x7f", "/é/日本", "/bad\xff\xfeutf8", strings.Repeat("/x", 512)}
	var seg []byte
	for _, path := range paths {
		e := pendingEntry{at: 1_700_000_000_123_456_789, latency: 1500 * time.Microsecond, method: "PATCH",
			path: path, status: 429, key: k, env: envLive, reqID: "req_00112233445566ff"}
		seg = e.appendBinary(seg)
	}
	unidentified := pendingEntry{at: 1, method: "GET", path: "/", status: 401, reqID: "req_0000000000000001"}
	seg = unidentified.appendBinary(seg)
	folded := pendingEntry{at: 1, method: "GET", path: "/api/v1/dev/x", status: 429, key: k, env: envTest, reqID: "req_0000000000000002", count: 70000}
	seg = folded.appendBinary(seg)
	offsets, err := entryOffsets(seg)
	if err != nil || len(offsets) != len(paths)+2 {
		t.Fatalf("entryOffsets = %v, %v; want %d entries", offsets, err, len(paths)+2)
	}
	if got := decodeEntry(seg[offsets[len(paths)+1]:], 1, "org_1"); got.Count != 70000 || got.Path != folded.path || got.Env != envTest {
		t.Errorf("folded entry = %+v; want count 70000, path %s, env test", got, folded.path)
	}
	for i, path := range paths {
		got := decodeEntry(seg[offsets[i]:], uint64(7+i), "org_1")
		want := logEntry{ID: fmt.Sprint(7 + i), Time: "2023-11-14T22:13:20.123Z", Method: "PATCH", Path: path, Status: 429,
			LatencyMS: 1.5, KeyID: "key_ab01000000000000", OrgID: "org_1", Env: envLive, RequestID: "req_00112233445566ff",
			at: 1_700_000_000_123_456_789}
		if got != want {
			t.Errorf("entry %d: got %+v; want %+v", i, got, want)
		}
	}
	last := decodeEntry(seg[offsets[len(paths)]:], 1, "")
	if last.KeyID != "" || last.OrgID != "" || last.Env != "" || last.Status != 401 {
		t.Errorf("unidentified entry = %+v", last)
	}
	for _, cut := range []int{1, 3, offsets[1] + 5, len(seg) - 1} {
		if _, err := entryOffsets(seg[:cut]); err == nil {
			t.Errorf("segment cut to %d bytes accepted", cut)
		}
	}
}

// TestKeyRowsOfVersion1: a db whose key rows were written before rows held
// names and the options a PATCH sets opens, its keys work as they did and
// answer their names, and the rows are rewritten once in version 2.
func TestKeyRowsOfVersion1(t *testing.T) {
	te := newTestEnv(t)
	org := te.createOrg("acme")
	_, key := te.createKey(org, `{"name":"first key","env":"live","scopes":["a:b"],"rate_limits":[{"limit":3,"window":"1m"}]}`)
	revokedID, revoked := te.createKey(org, `{"name":"gone","env":"test"}`)
	mustStatus(t, "revoke", te.root("POST", "/orgs/"+org+"/keys/"+revokedID+"/revoke", ""), 200)
	// Rewrite every row as version 1 wrote it: no flags byte, five strings.
	v1 := func(row []byte) []byte {
		out := append([]byte{hotRowV1}, row[1:50]...)
		rest := row[51:]
		for range 5 {
			n := 2 + int(rest[0])<<8 + int(rest[1])
			out, rest = append(out, rest[:n]...), rest[n:]
		}
		return out
	}
	rewrite := func(version byte, conv func([]byte) []byte) int {
		n := 0
		err := te.s.store.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketKeyRows)
			var keys, vals [][]byte
			b.ForEach(func(k, v []byte) error {
				if v[0] == version {
					n++
				}
				keys, vals = append(keys, append([]byte(nil), k...)), append(vals, conv(append([]byte(nil), v...)))
				return nil
			})
			for i := range keys {
				if err := b.Put(keys[i], vals[i]); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	rewrite(hotRowV2, v1)
	te.restart()
	if !strings.Contains(te.stderr.String(), "rewrote key rows") {
		t.Errorf("no word of the rewrite in the log: %s", te.stderr.String())
	}
	r := te.do("POST", "/v1/keys/verify", `{"key":"`+key+`","scope":"a:b"}`)
	if !strings.Contains(string(r.body), `"valid":true`) || !strings.Contains(string(r.body), `"name":"first key"`) ||
		!strings.Contains(string(r.body), `"ratelimit":{"limit":3`) {
		t.Errorf("verify after the rewrite = %s", r.body)
	}
	if st := te.whoami(envTest, revoked).status; st != 401 {
		t.Errorf("the revoked key after the rewrite = %d; want 401", st)
	}
	if n := rewrite(hotRowV2, func(v []byte) []byte { return v }); n != 2 {
		t.Errorf("%d rows of version 2 after the start; want both", n)
	}
}
