package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
)

// The test client holds every answer it gets from keyhole to openapi.json,
// the document keyhole serves: the answer must be one the operation of its
// method and path describes (status, headers, body), so that a field a
// handler adds and the document lacks fails a test. The document's
// schemas are closed (additionalProperties: false).
//
// kin-openapi's openapi3filter checks an answer against an operation; it
// validates the schemas of an OpenAPI 3.1 document with a JSON Schema
// 2020-12 validator. The operation is found here rather than by
// kin-openapi's routers, for the paths a router cannot match:
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
	console bool // a console file: not in the document, unless it is a refusal
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
		return specRoute{route: &routers.Route{Spec: doc, Path: tmpl, PathItem: item, Method: m, Operation: op}, params: params}
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
			return specRoute{route: &routers.Route{Spec: doc, Path: tmpl, PathItem: item, Method: method, Operation: op}, params: params}
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
	op.Responses.Set("404", doc.Components.Responses["AdminNotFound"]) // the same headers and shape
	op.Responses.Set("405", doc.Components.Responses["AdminNotFound"])
	return specRoute{route: &routers.Route{Spec: doc, Path: path, PathItem: &openapi3.PathItem{}, Method: method, Operation: op}}
}

// consoleRefusal is a console path's error: the error shape, X-Request-Id.
func consoleRefusal(doc *openapi3.T, path, method string, status int) specRoute {
	resp := openapi3.NewResponse().WithDescription("a console refusal").
		WithContent(openapi3.NewContentWithJSONSchemaRef(doc.Components.Schemas["Error"]))
	resp.Headers = openapi3.Headers{"X-Request-Id": doc.Components.Headers["X-Request-Id"]}
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
	opts := &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}
	// kin-openapi skips HEAD answers whole; check their status and headers
	// as GET's, and that they have no body.
	checkMethod := method
	if method == http.MethodHead {
		checkMethod = http.MethodGet
		opts.ExcludeResponseBody = true
		if len(body) > 0 {
			return fmt.Errorf("a HEAD answer has a body")
		}
	}
	if body == nil {
		opts.ExcludeResponseBody = true
	}
	req := &http.Request{Method: checkMethod, URL: u, Header: http.Header{}}
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
	// A status the document gives no body must have none.
	if resp := sr.route.Operation.Responses.Status(status); resp != nil && resp.Value != nil &&
		len(resp.Value.Content) == 0 && len(body) > 0 {
		return fmt.Errorf("status %d has no body in openapi.json, and the answer has %d bytes", status, len(body))
	}
	return nil
}

// errorf reports a failure of c's test, or panics outside a test.
func (c *testClient) errorf(format string, args ...any) {
	if c.t == nil {
		panic(fmt.Sprintf(format, args...))
	}
	c.t.Helper()
	c.t.Errorf(format, args...)
}
