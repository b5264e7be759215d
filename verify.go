package main

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The verify call is on the hot path like whoami, so its body is read into
// a pooled buffer and parsed by parseVerifyBody instead of encoding/json,
// whose Decoder costs a 4 KiB buffer and reflection per call.

type verifyRequest struct {
	Key   string     `json:"key"`
	Env   string     `json:"env"`
	Scope string     `json:"scope"`
	Cost  verifyCost `json:"cost,omitzero"`
}

// verifyCost is the credits a verify call spends: 1 unless the body says,
// a whole number from 0 to maxCredits written in digits. It is read by
// parseCost in both parsers, the hand-written one and encoding/json's
// (through UnmarshalJSON), so that they agree.
type verifyCost struct {
	n   int64
	set bool
}

func (c *verifyCost) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil // as encoding/json: null leaves the field as it was
	}
	n, ok := parseCost(b)
	if !ok {
		return errBadCost
	}
	*c = verifyCost{n: n, set: true}
	return nil
}

func (c verifyCost) MarshalJSON() ([]byte, error) { return strconv.AppendInt(nil, c.n, 10), nil }

var errBadCost = errors.New(`field "cost" must be a whole number`)

const msgBadCost = `Field "cost" must be a whole number from 0 to 1000000000000000.`

// parseCost reads a JSON number that is a whole number from 0 to
// maxCredits in plain digits ("5", not "5.0" or "5e0").
func parseCost(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 16 || len(b) > 1 && b[0] == '0' {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, n <= maxCredits
}

// costOr is the cost the body gave, or def.
func (c verifyCost) costOr(def int64) int64 {
	if c.set {
		return c.n
	}
	return def
}

// verifyAnswer is the shape of the answer, which appendVerifyAnswer writes
// by hand; clients (and tests) decode it.
type verifyAnswer struct {
	Valid      bool            `json:"valid"`
	KeyID      string          `json:"key_id,omitempty"`
	OrgID      string          `json:"org_id,omitempty"`
	Env        string          `json:"env,omitempty"`
	Scopes     []string        `json:"scopes,omitempty"`
	Name       *string         `json:"name,omitempty"`
	Meta       json.RawMessage `json:"meta,omitempty"`
	ExpiresAt  *string         `json:"expires_at,omitempty"`
	Enabled    *bool           `json:"enabled,omitempty"`
	Credits    *creditsView    `json:"credits,omitempty"`
	RateLimit  *verifyLimits   `json:"ratelimit,omitempty"`
	RateLimits []verifyWindow  `json:"ratelimits,omitempty"`
	Code       string          `json:"code,omitempty"`
	Message    string          `json:"message,omitempty"`
}

type verifyLimits struct {
	Limit     int64 `json:"limit"`
	Remaining int64 `json:"remaining"`
	Reset     int64 `json:"reset"`
}

// verifyWindow is one of the key's windows in the answer's "ratelimits".
type verifyWindow struct {
	Window    string `json:"window"`
	Limit     int64  `json:"limit"`
	Remaining int64  `json:"remaining"`
	Reset     int64  `json:"reset"`
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
// env and scope and the number cost, as strictly as decodeStrict: unknown
// members (names match byte for byte), a member given twice, other types
// and trailing data are errors that name the cause. Strings without
// escapes are taken as they are; others are unquoted by encoding/json.
func parseVerifyBody(b []byte, req *verifyRequest) *apiError {
	p := jsonScanner{b: b}
	if !p.consume('{') {
		return invalidRequest("Request body must be a JSON object.")
	}
	if p.consume('}') {
		return p.end()
	}
	var seen [4]bool
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
		case string(name) == "cost":
			field = 3
		default:
			return invalidRequest("Invalid JSON body: unknown field %s.", strconv.Quote(string(name)))
		}
		if seen[field] {
			return invalidRequest("Invalid JSON body: field %s appears twice.", strconv.Quote(string(name)))
		}
		seen[field] = true
		if p.literal("null") {
			// as encoding/json: null leaves the field as it was
		} else if dst == nil {
			num, ok := p.number()
			if !ok {
				return invalidRequest(msgBadCost)
			}
			n, ok := parseCost(num)
			if !ok {
				return invalidRequest(msgBadCost)
			}
			req.Cost = verifyCost{n: n, set: true}
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

// number reads the bytes of a JSON number: -?int(.digits)?([eE][+-]?digits)?
func (p *jsonScanner) number() ([]byte, bool) {
	p.skipSpace()
	start, b := p.i, p.b
	i := start
	digits := func() bool {
		j := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		return i > j
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	if i < len(b) && b[i] == '0' {
		i++
	} else if !digits() {
		return nil, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if !digits() {
			return nil, false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !digits() {
			return nil, false
		}
	}
	p.i = i
	return b[start:i], true
}

func (p *jsonScanner) end() *apiError {
	p.skipSpace()
	if p.i != len(p.b) {
		return invalidRequest("Invalid JSON body: unexpected data after the object.")
	}
	return nil
}

// appendVerifyAnswer writes the answer of SPEC 6 by hand: for a valid key
// its identity, name, meta, expiry, enabled, credits, the tightest window
// and every window; for a refusal the code and message, and for an
// identified key its credits and windows.
func (s *server) appendVerifyAnswer(b []byte, v *verdict, windows *[maxWindows]float64, now int64) []byte {
	ix, k := s.index, v.key
	if v.err != nil {
		b = append(b, `{"valid":false,"code":"`...)
		b = append(b, v.err.code...)
		b = append(b, `","message":`...)
		b = appendJSONString(b, v.err.message)
		if v.decided && v.dec.hasCredits {
			b = s.appendCredits(append(b, `,"credits":`...), k, &v.dec, now)
		}
	} else {
		var x *keyExtra
		if k.flags.Load()&flagExtra != 0 {
			x = ix.extra(k)
		}
		b = append(b, `{"valid":true,`...)
		b = appendIdentity(b, ix, k)
		b = append(b, `,"name":`...)
		b = appendJSONString(b, ix.name(k))
		b = append(b, `,"meta":`...)
		if x != nil && x.meta != nil {
			b = append(b, x.meta...)
		} else {
			b = append(b, "null"...)
		}
		b = append(b, `,"expires_at":`...)
		if at := k.expiresAt.Load(); at != 0 {
			b = append(b, '"')
			b = time.Unix(0, at).UTC().AppendFormat(b, timeLayout)
			b = append(b, '"')
		} else {
			b = append(b, "null"...)
		}
		b = append(b, `,"enabled":true,"credits":`...)
		if v.dec.hasCredits {
			b = s.appendCredits(b, k, &v.dec, now)
		} else {
			b = append(b, "null"...)
		}
	}
	if v.decided {
		d := &v.dec
		limits := d.set.limits
		b = append(b, `,"ratelimit":{"limit":`...)
		b = strconv.AppendInt(b, limits[d.tightest].Limit, 10)
		b = append(b, `,"remaining":`...)
		b = strconv.AppendInt(b, d.remaining, 10)
		b = append(b, `,"reset":`...)
		b = strconv.AppendInt(b, d.reset, 10)
		b = append(b, `},"ratelimits":[`...)
		for i, r := range limits {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"window":"`...)
			b = append(b, r.Window...)
			b = append(b, `","limit":`...)
			b = strconv.AppendInt(b, r.Limit, 10)
			b = append(b, `,"remaining":`...)
			b = strconv.AppendInt(b, int64(windows[i]), 10)
			b = append(b, `,"reset":`...)
			b = strconv.AppendInt(b, d.set.resetIn(i, windows[i]), 10)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	return append(b, "}\n"...)
}

// appendCredits writes a key's credits as the decision left them, with
// its refill schedule.
func (s *server) appendCredits(b []byte, k *keyEntry, d *decision, now int64) []byte {
	b = append(b, `{"remaining":`...)
	b = strconv.AppendInt(b, d.credits, 10)
	b = append(b, `,"refill":`...)
	var refill *creditRefill
	if x := s.index.extra(k); x != nil && x.credits != nil {
		refill = x.credits.refillOf()
	}
	if refill == nil {
		return append(b, "null}"...)
	}
	b = append(b, `{"amount":`...)
	b = strconv.AppendInt(b, refill.Amount, 10)
	b = append(b, `,"interval":"`...)
	b = append(b, refill.Interval...)
	b = append(b, '"')
	if refill.Day != 0 {
		b = append(b, `,"day":`...)
		b = strconv.AppendInt(b, int64(refill.Day), 10)
	}
	return append(b, "}}"...)
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
	if c := s.store.cluster; aerr == nil && c != nil && !c.fresh(start) {
		aerr = errStale // a node that may have missed a revocation answers nothing
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
	var windows [maxWindows]float64
	if req.Key != "" {
		v = s.verify(strings.TrimSpace(req.Key), &checkArgs{env: req.Env, scope: req.Scope,
			cost: req.Cost.costOr(1), r: r, windows: &windows}, start)
	}
	guardedSurface.owe(w.Header(), reqID, v.decision())
	out := s.appendVerifyAnswer(body[:0], &v, &windows, start.UnixNano())
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(200)
	w.Write(out)
	*bp = out
	// Logged as the status the key would have got; answered 200.
	s.metrics.observe(surfVerify, 200, s.record(r.Method, verifyPath, logStatus(v), start, &v, reqID))
}
