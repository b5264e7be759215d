package main

import (
	"encoding/json"
	"testing"
)

// TestEveryErrorCarriesItsRequestID: whichever surface answers an error,
// the router's 404 and 405 included, X-Request-Id is the body's request_id.
func TestEveryErrorCarriesItsRequestID(t *testing.T) {
	te := newTestEnv(t)
	for _, tt := range []struct{ method, path string }{
		{"GET", "/no/such/page"},
		{"DELETE", "/admin/v1/orgs"},
		{"GET", "/admin/v1/orgs/org_missing"},
		{"GET", "/api/v1/prod/whoami"},
		{"POST", "/v1/keys/verify"},
		{"GET", "/v1/auth"},
	} {
		r := te.do(tt.method, tt.path, "", bearer(testRootToken)...)
		var body errorBody
		if err := json.Unmarshal(r.body, &body); err != nil || body.RequestID == "" {
			t.Errorf("%s %s = %d %s: no request_id", tt.method, tt.path, r.status, r.body)
			continue
		}
		if got := r.header.Values("X-Request-Id"); len(got) != 1 || got[0] != body.RequestID {
			t.Errorf("%s %s: X-Request-Id %q; want the body's %q", tt.method, tt.path, got, body.RequestID)
		}
	}
}

// BenchmarkAnswerBody: whoami's body written by hand (appendIdentity, from
// a pooled buffer) against encoding/json, to show the hand-written answers
// pay for themselves (BENCHMARKS.md).
func BenchmarkAnswerBody(b *testing.B) {
	te := newTestEnv(b)
	_, key := te.createKey(te.createOrg("acme"), `{"name":"k","env":"live","scopes":["sms:send","reports:read"]}`)
	p, _ := te.s.format.parse(key)
	ix, k := te.s.index, te.s.index.find(p)
	b.Run("by hand", func(b *testing.B) {
		buf := make([]byte, 0, 512)
		for b.Loop() {
			buf = append(appendIdentity(append(buf[:0], '{'), ix, k), "}\n"...)
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		type identity struct {
			KeyID  string   `json:"key_id"`
			OrgID  string   `json:"org_id"`
			Env    string   `json:"env"`
			Scopes []string `json:"scopes"`
		}
		for b.Loop() {
			if _, err := json.Marshal(identity{k.keyID(), ix.orgID(k), k.env(), ix.scopes(k).list}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
