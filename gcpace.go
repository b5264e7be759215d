package main

import (
	"context"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// keyhole paces the garbage collector by a fixed amount of garbage between
// collections, not Go's default of as much garbage as the live heap. The
// default is wrong both ways: a million keys (~150 MiB, live for the life
// of the process) would let as much again pile up, and a small index
// means a collection every few MiB, a dozen a second under load. A fixed
// GOGC is no better, since the live heap changes (connections, pending log
// entries): set once from a nearly empty heap, it let a small keyhole grow
// to 360 MiB under load. So the pacer re-reads the live heap every few
// seconds and sets GOGC to match. An operator's GOGC wins. 48 MiB, not
// the 64 of the round before: a million keys' larger entries (meta,
// allowlists, credits) took a loaded keyhole to 258 MiB resident, and
// small heaps measured the same with 16 MiB as with 64 (BENCHMARKS.md).
const (
	gcHeadroom = 48 << 20
	// gcLiveFloor keeps a nearly empty heap from getting a percentage that
	// would be far too much once connections and buffers fill it.
	gcLiveFloor    = 4 << 20
	gcPaceInterval = 2 * time.Second
)

type gcPacer struct {
	sample  []metrics.Sample
	percent int
}

// newGCPacer is nil when the operator set GOGC.
func newGCPacer() *gcPacer {
	if os.Getenv("GOGC") != "" {
		return nil
	}
	return &gcPacer{sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
}

// pace sets GOGC so that the next collection comes gcHeadroom after the
// live heap of the last one. Small changes are left alone.
func (p *gcPacer) pace() {
	metrics.Read(p.sample)
	live := uint64(gcLiveFloor)
	if p.sample[0].Value.Kind() == metrics.KindUint64 {
		live = max(p.sample[0].Value.Uint64(), gcLiveFloor)
	}
	percent := int(max(100*gcHeadroom/live, 25))
	if p.percent == 0 || percent*10 < p.percent*9 || percent*10 > p.percent*11 {
		debug.SetGCPercent(percent)
		p.percent = percent
	}
}

// run re-paces every gcPaceInterval until ctx ends.
func (p *gcPacer) run(ctx context.Context) {
	t := time.NewTicker(gcPaceInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.pace()
		}
	}
}

// startGCPacer paces the collector from the heap as it is now, after a
// collection, and then keeps pacing it until ctx ends.
func startGCPacer(ctx context.Context) {
	p := newGCPacer()
	if p == nil {
		return
	}
	runtime.GC()
	p.pace()
	go p.run(ctx)
}
