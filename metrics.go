package main

import (
	"fmt"
	"net/http"
	"strings"
)

// serveMetrics writes a few gauges and counters in the Prometheus text
// format, by hand: they are all keyhole has, and none is a secret.
func (s *server) serveMetrics(w http.ResponseWriter, r *http.Request) {
	lw := s.behind
	lw.mu.Lock()
	classes := lw.classes
	pending := len(lw.pending)
	lw.mu.Unlock()
	var b strings.Builder
	metric := func(name, kind, help string) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, kind)
	}
	metric("keyhole_guarded_requests_total", "counter", "Requests to the guarded surface, by status class.")
	for i, class := range []string{"2xx", "4xx", "429", "5xx"} {
		fmt.Fprintf(&b, "keyhole_guarded_requests_total{class=%q} %d\n", class, classes[i])
	}
	metric("keyhole_keys", "gauge", "Keys in the in-memory index, revoked ones included.")
	fmt.Fprintf(&b, "keyhole_keys %d\n", s.index.len())
	metric("keyhole_log_entries_pending", "gauge", "Request-log entries waiting for the next flush.")
	fmt.Fprintf(&b, "keyhole_log_entries_pending %d\n", pending)
	metric("keyhole_log_entries_dropped_total", "counter", "Request-log entries dropped because the disk fell behind.")
	fmt.Fprintf(&b, "keyhole_log_entries_dropped_total %d\n", lw.dropped.Load())
	metric("keyhole_flushes_total", "counter", "Write-behind flushes.")
	fmt.Fprintf(&b, "keyhole_flushes_total %d\n", lw.flushes.Load())
	metric("keyhole_flush_errors_total", "counter", "Write-behind flushes that failed and were kept for the next one.")
	fmt.Fprintf(&b, "keyhole_flush_errors_total %d\n", lw.flushErrors.Load())
	metric("keyhole_flush_seconds_total", "counter", "Time spent in write-behind flushes.")
	fmt.Fprintf(&b, "keyhole_flush_seconds_total %.6f\n", float64(lw.flushNanos.Load())/1e9)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Write([]byte(b.String()))
}
