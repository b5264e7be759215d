package main

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestMetrics(t *testing.T) {
	te := newTestEnv(t)
	org := te.createOrg("acme")
	id, key := te.createKey(org, `{"name":"k","env":"live","rate_limits":[{"limit":1,"window":"1m"}]}`)
	te.whoami(envLive, key)
	te.whoami(envLive, key)
	te.do("GET", "/api/v1/prod/whoami", "")
	te.do("GET", "/v1/auth", "", "X-Forwarded-Method", "GET", "X-Forwarded-Uri", "/api/v1/prod/x")
	te.do("POST", "/v1/keys/verify", `{"key":"`+key+`"}`)
	te.do("POST", "/v1/keys/verify", `{"key":1}`)
	te.do("HEAD", "/healthz", "")
	te.do("GET", "/nowhere", "")
	te.s.behind.Flush()
	r := te.do("GET", "/metrics", "")
	mustStatus(t, "metrics", r, 200)
	for _, want := range []string{
		`keyhole_guarded_requests_total{class="2xx"} 1`,
		`keyhole_guarded_requests_total{class="4xx"} 2`,
		`keyhole_guarded_requests_total{class="429"} 2`,
		"keyhole_keys 1", "keyhole_log_entries_pending 0", "keyhole_flushes_total 1",
		"# TYPE keyhole_log_entries_dropped_total counter",
		"# TYPE keyhole_request_duration_seconds histogram",
		`keyhole_request_duration_seconds_count{class="2xx",surface="guarded"} 1`,
		`keyhole_request_duration_seconds_count{class="429",surface="guarded"} 1`,
		`keyhole_request_duration_seconds_count{class="4xx",surface="guarded"} 1`,
		`keyhole_request_duration_seconds_count{class="4xx",surface="forward_auth"} 1`,
		`keyhole_request_duration_seconds_count{class="2xx",surface="verify"} 1`,
		`keyhole_request_duration_seconds_count{class="4xx",surface="verify"} 1`,
		`keyhole_request_duration_seconds_count{class="2xx",surface="admin"} 2`,
		`keyhole_request_duration_seconds_count{class="2xx",surface="ops"} 1`,
		`keyhole_request_duration_seconds_count{class="4xx",surface="console"} 1`,
		"# TYPE go_goroutines gauge", "# TYPE process_resident_memory_bytes gauge",
	} {
		if !strings.Contains(string(r.body), want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
	// Labels are bounded: only surfaces and classes, never an id.
	label := regexp.MustCompile(`(?m)^keyhole_request_duration_seconds_\w+\{class="([^"]+)",(?:le="[^"]+",)?surface="([^"]+)"`)
	for _, m := range label.FindAllStringSubmatch(string(r.body), -1) {
		if !strings.Contains(" 2xx 4xx 429 5xx ", " "+m[1]+" ") || !strings.Contains(" "+strings.Join(surfaceNames[:], " ")+" ", " "+m[2]+" ") {
			t.Errorf("unbounded label: %s", m[0])
		}
	}
	for _, secret := range []string{key, id, org} {
		if strings.Contains(string(r.body), secret) {
			t.Fatalf("metrics show a key, key id or org id")
		}
	}
}

// TestMetricsPromtool scrapes a real server that has answered each surface
// and has promtool, Prometheus's own linter, check the exposition.
func TestMetricsPromtool(t *testing.T) {
	t.Parallel()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		integrationMissing(t, "promtool is not installed (Debian package prometheus)")
	}
	c := startKeyhole(t, "--db", filepath.Join(t.TempDir(), "k.db"), "--admin-token", testRootToken)
	_, key := childOrgAndKey(t, c, testRootToken)
	c.do("GET", "/api/v1/prod/whoami", "", bearer(key)...)
	c.do("POST", "/v1/keys/verify", `{"key":"`+key+`"}`)
	c.do("GET", "/v1/auth", "", append(bearer(key), "X-Forwarded-Method", "GET", "X-Forwarded-Uri", "/api/v1/prod/x")...)
	r := c.do("GET", "/metrics", "")
	if r.status != 200 || !bytes.Contains(r.body, []byte(`keyhole_request_duration_seconds_count{class="2xx",surface="forward_auth"} 1`)) {
		t.Fatalf("GET /metrics = %d:\n%s", r.status, r.body)
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(r.body)
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// TestObserveAllocates nothing: the histogram's children are resolved
// when the server starts, so a request's observation is atomic adds.
func TestObserveAllocatesNothing(t *testing.T) {
	te := newTestEnv(t)
	if n := testing.AllocsPerRun(1000, func() { te.s.metrics.observe(surfGuarded, 200, 300*time.Microsecond) }); n != 0 {
		t.Fatalf("observe allocates %v times a call; want 0", n)
	}
}

// BenchmarkObserve is the histogram's cost on the hot path, per request.
func BenchmarkObserve(b *testing.B) {
	te := newTestEnv(b)
	b.ReportAllocs()
	for b.Loop() {
		te.s.metrics.observe(surfGuarded, 200, 300*time.Microsecond)
	}
}
