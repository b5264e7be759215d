package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// ownerOf is the node that owns keyID among names, as every node computes it.
func ownerOf(t *testing.T, keyID string, names ...string) string {
	t.Helper()
	o, err := newOwners("", "")
	if err != nil {
		t.Fatal(err)
	}
	members := map[string]string{}
	for _, n := range names {
		members[n] = "http://" + n
	}
	o.setMembers(members)
	id, ok := parseKeyID(keyID)
	if !ok {
		t.Fatalf("key id %q", keyID)
	}
	return o.owner(id).name
}

// metric is the value of one sample line of nd's /metrics, -1 if absent.
func (nd *clusterNode) metric(t *testing.T, sample string) float64 {
	t.Helper()
	_, body := nd.do(t, "GET", "/metrics", "", "")
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// waitOwners waits until every node counts want live owner nodes.
func waitOwners(t *testing.T, nodes []*clusterNode, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, nd := range nodes {
		for nd.metric(t, "keyhole_cluster_owner_nodes") != float64(want) {
			if time.Now().After(deadline) {
				t.Fatalf("%s sees %v owner nodes; want %d", nd.name, nd.metric(t, "keyhole_cluster_owner_nodes"), want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// newKeyOn makes a key on nd from body and waits until every node has it,
// without spending any of its limits. It returns the key and its id.
func newKeyOn(t *testing.T, nd *clusterNode, nodes []*clusterNode, org, body string) (string, string) {
	t.Helper()
	k := nd.admin(t, "POST", "/orgs/"+org+"/keys", body, 201)
	id := k["id"].(string)
	key := k["key"].(string)
	for _, other := range nodes {
		deadline := time.Now().Add(2 * time.Second)
		for {
			// Outside its scopes: identified, and nothing spent.
			_, b := other.do(t, "POST", "/v1/keys/verify", "", `{"key":"`+key+`","scope":"never:granted"}`)
			if bytes.Contains(b, []byte(`"code":"insufficient_scope"`)) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("key %s not on %s after 2s", id, other.name)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return key, id
}

// hammer verifies key perNode times on each node, from 4 clients per node
// at once, and counts the answers.
func hammer(t *testing.T, nodes []*clusterNode, key string, perNode int) map[string]int {
	t.Helper()
	var mu sync.Mutex
	got := map[string]int{}
	var wg sync.WaitGroup
	for _, nd := range nodes {
		for w := range 4 {
			n := perNode / 4
			if w < perNode%4 {
				n++
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range n {
					v := nd.verify(t, key)
					mu.Lock()
					got[v]++
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	return got
}

// TestClusterNodes: what the nodes do for each other. A key's rate limit
// and credits hold across nodes under concurrent load, through its owner;
// with the owner unreachable the others admit at most their shares, and
// refuse a key with credits; when the owner stops, the key moves, and the
// move admits at most one more limit (README: Cluster, rate limits and
// credits). Log and usage queries are every node's. The shared audit log
// is pruned, and the nodes' copies only by their own retention.
func TestClusterNodes(t *testing.T) {
	skipShort(t, "starts a 3-member etcd cluster")
	nodes := startTestCluster(t, 3)
	names := []string{"n0", "n1", "n2"}
	waitOwners(t, nodes, 3)
	org := nodes[0].admin(t, "POST", "/orgs", `{"name":"acme"}`, 201)["id"].(string)

	t.Run("logs and usage are every node's", func(t *testing.T) {
		ctx := context.Background()
		key, id := newKeyOn(t, nodes[0], nodes, org, `{"name":"f","env":"live"}`)
		for _, nd := range nodes {
			for range 4 {
				nd.verify(t, key)
			}
		}
		want := 3*4 + 3 // and newKeyOn's one probe on each node
		seen, byNode := map[string]bool{}, map[string]int{}
		last := ""
		for path, pages := "/orgs/"+org+"/logs?limit=4&key_id="+id, 0; ; pages++ {
			var page struct {
				Entries []struct{ ID, Time, Node string }
				Next    *string
				Missing []string `json:"missing_nodes"`
			}
			_, body := nodes[1].do(t, "GET", "/admin/v1"+path, testRootToken, "")
			if err := json.Unmarshal(body, &page); err != nil || len(page.Missing) > 0 || pages > 10 {
				t.Fatalf("page %d: %s", pages, body)
			}
			for _, e := range page.Entries {
				if seen[e.Node+e.ID] || last != "" && e.Time > last {
					t.Fatalf("entry %s of %s again, or out of order: %s", e.ID, e.Node, body)
				}
				seen[e.Node+e.ID], last = true, e.Time
				byNode[e.Node]++
			}
			if page.Next == nil {
				break
			}
			path = "/orgs/" + org + "/logs?limit=4&key_id=" + id + "&before=" + *page.Next
		}
		if len(seen) != want || len(byNode) != 3 {
			t.Fatalf("the logs paged from n1 hold %d entries, by node %v; want %d from 3 nodes", len(seen), byNode, want)
		}
		// keyhole logs --follow on a cluster: each node's ids grow apart.
		var out bytes.Buffer
		conn := &adminConn{cmd: "logs", base: "http://" + nodes[1].addr, token: testRootToken, json: true,
			out: &cli{stdout: &out, stderr: io.Discard}}
		f := &follower{a: conn, path: apiPath("orgs", org, "logs"), query: url.Values{"key_id": {id}}}
		if err := f.poll(ctx, 1000); err != nil || strings.Count(out.String(), "\n") != want {
			t.Fatalf("the first poll printed, with %v:\n%s", err, out.String())
		}
		for _, nd := range nodes {
			nd.verify(t, key)
			nd.verify(t, key)
		}
		out.Reset()
		if err := f.poll(ctx, 0); err != nil || strings.Count(out.String(), "\n") != 6 || len(f.last) != 3 {
			t.Fatalf("the next poll printed, with %v, %d nodes known:\n%s", err, len(f.last), out.String())
		}
		var usage struct {
			Buckets []struct {
				OK     uint64 `json:"2xx"`
				Client uint64 `json:"4xx"`
			}
		}
		_, body := nodes[2].do(t, "GET", "/admin/v1/orgs/"+org+"/usage?key_id="+id, testRootToken, "")
		json.Unmarshal(body, &usage)
		if len(usage.Buckets) != 1 || usage.Buckets[0].OK != 18 || usage.Buckets[0].Client != 3 {
			t.Fatalf("usage on n2 = %s; want one hour of 18 2xx and 3 4xx (the probes)", body)
		}
	})

	t.Run("a limit holds across three nodes", func(t *testing.T) {
		key, id := newKeyOn(t, nodes[0], nodes, org, `{"name":"l","env":"live","rate_limits":[{"limit":60,"window":"1h"}]}`)
		got := hammer(t, nodes, key, 60)
		t.Logf("owner %s; answers %v", ownerOf(t, id, names...), got)
		if got["valid"] != 60 || got["refused rate_limited"] != 120 {
			t.Fatalf("answers %v; want 60 valid, 120 rate_limited", got)
		}
		forwarded := 0.0
		for _, nd := range nodes {
			ok := nd.metric(t, `keyhole_cluster_forwards_total{outcome="ok"}`)
			t.Logf("%s forwarded %v", nd.name, ok)
			forwarded += max(ok, 0)
			if share := nd.metric(t, `keyhole_cluster_forwards_total{outcome="share"}`); share > 0 {
				t.Errorf("%s counted %v takes in its share; the owner was up", nd.name, share)
			}
		}
		if forwarded < 120 {
			t.Fatalf("%v takes forwarded; want the 120 asked of the two other nodes", forwarded)
		}
	})

	t.Run("credits hold across three nodes", func(t *testing.T) {
		key, _ := newKeyOn(t, nodes[1], nodes, org, `{"name":"c","env":"live","credits":{"remaining":45}}`)
		got := hammer(t, nodes, key, 30)
		if got["valid"] != 45 || got["refused usage_exceeded"] != 45 {
			t.Fatalf("answers %v; want 45 valid, 45 usage_exceeded", got)
		}
	})

	// A node that died keeps its place until its lease runs out: a
	// presence written here with a dead address is one.
	etcd, err := clientv3.New(clientv3.Config{Endpoints: []string{nodes[0].clientURL, nodes[1].clientURL, nodes[2].clientURL},
		DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer etcd.Close()
	// Bounded: a call to a stopped member is retried on the others until then.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lease, err := etcd.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + freePorts(t, 1)[0]
	ghost, _ := json.Marshal(nodePresence{URL: dead})
	if _, err := etcd.Put(ctx, nodesPrefix+"ghost", string(ghost), clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	waitOwners(t, nodes, 4)
	ghostKey := func(body string) (string, string) {
		for range 40 {
			key, id := newKeyOn(t, nodes[0], nodes, org, body)
			if ownerOf(t, id, append(names, "ghost")...) == "ghost" {
				return key, id
			}
		}
		t.Fatal("no key of 40 is the ghost's")
		return "", ""
	}

	t.Run("with the owner unreachable each node admits its share", func(t *testing.T) {
		key, _ := ghostKey(`{"name":"g","env":"live","rate_limits":[{"limit":40,"window":"1h"}]}`)
		got := hammer(t, nodes, key, 40)
		// Four live nodes: each of the three that answer admits 40/4.
		if got["valid"] != 30 || got["refused rate_limited"] != 90 {
			t.Fatalf("answers %v; want 30 valid (3 shares of 10), 90 rate_limited", got)
		}
		for _, nd := range nodes {
			if share := nd.metric(t, `keyhole_cluster_forwards_total{outcome="share"}`); share < 1 {
				t.Errorf("%s counted no take in its share", nd.name)
			}
		}
	})

	t.Run("a node that does not answer is named", func(t *testing.T) {
		status, body := nodes[0].do(t, "GET", "/admin/v1/orgs/"+org+"/usage", testRootToken, "")
		if status != 200 || !bytes.Contains(body, []byte(`"missing_nodes":["ghost"]`)) {
			t.Fatalf("usage with a node gone = %d %s; want ghost in missing_nodes", status, body)
		}
	})

	t.Run("with the owner unreachable a key with credits is refused", func(t *testing.T) {
		key, _ := ghostKey(`{"name":"gc","env":"live","credits":{"remaining":5}}`)
		if got := nodes[2].verify(t, key); got != "refused verification_failed" {
			t.Fatalf("verify = %s; want refused verification_failed", got)
		}
		req, _ := http.NewRequest("GET", "http://"+nodes[1].addr+"/api/v1/prod/whoami", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 || !bytes.Contains(body, []byte(`{"error":{"code":"verification_failed","message":"The keyhole node that counts this key's credits cannot be reached; try again in a few seconds."},"request_id":"req_`)) {
			t.Fatalf("whoami = %d %s; want 503 verification_failed", resp.StatusCode, body)
		}
		// The key was identified: SPEC 4's headers, of this node's share.
		for _, h := range []string{"X-Request-Id", "X-Ratelimit-Limit", "X-Ratelimit-Remaining", "X-Ratelimit-Reset", "Ratelimit-Policy", "Ratelimit"} {
			if resp.Header.Get(h) == "" {
				t.Errorf("the 503 of an identified key has no %s: %v", h, resp.Header)
			}
		}
	})

	var rest []*clusterNode // the nodes still up after the owner stops
	t.Run("when the owner stops, its keys move with their windows and credits", func(t *testing.T) {
		if _, err := etcd.Revoke(ctx, lease.ID); err != nil {
			t.Fatal(err)
		}
		waitOwners(t, nodes, 3)
		// Two keys of one owner: one with a limit, one with credits.
		limited, limitedID := newKeyOn(t, nodes[0], nodes, org, `{"name":"m","env":"live","rate_limits":[{"limit":30,"window":"1h"}]}`)
		owner := ownerOf(t, limitedID, names...)
		var paid, paidID string
		for i := 0; paid == "" || ownerOf(t, paidID, names...) != owner; i++ {
			if i == 30 {
				t.Fatalf("no key of 30 is %s's", owner)
			}
			paid, paidID = newKeyOn(t, nodes[0], nodes, org, `{"name":"p","env":"live","credits":{"remaining":50}}`)
		}
		before := [2]map[string]int{hammer(t, nodes, limited, 15), hammer(t, nodes, paid, 10)}
		var restNames []string
		for i, nd := range nodes {
			if nd.name == owner {
				nd.halt(t) // a clean stop: it hands its keys off
				continue
			}
			rest, restNames = append(rest, nd), append(restNames, names[i])
		}
		waitOwners(t, rest, 2)
		for _, nd := range rest { // the old owner's last share of the credits
			deadline := time.Now().Add(2 * time.Second)
			for nd.admin(t, "GET", "/orgs/"+org+"/keys/"+paidID, "", 200)["credits"].(map[string]any)["remaining"] != 20.0 {
				if time.Now().After(deadline) {
					t.Fatalf("%s does not have the credits the old owner left after 2s", nd.name)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		after := [2]map[string]int{hammer(t, rest, limited, 15), hammer(t, rest, paid, 15)}
		t.Logf("owner %s, then %s: before %v, after %v", owner, ownerOf(t, limitedID, restNames...), before, after)
		if before[0]["valid"] != 30 || before[1]["valid"] != 30 {
			t.Fatalf("before the move: %v; want 30 valid of each", before)
		}
		// The new owner has the windows the old one handed off (none of the
		// 30 left), and the credits it shared at its last flush, on stopping
		// (50 less the 30 spent).
		if after[0]["valid"] != 0 || after[1]["valid"] != 20 {
			t.Fatalf("after the move: %v; want 0 of the limited key (its window handed off), 20 of the other (its credits left)", after)
		}
	})

	t.Run("the shared audit log is pruned, not the nodes' copies", func(t *testing.T) {
		count := func(prefix string) int64 {
			resp, err := etcd.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil {
				t.Fatal(err)
			}
			return resp.Count
		}
		if count(clusterPrefix+"audit/") == 0 {
			t.Fatal("no audit entry in etcd to prune")
		}
		st, err := openStore(filepath.Join(t.TempDir(), "replica.db"), lockTimeout)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		cutoff := time.Now().UnixNano()
		old, kept := fmt.Sprintf("audit/%016x0a0b", cutoff-1), fmt.Sprintf("audit/%016x0a0b", cutoff+1)
		st.db.Update(func(tx *bolt.Tx) error {
			b, _ := tx.CreateBucketIfNotExists(bucketCluster)
			b.Put([]byte(old), nil)
			b.Put([]byte(kept), nil)
			return b.Put(clusterRevKey, u64(1))
		})
		c := &cluster{cli: etcd, st: st}
		if err := c.pruneAudit(cutoff); err != nil {
			t.Fatal(err)
		}
		if n := count(clusterPrefix + "audit/"); n != 0 {
			t.Fatalf("%d audit entries left in etcd past the retention", n)
		}
		st.db.View(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketCluster)
			if b.Get([]byte(old)) != nil || b.Get([]byte(kept)) == nil || b.Get(clusterRevKey) == nil {
				t.Error("the replica's marks: want the old one gone, the newer one and the revision kept")
			}
			return nil
		})
		if n := auditCount(t, rest[0]); n == 0 {
			t.Fatalf("%s's copy of the audit log is empty after etcd's was pruned", rest[0].name)
		}
	})

	t.Run("admin-token reset: the cluster's root token, never one node's copy", func(t *testing.T) {
		stopped := nodes[slices.IndexFunc(nodes, func(nd *clusterNode) bool { return !slices.Contains(rest, nd) })]
		var out, errOut bytes.Buffer
		cl := &cli{stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }}
		err := adminTokenCmd(cl, []string{"reset", "--db", stopped.cfg.dbPath})
		if err == nil || !strings.Contains(err.Error(), "--etcd-endpoints") || out.Len() > 0 {
			t.Fatalf("reset of %s's file = %v, printed %q; want it refused, pointing to --etcd-endpoints", stopped.name, err, out.String())
		}
		if err := adminTokenCmd(cl, []string{"reset", "--etcd-endpoints", rest[0].clientURL}); err != nil {
			t.Fatal(err)
		}
		token := strings.TrimSpace(out.String())
		for _, nd := range rest {
			deadline := time.Now().Add(2 * time.Second)
			for {
				status, _ := nd.do(t, "GET", "/admin/v1/orgs", token, "")
				if status == 200 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the new root token on %s: %d after 2s", nd.name, status)
				}
				time.Sleep(5 * time.Millisecond)
			}
			if status, _ := nd.do(t, "GET", "/admin/v1/orgs", testRootToken, ""); status != 401 {
				t.Fatalf("the old root token on %s: %d; want 401", nd.name, status)
			}
		}
	})
}

// TestClusterEtcdLog: an embedded member's log lines are keyhole's, in its
// format, marked as etcd's.
func TestClusterEtcdLog(t *testing.T) {
	skipShort(t, "starts an etcd member")
	ports := freePorts(t, 2)
	cfg, err := parseServeFlags([]string{"--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "solo.db"),
		"--admin-token", testRootToken, "--node-name", "solo", "--cluster-peers", "solo=http://" + ports[0],
		"--cluster-addr", ports[1], "--cluster-insecure"}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	cfg.cluster.tickMs, cfg.cluster.electionMs, cfg.cluster.noFsync = 10, 100, true
	cfg.cluster.etcdLogLevel = "info"
	nd := &clusterNode{name: "solo", cfg: cfg, client: &http.Client{Timeout: 5 * time.Second}}
	nd.start()
	nd.waitUp(t, 30*time.Second)
	nd.halt(t)
	etcdLines := 0
	for _, line := range bytes.Split(bytes.TrimSpace([]byte(nd.log.String())), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil || m["level"] == nil || m["message"] == nil {
			t.Fatalf("a log line not in keyhole's format: %s", line)
		}
		if m["component"] == "etcd" {
			etcdLines++
		}
	}
	if etcdLines == 0 {
		t.Fatalf("no line of etcd's at level info:\n%s", nd.log.String())
	}
}

// TestClusterMembers: a dead member is replaced while the cluster runs:
// removed, a new one added, which joins with --cluster-state existing and
// has every key and revocation.
func TestClusterMembers(t *testing.T) {
	skipShort(t, "starts a 3-member etcd cluster")
	nodes := startTestCluster(t, 3)
	n0, dead := nodes[0], nodes[2]
	org := n0.admin(t, "POST", "/orgs", `{"name":"acme"}`, 201)["id"].(string)
	k := n0.admin(t, "POST", "/orgs/"+org+"/keys", `{"name":"k","env":"live"}`, 201)
	dead.halt(t)
	os.RemoveAll(dead.cfg.dbPath + ".etcd") // the VM is gone
	cluster := func(args ...string) string {
		t.Helper()
		// etcd adds a member only once its leader has been in touch with
		// a quorum for 5 s ("unhealthy cluster"): this one is new.
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			var out bytes.Buffer
			cl := &cli{stdout: &out, stderr: io.Discard, getenv: func(string) string { return "" }}
			err := clusterCmd(cl, append(args, "--etcd-endpoints", n0.clientURL))
			if err == nil {
				return out.String()
			}
			if !strings.Contains(err.Error(), "unhealthy cluster") || time.Now().After(deadline) {
				t.Fatalf("keyhole cluster %s: %v", strings.Join(args, " "), err)
			}
		}
	}
	cluster("remove", dead.name)
	// A key n3 will own, its window spent before n3 joins: its owner then
	// hands the window to n3.
	ports := freePorts(t, 2)
	var spent string
	for i := 0; spent == ""; i++ {
		if i == 30 {
			t.Fatal("no key of 30 is n3's to be")
		}
		k, id := newKeyOn(t, n0, nodes[:2], org, `{"name":"s","env":"live","rate_limits":[{"limit":10,"window":"1h"}]}`)
		if ownerOf(t, id, "n0", "n1", "n3") == "n3" {
			spent = k
		}
	}
	if got := hammer(t, nodes[:2], spent, 8); got["valid"] != 10 {
		t.Fatalf("a limit of 10 on n0 and n1: %v", got)
	}
	said := cluster("add", "n3=http://"+ports[0])
	m := regexp.MustCompile(`--cluster-peers (\S+)`).FindStringSubmatch(said)
	kept := strings.Split(n0.cfg.cluster.peers, ",")[:2] // n0's and n1's, without n2's
	if m == nil || m[1] != strings.Join(kept, ",")+",n3=http://"+ports[0] {
		t.Fatalf("cluster add said:\n%s", said)
	}
	cfg, err := parseServeFlags([]string{"--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "n3.db"),
		"--node-name", "n3", "--cluster-peers", m[1], "--cluster-state", "existing", "--cluster-addr", ports[1],
		"--cluster-insecure", "--max-staleness", clusterTestStaleness.String()}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	cfg.cluster.tickMs, cfg.cluster.electionMs, cfg.cluster.noFsync = 10, 100, true
	cfg.cluster.etcdLogLevel = "panic"
	cfg.drainTimeout = time.Second
	n3 := &clusterNode{name: "n3", cfg: cfg, clientURL: "http://" + ports[1], client: &http.Client{Timeout: 5 * time.Second}}
	n3.start()
	defer n3.halt(t)
	n3.waitUp(t, 30*time.Second)
	n3.waitVerify(t, k["key"].(string), "valid", 5*time.Second)
	waitOwners(t, []*clusterNode{n0, nodes[1], n3}, 3)
	// Outside its scopes: identified, the window reported, nothing spent.
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		_, b := n3.do(t, "POST", "/v1/keys/verify", "", `{"key":"`+spent+`","scope":"never:granted"}`)
		if bytes.Contains(b, []byte(`"remaining":0,`)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("n3 was not handed the spent window of its key: %s", b)
		}
	}
	if got := hammer(t, []*clusterNode{n0, nodes[1], n3}, spent, 4); got["valid"] != 0 {
		t.Fatalf("a key whose window was spent before n3 joined and owns it: %v", got)
	}
	n0.admin(t, "POST", "/orgs/"+org+"/keys/"+k["id"].(string)+"/revoke", "", 200)
	n3.waitVerify(t, k["key"].(string), "invalid", 2*time.Second)
	status := cluster("status")
	if !strings.Contains(status, "n3 ") || strings.Contains(status, "n2 ") {
		t.Fatalf("cluster status after n2 was replaced by n3:\n%s", status)
	}
}

// TestReadmeCluster runs README.md's three-node blocks with bash: the
// three serve commands in the background, on free ports, then the curl
// lines against them.
func TestReadmeCluster(t *testing.T) {
	skipShort(t, "runs three keyhole processes with etcd members")
	for _, tool := range []string{"bash", "curl", "jq", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			integrationMissing(t, tool+" is not installed")
		}
	}
	start, try := readmeBlock(t, "cluster-start"), readmeBlock(t, "cluster-try")
	// Each of the README's ports becomes a free one.
	free := freePorts(t, 9)
	ports := map[string]string{}
	for i, p := range []string{"2379", "2380", "2381", "2382", "2383", "2384", "8081", "8082", "8083"} {
		ports[p] = strings.TrimPrefix(free[i], "127.0.0.1:")
	}
	onFreePorts := func(s string) string {
		return regexp.MustCompile(`\b(2379|238[0-4]|808[1-3])\b`).ReplaceAllStringFunc(s, func(p string) string { return ports[p] })
	}
	// The serve lines run in the background, each with its own log.
	serve := regexp.MustCompile(`(?m)^(keyhole serve --node-name (\w) .*)$`)
	start = serve.ReplaceAllString(start, "$1 >$2.log 2>&1 &")
	script := "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n" + onFreePorts(start) +
		"for p in " + ports["8081"] + " " + ports["8082"] + " " + ports["8083"] + "; do\n" +
		"  for i in $(seq 600); do curl -sf localhost:$p/readyz >/dev/null && break; sleep 0.1; done\n" +
		"done\n" + onFreePorts(try)
	cmd := exec.Command("bash", "-c", script)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(keyholeBinary(t))+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	logs, _ := exec.Command("bash", "-c", "tail -n 20 "+cmd.Dir+"/*.log").CombinedOutput()
	if err != nil {
		t.Fatalf("the README's cluster blocks failed: %v\n%s\nnode logs:\n%s", err, out, logs)
	}
	for _, want := range []string{`"valid":true`, `{"valid":true,"code":null}`, `{"valid":false,"code":"rate_limited"}`,
		"MEMBER", "NODE API (owns keys)", "http://127.0.0.1:" + ports["2383"]} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the README's cluster blocks printed no %s:\n%s\nnode logs:\n%s", want, out, logs)
		}
	}
	if n := strings.Count(string(out), `{"valid":true,"code":null}`); n != 2 {
		t.Errorf("a limit of 2 a minute admitted %d of 3 across the nodes:\n%s", n, out)
	}
}
