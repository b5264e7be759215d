package main

import (
	"bytes"
	"testing"
)

// verifyParserSeeds are bodies the hand parser must judge as encoding/json does.
var verifyParserSeeds = []string{
	`{"key":"kh_live_abc"}`, `{"key":"a","env":"live","scope":"sms:send"}`, ` { "key" : "a" , "env" : null } `,
	`{}`, `{"key":"a\"b\\c\u00e9\n"}`, `{"key":"a","extra":1}`, `{"key":5}`, `{"key":"a"}{}`, `{"key":"a",}`,
	`{"key":"a"`, `[]`, `null`, ``, `{"key":"a\u0000"}`, "{\"key\":\"a\x01\"}", `{"key":"a\x"}`, `{"KEY":"a"}`,
	`{"key":"é"}`, `{"key":"a","key":"b"}`, `{"key":true}`, `{"scope":["a"]}`, "{\"key\":\"\xff\"}",
}

// TestVerifyParserMatchesEncodingJSON: the hand parser accepts exactly what
// the strict decoder accepts, with the same values.
func TestVerifyParserMatchesEncodingJSON(t *testing.T) {
	for _, body := range verifyParserSeeds {
		checkVerifyParser(t, []byte(body))
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
		// encoding/json accepts a field name in any case; the hand parser
		// does not, and the contract names them in lower case.
		if strictErr == nil && fastErr != nil && fastErr.status == 400 {
			var lower map[string]any
			if decodeStrictBytes(body, &lower, false) == nil {
				for k := range lower {
					if k != "key" && k != "env" && k != "scope" {
						return
					}
				}
			}
		}
		t.Fatalf("body %q: hand parser %v, encoding/json %v", body, fastErr, strictErr)
	}
	if fastErr == nil && fast != strict {
		t.Fatalf("body %q: hand parser %+v, encoding/json %+v", body, fast, strict)
	}
	if fastErr != nil && (fastErr.status != 400 || fastErr.code != "invalid_request") {
		t.Fatalf("body %q: error %+v; want 400 invalid_request", body, fastErr)
	}
}
