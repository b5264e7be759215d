package main

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The verify call is on the hot path like whoami, so its body is read into
// a pooled buffer and parsed by parseVerifyBody instead of encoding/json,
// whose Decoder costs a 4 KiB buffer and reflection per call.

type verifyRequest struct {
	Key   string `json:"key"`
	Env   string `json:"env"`
	Scope string `json:"scope"`
}

// verifyAnswer is the shape of the answer, which appendVerifyAnswer writes
// by hand; clients (and tests) decode it.
type verifyAnswer struct {
	Valid     bool          `json:"valid"`
	KeyID     string        `json:"key_id,omitempty"`
	OrgID     string        `json:"org_id,omitempty"`
	Env       string        `json:"env,omitempty"`
	Scopes    []string      `json:"scopes,omitempty"`
	RateLimit *verifyLimits `json:"ratelimit,omitempty"`
	Code      string        `json:"code,omitempty"`
	Message   string        `json:"message,omitempty"`
}

type verifyLimits struct {
	Limit     int64 `json:"limit"`
	Remaining int64 `json:"remaining"`
	Reset     int64 `json:"reset"`
}

// readBody reads at most maxBodyBytes into the pooled buffer bp.
func readBody(r io.Reader, bp *[]byte) ([]byte, *apiError) {
	b := (*bp)[:0]
	for {
		if len(b) == cap(b) {
			if cap(b) > maxBodyBytes {
				return nil, invalidRequest("Request body must be at most %d bytes.", maxBodyBytes)
			}
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		*bp = b
		if errors.Is(err, io.EOF) {
			if len(b) > maxBodyBytes {
				return nil, invalidRequest("Request body must be at most %d bytes.", maxBodyBytes)
			}
			return b, nil
		}
		if err != nil {
			return nil, invalidRequest("Request body could not be read.")
		}
	}
}

// parseVerifyBody parses a JSON object whose members are the strings key,
// env and scope, as strictly as decodeStrict: unknown members (names match
// byte for byte), a member given twice, other types and trailing data are
// errors that name the cause. Strings without escapes are taken as they
// are; others are unquoted by encoding/json.
func parseVerifyBody(b []byte, req *verifyRequest) *apiError {
	p := jsonScanner{b: b}
	if !p.consume('{') {
		return invalidRequest("Request body must be a JSON object.")
	}
	if p.consume('}') {
		return p.end()
	}
	var seen [3]bool
	for {
		name, ok := p.strBytes()
		if !ok || !p.consume(':') {
			return invalidRequest("Invalid JSON body: syntax error at byte %d.", p.i)
		}
		var dst *string
		field := 0
		// Compared as string(name), which Go does without a copy.
		switch {
		case string(name) == "key":
			dst = &req.Key
		case string(name) == "env":
			dst, field = &req.Env, 1
		case string(name) == "scope":
			dst, field = &req.Scope, 2
		default:
			return invalidRequest("Invalid JSON body: unknown field %s.", strconv.Quote(string(name)))
		}
		if seen[field] {
			return invalidRequest("Invalid JSON body: field %s appears twice.", strconv.Quote(string(name)))
		}
		seen[field] = true
		if p.literal("null") {
			// as encoding/json: null leaves the field as it was
		} else if v, ok := p.strBytes(); ok {
			*dst = verifyValue(v)
		} else {
			return invalidRequest("Invalid JSON body: field %q must be a string.", string(name))
		}
		if p.consume('}') {
			return p.end()
		}
		if !p.consume(',') {
			return invalidRequest("Invalid JSON body: syntax error at byte %d.", p.i)
		}
	}
}

type jsonScanner struct {
	b []byte
	i int
}

func (p *jsonScanner) skipSpace() {
	for p.i < len(p.b) && (p.b[p.i] == ' ' || p.b[p.i] == '\t' || p.b[p.i] == '\n' || p.b[p.i] == '\r') {
		p.i++
	}
}

func (p *jsonScanner) consume(c byte) bool {
	p.skipSpace()
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *jsonScanner) literal(word string) bool {
	p.skipSpace()
	if strings.HasPrefix(string(p.b[p.i:]), word) {
		p.i += len(word)
		return true
	}
	return false
}

// verifyValue is a member's value as a string of its own: the body's
// buffer is reused for the answer. An env is one of two constants.
func verifyValue(v []byte) string {
	switch {
	case len(v) == 0:
		return ""
	case string(v) == envLive:
		return envLive
	case string(v) == envTest:
		return envTest
	}
	return string(v)
}

// strBytes reads a JSON string: without escapes, the bytes of the body
// itself; with them, unquoted by encoding/json.
func (p *jsonScanner) strBytes() ([]byte, bool) {
	p.skipSpace()
	if p.i >= len(p.b) || p.b[p.i] != '"' {
		return nil, false
	}
	start := p.i
	escaped := false
	for j := start + 1; j < len(p.b); j++ {
		switch c := p.b[j]; {
		case c == '\\':
			escaped = true
			j++
		case c < 0x20:
			return nil, false
		case c == '"':
			p.i = j + 1
			if !escaped && utf8.Valid(p.b[start+1:j]) {
				return p.b[start+1 : j], true
			}
			var s string
			if json.Unmarshal(p.b[start:j+1], &s) != nil {
				return nil, false
			}
			return []byte(s), true
		}
	}
	return nil, false
}

func (p *jsonScanner) end() *apiError {
	p.skipSpace()
	if p.i != len(p.b) {
		return invalidRequest("Invalid JSON body: unexpected data after the object.")
	}
	return nil
}

// appendVerifyAnswer writes the answer of SPEC 6 by hand.
func appendVerifyAnswer(b []byte, ix *keyIndex, v *verdict) []byte {
	if v.err != nil {
		b = append(b, `{"valid":false,"code":"`...)
		b = append(b, v.err.code...)
		b = append(b, `","message":`...)
		b = appendJSONString(b, v.err.message)
	} else {
		b = append(b, `{"valid":true,`...)
		b = appendIdentity(b, ix, v.key)
	}
	if v.decided {
		d := &v.dec
		b = append(b, `,"ratelimit":{"limit":`...)
		b = strconv.AppendInt(b, d.limits[d.tightest].Limit, 10)
		b = append(b, `,"remaining":`...)
		b = strconv.AppendInt(b, d.remaining, 10)
		b = append(b, `,"reset":`...)
		b = strconv.AppendInt(b, d.reset, 10)
		b = append(b, '}')
	}
	return append(b, "}\n"...)
}

// verifyPath is the verify call's only path: the router matches it exactly.
const verifyPath = "/v1/keys/verify"

// serveVerify is POST /v1/keys/verify: 200 with valid true or false.
func (s *server) serveVerify(w http.ResponseWriter, r *http.Request) {
	start := s.now()
	reqID := newRequestID()
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	var req verifyRequest
	body, aerr := readBody(r.Body, bp)
	if aerr == nil {
		aerr = parseVerifyBody(body, &req)
	}
	if aerr == nil && req.Env != "" && req.Env != envTest && req.Env != envLive {
		aerr = invalidRequest(`Field "env" must be "test" or "live".`)
	}
	if aerr != nil {
		guardedSurface.fail(w, aerr, reqID, nil)
		s.metrics.observe(surfVerify, aerr.status, s.now().Sub(start))
		return
	}
	v := verdict{err: errMissingAuth}
	if req.Key != "" {
		v = s.verify(strings.TrimSpace(req.Key), req.Env, req.Scope, start)
	}
	guardedSurface.owe(w.Header(), reqID, v.decision())
	out := appendVerifyAnswer(body[:0], s.index, &v)
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(200)
	w.Write(out)
	*bp = out
	// Logged as the status the key would have got; answered 200.
	s.metrics.observe(surfVerify, 200, s.record(r.Method, verifyPath, logStatus(v), start, &v, reqID))
}
