package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"
)

// proxy forwards allowed requests to the upstream, streaming both bodies.
type proxy struct {
	rp        *httputil.ReverseProxy
	transport *http.Transport // tests shorten its ResponseHeaderTimeout
}

// upstreamTimeout is the longest keyhole waits for the upstream's response
// headers; a body may then stream for as long as it takes.
const upstreamTimeout = 60 * time.Second

// proxyCall is what serve hands to the ReverseProxy callbacks through the
// request's context.
type proxyCall struct {
	key *keyEntry
	own [8]ownHeader // keyhole's response headers: request id and rate limits
	n   int
}

// ownHeader is one of keyhole's response headers, kept in the call itself
// rather than a cloned http.Header: a clone is a map and a slice per name,
// on every proxied request.
type ownHeader struct {
	name   string
	values []string
}

// setOwn puts keyhole's headers on h, replacing any of the same name.
func (c *proxyCall) setOwn(h http.Header) {
	for _, o := range c.own[:c.n] {
		h[o.name] = o.values
	}
}

func (c *proxyCall) requestID() string {
	for _, o := range c.own[:c.n] {
		if o.name == "X-Request-Id" && len(o.values) > 0 {
			return o.values[0]
		}
	}
	return ""
}

type proxyCallKey struct{}

func callOf(r *http.Request) *proxyCall {
	return r.Context().Value(proxyCallKey{}).(*proxyCall)
}

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
		// Rewrite runs after ReverseProxy has dropped hop-by-hop headers, so a
		// client's "Connection: X-Keyhole-Org" cannot remove what is set here.
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
			h := pr.Out.Header
			delete(h, "Authorization")
			delete(h, "X-Api-Key")
			for _, name := range identityHeaders {
				delete(h, name)
			}
			setIdentityHeaders(h, callOf(pr.In).key)
		},
		// keyhole's request id and rate-limit headers replace any the upstream
		// sent. They are set here rather than before proxying because
		// ReverseProxy clears the response headers after relaying a 1xx.
		ModifyResponse: func(res *http.Response) error {
			callOf(res.Request).setOwn(res.Header)
			return nil
		},
		Transport:  transport,
		BufferPool: copyBuffers{},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			aerr := &apiError{502, "bad_gateway", "The upstream API could not be reached."}
			var netErr net.Error
			if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr) && netErr.Timeout() {
				aerr = &apiError{504, "upstream_timeout", "The upstream API did not answer in time."}
			}
			if !errors.Is(err, context.Canceled) {
				s.log.Warn().Err(err).Str("path", r.URL.Path).Msg("proxying")
			}
			call := callOf(r)
			call.setOwn(w.Header())
			writeError(w, aerr, call.requestID())
		},
	}
	return &proxy{rp: rp, transport: transport}, nil
}

// serve proxies r for the identified key k. The headers keyhole has already
// set on w go onto the upstream's response, or onto the error if there is none.
func (p *proxy) serve(w http.ResponseWriter, r *http.Request, k *keyEntry) {
	call := &proxyCall{key: k}
	for name, values := range w.Header() {
		if call.n < len(call.own) {
			call.own[call.n] = ownHeader{name, values}
			call.n++
		}
	}
	clear(w.Header())
	p.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), proxyCallKey{}, call)))
}

// copyBuffers reuses ReverseProxy's 32 KiB copy buffers: without a pool it
// allocates one per request, three quarters of the proxy's garbage.
type copyBuffers struct{}

var copyBufferPool = sync.Pool{New: func() any { return make([]byte, 32<<10) }}

func (copyBuffers) Get() []byte  { return copyBufferPool.Get().([]byte) }
func (copyBuffers) Put(b []byte) { copyBufferPool.Put(b) }

// statusWriter remembers the final status for the request log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(status int) {
	if w.status == 0 && status >= 200 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// logged is the status to log: what was sent, or the 200 that net/http sends
// for a handler that wrote nothing.
func (w *statusWriter) logged() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
