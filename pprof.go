//go:build pprof

package main

import (
	"log"
	"net/http"
	_ "net/http/pprof"
	"os"
)

// Built with -tags pprof, keyhole serves net/http/pprof on
// KEYHOLE_PPROF_ADDR (default 127.0.0.1:6060), for profiling under load as
// BENCHMARKS.md describes. Release builds do not contain it.
func init() {
	addr := os.Getenv("KEYHOLE_PPROF_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6060"
	}
	go func() { log.Println(http.ListenAndServe(addr, nil)) }()
}
