package main

import (
	"strings"
	"testing"
)

func TestMetrics(t *testing.T) {
	te := newTestEnv(t)
	org := te.createOrg("acme")
	_, key := te.createKey(org, `{"name":"k","env":"live","rate_limits":[{"limit":1,"window":"1m"}]}`)
	te.whoami(envLive, key)
	te.whoami(envLive, key)
	te.do("GET", "/api/v1/prod/whoami", "")
	te.s.behind.Flush()
	r := te.do("GET", "/metrics", "")
	mustStatus(t, "metrics", r, 200)
	for _, want := range []string{
		`keyhole_guarded_requests_total{class="2xx"} 1`,
		`keyhole_guarded_requests_total{class="4xx"} 1`,
		`keyhole_guarded_requests_total{class="429"} 1`,
		"keyhole_keys 1", "keyhole_log_entries_pending 0", "keyhole_flushes_total 1",
		"# TYPE keyhole_log_entries_dropped_total counter",
	} {
		if !strings.Contains(string(r.body), want+"\n") {
			t.Errorf("metrics lack %q:\n%s", want, r.body)
		}
	}
	if strings.Contains(string(r.body), key) {
		t.Fatalf("metrics show a key")
	}
}
