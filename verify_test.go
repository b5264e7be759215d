package main

import (
	"bytes"
	"strings"
	"testing"
)

// verifyParserSeeds are bodies the hand parser must judge as decodeStrict does.
var verifyParserSeeds = []string{
	`{"key":"kh_live_abc"}`, `{"key":"a","env":"live","scope":"sms:send"}`, ` { "key" : "a" , "env" : null } `,
	`{}`, `{"key":"a\"b\\c\u00e9\n"}`, `{"key":"a","extra":1}`, `{"key":5}`, `{"key":"a"}{}`, `{"key":"a",}`,
	`{"key":"a"`, `[]`, `null`, ``, `{"key":"a\u0000"}`, "{\"key\":\"a\x01\"}", `{"key":"a\x"}`, `{"KEY":"a"}`,
	`{"key":"é"}`, `{"key":"a","key":"b"}`, `{"key":true}`, `{"scope":["a"]}`, "{\"key\":\"\xff\"}",
	`{"Key":"a"}`, `{"\u212aey":"a"}`, `{"key":"a","env":null,"env":"live"}`, `{"k\u0065y":"a","key":"b"}`,
	`{"key":"a","cost":0}`, `{"cost":5}`, `{"cost":1.5}`, `{"cost":-1}`, `{"cost":"1"}`, `{"cost":1e3}`, `{"cost":01}`,
	`{"cost":null}`, `{"cost":1000000000000000}`, `{"cost":1000000000000001}`, `{"cost":1,"cost":2}`, `{"cost":true}`,
	`{"cost":-}`, `{"cost":1.}`, `{"cost":99999999999999999999}`, `{"cost": 7 ,"key":"a"}`, `{"Cost":1}`, `{"cost":-0}`,
	`{"cost":0.0}`, `{"cost":[1]}`,
}

// TestVerifyParserMatchesEncodingJSON: the hand parser accepts exactly what
// the strict decoder accepts, with the same values.
func TestVerifyParserMatchesEncodingJSON(t *testing.T) {
	for _, body := range verifyParserSeeds {
		checkVerifyParser(t, []byte(body))
	}
}

// TestVerifyNamesExact: POST /v1/keys/verify takes key, env and scope by
// their exact names, each once, as the admin API takes its fields.
func TestVerifyNamesExact(t *testing.T) {
	te := newTestEnv(t)
	_, key := te.createKey(te.createOrg("acme"), `{"name":"k","env":"live"}`)
	for body, want := range map[string]string{
		`{"KEY":"` + key + `"}`:                                `"KEY"`,
		`{"key":"` + key + `","Env":"live"}`:                   `"Env"`,
		`{"key":"kh_live_nope","key":"` + key + `"}`:           `"key" appears twice`,
		`{"key":"` + key + `","scope":"a:b","scope":null}`:     `"scope" appears twice`,
		`{"key":"` + key + `","env":"test","\u0065nv":"live"}`: `"env" appears twice`,
	} {
		r := te.do("POST", "/v1/keys/verify", body)
		e, _ := r.json(t)["error"].(map[string]any)
		msg, _ := e["message"].(string)
		if r.status != 400 || r.errorCode(t) != "invalid_request" || !strings.Contains(msg, want) {
			t.Errorf("verify %s = %d %s; want 400 invalid_request naming %s", body, r.status, r.body, want)
		}
	}
}

func FuzzVerifyParser(f *testing.F) {
	for _, s := range verifyParserSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkVerifyParser(t, body) })
}

func checkVerifyParser(t *testing.T, body []byte) {
	t.Helper()
	var fast, strict verifyRequest
	fastErr := parseVerifyBody(body, &fast)
	strictErr := decodeStrictBytes(body, &strict, false)
	if string(bytes.TrimSpace(body)) == "null" && fastErr != nil {
		return // encoding/json takes null for an object and changes nothing; we refuse it
	}
	if (fastErr == nil) != (strictErr == nil) {
		t.Fatalf("body %q: hand parser %v, encoding/json %v", body, fastErr, strictErr)
	}
	if fastErr == nil && fast != strict {
		t.Fatalf("body %q: hand parser %+v, encoding/json %+v", body, fast, strict)
	}
	if fastErr != nil && (fastErr.status != 400 || fastErr.code != "invalid_request") {
		t.Fatalf("body %q: error %+v; want 400 invalid_request", body, fastErr)
	}
}

func TestVerifyEndpoint(t *testing.T) {
	te := newTestEnv(t)
	org := te.createOrg("acme")
	id, key := te.createKey(org, `{"name":"k","env":"live","scopes":["sms:send"]}`)
	tests := []struct {
		name      string
		body      string
		status    int
		wantValid bool
		wantCode  string
	}{
		{"valid", `{"key":"` + key + `"}`, 200, true, ""},
		{"valid env and scope", `{"key":"` + key + `","env":"live","scope":"sms:send"}`, 200, true, ""},
		// SPEC 3's rows, valid false with their code and message, are
		// TestErrorRows's.
		{"bad env", `{"key":"` + key + `","env":"prod"}`, 400, false, "invalid_request"},
		{"unknown field", `{"key":"` + key + `","extra":1}`, 400, false, "invalid_request"},
		{"not json", `key=abc`, 400, false, "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := te.do("POST", "/v1/keys/verify", tt.body)
			if r.status != tt.status {
				t.Fatalf("status = %d %s; want %d", r.status, r.body, tt.status)
			}
			m := r.json(t)
			if tt.status == 400 {
				if r.errorCode(t) != tt.wantCode {
					t.Fatalf("error = %s; want %s", r.body, tt.wantCode)
				}
				return
			}
			if m["valid"] != tt.wantValid || tt.wantCode != "" && m["code"] != tt.wantCode {
				t.Fatalf("verify = %s; want valid %v code %q", r.body, tt.wantValid, tt.wantCode)
			}
			if tt.wantValid && (m["key_id"] != id || m["org_id"] != org || m["ratelimit"] == nil) {
				t.Fatalf("verify = %s; want key_id, org_id and ratelimit", r.body)
			}
		})
	}
}
