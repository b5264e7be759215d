package main

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"reflect"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestRestartKeepsKeys reopens the real bbolt file: keys, revocations, tokens
// and org survive; the in-memory index is rebuilt from it.
func TestRestartKeepsKeys(t *testing.T) {
	te := newTestEnv(t)
	org := te.createOrg("acme")
	_, live := te.createKey(org, `{"name":"k","env":"live"}`)
	revID, revoked := te.createKey(org, `{"name":"r","env":"live"}`)
	te.root("POST", "/orgs/"+org+"/keys/"+revID+"/revoke", "")
	token := te.root("POST", "/orgs/"+org+"/admin-tokens", `{"name":"t"}`).json(t)["token"].(string)
	te.restart()
	mustStatus(t, "key after restart", te.whoami(envLive, live), 200)
	if r := te.whoami(envLive, revoked); r.errorCode(t) != "invalid_or_revoked" {
		t.Fatalf("revoked key after restart = %d; want invalid_or_revoked", r.status)
	}
	mustStatus(t, "org admin token after restart", te.admin(token, "GET", "/orgs/"+org, ""), 200)
}

// TestSecretsNeverStored checks the plaintext keys and tokens appear in no
// byte of the db file and in nothing the server printed or logged, and
// that no listing, log or audit entry holds one or a hash of one.
func TestSecretsNeverStored(t *testing.T) {
	te := newTestEnv(t)
	org := te.createOrg("acme")
	var secrets []string
	for _, style := range []string{stylePrefixed, styleSplit} {
		te.s.format.style = style
		id, key := te.createKey(org, `{"name":"k","env":"live"}`)
		secrets = append(secrets, key, key[len(key)-32:])
		te.whoami(envLive, key)
		te.whoami(envTest, key)
		te.do("POST", "/v1/keys/verify", `{"key":"`+key+`"}`)
		rolled := te.root("POST", "/orgs/"+org+"/keys/"+id+"/roll", `{"expires_in":"1h"}`).json(t)["key"].(string)
		secrets = append(secrets, rolled, rolled[len(rolled)-32:])
	}
	tokID, token := te.issueOrgToken(org, "t")
	te.admin(token, "GET", "/orgs/"+org, "")
	rolledToken := te.admin(token, "POST", "/orgs/"+org+"/admin-tokens/"+tokID+"/roll", `{"expires_in":"1h"}`).json(t)["token"].(string)
	newRoot := te.root("POST", "/admin-token/roll", "").json(t)["token"].(string)
	secrets = append(secrets, token, rolledToken, testRootToken, newRoot)
	answers := map[string]response{}
	for what, path := range map[string]string{"key listing": "/orgs/" + org + "/keys?include_revoked=true",
		"logs": "/orgs/" + org + "/logs", "token listing": "/orgs/" + org + "/admin-tokens?include_revoked=true",
		"audit": "/audit", "org audit": "/orgs/" + org + "/audit"} {
		answers[what] = te.admin(newRoot, "GET", path, "")
		mustStatus(t, what, answers[what], 200)
	}
	te.restart()
	db, err := os.ReadFile(te.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	searched := map[string][]byte{"db file": db, "server log": te.stderr.Bytes(), "server stdout": te.stdout.Bytes()}
	for what, r := range answers {
		searched[what] = r.body
	}
	for _, sec := range secrets {
		for what, b := range searched {
			if bytes.Contains(b, []byte(sec)) {
				t.Errorf("%s contains the secret %s…", what, sec[:12])
			}
		}
	}
	searched = map[string][]byte{"audit entries in the db": auditValues(t, te)}
	for what, r := range answers {
		searched[what] = r.body
	}
	for _, sec := range secrets {
		for what, b := range searched {
			if form := hashForm(b, hashKey(sec)); form != "" {
				t.Errorf("%s contains the hash of %s… (%s)", what, sec[:12], form)
			}
		}
	}
	for _, what := range []string{"key listing", "token listing"} {
		if b := answers[what].body; bytes.Contains(b, []byte(`"hash"`)) || bytes.Contains(b, []byte(`"key"`)) || bytes.Contains(b, []byte(`"token"`)) {
			t.Errorf("%s shows a hash, key or token: %s", what, b)
		}
	}
}

// auditValues is every stored audit entry, as bytes.
func auditValues(t *testing.T, te *testEnv) []byte {
	var all []byte
	err := te.s.store.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAudit).ForEach(func(_, v []byte) error {
			all = append(append(all, v...), '\n')
			return nil
		})
	})
	if err != nil || len(all) == 0 {
		t.Fatalf("reading the audit entries: %v (%d bytes)", err, len(all))
	}
	return all
}

// hashForm names the form in which b holds hash, if it does: raw, hex,
// base64, or as encoding/json writes a [32]byte.
func hashForm(b []byte, hash [32]byte) string {
	asJSON, _ := json.Marshal(hash)
	forms := map[string][]byte{"raw": hash[:], "hex": []byte(hex.EncodeToString(hash[:])),
		"base64": []byte(base64.StdEncoding.EncodeToString(hash[:])), "JSON": asJSON[1 : len(asJSON)-1]}
	for name, f := range forms {
		if bytes.Contains(b, f) {
			return name
		}
	}
	return ""
}

func TestHotRowRoundTrip(t *testing.T) {
	rec := keyRecord{ID: "key_0123456789abcdef", OrgID: "org_x", Name: "backend é", Env: envLive, Prefix: "kh_live_1a2b3c4d",
		Hash: hashKey("x"), Scopes: []string{"a:b", "c"}, RateLimits: []rateLimit{{5, "1m"}},
		ExpiresAt: 42, RevokedAt: 7, Disabled: true, Meta: json.RawMessage(`{"plan":"pro"}`),
		AllowedIPs: []string{"192.0.2.0/24", "2001:db8::/32"},
		Credits:    &creditSetting{Remaining: 9, Gen: 77, SetAt: 5, Refill: &creditRefill{Amount: 100, Interval: refillMonthly, Day: 31}}}
	var row hotRow
	if err := row.decode(appendHotRow(nil, &rec)); err != nil {
		t.Fatal(err)
	}
	if set, ok := decodeCreditSetting(row.credits); !ok || !reflect.DeepEqual(&set, rec.Credits) {
		t.Fatalf("credits from row = %+v, %v; want %+v", set, ok, rec.Credits)
	}
	ix := newKeyIndex(0)
	kc := newCreditBook().configure([8]byte{1}, rec.Credits)
	e := ix.addRow(&row, kc)
	if e.keyID() != rec.ID || ix.orgID(e) != rec.OrgID || e.env() != envLive || e.hash != rec.Hash ||
		e.expiresAt.Load() != 42 || e.revokedAt.Load() != 7 || len(ix.scopes(e).list) != 2 ||
		ix.scopes(e).header[0] != "a:b,c" || ix.limits(e).sig != "5/1m," || ix.name(e) != rec.Name ||
		e.flags.Load() != flagDisabled|flagExtra {
		t.Fatalf("entry from row = %+v", e)
	}
	if x := ix.extra(e); x == nil || string(x.meta) != string(rec.Meta) || len(x.allowed) != 2 ||
		x.allowed[1].String() != "2001:db8::/32" || x.credits != kc {
		t.Fatalf("extras from row = %+v", x)
	}
	if ix.get(rec.Prefix, rec.ID) != e {
		t.Fatalf("get by prefix and id did not find the entry")
	}
	for _, bad := range [][]byte{nil, make([]byte, 49), append([]byte{9}, make([]byte, 60)...), appendHotRow(nil, &rec)[:60],
		appendHotRow(nil, &rec)[:51]} {
		if err := row.decode(bad); err == nil {
			t.Errorf("decode(%x) accepted a malformed row", bad)
		}
	}
}
