package main

import (
	"bufio"
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
		// serve has already put the identity and request id on the incoming
		// request; Rewrite runs after ReverseProxy has dropped hop-by-hop
		// headers, so it puts them back in case a client's "Connection:
		// X-Keyhole-Org" removed them.
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			dropProxyHeaders(pr.Out.Header)
			pr.SetXForwarded()
			s.forwardClient(pr)
			for _, name := range forwardedNames {
				pr.Out.Header[name] = pr.In.Header[name]
			}
		},
		// A 101's headers are written by ReverseProxy itself once it has
		// hijacked the connection: statusWriter.Hijack puts keyhole's own on
		// them, and this drops the upstream's of the same names.
		ModifyResponse: func(res *http.Response) error {
			if res.StatusCode == http.StatusSwitchingProtocols {
				for _, name := range ownHeaderNames {
					delete(res.Header, name)
				}
			}
			return nil
		},
		ErrorLog:   stdLogger(s.log),
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
			var reqID string
			if sw, ok := w.(*statusWriter); ok {
				reqID = sw.reqID
			}
			writeError(w, aerr, reqID)
		},
	}
	return &proxy{rp: rp, transport: transport}, nil
}

// dropProxyHeaders removes the client's proxy headers (isProxyHeader):
// keyhole is the proxy the upstream hears from, and SetXForwarded then sets
// its own X-Forwarded-For, -Host and -Proto. Spellings with "_" were
// refused before (checkHeaders).
func dropProxyHeaders(h http.Header) {
	for name := range h {
		if isProxyHeader(name) {
			delete(h, name)
		}
	}
}

// forwardClient tells the upstream the client that a trusted proxy in
// front of keyhole named (clientip.go), the address a key's allowlist was
// checked against, instead of that proxy's: X-Forwarded-For is then that
// one address. From any other peer SetXForwarded's connection address
// stands, and nothing the client wrote is passed on.
func (s *server) forwardClient(pr *httputil.ProxyRequest) {
	if len(s.cfg.trustedProxies) == 0 {
		return
	}
	if client := s.clientIP(pr.In); client.IsValid() {
		pr.Out.Header["X-Forwarded-For"] = []string{client.String()}
	} else {
		delete(pr.Out.Header, "X-Forwarded-For") // a trusted proxy's unreadable header names no one
	}
}

// forwardedNames are the headers keyhole sets on a proxied request.
var forwardedNames = append([]string{"X-Request-Id"}, identityHeaders...)

// serve proxies r for the identified key k. The upstream sees neither the
// key nor any identity headers the client sent, only keyhole's, and
// keyhole's request id as X-Request-Id, so that its logs and keyhole's
// join. w puts keyhole's own headers on the upstream's response, or on the
// error if there is none.
func (p *proxy) serve(w *statusWriter, r *http.Request, ix *keyIndex, k *keyEntry) {
	delete(r.Header, "Authorization")
	delete(r.Header, "X-Api-Key")
	setIdentityHeaders(r.Header, ix, k)
	r.Header["X-Request-Id"] = []string{w.reqID}
	if r.ContentLength != 0 {
		// The key verified: its upload may take as long as it takes
		// (limitBodyReads).
		http.NewResponseController(w).SetReadDeadline(time.Time{})
	}
	p.rp.ServeHTTP(w, r)
}

// copyBuffers reuses ReverseProxy's 32 KiB copy buffers: without a pool it
// allocates one per request, three quarters of the proxy's garbage.
type copyBuffers struct{}

// The pool holds array pointers: a slice put in an interface would cost
// an allocation per Put (staticcheck SA6002).
var copyBufferPool = sync.Pool{New: func() any { return new([32 << 10]byte) }}

func (copyBuffers) Get() []byte { return copyBufferPool.Get().(*[32 << 10]byte)[:] }

func (copyBuffers) Put(b []byte) {
	if len(b) == 32<<10 {
		copyBufferPool.Put((*[32 << 10]byte)(b))
	}
}

// statusWriter remembers the final status for the request log, and puts
// keyhole's own headers on the final response (not on a 1xx before it),
// replacing any of the same name an upstream sent.
type statusWriter struct {
	http.ResponseWriter
	status  int
	reqID   string
	dec     decision // the rate-limit state, when decided
	decided bool
}

func (w *statusWriter) WriteHeader(status int) {
	if w.status == 0 && isFinal(status) {
		w.status = status
		w.putOwn()
	}
	w.ResponseWriter.WriteHeader(status)
}

// putOwn sets keyhole's headers, replacing any of the same name.
func (w *statusWriter) putOwn() {
	var d *decision
	if w.decided {
		d = &w.dec
	}
	setOwnHeaders(w.ResponseWriter.Header(), w.reqID, d)
}

// isFinal says whether a status ends the response's headers: any but an
// informational 1xx, and 101, after which the connection is the upstream's.
func isFinal(status int) bool {
	return status >= 200 || status == http.StatusSwitchingProtocols
}

// Hijack is how ReverseProxy switches protocols: the 101 it then writes
// carries keyhole's own headers.
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil && w.status == 0 {
		w.status = http.StatusSwitchingProtocols
		w.putOwn()
	}
	return conn, brw, err
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
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
