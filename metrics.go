package main

import (
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The surfaces of the request-duration histogram's "surface" label. Its
// labels are bounded: a surface and a status class, never an org or key.
const (
	surfGuarded = iota // whoami and the reverse proxy, under the base paths
	surfAuth           // forward auth, /v1/auth
	surfVerify         // POST /v1/keys/verify
	surfAdmin          // /admin/v1/…
	surfOps            // /healthz, /readyz, /metrics, /openapi.json
	surfConsole        // the console, and any other path the router answers
	numSurfaces
)

var surfaceNames = [numSurfaces]string{"guarded", "forward_auth", "verify", "admin", "ops", "console"}

// classNames are statusClass's classes, as the usage counts name them.
var classNames = [4]string{"2xx", "4xx", "429", "5xx"}

// durationBuckets run from 100 µs, a whoami, to 10 s, a slow upstream.
var durationBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// promMetrics is what /metrics serves: Go's and the process's collectors,
// request durations, and keyhole's own counters and gauges.
type promMetrics struct {
	handler http.Handler
	// durations are the histogram's children, resolved once: observing one
	// is an index and atomic adds, no lookup or allocation.
	durations [numSurfaces][len(classNames)]prometheus.Observer
}

func newMetrics(s *server) *promMetrics {
	reg := prometheus.NewRegistry()
	hist := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "keyhole_request_duration_seconds",
		Help:    "Time from a request's arrival to the end of keyhole's answer, by surface and status class.",
		Buckets: durationBuckets,
	}, []string{"surface", "class"})
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		hist, keyholeCollector{s})
	if c := s.store.cluster; c != nil { // only in cluster mode: one node's /metrics is as it was
		reg.MustRegister(clusterMetrics(c, s.now)...)
	}
	m := &promMetrics{handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: stdLogger(s.log)})}
	for i, surface := range surfaceNames {
		for j, class := range classNames {
			m.durations[i][j] = hist.WithLabelValues(surface, class)
		}
	}
	return m
}

// observe records one answer of surface with status that took d.
func (m *promMetrics) observe(surface, status int, d time.Duration) {
	m.durations[surface][statusClass(status)].Observe(d.Seconds())
}

func (s *server) serveMetrics(w http.ResponseWriter, r *http.Request) {
	s.metrics.handler.ServeHTTP(w, r)
}

// routerSurface is the surface of a path the router answers.
func routerSurface(path string) int {
	switch {
	case strings.HasPrefix(path, "/admin/"):
		return surfAdmin
	case path == "/healthz" || path == "/readyz" || path == "/metrics" || path == "/openapi.json":
		return surfOps
	case path == verifyPath:
		return surfVerify // its other methods: serveVerify takes POST before the router
	}
	return surfConsole
}

// statusRecorder keeps the status of an answer the router writes.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (sr *statusRecorder) WriteHeader(code int) {
	if sr.status == 0 {
		sr.status = code
	}
	sr.ResponseWriter.WriteHeader(code)
}

func (sr *statusRecorder) Write(b []byte) (int, error) {
	if sr.status == 0 {
		sr.status = 200
	}
	return sr.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (sr *statusRecorder) Unwrap() http.ResponseWriter { return sr.ResponseWriter }

// serveRouted answers what is not a hot path (the admin API, the console,
// health and metrics) through the router, timing it.
func (s *server) serveRouted(w http.ResponseWriter, r *http.Request) {
	start := s.now()
	sr := &statusRecorder{ResponseWriter: w}
	defer func() {
		if sr.status == 0 {
			sr.status = 200
		}
		s.metrics.observe(routerSurface(r.URL.Path), sr.status, s.now().Sub(start))
	}()
	s.router.ServeHTTP(sr, r)
}

// keyholeCollector reads keyhole's own counters and gauges at each scrape,
// from where the server keeps them; none is a secret.
type keyholeCollector struct{ s *server }

var (
	descGuarded     = prometheus.NewDesc("keyhole_guarded_requests_total", "Requests to the guarded surface, by status class.", []string{"class"}, nil)
	descKeys        = prometheus.NewDesc("keyhole_keys", "Keys in the in-memory index, revoked ones included.", nil, nil)
	descPending     = prometheus.NewDesc("keyhole_log_entries_pending", "Request-log entries waiting for the next flush.", nil, nil)
	descDropped     = prometheus.NewDesc("keyhole_log_entries_dropped_total", "Request-log entries dropped because the disk fell behind.", nil, nil)
	descFlushes     = prometheus.NewDesc("keyhole_flushes_total", "Write-behind flushes.", nil, nil)
	descFlushErrors = prometheus.NewDesc("keyhole_flush_errors_total", "Write-behind flushes that failed and were kept for the next one.", nil, nil)
	descFlushTime   = prometheus.NewDesc("keyhole_flush_seconds_total", "Time spent in write-behind flushes.", nil, nil)
	descConns       = prometheus.NewDesc("keyhole_connections_open", "Client connections open on --addr.", nil, nil)
)

func (keyholeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descGuarded, descKeys, descPending, descDropped, descFlushes, descFlushErrors, descFlushTime, descConns} {
		ch <- d
	}
}

func (c keyholeCollector) Collect(ch chan<- prometheus.Metric) {
	lw := c.s.behind
	lw.mu.Lock()
	classes := lw.classes
	pending := len(lw.pending)
	lw.mu.Unlock()
	for i, class := range classNames {
		ch <- prometheus.MustNewConstMetric(descGuarded, prometheus.CounterValue, float64(classes[i]), class)
	}
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	gauge(descKeys, float64(c.s.index.len()))
	gauge(descPending, float64(pending))
	counter(descDropped, float64(lw.dropped.Load()))
	counter(descFlushes, float64(lw.flushes.Load()))
	counter(descFlushErrors, float64(lw.flushErrors.Load()))
	counter(descFlushTime, float64(lw.flushNanos.Load())/1e9)
	gauge(descConns, float64(c.s.conns.open()))
}
