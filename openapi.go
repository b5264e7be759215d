package main

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
)

// openapiJSON is the OpenAPI 3.1 document of keyhole's HTTP surface, the
// console's static files aside. It is written by hand, served as it is at
// GET /openapi.json, and kept true by the tests: the test client checks
// every answer it gets against it (openapi_test.go).
//
//go:embed openapi.json
var openapiJSON []byte

// openapiETag names the document's bytes, which change only with the
// binary.
var openapiETag = func() string {
	sum := sha256.Sum256(openapiJSON)
	return `"` + hex.EncodeToString(sum[:8]) + `"`
}()

var (
	hdrOpenAPICache  = []string{"public, max-age=300"}
	hdrOpenAPIETag   = []string{openapiETag}
	hdrAnyOrigin     = []string{"*"}
	hdrOpenAPILength = []string{strconv.Itoa(len(openapiJSON))}
)

// serveOpenAPI answers the document. It needs no token: it holds nothing
// that README.md does not say. Any cache may keep it for a while and
// revalidate with its ETag, and any site may read it (a documentation
// viewer, a client generator in a browser).
func (s *server) serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h["X-Request-Id"] = []string{newRequestID()}
	h["Cache-Control"] = hdrOpenAPICache
	h["Etag"] = hdrOpenAPIETag
	h["Access-Control-Allow-Origin"] = hdrAnyOrigin
	h["X-Content-Type-Options"] = hdrNoSniff
	if etagMatches(r.Header.Values("If-None-Match"), openapiETag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h["Content-Type"] = jsonContentType
	h["Content-Length"] = hdrOpenAPILength
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(openapiJSON)
	}
}

// etagMatches is If-None-Match's weak comparison (RFC 9110 13.1.2) of the
// lists in values with etag.
func etagMatches(values []string, etag string) bool {
	for _, v := range values {
		for _, tag := range strings.Split(v, ",") {
			tag = strings.TrimPrefix(strings.TrimSpace(tag), "W/")
			if tag == "*" || tag == etag {
				return true
			}
		}
	}
	return false
}
