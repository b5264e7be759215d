package main

import (
	"bufio"
	"fmt"
	"io"
	"log"
	"os"
	"slices"
	"sort"
	"strings"
)

// bench costs reads `perf script -F ip,sym` of a keyhole process under wrk
// (bench/profile.sh records one) and names what each CPU sample was spent
// on: the innermost keyhole function on its stack decides, so allocation
// and map work count toward the keyhole step that asked for them. What no
// keyhole function is on the stack of is net/http, the runtime and the
// kernel: work the floor does too.

// costRule names a cost by the functions that make it up.
type costRule struct {
	name   string
	prefix []string
}

var costRules = []costRule{
	{"request checks (method, path, header names)", []string{"main.checkMethod", "main.checkPath",
		"main.checkHeader", "main.forwardedRequest", "main.extractKey", "main.isCanonical"}},
	{"key parsing and hashing", []string{"main.keyFormat.", "main.hashKey", "main.lookupValue"}},
	{"index lookup", []string{"main.(*keyIndex)."}},
	{"revocation, expiry, environment (verify's own checks)", []string{"main.(*server).verify",
		"main.(*server).checkRequest", "main.(*server).limitsFor", "main.(*server).envForPath"}},
	{"scope rules", []string{"main.requiredScope", "main.(*scopeSet).", "main.matchRule"}},
	{"limiter take", []string{"main.(*limiter).", "main.refill", "main.(*decision)."}},
	{"request id", []string{"main.newRequestID"}},
	{"last-used store", []string{"main.(*keyEntry).touch"}},
	{"log entry, its lock, usage counts (writeBehind.Add)", []string{"main.(*server).record",
		"main.(*writeBehind).Add", "main.(*writeBehind).usageCounts", "main.(*writeBehind).admitRefusal",
		"main.ownedPath", "main.ownedMethod"}},
	{"answer headers", []string{"main.setOwnHeaders", "main.setIdentityHeaders", "main.surface.owe",
		"main.(*ownValues)."}},
	{"answer body", []string{"main.writeWhoami", "main.appendIdentity", "appendVerifyAnswer",
		"main.(*statusWriter).", "main.writeJSONBody", "main.appendJSONString"}},
	{"verify body parse", []string{"main.parseVerifyBody", "main.(*jsonScanner).", "main.readBody"}},
	{"body read deadline (limitBodyReads)", []string{"(*server).limitBodyReads"}},
	{"request-duration histogram (/metrics)", []string{"main.(*promMetrics)."}},
	{"written behind (flush to bbolt)", []string{"main.(*writeBehind).", "main.(*store).", "main.(*committer).",
		"go.etcd.io/bbolt."}},
	{"reverse proxy (keyhole's part)", []string{"main.(*proxy).", "main.dropProxyHeaders", "main.copyBuffers"}},
	{"collector pacing", []string{"main.(*gcPacer)."}},
	{"read deadlines (deadlines.go)", []string{"main.(*watchedConn).SetReadDeadline", "main.(*watchedConn).SetDeadline",
		"main.(*watchedConn).expire", "main.(*deadlineWatch)."}},
}

// passThrough is the methods a watched connection takes from its
// *net.TCPConn: a frame of theirs is net's work, not keyhole's.
var passThrough = []string{"main.(*watchedConn).Read", "main.(*watchedConn).Write", "main.(*watchedConn).Close",
	"main.(*watchedConn).CloseWrite", "main.(*watchedConn).ReadFrom", "main.(*watchedConn).WriteTo"}

const (
	costOtherKeyhole = "other keyhole work (dispatch, the guarded handler itself)"
	costClock        = "clock reads (time.Now in keyhole)"
	costFloor        = "net/http, runtime, kernel (the floor does these too)"
)

func runCosts(args []string) {
	if len(args) > 0 {
		log.Fatal("usage: perf script -F ip,sym -i perf.data | bench costs")
	}
	counts, total := countCosts(os.Stdin, costOf)
	if total == 0 {
		log.Fatal("bench costs: no samples on stdin")
	}
	type row struct {
		name string
		n    int
	}
	var rows []row
	for name, n := range counts {
		rows = append(rows, row{name, n})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].n > rows[j].n })
	keyhole := 0
	for _, r := range rows {
		if r.name != costFloor {
			keyhole += r.n
		}
	}
	fmt.Printf("%d samples; keyhole's own work %.1f%% of the process's CPU\n", total, 100*float64(keyhole)/float64(total))
	for _, r := range rows {
		fmt.Printf("  %5.1f%%  %s\n", 100*float64(r.n)/float64(total), r.name)
	}
}

// countCosts reads perf script's samples (frames leaf first, a blank line
// after each) and counts them by what name calls each.
func countCosts(r io.Reader, name func(frames []string) string) (map[string]int, int) {
	counts := map[string]int{}
	total := 0
	var frames []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	flush := func() {
		if len(frames) > 0 {
			counts[name(frames)]++
			total++
			frames = frames[:0]
		}
	}
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			flush()
			continue
		}
		if _, sym, ok := strings.Cut(line, " "); ok {
			frames = append(frames, sym)
		}
	}
	flush()
	return counts, total
}

// costOf walks a sample's frames from the leaf: runtime frames (malloc,
// maps) count toward the keyhole function that called them, net/http's
// (and httputil's, the proxy floor's) toward the floor, even when keyhole
// called them, as the floor makes the same calls.
func costOf(frames []string) string {
	for i, f := range frames {
		switch {
		case f == "time.Now" && i+1 < len(frames) && strings.HasPrefix(frames[i+1], "main."):
			return costClock
		case strings.HasPrefix(f, "net/http.") || strings.HasPrefix(f, "net/http/httputil."):
			return costFloor
		case slices.Contains(passThrough, f):
			continue
		case strings.HasPrefix(f, "net.(*conn).SetReadDeadline"):
			return costFloor // a connection's own deadline, set as the floor's are (net/http wakes its background read so)
		case strings.HasPrefix(f, "main.") || strings.HasPrefix(f, "go.etcd.io/bbolt."):
			return keyholeCost(f)
		}
	}
	return costFloor
}

func keyholeCost(f string) string {
	for _, rule := range costRules {
		for _, p := range rule.prefix {
			if strings.Contains(f, p) {
				return rule.name
			}
		}
	}
	return costOtherKeyhole
}

// runCostDiff compares two processes' perf samples per request: keyhole's
// and its floor's, recorded under the same load (bench/profile.sh). Each
// sample is named by its innermost function, whoever called it, so what
// keyhole makes net/http, the runtime or the kernel do more often than
// the floor does shows too (as the read deadlines did, BENCHMARKS.md).
// Usage: bench costdiff HZ KEYHOLE.script KEYHOLE_REQUESTS FLOOR.script FLOOR_REQUESTS
func runCostDiff(args []string) {
	if len(args) != 5 {
		log.Fatal("usage: bench costdiff HZ KEYHOLE.script KEYHOLE_REQUESTS FLOOR.script FLOOR_REQUESTS")
	}
	hz, khReqs, floorReqs := float64(atoi(args[0])), float64(atoi(args[2])), float64(atoi(args[4]))
	kh, khTotal := leafCounts(args[1])
	floor, floorTotal := leafCounts(args[3])
	perRequest := func(n int, reqs float64) float64 { return float64(n) / hz / reqs * 1e6 } // µs
	fmt.Printf("CPU in samples per request: keyhole %.2f µs, floor %.2f µs\n",
		perRequest(khTotal, khReqs), perRequest(floorTotal, floorReqs))
	type row struct {
		name       string
		diff, k, f float64
	}
	var rows []row
	for name := range kh {
		k, f := perRequest(kh[name], khReqs), perRequest(floor[name], floorReqs)
		rows = append(rows, row{name, k - f, k, f})
	}
	for name := range floor {
		if _, ok := kh[name]; !ok {
			f := perRequest(floor[name], floorReqs)
			rows = append(rows, row{name, -f, 0, f})
		}
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].diff > rows[j].diff })
	fmt.Println("what keyhole spends more than its floor, per request, by innermost function:")
	for _, r := range rows[:min(25, len(rows))] {
		fmt.Printf("  %+7.3f µs  (keyhole %.3f, floor %.3f)  %s\n", r.diff, r.k, r.f, r.name)
	}
}

// leafCounts counts the samples of a perf script file by their innermost
// function, and all of them.
func leafCounts(path string) (map[string]int, int) {
	f, err := os.Open(path)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	return countCosts(f, func(frames []string) string { return frames[0] })
}
