package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httputil"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The floors: bare servers that send and receive the same headers keyhole
// does for a surface (SPEC's rate-limit and identity headers, the request
// id), with fixed values, and check no key and log nothing. A floor is what
// the contract's header volume costs with net/http on this machine;
// keyhole's ratio to its floor is what its own work costs. bench -floors
// measures them in the same rounds.

var (
	rateLimitHeaders = map[string]string{
		"X-Request-Id": "req_0123456789abcdef", "X-Ratelimit-Limit": "1000000000",
		"X-Ratelimit-Remaining": "999999999", "X-Ratelimit-Reset": "0",
		"Ratelimit-Policy": `"1s";q=1000000000;w=1`, "Ratelimit": `"1s";r=999999999;t=0`,
	}
	identityHeaders = map[string]string{
		"X-Keyhole-Org": "org_0123456789abcdef", "X-Keyhole-Key-Id": "key_0123456789abcdef",
		"X-Keyhole-Env": "live", "X-Keyhole-Scopes": "*",
	}
	verifyBody = []byte(`{"valid":true,"key_id":"key_0123456789abcdef","org_id":"org_0123456789abcdef",` +
		`"env":"live","scopes":["*"],"name":"bench","meta":null,"expires_at":null,"enabled":true,"credits":null,` +
		`"ratelimit":{"limit":1000000000,"remaining":999999999,"reset":0},` +
		`"ratelimits":[{"window":"1s","limit":1000000000,"remaining":999999999,"reset":0}]}` + "\n")
)

func setAll(h http.Header, values map[string]string) {
	for k, v := range values {
		h[k] = []string{v}
	}
}

// floorDefinitions is printed with every -floors run, so a reader of its
// figures knows what each floor does.
var floorDefinitions = []string{
	"whoami floor: GET, answers keyhole's whoami body with its request id and five rate-limit headers",
	"verify floor: reads the POST body, answers keyhole's verify body with the same headers",
	"forward auth floor: answers 200 with the request id, rate-limit and four X-Keyhole-* headers",
	"proxy floor: httputil.ReverseProxy (idle connections raised, a buffer pool) adding X-Forwarded-*" +
		" and the identity headers upstream, the request id and rate-limit headers to the client",
	"every floor reads the Authorization and X-Original-URI headers and paces its collector as keyhole does",
}

// Keyhole's collector budget (gcpace.go): the next collection comes 48 MiB
// of garbage after the live heap (at least 4 MiB), re-read every 2 s. A
// floor on Go's default would collect every few MiB, a cost keyhole does
// not pay, and the floor would flatter keyhole.
const (
	gcHeadroom     = 48 << 20
	gcLiveFloor    = 4 << 20
	gcPaceInterval = 2 * time.Second
)

// paceLikeKeyhole gives this process keyhole's collector budget, unless
// GOGC is set, as keyhole does.
func paceLikeKeyhole() {
	if os.Getenv("GOGC") != "" {
		return
	}
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	pace := func() {
		metrics.Read(sample)
		live := uint64(gcLiveFloor)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			live = max(sample[0].Value.Uint64(), gcLiveFloor)
		}
		debug.SetGCPercent(int(max(100*gcHeadroom/live, 25)))
	}
	runtime.GC()
	pace()
	go func() {
		for range time.Tick(gcPaceInterval) {
			pace()
		}
	}()
}

// serveFloor answers as keyhole's whoami, verify or /v1/auth would.
func serveFloor(addr, surface string) {
	paceLikeKeyhole()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		_, _ = r.Header["Authorization"], r.Header["X-Original-Uri"]
		setAll(w.Header(), rateLimitHeaders)
		switch surface {
		case "auth":
			setAll(w.Header(), identityHeaders)
			w.WriteHeader(200)
		case "verify":
			w.Header()["Content-Type"] = []string{"application/json"}
			w.Write(verifyBody)
		default:
			w.Header()["Content-Type"] = []string{"application/json"}
			w.Write(whoamiBody)
		}
	})
	log.Fatal(http.ListenAndServe(addr, h))
}

// benchRequest is what wrk sends keyhole, and a surface's floor, in a
// scenario.
type benchRequest struct {
	method  string
	headers map[string]string
	body    string
}

func (r benchRequest) script(dir, name string) string {
	return writeScript(dir, name, r.method, r.headers, r.body)
}

// checkFloors sends keyhole and each surface's floor the scenario's
// request and stops the run unless both answer with the same status,
// header names and body length: a floor that sent less than keyhole (as
// verify's did after its answer grew) would count the difference as
// keyhole's own work. It says how many requests it sent keyhole. The
// proxy's floor answers with its upstream's headers and is not checked.
func checkFloors(scenarios []scenario) (sent int64, err error) {
	for _, sc := range scenarios {
		if sc.floorURL == "" || sc.request.method == "" {
			continue
		}
		kh, floor := answerShape(sc.keyholeURL, sc.request), answerShape(sc.floorURL, sc.request)
		if kh != floor {
			return sent, fmt.Errorf("bench: the %s floor does not answer as keyhole does (floor.go):\n  keyhole: %s\n  floor:   %s",
				sc.name, kh, floor)
		}
		sent++
	}
	return sent, nil
}

// answerShape is an answer's status, header names (without Date, which
// net/http adds to both) and body length.
func answerShape(url string, r benchRequest) string {
	req, err := http.NewRequest(r.method, url, strings.NewReader(r.body))
	if err != nil {
		log.Fatal(err)
	}
	for k, v := range r.headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var names []string
	for k := range resp.Header {
		if k != "Date" {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	return fmt.Sprintf("%d, headers %s, body %d bytes", resp.StatusCode, strings.Join(names, " "), len(body))
}

// addContractHeaders makes the proxy baseline the proxy's floor: it adds the
// headers keyhole adds both ways, identity and X-Forwarded-* to the
// upstream, rate limits and the request id to the client.
func addContractHeaders(rp *httputil.ReverseProxy) {
	setURL := rp.Rewrite
	rp.Rewrite = func(pr *httputil.ProxyRequest) {
		setURL(pr)
		pr.SetXForwarded()
		delete(pr.Out.Header, "Authorization")
		setAll(pr.Out.Header, identityHeaders)
	}
	paceLikeKeyhole()
	rp.ModifyResponse = func(res *http.Response) error {
		setAll(res.Header, rateLimitHeaders)
		return nil
	}
}

// serveHeaders is the bare baseline plus n response headers of 20-byte
// values: what the number of headers alone costs net/http (bench headers).
func serveHeaders(addr string, n int) {
	value := []string{strings.Repeat("v", 20)}
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("X-Bench-Header-%02d", i)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = []string{"application/json"}
		for _, name := range names {
			w.Header()[name] = value
		}
		w.Write(whoamiBody)
	})
	log.Fatal(http.ListenAndServe(addr, h))
}

// runHeaders measures serveHeaders against the bare baseline, A B, for a
// few header counts around eight: past eight entries a Go map grows from
// one group into a table, and net/http's header map with it.
func runHeaders(args []string) {
	fs := flag.NewFlagSet("headers", flag.ExitOnError)
	cfg := wrkConfig{conns: 32}
	fs.DurationVar(&cfg.duration, "duration", 3*time.Second, "each wrk run")
	fs.IntVar(&cfg.rounds, "rounds", 7, "A B rounds per header count")
	fs.Parse(args)
	bare := startSelf("bare")
	defer bare.stop()
	fmt.Printf("bare net/http plus n headers vs bare net/http: %d cores, wrk -t1 -c%d -d%s, %d rounds A B each\n",
		cores(), cfg.conns, cfg.duration, cfg.rounds)
	for _, n := range []int{0, 1, 4, 7, 8, 10} {
		p := startSelf("nheaders", strconv.Itoa(n))
		// measure's "keyhole" side is the server with the extra headers here.
		pairs, _ := measure(cfg, scenario{baselineURL: "http://" + bare.addr + "/", keyholeURL: "http://" + p.addr + "/"})
		p.stop()
		var ratios []float64
		for _, pr := range pairs {
			ratios = append(ratios, pr.keyhole.rps/pr.bare.rps)
		}
		fmt.Printf("  %2d headers (%2d map entries with Content-Type): median %.2f of bare (rounds %.2f–%.2f)\n",
			n, n+1, median(ratios), slices.Min(ratios), slices.Max(ratios))
	}
}
