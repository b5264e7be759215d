package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// The cluster tests run three keyhole nodes in this process, each with an
// embedded etcd member (fsync off, short ticks) on loopback ports from the
// OS, and talk to them over HTTP.

// clusterNode is one running node.
type clusterNode struct {
	name   string
	addr   string // HTTP
	cfg    config
	log    *lockedBuffer
	stop   context.CancelFunc
	done   chan struct{} // closed when serve returned, with err
	err    error
	client *http.Client
}

// freePorts asks the OS for n loopback ports. They are closed again before
// etcd listens on them: another process could take one between, which
// would show as a failure to start.
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	var addrs []string
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	for _, ln := range lns {
		ln.Close()
	}
	return addrs
}

type readyNode struct {
	i    int
	addr string
}

const clusterTestStaleness = 500 * time.Millisecond

// startTestCluster starts n nodes and waits until all listen. It skips the
// test (fails with KEYHOLE_REQUIRE_INTEGRATION=1) when etcd cannot start.
func startTestCluster(t *testing.T, n int) []*clusterNode {
	t.Helper()
	ports := freePorts(t, 2*n)
	var peers []string
	for i := range n {
		peers = append(peers, fmt.Sprintf("n%d=http://%s", i, ports[i]))
	}
	dir := t.TempDir()
	nodes := make([]*clusterNode, n)
	ready := make(chan readyNode, n)
	for i := range n {
		name := fmt.Sprintf("n%d", i)
		cfg, err := parseServeFlags([]string{"--addr", "127.0.0.1:0", "--db", filepath.Join(dir, name+".db"),
			"--admin-token", testRootToken, "--node-name", name, "--cluster-peers", strings.Join(peers, ","),
			"--cluster-addr", ports[n+i], "--cluster-insecure", "--max-staleness", clusterTestStaleness.String(),
			"--flush-interval", "50ms"}, func(string) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		cfg.cluster.tickMs, cfg.cluster.electionMs, cfg.cluster.noFsync = 10, 100, true
		cfg.cluster.etcdLogLevel = "panic"
		cfg.drainTimeout = time.Second
		ctx, cancel := context.WithCancel(context.Background())
		nd := &clusterNode{name: name, cfg: cfg, log: new(lockedBuffer), stop: cancel, done: make(chan struct{}),
			client: &http.Client{Timeout: 5 * time.Second}}
		nodes[i] = nd
		addrCh := make(chan string, 1)
		go func() {
			nd.err = serve(ctx, cfg, io.Discard, zerolog.New(nd.log), addrCh)
			close(nd.done)
		}()
		go func() {
			select {
			case a := <-addrCh:
				ready <- readyNode{i, a}
			case <-ctx.Done():
			}
		}()
	}
	t.Cleanup(func() {
		for _, nd := range nodes {
			nd.stop()
		}
		for _, nd := range nodes {
			select {
			case <-nd.done:
			case <-time.After(10 * time.Second):
				t.Errorf("node %s did not stop", nd.name)
			}
		}
	})
	deadline := time.After(30 * time.Second)
	for range n {
		select {
		case r := <-ready:
			nodes[r.i].addr = r.addr
		case <-deadline:
			for _, nd := range nodes {
				t.Logf("%s log:\n%s", nd.name, nd.log.String())
			}
			integrationMissing(t, "a 3-member etcd cluster did not start within 30s")
		}
		for _, nd := range nodes {
			select {
			case <-nd.done:
				t.Logf("%s log:\n%s", nd.name, nd.log.String())
				integrationMissing(t, fmt.Sprintf("etcd could not start here: node %s: %v", nd.name, nd.err))
			default:
			}
		}
	}
	return nodes
}

func (nd *clusterNode) do(t *testing.T, method, path, token, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+nd.addr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := nd.client.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (nd *clusterNode) admin(t *testing.T, method, path, body string, want int) map[string]any {
	t.Helper()
	status, b := nd.do(t, method, "/admin/v1"+path, testRootToken, body)
	if status != want {
		t.Fatalf("%s %s %s on %s = %d %s; want %d", method, path, body, nd.name, status, b, want)
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	return m
}

// verify is the node's answer for key: "valid", "invalid", or the status
// and error code of a refusal of the call itself.
func (nd *clusterNode) verify(t *testing.T, key string) string {
	t.Helper()
	status, b := nd.do(t, "POST", "/v1/keys/verify", "", `{"key":"`+key+`"}`)
	var m struct {
		Valid bool
		Error struct{ Code string }
	}
	json.Unmarshal(b, &m)
	switch {
	case status == 200 && m.Valid:
		return "valid"
	case status == 200:
		return "invalid"
	}
	return fmt.Sprintf("%d %s", status, m.Error.Code)
}

// waitVerify polls nd until key verifies as want, and says how long it took.
func (nd *clusterNode) waitVerify(t *testing.T, key, want string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got := nd.verify(t, key)
		if got == want {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("key on %s = %s after %v; want %s", nd.name, got, within, want)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-member etcd cluster")
	}
	begin := time.Now()
	nodes := startTestCluster(t, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	t.Logf("3 nodes up in %v", time.Since(begin))

	org := a.admin(t, "POST", "/orgs", `{"name":"acme"}`, 201)["id"].(string)
	k := a.admin(t, "POST", "/orgs/"+org+"/keys", `{"name":"k","env":"live"}`, 201)
	key, keyID := k["key"].(string), k["id"].(string)

	t.Run("a key made on A works on B and C", func(t *testing.T) {
		if got := a.verify(t, key); got != "valid" {
			t.Fatalf("on A at once = %s", got)
		}
		for _, nd := range []*clusterNode{b, c} {
			nd.waitVerify(t, key, "valid", 2*time.Second)
			nd.admin(t, "GET", "/orgs/"+org+"/keys/"+keyID, "", 200)
			if got := nd.admin(t, "GET", "/orgs/"+org, "", 200)["name"]; got != "acme" {
				t.Fatalf("org on %s = %v", nd.name, got)
			}
		}
	})

	t.Run("a revocation on A is refused on B and C", func(t *testing.T) {
		const rounds = 50
		var lags []time.Duration
		for i := range rounds {
			k := a.admin(t, "POST", "/orgs/"+org+"/keys", `{"name":"r","env":"live"}`, 201)
			key, id := k["key"].(string), k["id"].(string)
			b.waitVerify(t, key, "valid", 2*time.Second)
			c.waitVerify(t, key, "valid", 2*time.Second)
			// Revoke on A, from B's and C's side of the clock: the time
			// from A's answer until each refuses the key.
			var wg sync.WaitGroup
			acked := make(chan time.Time, 2)
			lag := make([]time.Duration, 2)
			for j, nd := range []*clusterNode{b, c} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					at := <-acked
					for nd.verify(t, key) != "invalid" {
						if time.Since(at) > 2*time.Second {
							t.Errorf("round %d: %s still accepts a key revoked 2s ago", i, nd.name)
							return
						}
					}
					lag[j] = time.Since(at)
				}()
			}
			a.admin(t, "POST", "/orgs/"+org+"/keys/"+id+"/revoke", "", 200)
			now := time.Now()
			acked <- now
			acked <- now
			if got := a.verify(t, key); got != "invalid" {
				t.Fatalf("on A after its revoke answered = %s", got)
			}
			wg.Wait()
			lags = append(lags, lag...)
		}
		slices.Sort(lags)
		t.Logf("revocation propagation after A's answer, %d revocations × 2 nodes: p50 %v, p99 %v, max %v",
			rounds, lags[len(lags)/2], lags[len(lags)*99/100], lags[len(lags)-1])
	})

	t.Run("the audit log is shared", func(t *testing.T) {
		var m struct{ Entries []struct{ Action string } }
		status, body := c.do(t, "GET", "/admin/v1/orgs/"+org+"/audit?limit=1000", testRootToken, "")
		if status != 200 {
			t.Fatalf("audit on C = %d %s", status, body)
		}
		json.Unmarshal(body, &m)
		n := 0
		for _, e := range m.Entries {
			if e.Action == actionKeyRevoked {
				n++
			}
		}
		if n != 50 {
			t.Fatalf("C's audit log has %d key.revoked entries; want 50", n)
		}
	})

	t.Run("a node cut off fails closed within max-staleness", func(t *testing.T) {
		if s, _ := a.do(t, "GET", "/readyz", "", ""); s != 200 {
			t.Fatalf("readyz on A = %d before the cut", s)
		}
		cut := time.Now()
		b.stop()
		c.stop()
		<-b.done
		<-c.done
		stopped := time.Since(cut)
		for {
			got := a.verify(t, key)
			if got == "503 verification_failed" {
				break
			}
			if got != "valid" {
				t.Fatalf("A answers %s while cut off", got)
			}
			if time.Since(cut) > stopped+2*clusterTestStaleness {
				t.Fatalf("A still verifies %v after its peers stopped", time.Since(cut))
			}
			time.Sleep(5 * time.Millisecond)
		}
		failed := time.Since(cut)
		if s, body := a.do(t, "GET", "/readyz", "", ""); s != 503 {
			t.Fatalf("readyz on a cut-off node = %d %s", s, body)
		}
		if s, body := a.do(t, "GET", "/api/v1/prod/x", key, ""); s != 503 || !bytes.Contains(body, []byte("verification_failed")) {
			t.Fatalf("guarded request on a cut-off node = %d %s", s, body)
		}
		t.Logf("A failed closed %v after the cut (its peers took %v to stop; --max-staleness %v)", failed, stopped, clusterTestStaleness)
	})
	t.Logf("cluster test took %v", time.Since(begin))
}
