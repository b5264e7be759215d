package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"
)

// apiError is an answer in the contract's error shape. Handlers return one;
// the full cause of an internal error goes to the log, never to the client.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

// The rows of SPEC 3, and the admin API's own.
var (
	errMissingAuth   = &apiError{401, "missing_authorization", "Missing Authorization header."}
	errInvalidSch    = &apiError{401, "invalid_scheme", "Authorization header must use the `Bearer <api key>` scheme."}
	errInvalidKey    = &apiError{401, "invalid_or_revoked", "API key is invalid or revoked."}
	errExpired       = &apiError{401, "key_expired", "API key has expired."}
	errDisabled      = &apiError{401, "key_disabled", "API key is disabled."}
	errIPNotAllowed  = &apiError{403, "ip_not_allowed", "API key is not allowed from this address."}
	errUsageExceeded = &apiError{429, "usage_exceeded", "API key has no requests left."}
	errVerifyFailed  = &apiError{500, "verification_failed", "Failed to verify API key."}
	// errStale: a cluster node not confirmed current within --max-staleness
	// fails closed, as a load balancer's signal to use another node.
	errStale = &apiError{503, "verification_failed", "This keyhole node is not confirmed current with its cluster; try another node."}

	errAdminToken   = &apiError{401, "invalid_or_revoked", "Admin token is invalid or revoked."}
	errRootOnly     = &apiError{403, "forbidden", "Only the root admin token can do this."}
	errNotFoundPage = &apiError{404, "not_found", "No such endpoint."}
	errBadMethod    = &apiError{405, "method_not_allowed", "Method not allowed for this endpoint."}
	errInternal     = &apiError{500, "internal_error", "Internal error."}
	errNotCanonical = &apiError{400, "invalid_request", "Request path must be canonical (no //, /./ or /../)."}
)

func malformedError(message string) *apiError {
	return &apiError{401, "malformed_token", message}
}

func scopeError(scope string) *apiError {
	return &apiError{403, "insufficient_scope", "API key lacks the required scope: " + scope + "."}
}

func invalidRequest(format string, args ...any) *apiError {
	return &apiError{400, "invalid_request", fmt.Sprintf(format, args...)}
}

func notFound(what string) *apiError {
	return &apiError{404, "not_found", what + " not found."}
}

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	RequestID string `json:"request_id"`
}

// A surface is one of keyhole's faces, as the headers every answer of it
// owes besides its body: the guarded surface's (the request id, and for an
// identified key the rate-limit headers of SPEC 4), the admin API's (the
// request id and the security headers), the console's (the request id, on
// its errors: its files carry their own headers).
type surface int

const (
	guardedSurface surface = iota
	adminSurface
	consoleSurface
)

// owe sets the headers every answer of the surface owes. A method with a
// switch rather than a func value: the compiler then sees that d does not
// escape, and the hot path keeps its verdict on the stack.
func (sf surface) owe(h http.Header, reqID string, d *decision) {
	switch sf {
	case guardedSurface:
		setOwnHeaders(h, reqID, d)
	case adminSurface:
		h["X-Request-Id"] = []string{reqID}
		setAPISecurityHeaders(h)
	default:
		h["X-Request-Id"] = []string{reqID}
	}
}

// fail is the one way keyhole answers an error: the headers its surface
// owes, then the contract's body with the request id. The guarded writer
// (statusWriter) is the guarded surface's adapter for answers that may
// come from the upstream too: it puts those headers on when the status
// goes out, so what it carries gets only the body (writeError).
func (sf surface) fail(w http.ResponseWriter, e *apiError, reqID string, d *decision) {
	sf.owe(w.Header(), reqID, d)
	writeError(w, e, reqID)
}

// writeError writes the contract's error body, its request id included;
// the headers are the surface's (fail).
func writeError(w http.ResponseWriter, e *apiError, requestID string) {
	var body errorBody
	body.Error.Code = e.code
	body.Error.Message = e.message
	body.RequestID = requestID
	writeJSON(w, e.status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	buf, err := json.Marshal(v)
	if err != nil {
		status, buf = 500, []byte(`{"error":{"code":"internal_error","message":"Internal error."}}`)
	}
	buf = append(buf, '\n')
	h := w.Header()
	h["Content-Type"] = jsonContentType
	if len(buf) > measuredByNetHTTP {
		h["Content-Length"] = []string{strconv.Itoa(len(buf))}
	}
	w.WriteHeader(status)
	w.Write(buf)
}

// measuredByNetHTTP is the size of net/http's buffer before it chunks a
// body: an answer written whole within it gets its Content-Length from
// net/http, without an entry in the header map. That keeps a guarded 429,
// with its Retry-After, at eight entries, the most a small Go map holds
// (TestAnswersFitASmallHeaderMap). A longer body gets it here, so that it
// is not sent chunked.
const measuredByNetHTTP = 2048

const maxBodyBytes = 64 << 10

// decodeStrict reads one JSON object into v: unknown fields, names that are
// not a field's byte for byte, names given twice in an object, trailing
// data, wrong types and bodies over 64 KiB are an invalid_request naming the
// cause. An empty body decodes as {} when emptyOK.
func decodeStrict(w http.ResponseWriter, r *http.Request, v any, emptyOK bool) *apiError {
	buf, aerr := readAdminBody(w, r)
	if aerr != nil {
		return aerr
	}
	return decodeStrictBytes(buf, v, emptyOK)
}

// readAdminBody reads an admin body of at most 64 KiB.
func readAdminBody(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	body := http.MaxBytesReader(w, r.Body, maxBodyBytes)
	buf, err := io.ReadAll(body)
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, invalidRequest("Request body must be at most %d bytes.", maxBodyBytes)
	}
	if err != nil {
		return nil, invalidRequest("Request body could not be read.")
	}
	return buf, nil
}

func decodeStrictBytes(buf []byte, v any, emptyOK bool) *apiError {
	if strings.Trim(string(buf), " \t\r\n") == "" { // JSON's whitespace, not TrimSpace's
		if emptyOK {
			return nil
		}
		return invalidRequest("Request body must be a JSON object.")
	}
	dec := json.NewDecoder(strings.NewReader(string(buf)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return invalidRequest("Invalid JSON body: %s.", jsonProblem(err))
	}
	// Not dec.More(): it is false before a stray '}' or ']', so "{}}" passed.
	if _, err := dec.Token(); err != io.EOF {
		return invalidRequest("Invalid JSON body: unexpected data after the object.")
	}
	return checkNames(json.NewDecoder(strings.NewReader(string(buf))), reflect.TypeOf(v))
}

// checkNames refuses the member names encoding/json lets through: one that
// matches a field of t only when case is folded, and one given twice in an
// object, of which encoding/json takes the last and a proxy in front may
// read the first. dec holds a value that decoded into a t without error.
// The bodies' structs have no embedded fields.
func checkNames(dec *json.Decoder, t reflect.Type) *apiError {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch tok, _ := dec.Token(); tok {
	case json.Delim('['):
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for dec.More() {
			if aerr := checkNames(dec, elem); aerr != nil {
				return aerr
			}
		}
		dec.Token()
	case json.Delim('{'):
		return checkMembers(dec, t)
	}
	return nil
}

// checkMembers checks an object's members, after its '{'. Only a struct's
// names are fixed; a map's or an interface's may be anything, once.
func checkMembers(dec *json.Decoder, t reflect.Type) *apiError {
	var fields map[string]reflect.Type
	if t != nil && t.Kind() == reflect.Struct {
		fields = jsonFields(t)
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, _ := dec.Token()
		name, _ := tok.(string)
		if seen[name] {
			return invalidRequest("Invalid JSON body: field %s appears twice.", strconv.Quote(name))
		}
		seen[name] = true
		var ft reflect.Type
		switch {
		case fields != nil:
			var ok bool
			if ft, ok = fields[name]; !ok {
				return invalidRequest("Invalid JSON body: unknown field %s (names are case-sensitive).", strconv.Quote(name))
			}
		case t != nil && t.Kind() == reflect.Map:
			ft = t.Elem()
		}
		if aerr := checkNames(dec, ft); aerr != nil {
			return aerr
		}
	}
	dec.Token()
	return nil
}

// jsonFields is the member name encoding/json gives each field of struct t,
// and the field's type.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	fields := make(map[string]reflect.Type, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = f.Type
	}
	return fields
}

// jsonProblem turns a decoding error into words that name the field.
func jsonProblem(err error) string {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr) && typeErr.Field != "":
		return fmt.Sprintf("field %q must be %s", typeErr.Field, jsonKind(typeErr.Type.Kind().String()))
	case errors.As(err, &typeErr):
		return "the body must be a JSON object"
	case errors.As(err, &syntaxErr):
		return fmt.Sprintf("syntax error at byte %d", syntaxErr.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "the body ends too soon"
	}
	msg := err.Error()
	if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return "unknown field " + f
	}
	return "the body is not valid JSON"
}

func jsonKind(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "slice", "array":
		return "a list"
	case "struct", "map":
		return "an object"
	case "bool":
		return "true or false"
	}
	return "a number"
}

// appendJSONString quotes s exactly as encoding/json does, so that every
// answer follows one escaping rule whichever way it is written: control
// characters escaped (\n, \r, \t, \b, \f short), "<", ">" and "&" as
// \u003c, \u003e and \u0026, U+2028 and U+2029 escaped, invalid UTF-8
// replaced (FuzzAppendJSONString holds it to json.Marshal).
func appendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' && c < utf8.RuneSelf {
			b = append(b, c)
			i++
			continue
		}
		if c < utf8.RuneSelf {
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
