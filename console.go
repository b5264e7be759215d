package main

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"
)

// consoleFiles is the web console of SPEC 10: plain HTML, CSS and JavaScript
// modules, served exactly as written, with no build step. The console talks
// only to the admin API.
//
//go:embed console
var consoleFiles embed.FS

// consoleCSP allows nothing but the console's own files and calls to its
// own origin: no inline script or style, no other site, no framing.
const consoleCSP = "default-src 'none'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' data:; connect-src 'self'; base-uri 'none'; " +
	"form-action 'self'; frame-ancestors 'none'"

var consoleTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

// consoleAsset is one embedded file, ready to serve.
type consoleAsset struct {
	body  []byte
	ctype string
	etag  string
}

// loadConsole reads the embedded files once; names are relative to console/.
func loadConsole(files fs.FS) (map[string]consoleAsset, error) {
	assets := map[string]consoleAsset{}
	err := fs.WalkDir(files, "console", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ctype, ok := consoleTypes[path.Ext(name)]
		if !ok {
			return fmt.Errorf("console file %s has no known content type", name)
		}
		body, err := fs.ReadFile(files, name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		assets[strings.TrimPrefix(name, "console/")] = consoleAsset{body: body, ctype: ctype,
			etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	return assets, err
}

// routeConsole serves the console at / and its files under /console/.
func (s *server) routeConsole(rt *httprouter.Router) {
	assets, err := loadConsole(consoleFiles)
	if err != nil || assets["index.html"].body == nil {
		panic(fmt.Sprintf("embedded console is broken: %v", err)) // only a bad build gets here
	}
	serve := func(w http.ResponseWriter, r *http.Request, name string) {
		a, ok := assets[name]
		if !ok {
			consoleSurface.fail(w, errNotFoundPage, newRequestID(), nil)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", consoleCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Content-Type", a.ctype)
		h.Set("Cache-Control", "no-cache") // revalidate, so an upgrade shows at once
		h.Set("ETag", a.etag)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
	}
	index := func(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
		serve(w, r, "index.html")
	}
	file := func(w http.ResponseWriter, r *http.Request, p httprouter.Params) {
		serve(w, r, strings.TrimPrefix(p.ByName("file"), "/"))
	}
	for _, m := range []string{http.MethodGet, http.MethodHead} {
		rt.Handle(m, "/", index)
		rt.Handle(m, "/console/*file", file)
	}
}
