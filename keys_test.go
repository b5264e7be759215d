package main

import (
	"fmt"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
)

func TestParseKey(t *testing.T) {
	prefixed := keyFormat{brand: "kh", style: stylePrefixed}
	split := keyFormat{brand: "kh", style: styleSplit}
	hex32 := strings.Repeat("ab", 16)
	hex16 := strings.Repeat("cd", 8)
	tests := []struct {
		name       string
		f          keyFormat
		token      string
		wantLookup string
		wantErr    string
	}{
		{"live key", prefixed, "kh_live_" + hex32, "kh_live_abababab", ""},
		{"test key", prefixed, "kh_test_" + hex32, "kh_test_abababab", ""},
		{"unknown env", prefixed, "kh_prod_" + hex32, "", msgMalformed},
		{"other brand", prefixed, "ck_live_" + hex32, "", msgMalformed},
		{"short", prefixed, "kh_live_" + hex32[:31], "", msgMalformed},
		{"upper hex", prefixed, "kh_live_" + strings.ToUpper(hex32), "", msgMalformed},
		{"trailing junk", prefixed, "kh_live_" + hex32 + "x", "", msgMalformed},
		{"empty", prefixed, "", "", msgMalformed},
		{"too long", prefixed, strings.Repeat("a", 300), "", msgMalformed},
		{"split key", split, "khpub_" + hex16 + ".khsec_" + hex32, "khpub_" + hex16, ""},
		{"split key on prefixed server", prefixed, "khpub_" + hex16 + ".khsec_" + hex32, "khpub_" + hex16, ""},
		{"prefixed key on split server", split, "kh_test_" + hex32, "kh_test_abababab", ""},
		{"split without dot", split, "khpub_" + hex16, "", msgMalformedSplit},
		{"split without secret", split, "khpub_" + hex16 + ".", "", msgMalformedSplit},
		{"split without public", split, ".khsec_" + hex32, "", msgMalformedSplit},
		{"split short secret", split, "khpub_" + hex16 + ".khsec_" + hex16, "", msgMalformedSplit},
		{"split parts swapped", split, "khsec_" + hex32 + ".khpub_" + hex16, "", msgMalformedSplit},
		{"split too long", split, "khpub_" + hex16 + ".khsec_" + strings.Repeat("a", 300), "", msgMalformedSplit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := tt.f.parse(tt.token)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("parse(%q) error = %v; want %q", tt.token, err, tt.wantErr)
				}
				return
			}
			if err != nil || p.lookup != tt.wantLookup || p.whole != tt.token {
				t.Fatalf("parse(%q) = %+v, %v; want lookup %q", tt.token, p, err, tt.wantLookup)
			}
		})
	}
}

func TestNewKeyShapes(t *testing.T) {
	prefixed := regexp.MustCompile(`^kh_(test|live)_[0-9a-f]{32}$`)
	split := regexp.MustCompile(`^khpub_[0-9a-f]{16}\.khsec_[0-9a-f]{32}$`)
	for _, f := range []keyFormat{{"kh", stylePrefixed}, {"kh", styleSplit}} {
		seen := map[string]bool{}
		for i := 0; i < 100; i++ {
			key, lookup := f.newKey(envLive)
			if f.style == stylePrefixed && !prefixed.MatchString(key) || f.style == styleSplit && !split.MatchString(key) {
				t.Fatalf("newKey = %q; not %s style", key, f.style)
			}
			p, err := f.parse(key)
			if err != nil || p.lookup != lookup {
				t.Fatalf("parse(newKey) = %+v, %v; want lookup %q", p, err, lookup)
			}
			if seen[key] {
				t.Fatalf("newKey repeated %q", key)
			}
			seen[key] = true
		}
	}
}

// TestSplitMalformedMessage: the split style's malformed_token message, whose
// row TestErrorRows checks decoded, is in the body JSON-escaped as
// encoding/json writes it.
func TestSplitMalformedMessage(t *testing.T) {
	te := newTestEnv(t, func(c *config) { c.keyStyle = styleSplit })
	r := te.do("GET", "/api/v1/prod/whoami", "", bearer("khpub_0123456789abcdef")...)
	if r.status != 401 || !strings.Contains(string(r.body), `"malformed_token","message":"Authorization token must be provided as \u003cpublic\u003e.\u003csecret\u003e"`) {
		t.Fatalf("split malformed = %d %s", r.status, r.body)
	}
}

func TestBothKeyStylesEndToEnd(t *testing.T) {
	for _, style := range []string{stylePrefixed, styleSplit} {
		t.Run(style, func(t *testing.T) {
			te := newTestEnv(t, func(c *config) { c.keyStyle = style; c.brand = "acme" })
			org := te.createOrg("acme")
			id, key := te.createKey(org, `{"name":"k","env":"test","scopes":["a:b"]}`)
			if style == styleSplit && !strings.HasPrefix(key, "acmepub_") || style == stylePrefixed && !strings.HasPrefix(key, "acme_test_") {
				t.Fatalf("key %q is not %s style of brand acme", key, style)
			}
			r := te.whoami(envTest, key)
			mustStatus(t, "whoami", r, 200)
			if got := r.json(t)["key_id"]; got != id {
				t.Fatalf("whoami key_id = %v; want %s", got, id)
			}
			rec := te.root("GET", "/orgs/"+org+"/keys/"+id, "").json(t)
			if p := rec["prefix"].(string); !strings.HasPrefix(key, p) || len(p) >= len(key)-16 {
				t.Fatalf("prefix %q is not a short start of the key", p)
			}
		})
	}
}

func TestLookupValue(t *testing.T) {
	values := map[uint64]string{}
	for _, l := range []string{"kh_live_1a2b3c4d", "kh_test_1a2b3c4d", "khpub_000000011a2b3c4d", "khpub_1a2b3c4d00000000", "acme_live_ffffffff"} {
		v := lookupValue(l)
		if other, ok := values[v]; ok {
			t.Errorf("%s and %s share lookup value %x", l, other, v)
		}
		values[v] = l
		if lookupValue([]byte(l)) != v {
			t.Errorf("lookupValue differs for string and bytes of %s", l)
		}
	}
}

// TestKeyIndexChains adds keys that share a lookup value, across a chunk
// boundary: each is found by its own secret and id, never another's.
func TestKeyIndexChains(t *testing.T) {
	t.Parallel()
	ix := newKeyIndex(0)
	const lookup = "kh_live_1a2b3c4d"
	var wholes []string
	var ids []string
	for i := range chunkSize + 3 {
		whole := fmt.Sprintf("%s%024x", lookup, i)
		id := fmt.Sprintf("key_%016x", i)
		prefix := lookup
		if i%2 == 1 { // half the keys chain, half stand alone
			prefix = fmt.Sprintf("kh_live_%08x", i)
			whole = fmt.Sprintf("%s%024x", prefix, i)
		}
		rec := keyRecord{ID: id, OrgID: fmt.Sprintf("org_%d", i%3), Env: envLive, Prefix: prefix, Hash: hashKey(whole)}
		ix.addRow(recordRow(&rec), nil)
		wholes, ids = append(wholes, whole), append(ids, id)
	}
	for _, i := range []int{0, 1, 2, chunkSize - 1, chunkSize, chunkSize + 1, chunkSize + 2} {
		p := parsedKey{lookup: wholes[i][:len(wholes[i])-24], whole: wholes[i]}
		e := ix.find(p)
		if e == nil || e.keyID() != ids[i] || ix.orgID(e) != fmt.Sprintf("org_%d", i%3) {
			t.Fatalf("find key %d = %+v; want %s", i, e, ids[i])
		}
		if got := ix.get(p.lookup, ids[i]); got != e {
			t.Errorf("get key %d = %p; want %p", i, got, e)
		}
	}
	if e := ix.find(parsedKey{lookup: lookup, whole: lookup + strings.Repeat("f", 24)}); e != nil {
		t.Errorf("an unknown secret on a shared lookup value found %s", e.keyID())
	}
}

// TestInternTableGrows numbers more values than one chunk holds while a
// reader reads each value as soon as its number is published, as index
// entries publish theirs: the race detector checks the lock-free reads.
func TestInternTableGrows(t *testing.T) {
	t.Parallel()
	var table internTable[string]
	const n = 3*internChunk + 5
	var published atomic.Uint32
	go func() {
		for i := range uint32(n) {
			v := fmt.Sprint(i)
			if got := table.intern([]byte(v), func() string { return v }); got != i {
				t.Errorf("intern(%s) = %d; want %d", v, got, i)
			}
			published.Store(i + 1)
		}
	}()
	for seen := uint32(0); seen < n; {
		if m := published.Load(); m > seen {
			if got := table.get(m - 1); got != fmt.Sprint(m-1) {
				t.Fatalf("get(%d) = %q", m-1, got)
			}
			seen = m
		}
	}
	for _, i := range []uint32{0, internChunk - 1, internChunk, 2 * internChunk, n - 1} {
		if got := table.get(i); got != fmt.Sprint(i) {
			t.Errorf("get(%d) = %q", i, got)
		}
		if again := table.intern([]byte(fmt.Sprint(i)), func() string { return "dup" }); again != i {
			t.Errorf("interning %d again gave %d", i, again)
		}
	}
}

// TestTouchStep: a key's last use is stored when it moved by a
// millisecond, not on every request (each store writes the cache line
// every request reads), and never goes back.
func TestTouchStep(t *testing.T) {
	var e keyEntry
	at := int64(1_000_000_000)
	for _, step := range []struct {
		now, want int64
	}{
		{at, at},
		{at + lastUsedStep/2, at},
		{at + lastUsedStep, at + lastUsedStep},
		{at, at + lastUsedStep},
	} {
		e.touch(step.now)
		if got := e.lastUsed.Load(); got != step.want {
			t.Errorf("touch(%d): last used %d; want %d", step.now, got, step.want)
		}
	}
}
