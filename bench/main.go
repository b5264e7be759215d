// Command bench measures keyhole's guarded surface against bare net/http
// baselines with wrk, on one machine, in one run. It is a tool, not part of
// keyhole. Run it with bench/run.sh, which builds both binaries.
//
//	bench [-rounds 7] [-duration 3s] [-connections 32] [-floors] [-only NAME] -keyhole path/to/keyhole
//	bench scale -keyhole path/to/keyhole [-orgs 10000] [-keys 1000000]
//	bench create -keyhole path/to/keyhole [-clients 32] [-duration 10s]
//	bench cluster -keyhole path/to/keyhole [-duration 5s] [-rounds 3] [-connections 32]
//	perf script -F ip,sym -i perf.data | bench costs   (bench/profile.sh)
//
// The subcommands bare, revproxy, floor and proxyfloor are the servers it
// starts itself to compare keyhole with.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

const adminToken = "kh_admin_bench0000000000000000000000000000"

func main() {
	log.SetFlags(0)
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "bare":
			serveBare(os.Args[2])
			return
		case "scale":
			runScale(os.Args[2:])
			return
		case "create":
			runCreate(os.Args[2:])
			return
		case "cluster":
			runCluster(os.Args[2:])
			return
		case "revproxy", "proxyfloor":
			serveRevProxy(os.Args[2], os.Args[3], atoi(os.Args[4]), os.Args[1] == "proxyfloor")
			return
		case "floor":
			serveFloor(os.Args[2], os.Args[3])
			return
		case "headers":
			runHeaders(os.Args[2:])
			return
		case "costs":
			runCosts(os.Args[2:])
			return
		case "costdiff":
			runCostDiff(os.Args[2:])
			return
		case "nheaders":
			serveHeaders(os.Args[2], atoi(os.Args[3]))
			return
		}
	}
	if err := runCompare(os.Args[1:]); err != nil {
		log.Fatal(err) // after runCompare's deferred stops: no server is left running
	}
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		log.Fatal(err)
	}
	return n
}

var whoamiBody = []byte(`{"key_id":"key_0123456789abcdef","org_id":"org_0123456789abcdef","env":"live","scopes":["*"]}` + "\n")

// serveBare is the baseline: net/http answering a small JSON body.
func serveBare(addr string) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write(whoamiBody)
	})
	log.Fatal(http.ListenAndServe(addr, h))
}

// serveRevProxy is the proxy baseline: httputil.ReverseProxy with idle
// connections per host raised to the client's concurrency. With contract
// set it is the proxy's floor (floor.go).
func serveRevProxy(addr, upstream string, conns int, contract bool) {
	target, err := url.Parse(upstream)
	if err != nil {
		log.Fatal(err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 4 * conns
	tr.MaxIdleConnsPerHost = 2 * conns
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		Transport: tr, BufferPool: pool{},
		// wrk breaks off the requests in flight when it stops; keyhole's proxy
		// does not log those either ("context canceled", once per connection).
		ErrorLog: log.New(io.Discard, "", 0)}
	if contract {
		addContractHeaders(rp)
	}
	log.Fatal(http.ListenAndServe(addr, rp))
}

// pool reuses ReverseProxy's copy buffers, as keyhole's proxy does, so the
// baseline is the best a bare ReverseProxy does.
type pool struct{}

// The pool holds array pointers: a slice put in an interface would cost
// an allocation per Put (staticcheck SA6002).
var buffers = sync.Pool{New: func() any { return new([32 << 10]byte) }}

func (pool) Get() []byte { return buffers.Get().(*[32 << 10]byte)[:] }

func (pool) Put(b []byte) {
	if len(b) == 32<<10 {
		buffers.Put((*[32 << 10]byte)(b))
	}
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// process is a child this tool started.
type process struct {
	cmd  *exec.Cmd
	addr string
}

func start(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	return cmd
}

func startSelf(args ...string) *process {
	addr := freeAddr()
	self, _ := os.Executable()
	args = append(args[:1:1], append([]string{addr}, args[1:]...)...)
	p := &process{cmd: start(self, args...), addr: addr}
	waitHTTP(addr)
	return p
}

func waitHTTP(addr string) {
	for i := 0; i < 600; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	log.Fatalf("nothing listens on %s", addr)
}

func startKeyhole(bin, db string, extra ...string) *process {
	addr := freeAddr()
	args := append([]string{"serve", "--addr", addr, "--db", db, "--admin-token", adminToken,
		"--rate-limits", "1000000000/1s"}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout = io.Discard
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	waitHTTP(addr)
	return &process{cmd: cmd, addr: addr}
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) stop() {
	p.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}

func adminCall(addr, method, path, body string, out any) {
	req, _ := http.NewRequest(method, "http://"+addr+"/admin/v1"+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		log.Fatalf("%s %s = %d %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			log.Fatal(err)
		}
	}
}

// seedKey creates an org and a live key whose limits never trip.
func seedKey(addr string) (org, key string) {
	var o struct{ ID string }
	adminCall(addr, "POST", "/orgs", `{"name":"bench"}`, &o)
	var k struct{ Key string }
	adminCall(addr, "POST", "/orgs/"+o.ID+"/keys", `{"name":"bench","env":"live","scopes":["*"]}`, &k)
	return o.ID, k.Key
}

// result is one wrk run.
type result struct {
	requests int64
	rps      float64
	p50, p99 time.Duration
	errors   int64
	cpu      time.Duration // the server process's CPU time per request, when its pid is known
}

var (
	requestsRE = regexp.MustCompile(`(\d+) requests in`)
	rpsRE      = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	pctRE      = regexp.MustCompile(`\s(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\b`)
	non2xxRE   = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	sockErrRE  = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

func runWrk(cfg wrkConfig, url, script string) result {
	args := []string{"-t", "1", "-c", strconv.Itoa(cfg.conns), "-d", cfg.duration.String(), "--latency"}
	if script != "" {
		args = append(args, "-s", script)
	}
	out, err := exec.Command("wrk", append(args, url)...).CombinedOutput()
	if err != nil {
		log.Fatalf("wrk: %v\n%s", err, out)
	}
	var r result
	s := string(out)
	if m := requestsRE.FindStringSubmatch(s); m != nil {
		r.requests, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := rpsRE.FindStringSubmatch(s); m != nil {
		r.rps, _ = strconv.ParseFloat(m[1], 64)
	}
	for _, m := range pctRE.FindAllStringSubmatch(s, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[m[3]]
		d := time.Duration(v * float64(unit)).Round(time.Microsecond)
		if m[1] == "50" {
			r.p50 = d
		} else {
			r.p99 = d
		}
	}
	if m := non2xxRE.FindStringSubmatch(s); m != nil {
		r.errors, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := sockErrRE.FindStringSubmatch(s); m != nil {
		for _, x := range m[1:] {
			n, _ := strconv.ParseInt(x, 10, 64)
			r.errors += n
		}
	}
	return r
}

// runWrkOn is runWrk that also measures the CPU time the server process
// pid spends per request: steadier than requests per second on shared
// cores, and it counts the server's work alone, not wrk's.
func runWrkOn(cfg wrkConfig, url, script string, pid int) result {
	if pid == 0 { // bench scale's servers: requests per second alone
		return runWrk(cfg, url, script)
	}
	before := cpuTime(pid)
	r := runWrk(cfg, url, script)
	if r.requests > 0 {
		r.cpu = (cpuTime(pid) - before) / time.Duration(r.requests)
	}
	return r
}

// cpuTime is the user and system time process pid has run, from
// /proc/PID/stat (in clock ticks of 10 ms).
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		log.Fatalf("bench: the server's CPU time: %v", err)
	}
	fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:])) // after the command's name
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

type wrkConfig struct {
	conns    int
	duration time.Duration
	rounds   int
	dir      string
}

// writeScript writes a wrk Lua script that sets method, headers and body.
func writeScript(dir, name, method string, headers map[string]string, body string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "wrk.method = %q\n", method)
	keys := make([]string, 0, len(headers))
	for k := range headers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "wrk.headers[%q] = %q\n", k, headers[k])
	}
	if body != "" {
		fmt.Fprintf(&b, "wrk.body = %q\n", body)
	}
	path := filepath.Join(dir, name+".lua")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		log.Fatal(err)
	}
	return path
}

// scenario is one keyhole surface and its bare baseline.
type scenario struct {
	name           string
	target         float64
	keyholeURL     string
	keyholeScript  string
	keyholePID     int
	request        benchRequest // keyhole's request, for checkFloors; the proxy's is not checked
	baselineURL    string
	baselineScript string
	floorURL       string // with -floors: the same headers, no keyhole (floor.go)
	floorPID       int
	beforeURL      string // with -before: another keyhole build, measured in the same rounds
	beforeScript   string
	beforePID      int
}

type pair struct{ bare, keyhole, floor, before result }

func runCompare(args []string) error {
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	bin := fs.String("keyhole", "./keyhole", "keyhole binary")
	var cfg wrkConfig
	fs.IntVar(&cfg.conns, "connections", 32, "wrk connections")
	fs.DurationVar(&cfg.duration, "duration", 3*time.Second, "each wrk run")
	fs.IntVar(&cfg.rounds, "rounds", 7, "A B rounds per scenario")
	only := fs.String("only", "", "run only the scenarios whose name contains this")
	floors := fs.Bool("floors", false, "also measure servers that send keyhole's headers but do nothing else")
	before := fs.String("before", "", "another keyhole `binary` (an earlier build) to measure in the same rounds")
	fs.Parse(args)
	dir, err := os.MkdirTemp("", "keyhole-bench")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cfg.dir = dir

	bare := startSelf("bare")
	defer bare.stop()
	upstream := startSelf("bare")
	defer upstream.stop()
	rproxy := startSelf("revproxy", "http://"+upstream.addr, strconv.Itoa(cfg.conns))
	defer rproxy.stop()
	kh := startKeyhole(*bin, filepath.Join(dir, "direct.db"))
	defer kh.stop()
	khProxy := startKeyhole(*bin, filepath.Join(dir, "proxy.db"), "--upstream", "http://"+upstream.addr)
	defer khProxy.stop()

	org, key := seedKey(kh.addr)
	proxyOrg, proxyKey := seedKey(khProxy.addr)
	whoami := benchRequest{"GET", map[string]string{"Authorization": "Bearer " + key}, ""}
	verify := benchRequest{"POST", map[string]string{"Content-Type": "application/json"}, `{"key":"` + key + `","env":"live"}`}
	auth := benchRequest{"GET", map[string]string{"Authorization": "Bearer " + key,
		"X-Original-URI": "/api/v1/prod/sms/send", "X-Original-Method": "POST"}, ""}
	scenarios := []scenario{
		{name: "whoami", target: 0.80, keyholePID: kh.pid(), keyholeURL: "http://" + kh.addr + "/api/v1/prod/whoami",
			request: whoami, keyholeScript: whoami.script(dir, "whoami"), baselineURL: "http://" + bare.addr + "/"},
		{name: "verify", target: 0.75, keyholePID: kh.pid(), keyholeURL: "http://" + kh.addr + "/v1/keys/verify",
			request: verify, keyholeScript: verify.script(dir, "verify"),
			baselineURL:    "http://" + bare.addr + "/",
			baselineScript: writeScript(dir, "bareverify", "POST", nil, `{"key":"`+strings.Repeat("x", len(key))+`","env":"live"}`)},
		{name: "forward auth", target: 0.80, keyholePID: kh.pid(), keyholeURL: "http://" + kh.addr + "/v1/auth",
			request: auth, keyholeScript: auth.script(dir, "auth"), baselineURL: "http://" + bare.addr + "/"},
		{name: "reverse proxy", target: 0.85, keyholePID: khProxy.pid(), keyholeURL: "http://" + khProxy.addr + "/api/v1/prod/sms",
			keyholeScript: writeScript(dir, "proxy", "GET", map[string]string{"Authorization": "Bearer " + proxyKey}, ""),
			baselineURL:   "http://" + rproxy.addr + "/api/v1/prod/sms"},
	}
	if *before != "" && !*floors {
		return errors.New("bench: -before compares builds against the floors; give -floors too")
	}
	if *before != "" {
		defer addBefore(scenarios, *before, dir, upstream.addr, key, proxyKey)()
	}
	var checked int64 // requests checkFloors sent keyhole, for the accounting
	if *floors {
		for i, surface := range []string{"whoami", "verify", "auth"} {
			p := startSelf("floor", surface)
			defer p.stop()
			scenarios[i].floorURL, scenarios[i].floorPID = "http://"+p.addr+"/", p.pid()
		}
		p := startSelf("proxyfloor", "http://"+upstream.addr, strconv.Itoa(cfg.conns))
		defer p.stop()
		scenarios[3].floorURL, scenarios[3].floorPID = "http://"+p.addr+"/api/v1/prod/sms", p.pid()
		var err error
		if checked, err = checkFloors(scenarios); err != nil {
			return err
		}
	}
	fmt.Printf("keyhole bench: %d cores, wrk -t1 -c%d -d%s, %d rounds A B per scenario\n",
		cores(), cfg.conns, cfg.duration, cfg.rounds)
	if *floors {
		for _, d := range floorDefinitions {
			fmt.Println("  " + d)
		}
	}
	fmt.Println()
	direct, proxied := checked, int64(0)
	for _, sc := range scenarios {
		if !strings.Contains(sc.name, *only) {
			continue
		}
		pairs, sent := measure(cfg, sc)
		if sc.name == "reverse proxy" {
			proxied += sent
		} else {
			direct += sent
		}
		report(sc, pairs)
	}
	fmt.Println()
	checkAccounting("direct (whoami, verify, forward auth)", kh.addr, org, direct)
	checkAccounting("reverse proxy", khProxy.addr, proxyOrg, proxied)
	return nil
}

// addBefore starts an earlier keyhole build beside the current one, with
// keys of its own, and gives each scenario its URL and script. stop ends
// its processes.
func addBefore(scenarios []scenario, bin, dir, upstream, key, proxyKey string) (stop func()) {
	kh := startKeyhole(bin, filepath.Join(dir, "before-direct.db"))
	khProxy := startKeyhole(bin, filepath.Join(dir, "before-proxy.db"), "--upstream", "http://"+upstream)
	stop = func() { kh.stop(); khProxy.stop() }
	_, beforeKey := seedKey(kh.addr)
	_, beforeProxyKey := seedKey(khProxy.addr)
	for i := range scenarios {
		sc := &scenarios[i]
		addr, k, mine, pid := kh.addr, beforeKey, key, kh.pid()
		if sc.name == "reverse proxy" {
			addr, k, mine, pid = khProxy.addr, beforeProxyKey, proxyKey, khProxy.pid()
		}
		sc.beforePID = pid
		u, err := url.Parse(sc.keyholeURL)
		if err != nil {
			log.Fatal(err)
		}
		u.Host = addr
		sc.beforeURL = u.String()
		script, err := os.ReadFile(sc.keyholeScript)
		if err != nil {
			log.Fatal(err)
		}
		sc.beforeScript = filepath.Join(dir, "before-"+filepath.Base(sc.keyholeScript))
		if err := os.WriteFile(sc.beforeScript, []byte(strings.ReplaceAll(string(script), mine, k)), 0o600); err != nil {
			log.Fatal(err)
		}
	}
	return stop
}

// measure warms both sides up (connections, heap, page cache), then runs
// them alternately, A B A B. sent counts every request sent to keyhole,
// the warm-up's included, for the accounting.
func measure(cfg wrkConfig, sc scenario) (pairs []pair, sent int64) {
	warm := cfg
	warm.duration = 2 * time.Second
	runWrk(warm, sc.baselineURL, sc.baselineScript)
	sent = runWrk(warm, sc.keyholeURL, sc.keyholeScript).requests
	if sc.floorURL != "" {
		runWrk(warm, sc.floorURL, sc.keyholeScript)
	}
	if sc.beforeURL != "" {
		runWrk(warm, sc.beforeURL, sc.beforeScript)
	}
	pairs = make([]pair, cfg.rounds)
	for i := range pairs {
		pairs[i].bare = runWrk(cfg, sc.baselineURL, sc.baselineScript)
		pairs[i].keyhole = runWrkOn(cfg, sc.keyholeURL, sc.keyholeScript, sc.keyholePID)
		sent += pairs[i].keyhole.requests
		if sc.floorURL != "" {
			// The floor gets keyhole's request, headers and body alike.
			pairs[i].floor = runWrkOn(cfg, sc.floorURL, sc.keyholeScript, sc.floorPID)
		}
		if sc.beforeURL != "" {
			pairs[i].before = runWrkOn(cfg, sc.beforeURL, sc.beforeScript, sc.beforePID)
		}
	}
	return pairs, sent
}

func report(sc scenario, pairs []pair) {
	floors := sc.floorURL != ""
	fmt.Printf("%s (target %.2f of bare req/s, p99 within 1.5x)\n", sc.name, sc.target)
	fmt.Printf("  %-6s %12s %9s %9s | %12s %9s %9s | %6s %6s", "round", "bare req/s", "p50", "p99",
		"keyhole", "p50", "p99", "ratio", "p99x")
	if floors {
		fmt.Printf(" | %12s %6s %8s", "floor req/s", "floor", "kh/floor")
	}
	fmt.Println()
	var ratios, floorRatios, overFloor, p99OverFloor []float64
	for i, p := range pairs {
		ratio := p.keyhole.rps / p.bare.rps
		ratios = append(ratios, ratio)
		fmt.Printf("  %-6d %12.0f %9s %9s | %12.0f %9s %9s | %6.2f %6.2f", i+1, p.bare.rps, p.bare.p50, p.bare.p99,
			p.keyhole.rps, p.keyhole.p50, p.keyhole.p99, ratio, float64(p.keyhole.p99)/float64(p.bare.p99))
		if floors {
			floorRatios = append(floorRatios, p.floor.rps/p.bare.rps)
			overFloor = append(overFloor, p.keyhole.rps/p.floor.rps)
			p99OverFloor = append(p99OverFloor, float64(p.keyhole.p99)/float64(p.floor.p99))
			fmt.Printf(" | %12.0f %6.2f %8.2f", p.floor.rps, p.floor.rps/p.bare.rps, p.keyhole.rps/p.floor.rps)
		}
		fmt.Println()
		if p.keyhole.errors > 0 || p.bare.errors > 0 || p.floor.errors > 0 {
			fmt.Printf("         errors: bare %d, keyhole %d, floor %d\n", p.bare.errors, p.keyhole.errors, p.floor.errors)
		}
	}
	verdict := "met"
	if median(ratios) < sc.target {
		verdict = "MISSED"
	}
	fmt.Printf("  median ratio %.2f: %s", median(ratios), verdict)
	if floors {
		fmt.Printf("; the floor (keyhole's headers, nothing else) %.2f;\n  keyhole / floor %.2f (want >= 0.95), p99 %.2fx the floor's (want <= 1.2)",
			median(floorRatios), median(overFloor), median(p99OverFloor))
		if sc.beforeURL != "" {
			var b, bp99 []float64
			for _, p := range pairs {
				b = append(b, p.before.rps/p.floor.rps)
				bp99 = append(bp99, float64(p.before.p99)/float64(p.floor.p99))
			}
			fmt.Printf(";\n  the -before build / floor %.2f (rounds %.2f–%.2f), p99 %.2fx the floor's",
				median(b), slices.Min(b), slices.Max(b), median(bp99))
		}
		reportCPU(sc, pairs)
	}
	fmt.Print("\n\n")
}

// reportCPU prints the server CPU time per request, keyhole's and its
// floor's, and keyhole's own work as a share of a request: 1 - floor /
// keyhole. Medians of the rounds.
func reportCPU(sc scenario, pairs []pair) {
	var kh, floor, own, before, beforeOwn []float64
	for _, p := range pairs {
		kh = append(kh, p.keyhole.cpu.Seconds()*1e6)
		floor = append(floor, p.floor.cpu.Seconds()*1e6)
		own = append(own, 1-float64(p.floor.cpu)/float64(p.keyhole.cpu))
		if sc.beforeURL != "" {
			before = append(before, p.before.cpu.Seconds()*1e6)
			beforeOwn = append(beforeOwn, 1-float64(p.floor.cpu)/float64(p.before.cpu))
		}
	}
	fmt.Printf(";\n  server CPU per request: keyhole %.2f µs, floor %.2f µs; keyhole's own work %.1f%% of a request (rounds %.1f–%.1f%%)",
		median(kh), median(floor), 100*median(own), 100*slices.Min(own), 100*slices.Max(own))
	if sc.beforeURL != "" {
		fmt.Printf(";\n  the -before build %.2f µs, its own work %.1f%% (rounds %.1f–%.1f%%)",
			median(before), 100*median(beforeOwn), 100*slices.Min(beforeOwn), 100*slices.Max(beforeOwn))
	}
}

func median(xs []float64) float64 {
	xs = slices.Clone(xs)
	sort.Float64s(xs)
	return xs[len(xs)/2]
}

// checkAccounting compares the usage counters with what wrk reported.
func checkAccounting(name, addr, org string, sent int64) {
	var u struct {
		Buckets []map[string]any `json:"buckets"`
	}
	adminCall(addr, "GET", "/orgs/"+org+"/usage?hours=2", "", &u)
	var counted int64
	for _, b := range u.Buckets {
		for _, class := range []string{"2xx", "4xx", "429", "5xx"} {
			n, _ := b[class].(float64)
			counted += int64(n)
		}
	}
	fmt.Printf("accounting, %s: wrk reported %d requests, usage counted %d (difference %d: requests in flight when wrk stopped)\n",
		name, sent, counted, counted-sent)
}

func cores() int {
	out, err := exec.Command("nproc").Output()
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return n
}
