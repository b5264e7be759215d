package main

import (
	"bytes"
	"regexp"
	"testing"
)

func TestDemo(t *testing.T) {
	te := newTestEnv(t, func(c *config) { c.demo = true })
	var out bytes.Buffer
	te.s.printDemoHint(&out, "127.0.0.1:8080")
	keys := regexp.MustCompile(`Bearer (kh_(test|live)_[0-9a-f]{32})' http://127\.0\.0\.1:8080(/api/v1/(dev|prod)/)whoami\n`).FindAllStringSubmatch(out.String(), -1)
	if len(keys) != 2 {
		t.Fatalf("demo printed %q; want two curl lines", out.String())
	}
	for _, k := range keys {
		mustStatus(t, "demo key "+k[2], te.do("GET", k[3]+"whoami", "", bearer(k[1])...), 200)
	}
}
