package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// The cluster tests run three keyhole nodes in this process, each with an
// embedded etcd member (fsync off, short ticks) on loopback ports from the
// OS, and talk to them over HTTP.

// clusterNode is one running node.
type clusterNode struct {
	name      string
	addr      string // HTTP
	cfg       config
	clientURL string // its etcd member's
	peerAddr  string // its etcd member's raft port
	log       *lockedBuffer
	stop      context.CancelFunc
	ready     chan string
	done      chan struct{} // closed when serve returned, with err
	err       error
	client    *http.Client
	// started counts the node's starts. In one process, a node whose
	// member was stopped and started again (leader or follower, every
	// time) went on answering linearizable reads and committing writes
	// through its in-process client for seconds after both its peers had
	// stopped, while its gRPC status said "no leader". As separate
	// processes (keyhole restarts a member only with its process) the
	// same sequence fails closed (TestClusterProcesses). So the
	// in-process cut-off test cuts off a node started once.
	started int
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

const clusterTestStaleness = 500 * time.Millisecond

// startTestCluster starts n nodes and waits until all listen. It skips the
// test (fails with KEYHOLE_REQUIRE_INTEGRATION=1) when etcd cannot start.
func startTestCluster(t *testing.T, n int) []*clusterNode { return startTestClusterTLS(t, n, "") }

// startTestClusterTLS is startTestCluster with mTLS from tlsDir, if set.
func startTestClusterTLS(t *testing.T, n int, tlsDir string) []*clusterNode {
	t.Helper()
	ports := freePorts(t, 2*n)
	scheme, security := "http", []string{"--cluster-insecure"}
	if tlsDir != "" {
		scheme, security = "https", []string{"--cluster-tls", tlsDir}
	}
	var peers []string
	for i := range n {
		peers = append(peers, fmt.Sprintf("n%d=%s://%s", i, scheme, ports[i]))
	}
	dir := t.TempDir()
	nodes := make([]*clusterNode, n)
	for i := range n {
		name := fmt.Sprintf("n%d", i)
		cfg, err := parseServeFlags(append([]string{"--addr", "127.0.0.1:0", "--db", filepath.Join(dir, name+".db"),
			"--admin-token", testRootToken, "--node-name", name, "--cluster-peers", strings.Join(peers, ","),
			"--cluster-addr", ports[n+i], "--max-staleness", clusterTestStaleness.String(),
			"--flush-interval", "50ms", "--rate-limits", "1000000/1m"}, security...), func(string) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		cfg.cluster.tickMs, cfg.cluster.electionMs, cfg.cluster.noFsync = 10, 100, true
		cfg.cluster.etcdLogLevel = "panic"
		cfg.drainTimeout = time.Second
		nodes[i] = &clusterNode{name: name, cfg: cfg, clientURL: scheme + "://" + ports[n+i], peerAddr: ports[i],
			client: &http.Client{Timeout: 5 * time.Second}}
	}
	t.Cleanup(func() {
		for _, nd := range nodes {
			nd.halt(t)
		}
	})
	for _, nd := range nodes {
		nd.start()
	}
	for _, nd := range nodes {
		nd.waitUp(t, 30*time.Second)
	}
	return nodes
}

// start runs the node's serve in the background; waitUp waits for it.
func (nd *clusterNode) start() {
	nd.started++
	ctx, cancel := context.WithCancel(context.Background())
	nd.log, nd.stop, nd.done, nd.err, nd.addr = new(lockedBuffer), cancel, make(chan struct{}), nil, ""
	nd.ready = make(chan string, 1)
	done := nd.done
	go func() {
		nd.err = serve(ctx, nd.cfg, io.Discard, zerolog.New(nd.log), nd.ready)
		close(done)
	}()
}

func (nd *clusterNode) waitUp(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case nd.addr = <-nd.ready:
	case <-nd.done:
		t.Logf("%s log:\n%s", nd.name, nd.log.String())
		integrationMissing(t, fmt.Sprintf("etcd could not start here: node %s: %v", nd.name, nd.err))
	case <-time.After(within):
		t.Logf("%s log:\n%s", nd.name, nd.log.String())
		integrationMissing(t, fmt.Sprintf("a 3-member etcd cluster did not start within %v", within))
	}
}

// halt stops the node and waits for its serve to return.
func (nd *clusterNode) halt(t *testing.T) time.Duration {
	t.Helper()
	if nd.stop == nil {
		return 0
	}
	start := time.Now()
	nd.stop()
	select {
	case <-nd.done:
		if nd.err != nil {
			t.Errorf("node %s: %v", nd.name, nd.err)
		}
	case <-time.After(15 * time.Second):
		t.Errorf("node %s did not stop", nd.name)
	}
	nd.stop = nil
	return time.Since(start)
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

// verify is the node's answer for key: "valid", "invalid" (unknown or
// revoked), "refused CODE" for other refusals, or the status
// and error code of a refusal of the call itself.
func (nd *clusterNode) verify(t *testing.T, key string) string {
	t.Helper()
	status, b := nd.do(t, "POST", "/v1/keys/verify", "", `{"key":"`+key+`"}`)
	var m struct {
		Valid bool
		Code  string
		Error struct{ Code string }
	}
	json.Unmarshal(b, &m)
	switch {
	case status == 200 && m.Valid:
		return "valid"
	case status == 200 && m.Code == "invalid_or_revoked":
		return "invalid"
	case status == 200:
		return "refused " + m.Code
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
	skipShort(t, "starts a 3-member etcd cluster")
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
		logRevocations(t, "in-process, fsync off", measureRevocations(t, a, []*clusterNode{b, c}, org, 50))
	})

	t.Run("a node on --etcd-endpoints shares the same keys", func(t *testing.T) {
		cfg, err := parseServeFlags([]string{"--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "client.db"),
			"--node-name", "client", "--etcd-endpoints", a.clientURL + "," + b.clientURL + "," + c.clientURL,
			"--cluster-addr", freePorts(t, 1)[0], // its own node API: it owns keys too
			"--cluster-insecure", "--max-staleness", clusterTestStaleness.String(), "--rate-limits", "1000000/1m"},
			func(string) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		cfg.drainTimeout = time.Second
		d := &clusterNode{name: "client", cfg: cfg, client: &http.Client{Timeout: 5 * time.Second}}
		d.start()
		defer d.halt(t)
		d.waitUp(t, 10*time.Second)
		if got := d.verify(t, key); got != "valid" {
			t.Fatalf("a key made before it started = %s on an --etcd-endpoints node", got)
		}
		// Started without --admin-token: the root token's hash came from etcd.
		k := d.admin(t, "POST", "/orgs/"+org+"/keys", `{"name":"from-d","env":"live"}`, 201)
		a.waitVerify(t, k["key"].(string), "valid", 2*time.Second)
		a.admin(t, "POST", "/orgs/"+org+"/keys/"+k["id"].(string)+"/revoke", "", 200)
		d.waitVerify(t, k["key"].(string), "invalid", 2*time.Second)
		// Four owners; each node reaches the others' node APIs, d's own
		// listener too, with a key d owns.
		all := []*clusterNode{a, b, c, d}
		waitOwners(t, all, 4)
		var dKey string
		for i := 0; dKey == ""; i++ {
			if i == 40 {
				t.Fatal("no key of 40 is the --etcd-endpoints node's")
			}
			if k, id := newKeyOn(t, d, all, org, `{"name":"d","env":"live"}`); ownerOf(t, id, "n0", "n1", "n2", "client") == "client" {
				dKey = k
			}
		}
		for range 8 {
			for _, nd := range all {
				if got := nd.verify(t, dKey); got != "valid" {
					t.Fatalf("a key the --etcd-endpoints node owns, on %s: %s", nd.name, got)
				}
			}
		}
		for _, nd := range all {
			if share := nd.metric(t, `keyhole_cluster_forwards_total{outcome="share"}`); share > 0 {
				t.Fatalf("%s could not reach an owner", nd.name)
			}
		}
		if status, body := a.do(t, "GET", "/admin/v1/orgs/"+org+"/usage", testRootToken, ""); status != 200 || bytes.Contains(body, []byte("missing_nodes")) {
			t.Fatalf("usage with an --etcd-endpoints node = %d %s", status, body)
		}
	})

	t.Run("a node's metrics say it is fresh", func(t *testing.T) {
		status, body := c.do(t, "GET", "/metrics", "", "")
		if status != 200 || !bytes.Contains(body, []byte("\nkeyhole_cluster_fresh 1\n")) || !bytes.Contains(body, []byte("keyhole_cluster_applied_revision ")) {
			t.Fatalf("metrics on C = %d:\n%s", status, body)
		}
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
		if n != 51 { // 50 above, and one by the --etcd-endpoints node's test
			t.Fatalf("C's audit log has %d key.revoked entries; want 51", n)
		}
	})

	t.Run("a node that was stopped catches up when it starts again", func(t *testing.T) {
		doomed := a.admin(t, "POST", "/orgs/"+org+"/keys", `{"name":"d","env":"live"}`, 201)
		c.waitVerify(t, doomed["key"].(string), "valid", 2*time.Second)
		c.halt(t)
		fresh := a.admin(t, "POST", "/orgs/"+org+"/keys", `{"name":"f","env":"live"}`, 201)["key"].(string)
		a.admin(t, "POST", "/orgs/"+org+"/keys/"+doomed["id"].(string)+"/revoke", "", 200)
		c.start()
		c.waitUp(t, 10*time.Second)
		// It listens only once it has caught up: no waiting.
		if got := c.verify(t, fresh); got != "valid" {
			t.Fatalf("a key made while C was down = %s on C", got)
		}
		if got := c.verify(t, doomed["key"].(string)); got != "invalid" {
			t.Fatalf("a key revoked while C was down = %s on C", got)
		}
		if na, nc := auditCount(t, a), auditCount(t, c); na != nc {
			t.Fatalf("audit entries: %d on A, %d on C after its restart", na, nc)
		}
	})

	t.Run("a one-node file is imported, once", func(t *testing.T) {
		te := newTestEnv(t)
		one := te.createOrg("one")
		_, oneKey := te.createKey(one, `{"name":"imported","env":"live"}`)
		te.root("POST", "/orgs/"+one+"/admin-tokens", `{"name":"ops"}`)
		if err := te.s.behind.FlushAll(); err != nil {
			t.Fatal(err)
		}
		te.s.store.Close()
		var out bytes.Buffer
		cl := &cli{stdout: &out, stderr: io.Discard, getenv: func(string) string { return "" }}
		// Org, key, token; the root token (the same --admin-token) is
		// there already.
		for round, want := range []string{"imported 3 records from " + te.dbPath + " (1 were", "imported 0 records from " + te.dbPath + " (4 were"} {
			out.Reset()
			if err := clusterCmd(cl, []string{"import", "--db", te.dbPath, "--etcd-endpoints", a.clientURL}); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), want) {
				t.Fatalf("import %d said %q; want %q", round+1, out.String(), want)
			}
		}
		for _, nd := range nodes {
			nd.waitVerify(t, oneKey, "valid", 2*time.Second)
		}
		// Each node announces the revision it applied, at most every
		// presenceEvery: status shows all three, none behind, each with
		// its node API (the member's client URL: 3 of them, twice).
		caughtUp := regexp.MustCompile(`(?m)^n\d +\d+ +0 +http://\S+$`)
		for deadline := time.Now().Add(3 * presenceEvery); ; time.Sleep(100 * time.Millisecond) {
			out.Reset()
			if err := clusterCmd(cl, []string{"status", "--etcd-endpoints", a.clientURL}); err != nil {
				t.Fatal(err)
			}
			if len(caughtUp.FindAllString(out.String(), -1)) == 3 || time.Now().After(deadline) {
				break
			}
		}
		if got := out.String(); strings.Count(got, "http://") != 6 || strings.Count(got, "true") != 1 ||
			!strings.Contains(got, "newest keyhole change") || len(caughtUp.FindAllString(got, -1)) != 3 {
			t.Fatalf("cluster status (want 3 members, 1 leader, 3 nodes 0 behind):\n%s", got)
		}
		t.Logf("keyhole cluster status:\n%s", out.String())

		// The one-node file itself cannot be a node's copy: its records
		// would be that node's alone.
		cfg, err := parseServeFlags([]string{"--addr", "127.0.0.1:0", "--db", te.dbPath, "--node-name", "d",
			"--etcd-endpoints", a.clientURL, "--cluster-insecure"}, func(string) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		err = serve(context.Background(), cfg, io.Discard, zerolog.Nop(), nil)
		if err == nil || !strings.Contains(err.Error(), "holds a one-node keyhole's records") {
			t.Fatalf("a node on a one-node file: %v", err)
		}
	})

	t.Run("the leader is stopped under load and no acknowledged write is lost", func(t *testing.T) {
		leader := clusterLeader(t, nodes)
		var writer *clusterNode
		for _, nd := range nodes {
			if nd != leader {
				writer = nd
				break
			}
		}
		var acked []string
		var failed int
		stopWriting := make(chan struct{})
		wrote := make(chan struct{})
		go func() {
			defer close(wrote)
			for {
				select {
				case <-stopWriting:
					return
				default:
				}
				status, body := writer.do(t, "POST", "/admin/v1/orgs/"+org+"/keys", testRootToken, `{"name":"l","env":"live"}`)
				if status != 201 {
					failed++
					continue
				}
				var k struct{ Key string }
				json.Unmarshal(body, &k)
				acked = append(acked, k.Key)
			}
		}()
		time.Sleep(100 * time.Millisecond)
		killed := time.Now()
		leader.halt(t)
		time.Sleep(300 * time.Millisecond)
		close(stopWriting)
		<-wrote
		t.Logf("leader %s stopped after %d acknowledged writes on %s; %d refused around it; down for %v",
			leader.name, len(acked), writer.name, failed, time.Since(killed))
		leader.start()
		leader.waitUp(t, 10*time.Second)
		for _, nd := range nodes {
			for _, key := range acked {
				if got := nd.waitVerify(t, key, "valid", 2*time.Second); got > time.Second {
					t.Logf("%s took %v", nd.name, got)
				}
			}
		}
	})

	t.Run("a node cut off fails closed within max-staleness, and recovers", func(t *testing.T) {
		// The node cut off is one never restarted here: see
		// clusterNode.started for a member that was.
		var a, b, c *clusterNode
		for _, nd := range nodes {
			if a == nil && nd.started == 1 {
				a = nd
			} else if b == nil {
				b = nd
			} else {
				c = nd
			}
		}
		for _, nd := range nodes {
			nd.waitVerify(t, key, "valid", 2*time.Second)
		}
		if s, _ := a.do(t, "GET", "/readyz", "", ""); s != 200 {
			t.Fatalf("readyz on A = %d before the cut", s)
		}
		cut := time.Now()
		// The members stop taking clients, then stop raft, then close
		// their raft ports (after up to 1s for their peer connections): A
		// is cut off at the latest when the last of them refuses a
		// connection there. Their client ports close first, but raft can
		// run on for seconds after on a busy machine, and A with it.
		gone := make(chan time.Time, 1)
		go func() {
			for _, nd := range []*clusterNode{b, c} {
				for {
					conn, err := net.DialTimeout("tcp", nd.peerAddr, 50*time.Millisecond)
					if err != nil {
						break
					}
					conn.Close()
					time.Sleep(time.Millisecond)
				}
			}
			gone <- time.Now()
		}()
		// A is asked from the cut on, while its peers stop.
		failedAt := make(chan time.Time, 1)
		go func() {
			defer close(failedAt)
			for time.Since(cut) < 5*time.Second {
				got := a.verify(t, key)
				if got == "503 verification_failed" {
					failedAt <- time.Now()
					return
				}
				if got != "valid" {
					t.Errorf("A answers %s while cut off", got)
					return
				}
				time.Sleep(2 * time.Millisecond)
			}
			t.Errorf("%s still verifies 5s after its peers were stopped", a.name)
		}()
		b.stop()
		c.halt(t)
		b.halt(t)
		stopped := time.Since(cut)
		at, ok := <-failedAt
		if !ok {
			t.FailNow()
		}
		failed := at.Sub(cut)
		if after := at.Sub(<-gone); after > clusterTestStaleness+clusterTestStaleness/5+100*time.Millisecond {
			t.Errorf("%s failed closed %v after its peers were gone; want within --max-staleness %v", a.name, after, clusterTestStaleness)
		} else {
			t.Logf("%s failed closed %v after its last peer's raft port refused connections", a.name, after)
		}
		if s, body := a.do(t, "GET", "/readyz", "", ""); s != 503 {
			t.Fatalf("readyz on a cut-off node = %d %s", s, body)
		}
		if s, body := a.do(t, "GET", "/api/v1/prod/x", key, ""); s != 503 || !bytes.Contains(body, []byte("verification_failed")) {
			t.Fatalf("guarded request on a cut-off node = %d %s", s, body)
		}
		t.Logf("%s failed closed %v after the cut (its peers took %v to stop; --max-staleness %v)", a.name, failed, stopped, clusterTestStaleness)

		b.start() // a quorum again: A and B
		b.waitUp(t, 10*time.Second)
		back := time.Now()
		a.waitVerify(t, key, "valid", 5*time.Second)
		if s, body := a.do(t, "GET", "/readyz", "", ""); s != 200 {
			t.Fatalf("readyz on A after B is back = %d %s", s, body)
		}
		t.Logf("%s verifies again %v after %s is back", a.name, time.Since(back), b.name)
	})
	t.Logf("cluster test took %v", time.Since(begin))
}

// auditCount is how many audit entries nd shows.
func auditCount(t *testing.T, nd *clusterNode) int {
	t.Helper()
	status, body := nd.do(t, "GET", "/admin/v1/audit?limit=1000", testRootToken, "")
	if status != 200 {
		t.Fatalf("audit on %s = %d %s", nd.name, status, body)
	}
	var m struct {
		Entries []json.RawMessage
		Next    *string
	}
	json.Unmarshal(body, &m)
	if m.Next != nil {
		t.Fatalf("more than 1000 audit entries on %s", nd.name)
	}
	return len(m.Entries)
}

// clusterLeader is the node whose etcd member leads.
func clusterLeader(t *testing.T, nodes []*clusterNode) *clusterNode {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{nodes[0].clientURL}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for _, nd := range nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := cli.Status(ctx, nd.clientURL)
		cancel()
		if err != nil {
			t.Fatalf("status of %s: %v", nd.name, err)
		}
		if st.Leader == st.Header.MemberId {
			return nd
		}
	}
	t.Fatal("no member leads")
	return nil
}

// TestClusterProcesses runs three keyhole binaries with embedded members
// (their defaults: fsync on, heartbeat 50 ms, election 500 ms): a key made
// on one works on the others, a revocation is refused everywhere, the
// leader killed (SIGKILL) under load loses no acknowledged write, and the
// killed node, started again, fails closed once its peers stop.
func TestClusterProcesses(t *testing.T) {
	skipShort(t, "runs three keyhole processes with etcd members")
	ports := freePorts(t, 6)
	var peers []string
	for i := range 3 {
		peers = append(peers, fmt.Sprintf("n%d=http://%s", i, ports[i]))
	}
	dir := t.TempDir()
	nodes := make([]*clusterNode, 3)
	args := make([][]string, 3)
	children := make([]*child, 3)
	for i := range 3 {
		name := fmt.Sprintf("n%d", i)
		args[i] = []string{"--db", filepath.Join(dir, name+".db"), "--admin-token", testRootToken,
			"--node-name", name, "--cluster-peers", strings.Join(peers, ","), "--cluster-addr", ports[3+i],
			"--cluster-insecure", "--max-staleness", clusterTestStaleness.String(), "--rate-limits", "1000000/1m"}
		nodes[i] = &clusterNode{name: name, clientURL: "http://" + ports[3+i], client: &http.Client{Timeout: 5 * time.Second}}
	}
	launch := func(i int) chan string {
		c, addr := launchKeyhole(t, args[i]...)
		children[i] = c
		return addr
	}
	var addrs []chan string
	for i := range 3 {
		addrs = append(addrs, launch(i))
	}
	for i := range 3 {
		select {
		case children[i].addr = <-addrs[i]:
			children[i].testClient = &testClient{t: t, base: children[i].url()}
		case <-children[i].done:
			t.Logf("n%d:\n%s", i, children[i].output())
			integrationMissing(t, fmt.Sprintf("keyhole n%d with an etcd member exited before listening", i))
		case <-time.After(60 * time.Second):
			integrationMissing(t, "three keyhole processes with etcd members did not listen within 60s")
		}
		nodes[i].addr = children[i].addr
	}
	a, b, c := nodes[0], nodes[1], nodes[2]
	org := a.admin(t, "POST", "/orgs", `{"name":"acme"}`, 201)["id"].(string)
	k := a.admin(t, "POST", "/orgs/"+org+"/keys", `{"name":"k","env":"live"}`, 201)
	key := k["key"].(string)
	b.waitVerify(t, key, "valid", 2*time.Second)
	c.waitVerify(t, key, "valid", 2*time.Second)
	a.admin(t, "POST", "/orgs/"+org+"/keys/"+k["id"].(string)+"/revoke", "", 200)
	b.waitVerify(t, key, "invalid", 2*time.Second)
	c.waitVerify(t, key, "invalid", 2*time.Second)
	logRevocations(t, "3 processes, fsync on", measureRevocations(t, a, []*clusterNode{b, c}, org, 50))

	// A key's limit across processes, and what a SIGKILL of its owner
	// lets through (README: the bound when an owner dies).
	waitOwners(t, nodes, 3)
	limited, limitedID := newKeyOn(t, a, nodes, org, `{"name":"r","env":"live","rate_limits":[{"limit":60,"window":"1h"}]}`)
	if got := hammer(t, nodes, limited, 40); got["valid"] != 60 {
		t.Fatalf("processes: a limit of 60 across 3 nodes admitted %v", got)
	}
	oi := slices.IndexFunc(nodes, func(nd *clusterNode) bool { return nd.name == ownerOf(t, limitedID, "n0", "n1", "n2") })
	children[oi].cmd.Process.Kill()
	<-children[oi].done
	rest := slices.Delete(slices.Clone(nodes), oi, oi+1)
	during := hammer(t, rest, limited, 40) // its lease runs on: each node counts its share
	waitOwners(t, rest, 2)
	moved := hammer(t, rest, limited, 40)
	t.Logf("processes: limit 60; owner %s SIGKILLed: %d admitted while its lease ran, %d once the key moved",
		nodes[oi].name, during["valid"], moved["valid"])
	if during["valid"] > 2*20 || moved["valid"] > 60 {
		t.Fatalf("processes: past the documented bound: %v while the lease ran (at most 2 shares of 20), %v after the move (at most 60)", during, moved)
	}
	children[oi].waitListening(t, launch(oi), 30*time.Second)
	nodes[oi].addr = children[oi].addr

	live := a.admin(t, "POST", "/orgs/"+org+"/keys", `{"name":"live","env":"live"}`, 201)["key"].(string)
	leader := clusterLeader(t, nodes)
	li := slices.Index(nodes, leader)
	writer := nodes[(li+1)%3]
	var acked []string
	failed := 0
	deadline := time.Now().Add(2 * time.Second)
	killAt := time.Now().Add(300 * time.Millisecond)
	killed := false
	for time.Now().Before(deadline) {
		if !killed && time.Now().After(killAt) {
			children[li].cmd.Process.Kill()
			<-children[li].done
			killed = true
		}
		status, body := writer.do(t, "POST", "/admin/v1/orgs/"+org+"/keys", testRootToken, `{"name":"l","env":"live"}`)
		if status != 201 {
			failed++
			continue
		}
		var k struct{ Key string }
		json.Unmarshal(body, &k)
		acked = append(acked, k.Key)
	}
	t.Logf("processes: leader %s killed; %s acknowledged %d writes in 2s, refused %d", leader.name, writer.name, len(acked), failed)
	children[li].waitListening(t, launch(li), 30*time.Second)
	leader.addr = children[li].addr
	for _, nd := range nodes {
		for _, k := range append(acked, live) {
			nd.waitVerify(t, k, "valid", 5*time.Second)
		}
	}

	// Cut the restarted node off: stop the other two, asking it from the
	// cut on.
	cut := time.Now()
	failedAt := make(chan time.Time, 1)
	go func() {
		defer close(failedAt)
		for time.Since(cut) < 15*time.Second {
			if leader.verify(t, live) == "503 verification_failed" {
				failedAt <- time.Now()
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	var exited time.Time
	for i := range 3 {
		if i != li {
			children[i].stop(t, syscall.SIGTERM)
			exited = time.Now()
		}
	}
	at, ok := <-failedAt
	if !ok {
		t.Fatalf("%s, restarted after a kill, still verifies 15s after the cut", leader.name)
	}
	if after := at.Sub(exited); after > 2*clusterTestStaleness {
		t.Errorf("%s failed closed %v after its last peer exited; want within about --max-staleness %v", leader.name, after, clusterTestStaleness)
	}
	t.Logf("processes: %s failed closed %v after the cut, %v after its last peer exited", leader.name, at.Sub(cut), at.Sub(exited))
}

// TestClusterFlags: the cluster flags are checked against each other
// before anything starts, and a start without them is today's server,
// whose file has no trace of a cluster.
func TestClusterFlags(t *testing.T) {
	peers := "a=http://127.0.0.1:2380,b=http://127.0.0.1:2382"
	certs := t.TempDir()
	writeClusterCerts(t, certs)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--node-name", "a"}, "need --cluster-peers or --etcd-endpoints"},
		{[]string{"--cluster-insecure"}, "need --cluster-peers or --etcd-endpoints"},
		{[]string{"--cluster-peers", peers, "--cluster-addr", "127.0.0.1:2379", "--cluster-insecure"}, "needs --node-name"},
		{[]string{"--node-name", "a", "--cluster-peers", peers, "--cluster-addr", "127.0.0.1:2379"}, "needs --cluster-tls DIR"},
		{[]string{"--node-name", "a", "--cluster-peers", peers, "--cluster-addr", "127.0.0.1:2379", "--cluster-tls", "/nonexistent"}, "want ca.crt, node.crt and node.key"},
		{[]string{"--node-name", "a", "--cluster-peers", peers, "--cluster-addr", "127.0.0.1:2379", "--cluster-tls", "/tmp", "--cluster-insecure"}, "exclude each other"},
		{[]string{"--node-name", "a", "--cluster-peers", peers, "--cluster-addr", "127.0.0.1:2379", "--cluster-tls", certs}, "want https:// URLs with --cluster-tls"},
		{[]string{"--node-name", "a", "--cluster-peers", "a=https://127.0.0.1:2380", "--cluster-addr", "127.0.0.1:2379", "--cluster-insecure"}, "want http:// URLs with --cluster-insecure"},
		{[]string{"--node-name", "c", "--cluster-peers", peers, "--cluster-addr", "127.0.0.1:2379", "--cluster-insecure"}, "does not name this node"},
		{[]string{"--node-name", "a", "--cluster-peers", peers, "--cluster-insecure"}, "needs --cluster-addr"},
		{[]string{"--node-name", "a", "--cluster-peers", "a=127.0.0.1:2380", "--cluster-addr", "127.0.0.1:2379", "--cluster-insecure"}, "want NAME=PEER_URL"},
		{[]string{"--node-name", "a", "--cluster-peers", "a=http://h:1,a=http://h:2", "--cluster-addr", "127.0.0.1:2379", "--cluster-insecure"}, "named twice"},
		{[]string{"--node-name", "a", "--cluster-peers", peers, "--etcd-endpoints", "http://127.0.0.1:2379", "--cluster-insecure"}, "exclude each other"},
		{[]string{"--node-name", "a", "--etcd-endpoints", "127.0.0.1:2379", "--cluster-insecure"}, "want http URLs"},
		{[]string{"--node-name", "a", "--etcd-endpoints", "http://127.0.0.1:2379", "--cluster-insecure", "--max-staleness", "10ms"}, "want at least 50ms"},
		{[]string{"--node-name", "a", "--etcd-endpoints", "http://127.0.0.1:2379", "--cluster-insecure", "--demo"}, "--demo is for one node"},
		{[]string{"--cluster-state", "existing"}, "need --cluster-peers or --etcd-endpoints"},
		{[]string{"--node-name", "a", "--cluster-peers", peers, "--cluster-addr", "127.0.0.1:2379", "--cluster-insecure", "--cluster-state", "old"}, "want new or existing"},
		{[]string{"--node-name", "a", "--etcd-endpoints", "http://127.0.0.1:2379", "--cluster-insecure", "--cluster-state", "existing"}, "is for an embedded member"},
	}
	for _, tt := range tests {
		_, err := parseServeFlags(tt.args, func(string) string { return "" })
		var usage *usageError
		if !errors.As(err, &usage) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("serve %s: %v; want a usage error with %q", strings.Join(tt.args, " "), err, tt.want)
		}
	}
	cfg, err := parseServeFlags([]string{"--node-name", "a", "--etcd-endpoints", "http://127.0.0.1:2379,http://10.0.0.2:2379",
		"--cluster-insecure"}, func(string) string { return "" })
	if err != nil || !cfg.cluster.enabled() || cfg.cluster.maxStaleness != time.Second {
		t.Fatalf("a valid cluster command line: %+v, %v", cfg.cluster, err)
	}

	te := newTestEnv(t)
	if te.s.store.cluster != nil || te.s.cfg.cluster.enabled() {
		t.Fatal("a start without cluster flags has a cluster")
	}
	te.createOrg("acme")
	if r := te.do("GET", "/metrics", ""); bytes.Contains(r.body, []byte("keyhole_cluster_")) {
		t.Fatal("one node's /metrics has cluster metrics")
	}
	te.restart()
	if err := te.s.store.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketCluster) != nil {
			return errors.New("the file has a cluster bucket")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(te.dbPath + ".etcd"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a start without cluster flags made an etcd directory: %v", err)
	}
}

// measureRevocations revokes rounds keys on a, each made and seen valid on
// others first, and returns how long after a's answer each of others
// refused it.
func measureRevocations(t *testing.T, a *clusterNode, others []*clusterNode, org string, rounds int) []time.Duration {
	t.Helper()
	var lags []time.Duration
	for i := range rounds {
		k := a.admin(t, "POST", "/orgs/"+org+"/keys", `{"name":"r","env":"live"}`, 201)
		key, id := k["key"].(string), k["id"].(string)
		for _, nd := range others {
			nd.waitVerify(t, key, "valid", 2*time.Second)
		}
		var wg sync.WaitGroup
		acked := make(chan time.Time, len(others))
		lag := make([]time.Duration, len(others))
		for j, nd := range others {
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
		for range others {
			acked <- now
		}
		if got := a.verify(t, key); got != "invalid" {
			t.Fatalf("on %s after its revoke answered = %s", a.name, got)
		}
		wg.Wait()
		lags = append(lags, lag...)
	}
	return lags
}

func logRevocations(t *testing.T, how string, lags []time.Duration) {
	t.Helper()
	slices.Sort(lags)
	t.Logf("revocation propagation (%s), %d refusals after the revoking node's answer: p50 %v, p99 %v, max %v",
		how, len(lags), lags[len(lags)/2], lags[len(lags)*99/100], lags[len(lags)-1])
}

// TestClusterTLS: with --cluster-tls, members talk mTLS under the
// cluster's CA, a key made on one node works on the others, and cluster
// status needs the certificates too.
func TestClusterTLS(t *testing.T) {
	skipShort(t, "starts a 3-member etcd cluster")
	dir := t.TempDir()
	writeClusterCerts(t, dir)
	nodes := startTestClusterTLS(t, 3, dir)
	a, b := nodes[0], nodes[1]
	org := a.admin(t, "POST", "/orgs", `{"name":"acme"}`, 201)["id"].(string)
	key := a.admin(t, "POST", "/orgs/"+org+"/keys", `{"name":"k","env":"live"}`, 201)["key"].(string)
	b.waitVerify(t, key, "valid", 2*time.Second)
	// Takes forwarded to the owner, and logs asked of the others, over mTLS.
	waitOwners(t, nodes, 3)
	for _, nd := range nodes {
		if got := nd.verify(t, key); got != "valid" {
			t.Fatalf("on %s: %s", nd.name, got)
		}
	}
	forwarded := 0.0
	for _, nd := range nodes {
		forwarded += max(0, nd.metric(t, `keyhole_cluster_forwards_total{outcome="ok"}`))
		if share := nd.metric(t, `keyhole_cluster_forwards_total{outcome="share"}`); share > 0 {
			t.Fatalf("%s could not reach an owner over mTLS", nd.name)
		}
	}
	if forwarded < 2 {
		t.Fatalf("%v takes forwarded over mTLS; want those of the two nodes that do not own the key", forwarded)
	}
	if status, body := a.do(t, "GET", "/admin/v1/orgs/"+org+"/usage", testRootToken, ""); status != 200 || bytes.Contains(body, []byte("missing_nodes")) {
		t.Fatalf("usage over mTLS = %d %s", status, body)
	}
	var out bytes.Buffer
	cl := &cli{stdout: &out, stderr: io.Discard, getenv: func(string) string { return "" }}
	if err := clusterCmd(cl, []string{"status", "--etcd-endpoints", a.clientURL, "--cluster-tls", dir}); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); strings.Count(got, "https://") != 6 { // each member's client URL, and each node's API on it
		t.Fatalf("cluster status over mTLS:\n%s", got)
	}
	// Without a client certificate the member's client address refuses,
	// etcd's API and the node API alike.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	defer tr.CloseIdleConnections()
	for _, path := range []string{"/version", nodeLogsPath + "?org=" + org} {
		req, _ := http.NewRequestWithContext(ctx, "GET", a.clientURL+path, nil)
		if resp, err := (&http.Client{Transport: tr}).Do(req); err == nil {
			resp.Body.Close()
			t.Fatalf("a client without a certificate got %d from a member's %s", resp.StatusCode, path)
		}
	}
}

// writeClusterCerts writes a CA and one node certificate (server and
// client auth, for 127.0.0.1 and localhost) that every test node uses.
func writeClusterCerts(t *testing.T, dir string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "keyhole test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	nodeKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	node := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "keyhole node"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"}}
	nodeDER, err := x509.CreateCertificate(rand.Reader, node, ca, &nodeKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(nodeKey)
	if err != nil {
		t.Fatal(err)
	}
	for name, block := range map[string]*pem.Block{
		tlsCA:   {Type: "CERTIFICATE", Bytes: caDER},
		tlsCert: {Type: "CERTIFICATE", Bytes: nodeDER},
		tlsKey:  {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
