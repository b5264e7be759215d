package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// The test client holds every answer it gets from keyhole to openapi.json,
// the document keyhole serves: the answer must be one the operation of its
// method and path describes (status, headers, body), so that a field a
// handler adds and the document lacks fails a test. The document's
// schemas are closed (additionalProperties: false).
//
// kin-openapi loads and validates the document and resolves an answer's
// status, headers and media type to the document's; schemas are OpenAPI
// 3.1's, JSON Schema 2020-12, checked by santhosh-tekuri/jsonschema, the
// validator kin-openapi uses for 3.1. kin-openapi's openapi3filter
// compiles a schema anew on every check, which doubled the time of the
// whole suite; so each schema of the document is compiled once (by its
// location in openapi.json), and openapi3filter.ValidateResponse checks
// the first answer of each operation and status, and any answer that
// fails, as well: the two must agree (checkAgainst).
//
// The operation is found here rather than by kin-openapi's routers, for
// the paths a router cannot match:
//
//   - a path under a base is the guarded surface whatever follows: without
//     --upstream {base}whoami (GET) is whoami, any other path is
//     {base}{path}; with --upstream every path is {base}{path}. Bases are
//     the server's (testClient.cfg), the document's are the defaults.
//     A method the document does not list there (keyhole passes any token
//     on) is checked as GET.
//   - /v1/auth answers every method: one it does not list is checked as GET.
//   - a path or method that is none of keyhole's is the router's 404 or 405,
//     which the document's description names, with the admin API's headers
//     and the error shape (its AdminNotFound).
//   - the console's files (/ and /console/…) are not in the document; its
//     refusals are checked for the error shape.

var (
	specOnce sync.Once
	specDoc  *openapi3.T
	specErr  error
)

// spec is openapi.json as the binary embeds it, loaded and validated once.
func spec() (*openapi3.T, error) {
	specOnce.Do(func() {
		loader := openapi3.NewLoader()
		specDoc, specErr = loader.LoadFromData(openapiJSON)
		if specErr == nil {
			specErr = specDoc.Validate(loader.Context)
		}
	})
	return specDoc, specErr
}

// The document's base paths, those of the default configuration.
const (
	specTestBase = "/api/v1/dev/"
	specLiveBase = "/api/v1/prod/"
)

// specRoute is what an answer is checked against.
type specRoute struct {
	route   *routers.Route
	params  map[string]string
	console bool   // a console file: not in the document, unless it is a refusal
	opPtr   string // the operation's JSON pointer in openapi.json; "" when made here
}

// findRoute finds the operation of method and path (decoded, without
// query) on a server configured as cfg.
func findRoute(doc *openapi3.T, cfg *config, method, path string) specRoute {
	testBase, liveBase, upstream := specTestBase, specLiveBase, false
	if cfg != nil {
		testBase, liveBase, upstream = cfg.testBase, cfg.liveBase, cfg.upstream != ""
	}
	route := func(tmpl, m string, params map[string]string) specRoute {
		item := doc.Paths.Value(tmpl)
		op := item.GetOperation(m)
		if op == nil {
			m, op = http.MethodGet, item.Get
		}
		return specRoute{route: &routers.Route{Spec: doc, Path: tmpl, PathItem: item, Method: m, Operation: op}, params: params,
			opPtr: operationPointer(tmpl, m)}
	}
	// As server.ServeHTTP and envForPath: the live base first.
	for _, b := range []struct{ base, doc string }{{liveBase, specLiveBase}, {testBase, specTestBase}} {
		rest, ok := strings.CutPrefix(path, b.base)
		if !ok {
			continue
		}
		if rest == "whoami" && method == http.MethodGet && !upstream {
			return route(b.doc+"whoami", method, nil)
		}
		return route(b.doc+"{path}", method, map[string]string{"path": rest})
	}
	if path == "/v1/auth" {
		return route(path, method, nil)
	}
	if path == "/" || strings.HasPrefix(path, "/console/") {
		return specRoute{console: true}
	}
	for tmpl, item := range doc.Paths.Map() {
		if strings.HasPrefix(tmpl, specTestBase) || strings.HasPrefix(tmpl, specLiveBase) {
			continue
		}
		params, ok := matchTemplate(tmpl, path)
		if !ok {
			continue
		}
		if op := item.GetOperation(method); op != nil {
			return specRoute{route: &routers.Route{Spec: doc, Path: tmpl, PathItem: item, Method: method, Operation: op}, params: params,
				opPtr: operationPointer(tmpl, method)}
		}
		return unrouted(doc, path, method)
	}
	return unrouted(doc, path, method)
}

// unrouted is the router's answer to a path or method that is none of
// keyhole's: its 404 or 405.
func unrouted(doc *openapi3.T, path, method string) specRoute {
	op := &openapi3.Operation{Responses: openapi3.NewResponses()}
	op.Responses.Delete("default")
	notFound := &openapi3.ResponseRef{Ref: "#/components/responses/AdminNotFound", Value: doc.Components.Responses["AdminNotFound"].Value}
	op.Responses.Set("404", notFound) // the same headers and shape
	op.Responses.Set("405", notFound)
	return specRoute{route: &routers.Route{Spec: doc, Path: path, PathItem: &openapi3.PathItem{}, Method: method, Operation: op}}
}

// consoleRefusal is a console path's error: the error shape, X-Request-Id.
func consoleRefusal(doc *openapi3.T, path, method string, status int) specRoute {
	resp := openapi3.NewResponse().WithDescription("a console refusal").
		WithContent(openapi3.NewContentWithJSONSchemaRef(&openapi3.SchemaRef{Ref: "#/components/schemas/Error", Value: doc.Components.Schemas["Error"].Value}))
	resp.Headers = openapi3.Headers{"X-Request-Id": &openapi3.HeaderRef{Ref: "#/components/headers/X-Request-Id", Value: doc.Components.Headers["X-Request-Id"].Value}}
	op := &openapi3.Operation{Responses: openapi3.NewResponses()}
	op.Responses.Delete("default")
	op.Responses.Set(fmt.Sprint(status), &openapi3.ResponseRef{Value: resp})
	return specRoute{route: &routers.Route{Spec: doc, Path: path, PathItem: &openapi3.PathItem{}, Method: method, Operation: op}}
}

// matchTemplate matches path against an OpenAPI path template whose
// parameters are whole segments, as httprouter's are.
func matchTemplate(tmpl, path string) (map[string]string, bool) {
	ts, ps := strings.Split(tmpl, "/"), strings.Split(path, "/")
	if len(ts) != len(ps) {
		return nil, false
	}
	var params map[string]string
	for i, seg := range ts {
		if name, ok := strings.CutPrefix(seg, "{"); ok && strings.HasSuffix(name, "}") {
			if ps[i] == "" {
				return nil, false
			}
			if params == nil {
				params = map[string]string{}
			}
			params[strings.TrimSuffix(name, "}")] = ps[i]
			continue
		}
		if seg != ps[i] {
			return nil, false
		}
	}
	return params, true
}

// byNetHTTP says whether an answer over a socket is net/http's own, sent
// before keyhole saw the request (a malformed request line or header, a
// header over the limit): plain text, no request id, and the connection
// closed. Those are not keyhole's to describe.
func byNetHTTP(resp *http.Response) bool {
	return resp.Close && resp.Header.Get("X-Request-Id") == "" &&
		resp.Header.Get("Content-Type") == "text/plain; charset=utf-8"
}

// checkAnswer holds one answer to the document; body is nil when the test
// reads it itself (open, exchange). A mismatch fails the test (Errorf: try
// may run in a goroutine) without a header value of the request.
func (c *testClient) checkAnswer(method, target string, resp *http.Response, body []byte) {
	if c.foreign || c.handler == nil && byNetHTTP(resp) {
		return
	}
	status, header := resp.StatusCode, resp.Header
	doc, err := spec()
	if err != nil {
		c.errorf("openapi.json: %v", err)
		return
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		// Not a request keyhole could route (Go's client sent it all the
		// same): what it got must be a refusal in the error shape.
		u = &url.URL{Path: "/\x00unroutable"}
	}
	if method == http.MethodHead && c.handler != nil {
		body = nil // in-process, the recorder keeps what net/http would not send
	}
	if err := checkAgainst(doc, c.cfg, method, u, status, header, body); err != nil {
		what := u.Path
		if len(what) > 200 {
			what = what[:200] + "…"
		}
		shown := body
		if len(shown) > 600 {
			shown = shown[:600]
		}
		c.errorf("%s %s = %d: the answer is not as openapi.json says: %v\nbody: %s", method, what, status, err, shown)
	}
}

func checkAgainst(doc *openapi3.T, cfg *config, method string, u *url.URL, status int, header http.Header, body []byte) error {
	sr := findRoute(doc, cfg, method, u.Path)
	if sr.console {
		if status < 400 {
			return nil // a console file: not in the document
		}
		sr = consoleRefusal(doc, u.Path, method, status)
	}
	// kin-openapi skips HEAD answers whole; check their status and headers
	// as GET's, and that they have no body.
	if method == http.MethodHead && len(body) > 0 {
		return fmt.Errorf("a HEAD answer has a body")
	}
	err := compiledCheck(sr, method, status, header, body)
	key := fmt.Sprint(sr.route.Method, " ", sr.route.Path, " ", status)
	if _, seen := specChecked.LoadOrStore(key, true); seen && err == nil {
		return nil
	}
	kinErr := kinCheck(sr, method, status, header, body)
	if (err == nil) != (kinErr == nil) {
		return fmt.Errorf("the checks disagree: compiled schemas say %v; openapi3filter says %v", err, kinErr)
	}
	return err
}

// specChecked holds the operations and statuses openapi3filter has
// checked an answer of.
var specChecked sync.Map

// kinCheck is openapi3filter.ValidateResponse's verdict on an answer.
func kinCheck(sr specRoute, method string, status int, header http.Header, body []byte) error {
	opts := &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}
	checkMethod := method
	if method == http.MethodHead {
		checkMethod = http.MethodGet
		opts.ExcludeResponseBody = true
	}
	if body == nil {
		opts.ExcludeResponseBody = true
	}
	req := &http.Request{Method: checkMethod, URL: &url.URL{Path: sr.route.Path}, Header: http.Header{}}
	input := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: sr.params, Route: sr.route},
		Status:                 status,
		Header:                 header,
		Body:                   io.NopCloser(bytes.NewReader(body)),
		Options:                opts,
	}
	if err := openapi3filter.ValidateResponse(context.Background(), input); err != nil {
		return err
	}
	return noBodyUndocumented(sr, status, body)
}

// noBodyUndocumented: a status the document gives no body must have none.
func noBodyUndocumented(sr specRoute, status int, body []byte) error {
	if resp := sr.route.Operation.Responses.Status(status); resp != nil && resp.Value != nil &&
		len(resp.Value.Content) == 0 && len(body) > 0 {
		return fmt.Errorf("status %d has no body in openapi.json, and the answer has %d bytes", status, len(body))
	}
	return nil
}

// compiledCheck checks an answer as openapi3filter.ValidateResponse does,
// with schemas compiled once: the status is the operation's (or its
// default), the headers it names are there when required and valid, the
// content type is one it lists, and the body valid.
func compiledCheck(sr specRoute, method string, status int, header http.Header, body []byte) error {
	responses := sr.route.Operation.Responses
	key := strconv.Itoa(status)
	ref := responses.Value(key)
	if ref == nil {
		key, ref = "default", responses.Value("default")
	}
	if ref == nil || ref.Value == nil {
		return fmt.Errorf("status %d is not one openapi.json gives %s %s", status, sr.route.Method, sr.route.Path)
	}
	respPtr := ref.Ref
	if respPtr == "" {
		respPtr = sr.opPtr + "/responses/" + pointerToken(key)
	}
	resp := ref.Value
	for name, h := range resp.Headers {
		values := header.Values(name)
		if len(values) == 0 {
			if h.Value.Required {
				return fmt.Errorf("response header %q missing", name)
			}
			continue
		}
		ptr := respPtr + "/headers/" + pointerToken(name) + "/schema"
		if h.Ref != "" {
			ptr = h.Ref + "/schema"
		}
		value, err := headerValue(h.Value.Schema.Value, values[0])
		if err == nil {
			err = validateAt(ptr, value)
		}
		if err != nil {
			return fmt.Errorf("response header %q: %v", name, err)
		}
	}
	if method == http.MethodHead || body == nil {
		return nil
	}
	if len(resp.Content) == 0 {
		return noBodyUndocumented(sr, status, body)
	}
	ctype := header.Get("Content-Type")
	media := resp.Content.Get(ctype)
	if media == nil {
		return fmt.Errorf("response Content-Type %q is none openapi.json lists", ctype)
	}
	if media.Schema == nil {
		return nil
	}
	ptr := media.Schema.Ref
	if ptr == "" {
		for k, m := range resp.Content {
			if m == media {
				ptr = respPtr + "/content/" + pointerToken(k) + "/schema"
			}
		}
	}
	var value any = string(body)
	if mt, _, _ := strings.Cut(ctype, ";"); strings.TrimSpace(mt) == "application/json" {
		var err error
		if value, err = jsonschema.UnmarshalJSON(bytes.NewReader(body)); err != nil {
			return fmt.Errorf("the body is not JSON: %v", err)
		}
	}
	if err := validateAt(ptr, value); err != nil {
		return fmt.Errorf("response body: %v", err)
	}
	return nil
}

// headerValue is a header's value as its schema's type reads it (the
// document's headers are of one simple type each).
func headerValue(schema *openapi3.Schema, v string) (any, error) {
	switch {
	case schema.Type.Is("integer"):
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not an integer", v)
		}
		return json.Number(strconv.FormatInt(n, 10)), nil
	case schema.Type.Is("string"):
		return v, nil
	}
	return nil, fmt.Errorf("openapi.json gives it a type the check does not read: %v", schema.Type)
}

var (
	specCompileMu sync.Mutex
	specCompiler  *jsonschema.Compiler
	specSchemas   sync.Map // JSON pointer → *jsonschema.Schema
)

// validateAt validates v against the schema at ptr in openapi.json,
// compiled the first time it is asked for.
func validateAt(ptr string, v any) error {
	const doc = "keyhole:openapi.json"
	s, ok := specSchemas.Load(ptr)
	if !ok {
		specCompileMu.Lock()
		if specCompiler == nil {
			root, err := jsonschema.UnmarshalJSON(bytes.NewReader(openapiJSON))
			if err != nil {
				specCompileMu.Unlock()
				return err
			}
			specCompiler = jsonschema.NewCompiler()
			specCompiler.DefaultDraft(jsonschema.Draft2020)
			if err := specCompiler.AddResource(doc, root); err != nil {
				specCompileMu.Unlock()
				return err
			}
		}
		compiled, err := specCompiler.Compile(doc + ptr)
		specCompileMu.Unlock()
		if err != nil {
			return fmt.Errorf("compiling %s: %v", ptr, err)
		}
		s, _ = specSchemas.LoadOrStore(ptr, compiled)
	}
	return s.(*jsonschema.Schema).Validate(v)
}

// operationPointer is the JSON pointer of an operation in openapi.json.
func operationPointer(tmpl, method string) string {
	return "#/paths/" + pointerToken(tmpl) + "/" + strings.ToLower(method)
}

// pointerToken escapes s as one JSON pointer token, for a URI fragment.
func pointerToken(s string) string {
	s = strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
	return (&url.URL{Fragment: s}).EscapedFragment()
}

// errorf reports a failure of c's test, or panics outside a test.
func (c *testClient) errorf(format string, args ...any) {
	if c.t == nil {
		panic(fmt.Sprintf(format, args...))
	}
	c.t.Helper()
	c.t.Errorf(format, args...)
}

// TestOpenAPIServed: GET /openapi.json answers the embedded document
// without a token, cacheably, and a matching If-None-Match gets a 304.
func TestOpenAPIServed(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t)
	doc, err := spec()
	if err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if doc.OpenAPI != "3.1.0" || !doc.IsOpenAPI31OrLater() || doc.JSONSchemaDialect == "" {
		t.Fatalf("openapi.json is OpenAPI %q (dialect %q); want 3.1.0 with jsonSchemaDialect", doc.OpenAPI, doc.JSONSchemaDialect)
	}
	c := te.listen()
	r := c.do("GET", "/openapi.json", "")
	mustStatus(t, "GET /openapi.json", r, 200)
	if !bytes.Equal(r.body, openapiJSON) || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /openapi.json = %q, %d bytes; want the embedded document as application/json", r.header.Get("Content-Type"), len(r.body))
	}
	etag := r.header.Get("ETag")
	if !strings.Contains(r.header.Get("Cache-Control"), "max-age=") || etag == "" {
		t.Fatalf("Cache-Control %q, ETag %q: want a cacheable answer with an ETag", r.header.Get("Cache-Control"), etag)
	}
	for _, inm := range []string{etag, `"other", W/` + etag, "*"} {
		r := c.do("GET", "/openapi.json", "", "If-None-Match", inm)
		if r.status != 304 || len(r.body) != 0 || r.header.Get("ETag") != etag {
			t.Errorf("If-None-Match %s = %d, %d bytes; want 304 and no body", inm, r.status, len(r.body))
		}
	}
	mustStatus(t, "a stale If-None-Match", c.do("GET", "/openapi.json", "", "If-None-Match", `"0000000000000000"`), 200)
	if r := c.do("HEAD", "/openapi.json", ""); r.status != 200 || len(r.body) != 0 || r.header.Get("Content-Length") != strconv.Itoa(len(openapiJSON)) {
		t.Errorf("HEAD /openapi.json = %d, %d bytes, Content-Length %q", r.status, len(r.body), r.header.Get("Content-Length"))
	}
	// An admin token changes nothing: the document is the same for all.
	if r := c.do("GET", "/openapi.json", "", "Authorization", "Bearer wrong"); r.status != 200 {
		t.Errorf("GET /openapi.json with a wrong token = %d; want 200", r.status)
	}
}

// TestOpenAPICheckCatchesDrift: the check the test client makes fails an
// answer with a field, a status, a header or a code the document lacks.
func TestOpenAPICheckCatchesDrift(t *testing.T) {
	doc, err := spec()
	if err != nil {
		t.Fatal(err)
	}
	admin := http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"req_0123456789abcdef"},
		"Cache-Control": {"no-store"}, "Content-Security-Policy": {"default-src 'none'; frame-ancestors 'none'"},
		"X-Content-Type-Options": {"nosniff"}, "Referrer-Policy": {"no-referrer"}}
	without := func(name string) http.Header { h := admin.Clone(); h.Del(name); return h }
	org := &url.URL{Path: "/admin/v1/orgs/org_0123456789abcdef"}
	const good = `{"id":"org_0123456789abcdef","name":"acme","created_at":"2026-11-24T20:30:00.000Z"}`
	const refusal = `{"error":{"code":"not_found","message":"Organization not found."},"request_id":"req_0123456789abcdef"}`
	tests := []struct {
		name   string
		method string
		u      *url.URL
		status int
		header http.Header
		body   string
		ok     bool
	}{
		{"as documented", "GET", org, 200, admin, good, true},
		{"a refusal as documented", "GET", org, 404, admin, refusal, true},
		{"a field the document lacks", "GET", org, 200, admin, strings.TrimSuffix(good, "}") + `,"extra":1}`, false},
		{"a field missing", "GET", org, 200, admin, `{"id":"org_0123456789abcdef","name":"acme"}`, false},
		{"a null where a string is due", "GET", org, 200, admin, `{"id":"org_0123456789abcdef","name":null,"created_at":"2026-11-24T20:30:00.000Z"}`, false},
		{"a status the operation lacks", "GET", org, 201, admin, good, false},
		{"a header missing", "GET", org, 200, without("Cache-Control"), good, false},
		{"another content type", "GET", org, 200, func() http.Header { h := admin.Clone(); h.Set("Content-Type", "text/plain"); return h }(), good, false},
		{"an error code the document lacks", "GET", org, 404, admin, strings.Replace(refusal, "not_found", "gone", 1), false},
		{"an error without its request id", "GET", org, 404, admin, `{"error":{"code":"not_found","message":"x"}}`, false},
		{"the router's 404", "GET", &url.URL{Path: "/nowhere"}, 404, admin, refusal, true},
		{"a 200 on no path of the document", "GET", &url.URL{Path: "/nowhere"}, 200, admin, good, false},
		{"whoami without its rate-limit headers", "GET", &url.URL{Path: "/api/v1/prod/whoami"}, 200,
			http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"req_0123456789abcdef"}},
			`{"key_id":"key_0123456789abcdef","org_id":"org_0123456789abcdef","env":"live","scopes":[]}`, false},
		{"verify's answer with a field the document lacks", "POST", &url.URL{Path: "/v1/keys/verify"}, 200,
			http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"req_0123456789abcdef"}},
			`{"valid":false,"code":"invalid_or_revoked","message":"API key is invalid or revoked.","key_id":"key_0123456789abcdef"}`, false},
		{"verify's refusal as documented", "POST", &url.URL{Path: "/v1/keys/verify"}, 200,
			http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"req_0123456789abcdef"}},
			`{"valid":false,"code":"invalid_or_revoked","message":"API key is invalid or revoked."}`, true},
		{"a Retry-After that is not seconds", "GET", &url.URL{Path: "/api/v1/prod/whoami"}, 429,
			http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"req_0123456789abcdef"},
				"X-Ratelimit-Limit": {"5"}, "X-Ratelimit-Remaining": {"0"}, "X-Ratelimit-Reset": {"60"}, "Ratelimit-Policy": {`"1m";q=5;w=60`},
				"Ratelimit": {`"1m";r=0;t=12`}, "Retry-After": {"soon"}},
			`{"error":{"code":"rate_limited","message":"Rate limit exceeded. Wait a minute before retrying."},"request_id":"req_0123456789abcdef"}`, false},
		{"forward auth's 200 with a body", "GET", &url.URL{Path: "/v1/auth"}, 200, http.Header{"X-Request-Id": {"req_0123456789abcdef"},
			"X-Ratelimit-Limit": {"5"}, "X-Ratelimit-Remaining": {"4"}, "X-Ratelimit-Reset": {"12"}, "Ratelimit-Policy": {`"1m";q=5;w=60`},
			"Ratelimit": {`"1m";r=4;t=12`}, "X-Keyhole-Org": {"org_0123456789abcdef"}, "X-Keyhole-Key-Id": {"key_0123456789abcdef"},
			"X-Keyhole-Env": {"live"}}, "surprise", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Each of the two checks alone, and as the test client makes them.
			sr := findRoute(doc, nil, tt.method, tt.u.Path)
			for _, check := range []struct {
				name string
				err  error
			}{
				{"compiled schemas", compiledCheck(sr, tt.method, tt.status, tt.header, []byte(tt.body))},
				{"openapi3filter", kinCheck(sr, tt.method, tt.status, tt.header, []byte(tt.body))},
				{"checkAgainst", checkAgainst(doc, nil, tt.method, tt.u, tt.status, tt.header, []byte(tt.body))},
			} {
				if tt.ok && check.err != nil {
					t.Errorf("%s refused it: %v", check.name, check.err)
				}
				if !tt.ok && check.err == nil {
					t.Errorf("%s passed it", check.name)
				}
			}
		})
	}
}

// routeLine is a route registration in server.go: rt.GET(a+"/orgs", …),
// rt.HandlerFunc("GET", "/metrics", …), or rt.HandlerFunc(m, …) in a loop
// over methods.
var (
	routeLine   = regexp.MustCompile(`rt\.(GET|POST|PUT|PATCH|DELETE|HEAD)\(a\+"([^"]+)"`)
	handlerLine = regexp.MustCompile(`rt\.HandlerFunc\(("[A-Z]+"|m), ("[^"]+"|verifyPath)`)
	methodLoop  = regexp.MustCompile(`for _, m := range \[\]string\{([^}]*)\}`)
)

// TestOpenAPICoversEveryRoute: every route server.go registers, the
// console's aside, is an operation of the document, and every operation
// of the document reaches a handler of keyhole's.
func TestOpenAPICoversEveryRoute(t *testing.T) {
	doc, err := spec()
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("server.go")
	if err != nil {
		t.Fatal(err)
	}
	templated := regexp.MustCompile(`:(\w+)`)
	var loop []string
	routes := 0
	for _, line := range strings.Split(string(src), "\n") {
		if m := methodLoop.FindStringSubmatch(line); m != nil {
			loop = strings.Split(strings.ReplaceAll(strings.ReplaceAll(m[1], `"`, ""), " ", ""), ",")
			continue
		}
		var methods []string
		var path string
		if m := routeLine.FindStringSubmatch(line); m != nil {
			methods, path = []string{m[1]}, "/admin/v1"+m[2]
		} else if m := handlerLine.FindStringSubmatch(line); m != nil {
			methods, path = []string{strings.Trim(m[1], `"`)}, strings.Trim(m[2], `"`)
			if m[1] == "m" {
				methods = loop
			}
			if path == "verifyPath" {
				path = verifyPath
			}
		} else {
			continue
		}
		path = templated.ReplaceAllString(path, "{$1}")
		for _, method := range methods {
			routes++
			if item := doc.Paths.Value(path); item == nil || item.GetOperation(method) == nil {
				t.Errorf("server.go routes %s %s; openapi.json has no such operation", method, path)
			}
		}
	}
	if routes < 30 {
		t.Fatalf("found %d routes in server.go; the patterns no longer match its registrations", routes)
	}

	te := newTestEnv(t)
	for tmpl, item := range doc.Paths.Map() {
		if strings.HasPrefix(tmpl, specTestBase) || strings.HasPrefix(tmpl, specLiveBase) {
			if !strings.HasPrefix(tmpl, te.cfg.testBase) && !strings.HasPrefix(tmpl, te.cfg.liveBase) {
				t.Errorf("openapi.json's %s is under no base of the default configuration", tmpl)
			}
			continue // the guarded surface takes every path under the bases
		}
		path := regexp.MustCompile(`\{\w+\}`).ReplaceAllStringFunc(tmpl, func(p string) string { return "x" })
		for method := range item.Operations() {
			if h, _, _ := te.s.router.Lookup(method, path); h == nil {
				t.Errorf("openapi.json has %s %s; keyhole's router has no such route", method, tmpl)
			}
		}
	}
}

// apiErrorLiteral is an apiError written out: {status, "code", …}.
var apiErrorLiteral = regexp.MustCompile(`\{(\d{3}), "([a-z_]+)"`)

// TestOpenAPIErrorCodes: every error code the code can answer is one the
// document's error shape lists, and the document lists none it cannot.
func TestOpenAPIErrorCodes(t *testing.T) {
	doc, err := spec()
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, c := range doc.Components.Schemas["Error"].Value.Properties["error"].Value.Properties["code"].Value.Enum {
		listed[c.(string)] = true
	}
	files, _ := filepath.Glob("*.go")
	used := map[string]bool{"malformed_token": true, "insufficient_scope": true, "invalid_request": true, "not_found": true} // malformedError, scopeError, invalidRequest, notFound
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range apiErrorLiteral.FindAllStringSubmatch(string(src), -1) {
			used[m[2]] = true
		}
	}
	for code := range used {
		if !listed[code] {
			t.Errorf("keyhole answers error code %s; openapi.json's Error does not list it", code)
		}
	}
	for code := range listed {
		if !used[code] {
			t.Errorf("openapi.json's Error lists %s, which keyhole never answers", code)
		}
	}
}

// TestOpenAPIGeneratedClient generates a Go client from the document with
// oapi-codegen, as the README's OpenAPI section says, builds
// testdata/openapi-client with it, and runs it against a real keyhole
// process: it creates an organization, lists it, creates a key and
// verifies it. .ci/run installs oapi-codegen at the version pinned here.
func TestOpenAPIGeneratedClient(t *testing.T) {
	t.Parallel()
	skipShort(t, "it builds a generated client")
	const want = "v2.8.2"
	codegen, err := exec.LookPath("oapi-codegen")
	if err != nil {
		gopath, _ := exec.Command("go", "env", "GOPATH").Output()
		codegen = filepath.Join(strings.TrimSpace(string(gopath)), "bin", "oapi-codegen")
	}
	if out, err := exec.Command(codegen, "--version").Output(); err != nil || !strings.Contains(string(out), want) {
		integrationMissing(t, "oapi-codegen "+want+" is not installed (go install github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen@"+want+")")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		integrationMissing(t, "curl is not installed")
	}
	block := readmeBlock(t, "openapi client")
	dir := t.TempDir()
	for _, name := range []string{"go.mod", "go.sum", "main.go", "oapi-codegen.yaml"} {
		b, err := os.ReadFile(filepath.Join("testdata", "openapi-client", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c := startKeyhole(t, "--db", filepath.Join(t.TempDir(), "k.db"), "--admin-token", testRootToken)
	run := func(what string, cmd *exec.Cmd) []byte {
		t.Helper()
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly",
			"PATH="+filepath.Dir(codegen)+string(os.PathListSeparator)+os.Getenv("PATH"),
			"KEYHOLE_SERVER="+c.url(), "KEYHOLE_ADMIN_TOKEN="+testRootToken)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v\n%s%s\nkeyhole:\n%s", what, err, out, stderr.Bytes(), c.output())
		}
		return out
	}
	run("the README's block", exec.Command("bash", "-c", "set -euo pipefail\n"+strings.ReplaceAll(block, "http://127.0.0.1:8080", c.url())))
	if _, err := os.Stat(filepath.Join(dir, "client.gen.go")); err != nil {
		t.Fatalf("the README's block generated no client.gen.go: %v", err)
	}
	run("go build", exec.Command("go", "build", "-o", "openapi-client", "."))
	out := run("the generated client", exec.Command(filepath.Join(dir, "openapi-client")))
	var got struct {
		OrgID         string `json:"org_id"`
		Listed        bool   `json:"listed"`
		KeyID         string `json:"key_id"`
		Valid         bool   `json:"valid"`
		VerifiedKeyID string `json:"verified_key_id"`
		Remaining     int    `json:"remaining"`
		RequestID     string `json:"request_id"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("the client printed %q: %v", out, err)
	}
	if !got.Listed || !got.Valid || got.VerifiedKeyID != got.KeyID || got.Remaining != 4 || !strings.HasPrefix(got.RequestID, "req_") {
		t.Fatalf("the generated client saw %+v; want its org listed and its key valid with 4 of 5 left", got)
	}
	// What it made is there for everyone else too.
	if r := c.on(t).root("GET", "/orgs/"+got.OrgID+"/keys/"+got.KeyID, ""); r.status != 200 {
		t.Fatalf("GET the client's key = %d %s", r.status, r.body)
	}
}
