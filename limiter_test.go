package main

import (
	"encoding/json"
	"testing"
	"time"
)

var testKeyID = [8]byte{1, 2, 3}

func mustLimits(t *testing.T, spec string) *limitSet {
	t.Helper()
	l, err := parseRateLimits(spec)
	if err != nil {
		t.Fatal(err)
	}
	return newLimitSet(l)
}

func TestParseRateLimits(t *testing.T) {
	tests := []struct {
		spec    string
		want    string
		wantErr bool
	}{
		{"5/1m,100/1h", "5/1m,100/1h,", false},
		{" 10/60s , 1/24h ", "10/1m,1/1d,", false},
		{"7/90s", "7/90s,", false},
		{"3/2d", "3/2d,", false},
		{"5", "", true},
		{"0/1m", "", true},
		{"5/0s", "", true},
		{"5/500ms", "", true},
		{"5/1m,", "", true},
		{"x/1m", "", true},
		{"5/400d", "", true},
		{"", "", true},
	}
	for _, tt := range tests {
		got, err := parseRateLimits(tt.spec)
		if tt.wantErr != (err != nil) || err == nil && limitsSignature(got) != tt.want {
			t.Errorf("parseRateLimits(%q) = %v, %v; want %q (error %v)", tt.spec, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestBucketRefill(t *testing.T) {
	l := newLimiter()
	limits := mustLimits(t, "5/1m")
	now := time.Unix(1_700_000_000, 0).UnixNano()
	for i := 0; i < 5; i++ {
		d := l.take(testKeyID, limits, now, true, nil)
		if !d.allowed || d.remaining != int64(4-i) {
			t.Fatalf("take %d = %+v; want allowed with %d left", i+1, d, 4-i)
		}
	}
	d := l.take(testKeyID, limits, now, true, nil)
	if d.allowed || d.retryAfter != 12 || d.reset != 60 {
		t.Fatalf("sixth take = %+v; want denied, retry after 12s, full in 60s", d)
	}
	now += int64(11 * time.Second)
	if d := l.take(testKeyID, limits, now, true, nil); d.allowed {
		t.Fatalf("take after 11s = %+v; want denied (a token takes 12s)", d)
	}
	now += int64(time.Second)
	if d := l.take(testKeyID, limits, now, true, nil); !d.allowed || d.remaining != 0 {
		t.Fatalf("take after 12s = %+v; want allowed with 0 left", d)
	}
	now += int64(10 * time.Minute)
	if d := l.take(testKeyID, limits, now, false, nil); d.remaining != 5 || d.reset != 0 {
		t.Fatalf("after a long pause = %+v; want a full bucket, not more", d)
	}
}

// TestAllOrNone: a denied request takes no token from any window.
func TestAllOrNone(t *testing.T) {
	l := newLimiter()
	limits := mustLimits(t, "2/1m,3/1h")
	now := time.Unix(1_700_000_000, 0).UnixNano()
	l.take(testKeyID, limits, now, true, nil)
	l.take(testKeyID, limits, now, true, nil)
	for i := 0; i < 10; i++ {
		if d := l.take(testKeyID, limits, now, true, nil); d.allowed {
			t.Fatalf("take with the minute window empty allowed")
		}
	}
	now += int64(time.Minute)
	d := l.take(testKeyID, limits, now, true, nil)
	if !d.allowed {
		t.Fatalf("after a minute = %+v; want allowed: the denied takes must not have drained the hour window", d)
	}
	d = l.take(testKeyID, limits, now, true, nil)
	if d.allowed || d.message() != "Hourly rate limit exceeded." {
		t.Fatalf("fourth allowed take = %+v %q; want denied by the hour window", d, d.message())
	}
	if d.set.limits[d.tightest].Window != "1h" || d.retryAfter != 1140 {
		t.Fatalf("denied by hour: tightest %s retry %d; want 1h and 1140s (a token per 1200s, 60s already refilled)", d.set.limits[d.tightest].Window, d.retryAfter)
	}
}

func TestTightestWindow(t *testing.T) {
	now := time.Unix(1_700_000_000, 0).UnixNano()
	tests := []struct {
		spec       string
		takes      int
		wantWindow string
		wantLeft   int64
		wantReset  int64
	}{
		{"5/1m,100/1h", 1, "1m", 4, 12},
		{"10/1m,3/1h", 1, "1h", 2, 1200},
		{"10/1m,10/1h", 2, "1m", 8, 12},
	}
	for _, tt := range tests {
		l := newLimiter()
		var d decision
		for i := 0; i < tt.takes; i++ {
			d = l.take(testKeyID, mustLimits(t, tt.spec), now, true, nil)
		}
		r := d.set.limits[d.tightest]
		if r.Window != tt.wantWindow || d.remaining != tt.wantLeft || d.reset != tt.wantReset {
			t.Errorf("%s after %d: window %s left %d reset %d; want %s %d %d", tt.spec, tt.takes,
				r.Window, d.remaining, d.reset, tt.wantWindow, tt.wantLeft, tt.wantReset)
		}
	}
}

func TestLimitsChangeResetsBucket(t *testing.T) {
	l := newLimiter()
	now := time.Unix(1_700_000_000, 0).UnixNano()
	l.take(testKeyID, mustLimits(t, "1/1m"), now, true, nil)
	if d := l.take(testKeyID, mustLimits(t, "3/1m"), now, true, nil); !d.allowed || d.remaining != 2 {
		t.Fatalf("new windows = %+v; want a fresh bucket", d)
	}
}

// TestRateLimitHeaders checks the headers and Retry-After over HTTP, and
// that the state survives a restart.
func TestRateLimitHeaders(t *testing.T) {
	te := newTestEnv(t)
	org := te.createOrg("acme")
	_, key := te.createKey(org, `{"name":"k","env":"live"}`)
	r := te.whoami(envLive, key)
	want := map[string]string{
		"X-RateLimit-Limit":     "5",
		"X-RateLimit-Remaining": "4",
		"X-RateLimit-Reset":     "12",
		"RateLimit-Policy":      `"1m";q=5;w=60, "1h";q=100;w=3600`,
		"RateLimit":             `"1m";r=4;t=12`,
	}
	for name, v := range want {
		if got := r.header.Get(name); got != v {
			t.Errorf("%s = %q; want %q", name, got, v)
		}
	}
	for i := 0; i < 4; i++ {
		te.whoami(envLive, key)
	}
	te.restart()
	r = te.whoami(envLive, key)
	if r.status != 429 || r.header.Get("Retry-After") != "12" || r.header.Get("X-RateLimit-Remaining") != "0" {
		t.Fatalf("sixth request after restart = %d Retry-After %q; want 429 with Retry-After 12",
			r.status, r.header.Get("Retry-After"))
	}
	// An identified but refused request carries the headers and takes nothing.
	te.clock.Advance(time.Minute)
	r = te.whoami(envTest, key)
	if r.status != 401 || r.header.Get("X-RateLimit-Remaining") != "5" {
		t.Fatalf("environment mismatch = %d remaining %q; want 401 with headers, no token taken",
			r.status, r.header.Get("X-RateLimit-Remaining"))
	}
	if r := te.do("GET", "/api/v1/prod/whoami", ""); r.header.Get("X-RateLimit-Limit") != "" {
		t.Fatalf("unidentified request carries rate-limit headers")
	}
}

// TestRateLimitedHeadersAgree: on a 429, RateLimit names the window that
// refused, its t is Retry-After (the seconds until a token is back there),
// and the message is SPEC 3's for that window.
func TestRateLimitedHeadersAgree(t *testing.T) {
	te := newTestEnv(t)
	org := te.createOrg("acme")
	tests := []struct {
		limits  string // the key's rate_limits
		takes   int    // allowed requests before the 429
		advance time.Duration
		want    string // RateLimit on the 429
		retry   string
		message string
	}{
		{`[{"limit":10,"window":"1m"},{"limit":1000,"window":"1h"}]`, 10, 0, `"1m";r=0;t=6`, "6", "Rate limit exceeded. Wait a minute before retrying."},
		{`[{"limit":10,"window":"1m"},{"limit":1000,"window":"1h"}]`, 10, 4 * time.Second, `"1m";r=0;t=2`, "2", "Rate limit exceeded. Wait a minute before retrying."},
		{`[{"limit":100,"window":"1m"},{"limit":3,"window":"1h"}]`, 3, 0, `"1h";r=0;t=1200`, "1200", "Hourly rate limit exceeded."},
		{`[{"limit":1,"window":"1m"},{"limit":1,"window":"1h"}]`, 1, 0, `"1h";r=0;t=3600`, "3600", "Hourly rate limit exceeded."},
		{`[{"limit":2,"window":"90s"}]`, 2, 0, `"90s";r=0;t=45`, "45", "Rate limit exceeded for the 90s window."},
		{`[{"limit":4,"window":"1d"}]`, 4, 0, `"1d";r=0;t=21600`, "21600", "Rate limit exceeded for the 1d window."},
	}
	for _, tt := range tests {
		_, key := te.createKey(org, `{"name":"k","env":"live","rate_limits":`+tt.limits+`}`)
		for i := 0; i < tt.takes; i++ {
			mustStatus(t, tt.limits, te.whoami(envLive, key), 200)
		}
		te.clock.Advance(tt.advance)
		r := te.whoami(envLive, key)
		var e errorBody
		json.Unmarshal(r.body, &e)
		if r.status != 429 || r.header.Get("RateLimit") != tt.want || r.header.Get("Retry-After") != tt.retry ||
			e.Error.Message != tt.message || r.header.Get("X-RateLimit-Remaining") != "0" {
			t.Errorf("%s after %d and %v: %d RateLimit %q Retry-After %q %q; want 429 %q %q %q", tt.limits, tt.takes, tt.advance,
				r.status, r.header.Get("RateLimit"), r.header.Get("Retry-After"), e.Error.Message, tt.want, tt.retry, tt.message)
		}
	}
}
