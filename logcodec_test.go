package main

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestLogEntryCodec round-trips entries with hostile paths through the
// stored form, and refuses damaged segments.
func TestLogEntryCodec(t *testing.T) {
	k := &keyEntry{id: [8]byte{0xab, 1}, org: orgIDs.intern([]byte("org_1"), func() string { return "org_1" }), live: true}
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
			LatencyMS: 1.5, KeyID: "key_ab01000000000000", OrgID: "org_1", Env: envLive, RequestID: "req_00112233445566ff"}
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
