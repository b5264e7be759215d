package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"
)

// proxy forwards allowed requests to the upstream, streaming both bodies.
type proxy struct {
	rp *httputil.ReverseProxy
}

const upstreamTimeout = 60 * time.Second

func newProxy(upstream string, s *server) (*proxy, error) {
	target, err := url.Parse(upstream)
	if err != nil || (target.Scheme != "http" && target.Scheme != "https") || target.Host == "" {
		return nil, fmt.Errorf("--upstream %q: want an http:// or https:// URL", upstream)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	// Keep enough idle connections that a busy client never pays for a new
	// upstream connection per request.
	transport.MaxIdleConns = 1024
	transport.MaxIdleConnsPerHost = 512
	transport.ResponseHeaderTimeout = upstreamTimeout
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
		},
		Transport: transport,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			aerr := &apiError{502, "bad_gateway", "The upstream API could not be reached."}
			var netErr net.Error
			if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr) && netErr.Timeout() {
				aerr = &apiError{504, "upstream_timeout", "The upstream API did not answer in time."}
			}
			if !errors.Is(err, context.Canceled) {
				s.log.Warn().Err(err).Str("path", r.URL.Path).Msg("proxying")
			}
			writeError(w, aerr, w.Header().Get("X-Request-Id"))
		},
	}
	return &proxy{rp: rp}, nil
}

// serve proxies r for the identified key k and returns the status sent.
func (p *proxy) serve(w http.ResponseWriter, r *http.Request, k *keyEntry) int {
	h := r.Header
	delete(h, "Authorization")
	delete(h, "X-Api-Key")
	for _, name := range identityHeaders {
		delete(h, name)
	}
	setIdentityHeaders(h, k)
	sw := &statusWriter{ResponseWriter: w}
	p.rp.ServeHTTP(sw, r)
	if sw.status == 0 {
		return 200
	}
	return sw.status
}

// statusWriter remembers the status for the request log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
