package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// runScale seeds a db with many keys through keyhole seed, then measures
// start to ready, resident memory, and whoami throughput against a db with
// few keys, alternating A B with the same wrk settings.
func runScale(args []string) {
	fs := flag.NewFlagSet("bench scale", flag.ExitOnError)
	bin := fs.String("keyhole", "./keyhole", "keyhole binary")
	orgs := fs.Int("orgs", 10000, "organizations in the big db")
	keys := fs.Int("keys", 1000000, "keys in the big db")
	smallKeys := fs.Int("small-keys", 1000, "keys in the small db")
	var cfg wrkConfig
	fs.IntVar(&cfg.conns, "connections", 32, "wrk connections")
	fs.DurationVar(&cfg.duration, "duration", 3*time.Second, "each wrk run")
	fs.IntVar(&cfg.rounds, "rounds", 7, "A B rounds")
	fs.Parse(args)
	dir, err := os.MkdirTemp("", "keyhole-scale")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	small := filepath.Join(dir, "small.db")
	big := filepath.Join(dir, "big.db")
	seed(*bin, small, 10, *smallKeys)
	took := seed(*bin, big, *orgs, *keys)
	// Write the new files back now, not while the rounds below run.
	syscall.Sync()
	st, _ := os.Stat(big)
	fmt.Printf("seeded %d keys in %d orgs in %s (db file %d MiB)\n", *keys, *orgs, took.Round(time.Millisecond), st.Size()>>20)

	var ready []time.Duration
	for i := 0; i < 3; i++ {
		p, d := startTimed(*bin, big)
		ready = append(ready, d)
		if i < 2 {
			p.stop()
			continue
		}
		fmt.Printf("start to ready (3 starts): %v; resident memory after start: %s\n", ready, rss(p.cmd.Process.Pid))
		_, bigKey := seedKey(p.addr)
		ps, _ := startTimed(*bin, small)
		_, smallKey := seedKey(ps.addr)
		sc := scenario{name: fmt.Sprintf("whoami, %d keys (A) vs %d keys (B)", *smallKeys+1, *keys+1), target: 0.95,
			baselineURL: "http://" + ps.addr + "/api/v1/prod/whoami", baselineScript: writeScript(dir, "small", "GET", map[string]string{"Authorization": "Bearer " + smallKey}, ""),
			keyholeURL: "http://" + p.addr + "/api/v1/prod/whoami", keyholeScript: writeScript(dir, "big", "GET", map[string]string{"Authorization": "Bearer " + bigKey}, "")}
		pairs, _ := measure(cfg, sc)
		report(sc, pairs)
		fmt.Printf("resident memory after load: %s\n", rss(p.cmd.Process.Pid))
		ps.stop()
		p.stop()
	}
}

func seed(bin, db string, orgs, keys int) time.Duration {
	start := time.Now()
	out, err := exec.Command(bin, "seed", "--db", db, "--orgs", strconv.Itoa(orgs), "--keys", strconv.Itoa(keys)).CombinedOutput()
	if err != nil {
		log.Fatalf("seed: %v\n%s", err, out)
	}
	return time.Since(start)
}

// startTimed starts keyhole and times it from exec to a 200 from /readyz.
func startTimed(bin, db string) (*process, time.Duration) {
	addr := freeAddr()
	start := time.Now()
	cmd := exec.Command(bin, "serve", "--addr", addr, "--db", db, "--admin-token", adminToken, "--rate-limits", "1000000000/1s")
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return &process{cmd: cmd, addr: addr}, time.Since(start).Round(time.Millisecond)
			}
		}
		if time.Since(start) > 2*time.Minute {
			log.Fatal("keyhole did not get ready in 2 minutes")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// rss reads the resident set of a process from /proc.
func rss(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "unknown"
	}
	var parts []string
	for _, line := range strings.Split(string(b), "\n") {
		for _, name := range []string{"VmRSS", "RssAnon", "RssFile"} {
			if strings.HasPrefix(line, name+":") {
				kb, _ := strconv.Atoi(strings.Fields(line)[1])
				parts = append(parts, fmt.Sprintf("%s %d MiB", name, kb>>10))
			}
		}
	}
	return strings.Join(parts, ", ")
}

// runCreate measures key creation through the admin API with concurrent
// clients; every 201 is durable (committed) before it is sent.
func runCreate(args []string) {
	fs := flag.NewFlagSet("bench create", flag.ExitOnError)
	bin := fs.String("keyhole", "./keyhole", "keyhole binary")
	clients := fs.Int("clients", 32, "concurrent clients")
	duration := fs.Duration("duration", 10*time.Second, "how long to create keys")
	fs.Parse(args)
	dir, err := os.MkdirTemp("", "keyhole-create")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	p := startKeyhole(*bin, filepath.Join(dir, "create.db"))
	defer p.stop()
	org, _ := seedKey(p.addr)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *clients}}
	var created, failed atomic.Int64
	deadline := time.Now().Add(*duration)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < *clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				req, _ := http.NewRequest("POST", "http://"+p.addr+"/admin/v1/orgs/"+org+"/keys",
					strings.NewReader(`{"name":"load","env":"live"}`))
				req.Header.Set("Authorization", "Bearer "+adminToken)
				resp, err := client.Do(req)
				if err != nil || resp.StatusCode != 201 {
					failed.Add(1)
				} else {
					created.Add(1)
				}
				if resp != nil {
					// Read to the end, or the connection is not reused.
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	fmt.Printf("key creation, %d clients, %s: %d keys (%d failed), %.0f keys/s, each committed before its 201\n",
		*clients, duration, created.Load(), failed.Load(), float64(created.Load())/elapsed.Seconds())
}
