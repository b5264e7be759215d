package main

import (
	"os"
	"runtime"
	"runtime/debug"
	"testing"
)

// TestGCPacerFollowsLiveHeap checks that GOGC follows the live heap, so the
// garbage allowed between collections stays near gcHeadroom: a GOGC set
// once from a small heap let a small keyhole grow to 360 MiB.
func TestGCPacerFollowsLiveHeap(t *testing.T) {
	if os.Getenv("GOGC") != "" {
		t.Skip("GOGC is set: the pacer leaves the collector to it")
	}
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	p := newGCPacer()
	percentFor := func() int {
		runtime.GC()
		p.pace()
		return debug.SetGCPercent(p.percent)
	}
	small := percentFor()
	live := make([][]byte, 40)
	for i := range live {
		live[i] = make([]byte, 1<<20)
	}
	big := percentFor()
	runtime.KeepAlive(live)
	// 48 MiB of headroom over a live heap of 40 MiB and a little more.
	if big < 80 || big > 125 {
		t.Errorf("GOGC with 40 MiB live = %d; want about 115", big)
	}
	if small < 2*big {
		t.Errorf("GOGC with a small heap = %d, with 40 MiB live = %d; want the small heap's far higher", small, big)
	}
	live = nil
	if again := percentFor(); again < 2*big {
		t.Errorf("GOGC after the heap shrank = %d; want it back above %d", again, 2*big)
	}
}
