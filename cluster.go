package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
)

// Cluster mode: keyhole nodes that share their authoritative records
// through etcd. It runs only when --cluster-peers or --etcd-endpoints is
// given; without them nothing here is called and the db file is today's.
//
// The design: etcd is the authority for orgs, keys, org admin tokens, the
// root token's hash and the audit log, under one prefix (clusterPrefix).
// Every store verb that changes one of them (store.cluster != nil) is one
// etcd transaction holding the record(s), the audit entry and a touch of
// clusterHead, and answers after etcd committed it and this node's replica
// applied it. The node's own bbolt file keeps a replica of those records in
// its usual buckets, written only by the applier from etcd (a watch, and a
// range of what changed since its last revision at start and after a
// broken or compacted watch), so every read verb, the start-up load and the
// handlers are unchanged. Logs, usage, last-used, limiter state and credit
// spending stay the node's own, as on one node.
//
// etcd layout, under clusterPrefix:
//
//	orgs/<orgID>               -> orgRecord (the bbolt encoding)
//	tokens/<tokenID>           -> tokenRecord
//	keys/<orgID>/<keyID>       -> keyRecord, Row 0 (rows are each node's own)
//	meta/root_token_hash       -> [32]byte
//	meta/flag_token_hash       -> [32]byte
//	audit/<ns hex><rand hex>   -> auditEntry
//	head                       -> empty, put by every change: its mod revision is the newest change
//
// Records are never deleted (a revocation is an edit), so "what changed
// since revision R" is a range with a minimum mod revision, which a
// compaction does not break.
const (
	clusterPrefix = "keyhole/"
	clusterHead   = clusterPrefix + "head"
	// nodesPrefix holds each live node's presence, under a lease that ends
	// with the node: outside clusterPrefix, so no node's watch sees it.
	nodesPrefix = "keyhole-nodes/"
	// creditsPrefix holds each usage-limited key's spending as its owner
	// last shared it, by key id: written behind, outside clusterPrefix.
	creditsPrefix = "keyhole-credits/"
)

// presenceEvery is how often a node says, if it moved, which revision it
// has applied; cluster status shows each node's lag from that.
const presenceEvery = time.Second

// bbolt's cluster bucket, created only in cluster mode: the etcd cluster
// the replica is of, the revision it has applied, and the etcd audit keys
// applied (so a re-range does not write an entry twice).
var (
	bucketCluster = []byte("cluster")
	clusterRevKey = []byte("rev")
	clusterIDKey  = []byte("etcd_cluster_id")
)

// clusterOpts is what the cluster flags say.
type clusterOpts struct {
	nodeName     string
	peers        string // NAME=PEER_URL,…
	addr         string // HOST:PORT, the embedded member's client address
	tlsDir       string
	insecure     bool
	endpoints    string // URL,…
	state        string // --cluster-state: new, or existing to join a running cluster
	maxStaleness time.Duration

	// Not flags: tests shorten etcd's ticks and turn fsync off.
	tickMs, electionMs uint
	noFsync            bool
	etcdLogLevel       string // "error" unless set
}

func (o *clusterOpts) enabled() bool { return o.peers != "" || o.endpoints != "" }

// scheme is the URL scheme of every address between nodes: https with
// --cluster-tls, else http.
func (o *clusterOpts) scheme() string {
	if o.tlsDir != "" {
		return "https"
	}
	return "http"
}

// validate checks the cluster flags against each other.
func (o *clusterOpts) validate(c *config) error {
	if !o.enabled() {
		if o.nodeName != "" || o.addr != "" || o.tlsDir != "" || o.insecure || o.state != clusterStateNew {
			return usageErrorf("serve", "--node-name, --cluster-addr, --cluster-tls, --cluster-insecure and --cluster-state need --cluster-peers or --etcd-endpoints")
		}
		return nil
	}
	switch {
	case o.peers != "" && o.endpoints != "":
		return usageErrorf("serve", "--cluster-peers and --etcd-endpoints exclude each other: run an etcd member in each node, or use an etcd cluster")
	case o.nodeName == "":
		return usageErrorf("serve", "a cluster node needs --node-name NAME")
	case o.tlsDir != "" && o.insecure:
		return usageErrorf("serve", "--cluster-tls and --cluster-insecure exclude each other")
	case o.tlsDir == "" && !o.insecure:
		return usageErrorf("serve", "a cluster needs --cluster-tls DIR (mTLS between nodes; DIR holds ca.crt, node.crt, node.key) or, for tests and one-machine trials, --cluster-insecure")
	case o.maxStaleness < 50*time.Millisecond:
		return usageErrorf("serve", "--max-staleness %s: want at least 50ms, like 1s", o.maxStaleness)
	case c.demo:
		return usageErrorf("serve", "--demo is for one node; it cannot be used with a cluster")
	case o.state != clusterStateNew && o.state != clusterStateExisting:
		return usageErrorf("serve", "--cluster-state %q: want new or existing", o.state)
	case o.state == clusterStateExisting && o.peers == "":
		return usageErrorf("serve", "--cluster-state existing is for an embedded member joining a cluster (--cluster-peers)")
	}
	if o.tlsDir != "" {
		for _, f := range []string{tlsCA, tlsCert, tlsKey} {
			if _, err := os.Stat(filepath.Join(o.tlsDir, f)); err != nil {
				return usageErrorf("serve", "--cluster-tls %s: want %s, %s and %s in it: %v", o.tlsDir, tlsCA, tlsCert, tlsKey, err)
			}
		}
	}
	scheme := o.scheme()
	if o.peers != "" {
		peers, err := parsePeers(o.peers)
		if err != nil {
			return usageErrorf("serve", "--cluster-peers: %v", err)
		}
		for name, u := range peers {
			if !strings.HasPrefix(u, scheme+"://") {
				return usageErrorf("serve", "--cluster-peers %s=%s: want %s:// URLs with %s", name, u, scheme, map[bool]string{true: "--cluster-tls", false: "--cluster-insecure"}[o.tlsDir != ""])
			}
		}
		if _, ok := peers[o.nodeName]; !ok {
			return usageErrorf("serve", "--cluster-peers does not name this node (--node-name %s)", o.nodeName)
		}
		if o.addr == "" {
			return usageErrorf("serve", "--cluster-peers needs --cluster-addr HOST:PORT, where this node's etcd member takes clients")
		}
	} else {
		for _, e := range strings.Split(o.endpoints, ",") {
			if u, err := url.Parse(e); err != nil || u.Host == "" || u.Scheme != scheme {
				return usageErrorf("serve", "--etcd-endpoints %q: want %s URLs such as %s://10.0.0.1:2379", e, scheme, scheme)
			}
		}
	}
	return nil
}

// The files --cluster-tls DIR holds: the cluster's CA, and this node's
// certificate (for both serving and dialing: server and client auth, the
// node's addresses as SANs) and key.
const (
	tlsCA   = "ca.crt"
	tlsCert = "node.crt"
	tlsKey  = "node.key"
)

// tlsInfo is DIR's certificates as etcd takes them: every connection
// between members, and to a member's client address, is mTLS under the CA.
func tlsInfo(dir string) transport.TLSInfo {
	return transport.TLSInfo{CertFile: filepath.Join(dir, tlsCert), KeyFile: filepath.Join(dir, tlsKey),
		TrustedCAFile: filepath.Join(dir, tlsCA), ClientCertAuth: true}
}

// etcdClient dials an etcd cluster's client URLs, with mTLS if dir is set.
// The client's own log lines (its retries, at warn) go to log at error
// level only: what fails is returned, and a server's failing reads show in
// its freshness.
func etcdClient(endpoints, dir string, log zerolog.Logger) (*clientv3.Client, error) {
	cfg := clientv3.Config{Endpoints: strings.Split(endpoints, ","), DialTimeout: 5 * time.Second,
		Logger: etcdLogger(log, "error")}
	if dir != "" {
		tc, err := tlsInfo(dir).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("--cluster-tls: %w", err)
		}
		cfg.TLS = tc
	}
	return clientv3.New(cfg)
}

// parsePeers reads NAME=PEER_URL,….
func parsePeers(spec string) (map[string]string, error) {
	peers := map[string]string{}
	for _, p := range strings.Split(spec, ",") {
		name, u, ok := strings.Cut(strings.TrimSpace(p), "=")
		pu, err := url.Parse(u)
		if !ok || name == "" || err != nil || pu.Host == "" || (pu.Scheme != "http" && pu.Scheme != "https") {
			return nil, fmt.Errorf("%q: want NAME=PEER_URL, such as a=http://10.0.0.1:2380", p)
		}
		if _, dup := peers[name]; dup {
			return nil, fmt.Errorf("%s is named twice", name)
		}
		peers[name] = u
	}
	return peers, nil
}

// cluster is a node's link to etcd and the applier of its replica.
type cluster struct {
	cli      *clientv3.Client
	member   *embed.Etcd // nil with --etcd-endpoints
	st       *store
	name     string // --node-name
	log      zerolog.Logger
	maxStale time.Duration

	applyMu sync.Mutex // one batch of changes at a time, in revision order
	applied atomic.Int64
	waitMu  sync.Mutex
	waitCh  chan struct{} // closed and replaced when applied moves

	confirmed atomic.Int64 // Unix nanoseconds: when the last confirmation started
	headSeen  atomic.Int64 // the newest change's revision, as the last confirmation read it
	onApply   atomic.Pointer[func(*clusterBatch)]
	// onCredits takes the credit spending a node shared (owners.go).
	onCredits atomic.Pointer[func(id [8]byte, st creditState)]

	owners      *owners  // who counts each key's limits and credits (owners.go)
	node        *nodeAPI // what --cluster-addr serves to the other nodes
	nodeURL     string   // where they reach it; "" without --cluster-addr
	stopNodeAPI func()

	cancel context.CancelFunc
	done   sync.WaitGroup
}

// clusterBatch is what one applied batch changed, for the in-memory state.
type clusterBatch struct {
	keys   []*keyRecord
	tokens []*tokenRecord
	root   *[32]byte
}

// startCluster joins the cluster (starting this node's member with
// --cluster-peers) and brings the replica in st up to date. It returns
// once etcd answers; the watch starts with run.
func startCluster(ctx context.Context, o clusterOpts, dbPath string, st *store, logger zerolog.Logger) (*cluster, error) {
	c := &cluster{st: st, name: o.nodeName, log: logger.With().Str("node", o.nodeName).Logger(), maxStale: o.maxStaleness,
		waitCh: make(chan struct{}), node: &nodeAPI{}}
	owners, err := newOwners(o.nodeName, o.tlsDir)
	if err != nil {
		return nil, err
	}
	c.owners = owners
	if o.addr != "" {
		c.nodeURL = o.scheme() + "://" + o.addr
	}
	if o.peers != "" {
		m, err := startMember(ctx, o, dbPath, c.log, c.node)
		if err != nil {
			return nil, err
		}
		c.member = m
		c.cli = v3client.New(m.Server)
	} else {
		cli, err := etcdClient(o.endpoints, o.tlsDir, c.log)
		if err != nil {
			return nil, fmt.Errorf("--etcd-endpoints: %w", err)
		}
		c.cli = cli
		if o.addr != "" {
			if c.stopNodeAPI, err = serveNodeAPI(o, c.node); err != nil {
				cli.Close()
				return nil, err
			}
		}
	}
	err = c.claimFile(ctx, dbPath)
	if err == nil {
		for {
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err = c.catchUp(sctx)
			cancel()
			if err == nil || ctx.Err() != nil {
				break
			}
			c.log.Warn().Err(err).Msg("reading the cluster's records; retrying")
			time.Sleep(500 * time.Millisecond)
		}
	}
	if err != nil {
		c.close()
		return nil, fmt.Errorf("cluster: %w", err)
	}
	c.confirmed.Store(time.Now().UnixNano())
	return c, nil
}

// claimFile makes the db file this cluster's replica, or refuses it: a
// file with one-node records (they are not in etcd; keyhole cluster import
// copies them) or the replica of another etcd cluster.
func (c *cluster) claimFile(ctx context.Context, dbPath string) error {
	var id uint64
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := c.cli.Get(cctx, clusterHead)
		cancel()
		if err == nil {
			id = resp.Header.ClusterId
			break
		}
		if ctx.Err() != nil {
			return err
		}
		c.log.Warn().Err(err).Msg("asking etcd for the cluster; retrying")
		time.Sleep(500 * time.Millisecond)
	}
	return c.st.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketCluster)
		if b == nil {
			if k, _ := tx.Bucket(bucketOrgs).Cursor().First(); k != nil || tx.Bucket(bucketMeta).Get(metaRootToken) != nil {
				return fmt.Errorf("%s holds a one-node keyhole's records, which the cluster does not have: "+
					"copy them with keyhole cluster import --db %s, and start this node on a new --db", dbPath, dbPath)
			}
			var err error
			if b, err = tx.CreateBucket(bucketCluster); err != nil {
				return err
			}
		}
		if v := b.Get(clusterIDKey); v == nil {
			if err := b.Put(clusterIDKey, u64(id)); err != nil {
				return err
			}
		} else if beUint64(v) != id {
			return fmt.Errorf("%s is the copy of another etcd cluster's records (cluster %x; this one is %x): start this node on a new --db", dbPath, beUint64(v), id)
		}
		if v := b.Get(clusterRevKey); len(v) == 8 {
			c.applied.Store(int64(beUint64(v)))
		}
		return nil
	})
}

// startMember starts the embedded etcd member, in the directory next to
// the db file, and waits until it has joined the cluster. Its client
// address serves the node API too: one port, and one mTLS setup, for all
// that nodes ask of each other.
func startMember(ctx context.Context, o clusterOpts, dbPath string, log zerolog.Logger, node http.Handler) (*embed.Etcd, error) {
	peers, _ := parsePeers(o.peers)
	names := make([]string, 0, len(peers))
	for n := range peers {
		names = append(names, n+"="+peers[n])
	}
	slices.Sort(names)
	cfg := embed.NewConfig()
	cfg.Name = o.nodeName
	cfg.Dir = dbPath + ".etcd"
	peerURL, _ := url.Parse(peers[o.nodeName])
	clientURL := url.URL{Scheme: o.scheme(), Host: o.addr}
	if o.tlsDir != "" {
		cfg.PeerTLSInfo, cfg.ClientTLSInfo = tlsInfo(o.tlsDir), tlsInfo(o.tlsDir)
	}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peerURL}, []url.URL{*peerURL}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{clientURL}, []url.URL{clientURL}
	cfg.InitialCluster = strings.Join(names, ",")
	cfg.InitialClusterToken = "keyhole"
	cfg.UserHandlers = map[string]http.Handler{nodeAPIPath: node}
	cfg.ClusterState = cmp.Or(o.state, clusterStateNew)
	cfg.LogLevel = cmp.Or(o.etcdLogLevel, "error")
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(etcdLogger(log, cfg.LogLevel))
	cfg.TickMs, cfg.ElectionMs = 50, 500
	if o.tickMs > 0 {
		cfg.TickMs, cfg.ElectionMs = o.tickMs, o.electionMs
	}
	cfg.UnsafeNoFsync = o.noFsync
	// Old revisions go after an hour (a node that was away longer catches
	// up with a range, not the watch); records are never deleted.
	cfg.AutoCompactionMode, cfg.AutoCompactionRetention = embed.CompactorModePeriodic, "1h"
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("etcd member: %w", err)
	}
	m, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd member: %w", err)
	}
	log.Info().Str("peers", cfg.InitialCluster).Str("dir", cfg.Dir).Msg("etcd member started; waiting for its peers")
	for {
		select {
		case <-m.Server.ReadyNotify():
			return m, nil
		case err := <-m.Err():
			m.Close()
			return nil, fmt.Errorf("etcd member: %w", err)
		case <-ctx.Done():
			m.Close()
			return nil, ctx.Err()
		case <-time.After(5 * time.Second):
			log.Warn().Msg("waiting for a quorum of the etcd members named by --cluster-peers")
		}
	}
}

// run keeps the replica current from a watch and confirms it is current
// every maxStale/5, until close.
func (c *cluster) run() {
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.done.Add(5)
	go func() { defer c.done.Done(); c.watchCredits(ctx) }()
	go func() { defer c.done.Done(); c.watch(ctx) }()
	go func() { defer c.done.Done(); c.confirm(ctx) }()
	go func() { defer c.done.Done(); c.announce(ctx) }()
	go func() { defer c.done.Done(); c.watchNodes(ctx) }()
}

// nodePresence is what a node says of itself under nodesPrefix.
type nodePresence struct {
	Applied int64  `json:"applied"`       // the newest revision of the shared records it has applied
	URL     string `json:"url,omitempty"` // its node API (--cluster-addr); a node without one owns no keys
}

// watchNodes keeps the owners' list of live nodes current from their
// presence.
func (c *cluster) watchNodes(ctx context.Context) {
	var members map[string]string
	c.watchPrefix(ctx, nodesPrefix, func() { members = map[string]string{} }, func(name string, value []byte) {
		delete(members, name)
		var p nodePresence
		if value != nil && json.Unmarshal(value, &p) == nil && p.URL != "" {
			members[name] = p.URL
		}
	}, func() { c.owners.setMembers(members) })
}

// watchPrefix lists the keys under prefix, then watches them from the
// revision of the list, again after a broken watch. reset starts a list;
// each key comes to apply by its name under prefix, with its value (nil:
// deleted); applied follows each list and each batch of changes.
func (c *cluster) watchPrefix(ctx context.Context, prefix string, reset func(), apply func(name string, value []byte), applied func()) {
	for ctx.Err() == nil {
		resp, err := c.cli.Get(ctx, prefix, clientv3.WithPrefix())
		if err == nil {
			reset()
			for _, kv := range resp.Kvs {
				apply(strings.TrimPrefix(string(kv.Key), prefix), kv.Value)
			}
			applied()
			wctx, cancel := context.WithCancel(ctx)
			for wr := range c.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)) {
				if wr.Err() != nil || wr.Canceled {
					break
				}
				for _, ev := range wr.Events {
					var v []byte
					if ev.Type == clientv3.EventTypePut {
						v = ev.Kv.Value
					}
					apply(strings.TrimPrefix(string(ev.Kv.Key), prefix), v)
				}
				applied()
			}
			cancel()
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// announce keeps this node's presence under a lease of a few seconds:
// it is written when the applied revision moved, at most every
// presenceEvery, and goes away with the lease when the node stops or is
// cut off. A failure is retried at the next tick; nothing waits on it.
func (c *cluster) announce(ctx context.Context) {
	ttl := int64(max(5*time.Second, 3*c.maxStale) / time.Second)
	var lease clientv3.LeaseID
	said := int64(-1)
	for ctx.Err() == nil {
		if lease == 0 {
			gctx, cancel := context.WithTimeout(ctx, presenceEvery)
			l, err := c.cli.Grant(gctx, ttl)
			cancel()
			if err == nil {
				if ka, err := c.cli.KeepAlive(ctx, l.ID); err == nil {
					go func() {
						for range ka { // drained until the lease or ctx ends
						}
					}()
					lease, said = l.ID, -1
				}
			}
		}
		if applied := c.applied.Load(); lease != 0 && applied != said {
			v, _ := json.Marshal(nodePresence{Applied: applied, URL: c.nodeURL})
			pctx, cancel := context.WithTimeout(ctx, presenceEvery)
			_, err := c.cli.Put(pctx, nodesPrefix+c.name, string(v), clientv3.WithLease(lease))
			cancel()
			switch {
			case err == nil:
				said = applied
			case errors.Is(err, rpctypes.ErrLeaseNotFound):
				lease = 0 // expired while cut off: a new one next tick
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(presenceEvery):
		}
	}
	if lease != 0 {
		rctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c.cli.Revoke(rctx, lease) // a stopped node leaves the list at once
		cancel()
	}
}

func (c *cluster) close() {
	c.leave()
	if c.cancel != nil {
		c.cancel()
	}
	c.done.Wait()
	c.cli.Close()
	if c.stopNodeAPI != nil {
		c.stopNodeAPI()
	}
	if c.member != nil {
		c.member.Close()
	}
}

// leave hands the keys this node owns to the nodes that own them without
// it, before its presence goes: a clean stop keeps their limits.
func (c *cluster) leave() {
	move := c.owners.onMove.Load()
	if move == nil {
		return
	}
	nodes := *c.owners.nodes.Load()
	(*move)(nodes, slices.DeleteFunc(slices.Clone(nodes), func(n *ringNode) bool { return n.name == c.name }))
}

// fresh says whether the replica was confirmed current within maxStale.
func (c *cluster) fresh(now time.Time) bool {
	return now.UnixNano()-c.confirmed.Load() < int64(c.maxStale)
}

// confirm asks etcd for the newest change with a linearizable read (it
// fails on a member cut off from the quorum) every maxStale/5, and counts
// the replica as current once it has applied that change.
func (c *cluster) confirm(ctx context.Context) {
	tick := c.maxStale / 5
	for ctx.Err() == nil {
		start := time.Now()
		cctx, cancel := context.WithTimeout(ctx, tick)
		resp, err := c.cli.Get(cctx, clusterHead)
		if err == nil {
			var need int64
			if len(resp.Kvs) > 0 {
				need = resp.Kvs[0].ModRevision
			}
			c.headSeen.Store(need)
			if c.waitApplied(cctx, need) == nil {
				c.confirmed.Store(start.UnixNano())
			}
		}
		cancel()
		select {
		case <-ctx.Done():
		case <-time.After(time.Until(start.Add(tick))):
		}
	}
}

// watch applies changes as etcd sends them; a broken or compacted watch
// catches up with a range, then watches again.
func (c *cluster) watch(ctx context.Context) {
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := c.cli.Watch(wctx, clusterPrefix, clientv3.WithPrefix(), clientv3.WithRev(c.applied.Load()+1))
		for resp := range wch {
			if resp.Err() != nil || resp.Canceled {
				if ctx.Err() == nil {
					c.log.Warn().Err(resp.Err()).Msg("cluster watch ended; catching up")
				}
				break
			}
			var kvs []kvPair
			var rev int64
			for _, ev := range resp.Events {
				if ev.Type == clientv3.EventTypePut {
					kvs = append(kvs, kvPair{string(ev.Kv.Key), ev.Kv.Value})
				}
				rev = max(rev, ev.Kv.ModRevision)
			}
			if rev == 0 {
				continue
			}
			if err := c.apply(kvs, rev); err != nil {
				c.log.Error().Err(err).Msg("applying cluster changes; catching up")
				break
			}
		}
		cancel()
		for ctx.Err() == nil {
			sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
			err := c.catchUp(sctx)
			scancel()
			if err == nil {
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
}

type kvPair struct {
	key   string
	value []byte
}

// catchUp applies every record changed since the applied revision, as of
// one revision, in pages.
func (c *cluster) catchUp(ctx context.Context) error {
	head, err := c.cli.Get(ctx, clusterHead)
	if err != nil {
		return err
	}
	at := head.Header.Revision
	from := c.applied.Load()
	if at <= from {
		return nil
	}
	key, end := clusterPrefix, clientv3.GetPrefixRangeEnd(clusterPrefix)
	var kvs []kvPair
	for {
		resp, err := c.cli.Get(ctx, key, clientv3.WithRange(end), clientv3.WithRev(at),
			clientv3.WithMinModRev(from+1), clientv3.WithLimit(1000))
		if err != nil {
			return err
		}
		for _, kv := range resp.Kvs {
			kvs = append(kvs, kvPair{string(kv.Key), kv.Value})
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	// Audit entries' keys start with their time: in about commit order.
	return c.apply(kvs, at)
}

// apply writes changed records into the replica in one bbolt transaction,
// with the revision they bring it to, then into the in-memory state.
func (c *cluster) apply(kvs []kvPair, rev int64) error {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	if rev <= c.applied.Load() {
		return nil
	}
	var batch clusterBatch
	err := c.st.db.Update(func(tx *bolt.Tx) error {
		batch = clusterBatch{}
		cb := tx.Bucket(bucketCluster)
		for _, kv := range kvs {
			rest := strings.TrimPrefix(kv.key, clusterPrefix)
			kind, id, _ := strings.Cut(rest, "/")
			var err error
			switch kind {
			case "orgs":
				err = tx.Bucket(bucketOrgs).Put([]byte(id), kv.value)
			case "tokens":
				t := new(tokenRecord)
				if err = decodeRecord(kv.value, t); err == nil {
					err = tx.Bucket(bucketTokens).Put([]byte(id), kv.value)
					batch.tokens = append(batch.tokens, t)
				}
			case "keys":
				k := new(keyRecord)
				if err = decodeRecord(kv.value, k); err != nil {
					break
				}
				k.Row = 0
				if old := tx.Bucket(bucketKeys).Get([]byte(id)); old != nil {
					var was keyRecord
					if err = decodeRecord(old, &was); err != nil {
						break
					}
					k.Row = was.Row
				}
				err = putKeyTx(tx, k)
				batch.keys = append(batch.keys, k)
			case "meta":
				switch id {
				case string(metaRootToken):
					if len(kv.value) == 32 {
						h := [32]byte(kv.value)
						batch.root = &h
					}
					err = tx.Bucket(bucketMeta).Put(metaRootToken, kv.value)
				case string(metaFlagToken):
					err = tx.Bucket(bucketMeta).Put(metaFlagToken, kv.value)
				}
			case "audit":
				seen := []byte("audit/" + id)
				if cb.Get(seen) != nil {
					break
				}
				var a auditEntry
				if err = decodeRecord(kv.value, &a); err == nil {
					if err = putAuditTx(tx, a); err == nil {
						err = cb.Put(seen, []byte{})
					}
				}
			}
			if err != nil {
				return fmt.Errorf("%s: %w", kv.key, err)
			}
		}
		return cb.Put(clusterRevKey, u64(uint64(rev)))
	})
	if err != nil {
		return err
	}
	if fn := c.onApply.Load(); fn != nil {
		(*fn)(&batch)
	}
	c.waitMu.Lock()
	c.applied.Store(rev)
	close(c.waitCh)
	c.waitCh = make(chan struct{})
	c.waitMu.Unlock()
	return nil
}

// waitApplied waits until the replica has applied revision rev.
func (c *cluster) waitApplied(ctx context.Context, rev int64) error {
	for {
		c.waitMu.Lock()
		ch := c.waitCh
		done := c.applied.Load() >= rev
		c.waitMu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// maxTxnOps is how many records go in one etcd transaction of many (an
// import, shared credit spending): etcd takes up to 128 operations.
const maxTxnOps = 100

// writeTimeout bounds an admin write's wait for etcd's commit.
const writeTimeout = 10 * time.Second

var errClusterConflict = errors.New("cluster: a record changed under the write; try again")

// commit puts ops, the audit entry a (unless nil) and the head in one
// etcd transaction if cmps hold, and waits until this node's replica has
// applied it. ok false: a cmp failed, nothing was written.
func (c *cluster) commit(cmps []clientv3.Cmp, ops []clientv3.Op, a *auditEntry) (ok bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	resp, err := commitShared(ctx, c.cli, cmps, ops, a)
	if err != nil || !resp.Succeeded {
		return false, err
	}
	if err := c.waitApplied(ctx, resp.Header.Revision); err != nil {
		// Committed: the watch brings it here later.
		c.log.Warn().Int64("revision", resp.Header.Revision).Msg("a cluster write committed but is not yet applied here")
	}
	return true, nil
}

// commitShared is one change of the shared records: ops, the audit entry a
// (unless nil) and the head, in one etcd transaction if cmps hold.
func commitShared(ctx context.Context, cli *clientv3.Client, cmps []clientv3.Cmp, ops []clientv3.Op, a *auditEntry) (*clientv3.TxnResponse, error) {
	if a != nil {
		buf, err := encodeRecord(*a)
		if err != nil {
			return nil, err
		}
		id := fmt.Sprintf("%016x%s", time.Now().UnixNano(), randomHex(4))
		ops = append(ops, clientv3.OpPut(clusterPrefix+"audit/"+id, string(buf)))
	}
	ops = append(ops, clientv3.OpPut(clusterHead, ""))
	resp, err := cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return nil, fmt.Errorf("cluster write: %w", err)
	}
	return resp, nil
}

// resetClusterRootToken makes hash the cluster's root token's, for
// keyhole admin-token reset --etcd-endpoints: every node applies it.
func resetClusterRootToken(ctx context.Context, cli *clientv3.Client, hash [32]byte, a auditEntry) error {
	_, err := commitShared(ctx, cli, nil, []clientv3.Op{clientv3.OpPut(clusterPrefix+"meta/"+string(metaRootToken), string(hash[:]))}, &a)
	return err
}

func putOp(key string, v any) (clientv3.Op, error) {
	buf, err := encodeRecord(v)
	if err != nil {
		return clientv3.Op{}, err
	}
	return clientv3.OpPut(clusterPrefix+key, string(buf)), nil
}

// putNew is store.putNew in etcd: a new record, with its entry.
func (c *cluster) putNew(key string, v any, a auditEntry) error {
	op, err := putOp(key, v)
	if err != nil {
		return err
	}
	ok, err := c.commit([]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(clusterPrefix+key), "=", 0)}, []clientv3.Op{op}, &a)
	if err == nil && !ok {
		err = fmt.Errorf("cluster: %s exists already", key)
	}
	return err
}

func (c *cluster) setRootTokenHash(hash [32]byte, a auditEntry) error {
	_, err := c.commit(nil, []clientv3.Op{clientv3.OpPut(clusterPrefix+"meta/"+string(metaRootToken), string(hash[:]))}, &a)
	return err
}

// applyAdminTokenFlag is store.ApplyAdminTokenFlag in etcd: every node
// started with the same --admin-token applies it once for all.
func (c *cluster) applyAdminTokenFlag(hash [32]byte, a auditEntry) error {
	flagKey, rootKey := clusterPrefix+"meta/"+string(metaFlagToken), clusterPrefix+"meta/"+string(metaRootToken)
	for try := 0; try < 10; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
		resp, err := c.cli.Txn(ctx).Then(clientv3.OpGet(flagKey), clientv3.OpGet(rootKey)).Commit()
		cancel()
		if err != nil {
			return fmt.Errorf("cluster read: %w", err)
		}
		var flag, root []byte
		var flagRev, rootRev int64
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			flag, flagRev = kvs[0].Value, kvs[0].ModRevision
		}
		if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
			root, rootRev = kvs[0].Value, kvs[0].ModRevision
		}
		if string(flag) == string(hash[:]) {
			// Another node applied it: it is this node's too once the
			// replica has what was read.
			ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
			defer cancel()
			return c.waitApplied(ctx, max(flagRev, rootRev))
		}
		ops := []clientv3.Op{clientv3.OpPut(flagKey, string(hash[:]))}
		var entry *auditEntry
		if string(root) != string(hash[:]) {
			ops = append(ops, clientv3.OpPut(rootKey, string(hash[:])))
			entry = &a
		}
		ok, err := c.commit([]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(flagKey), "=", flagRev)}, ops, entry)
		if err != nil || ok {
			return err
		}
	}
	return errClusterConflict
}

// pruneAudit deletes the shared audit entries older than before (Unix
// nanoseconds), which their keys start with, and the replica's marks of
// them. Every node does it; a second delete of the same range is a no-op.
// The watch applies puts only, so no node's copy loses anything by it: each
// prunes its own copy as one node does.
func (c *cluster) pruneAudit(before int64) error {
	from, to := clusterPrefix+"audit/", fmt.Sprintf("%saudit/%016x", clusterPrefix, before)
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	if _, err := c.cli.Delete(ctx, from, clientv3.WithRange(to)); err != nil {
		return fmt.Errorf("pruning the cluster's audit log: %w", err)
	}
	start, end := []byte("audit/"), strings.TrimPrefix(to, clusterPrefix)
	for done := false; !done; {
		err := c.st.db.Update(func(tx *bolt.Tx) error {
			cur := tx.Bucket(bucketCluster).Cursor()
			for range auditPruneBatch {
				// Sought again after each delete: a bbolt cursor's Next
				// after a Delete can skip a key.
				k, _ := cur.Seek(start)
				if done = k == nil || !bytes.HasPrefix(k, start) || string(k) >= end; done {
					return nil
				}
				if err := cur.Delete(); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func (c *cluster) record(a auditEntry) error {
	_, err := c.commit(nil, nil, &a)
	return err
}

// clusterUpdate is readModifyWrite in etcd: read the record at key (of
// orgID), let change edit it, and write it with the records change added
// and the completed entry, if the record did not change meanwhile (else
// again, from the newer record).
func clusterUpdate[T any, P interface {
	*T
	auditable
}](c *cluster, key, orgID string, a auditEntry, change func(P) ([]P, error), keyOf func(P) string, prep func(P)) (T, []P, error) {
	var rec T
	for try := 0; try < 20; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
		resp, err := c.cli.Get(ctx, clusterPrefix+key)
		cancel()
		if err != nil {
			return rec, nil, fmt.Errorf("cluster read: %w", err)
		}
		if len(resp.Kvs) == 0 {
			return rec, nil, errNotFound
		}
		kv := resp.Kvs[0]
		var added []P
		var fields []string
		rec, added, fields, err = editRecord(kv.Value, orgID, change)
		if err != nil || len(fields) == 0 && len(added) == 0 {
			return rec, nil, err
		}
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision)}
		targets := []string{P(&rec).recordID()}
		var ops []clientv3.Op
		for _, r := range append([]P{&rec}, added...) {
			prep(r)
			op, err := putOp(keyOf(r), r)
			if err != nil {
				return rec, nil, err
			}
			ops = append(ops, op)
			if r != &rec {
				targets = append(targets, r.recordID())
				cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(clusterPrefix+keyOf(r)), "=", 0))
			}
		}
		entry := a.about(orgID, fields, targets...)
		ok, err := c.commit(cmps, ops, &entry)
		if err != nil {
			return rec, nil, err
		}
		if ok {
			return rec, added, nil
		}
	}
	return rec, nil, errClusterConflict
}

func keyETCDPath(k *keyRecord) string     { return "keys/" + keyPath(k.OrgID, k.ID) }
func tokenETCDPath(t *tokenRecord) string { return "tokens/" + t.ID }

func (c *cluster) updateKey(orgID, keyID string, a auditEntry, change func(k *keyRecord) ([]*keyRecord, error)) (keyRecord, []*keyRecord, error) {
	return clusterUpdate(c, "keys/"+keyPath(orgID, keyID), orgID, a, change, keyETCDPath, func(k *keyRecord) { k.Row = 0 })
}

func (c *cluster) updateToken(orgID, tokenID string, a auditEntry, change func(t *tokenRecord) ([]*tokenRecord, error)) (tokenRecord, []*tokenRecord, error) {
	return clusterUpdate(c, "tokens/"+tokenID, orgID, a, change, tokenETCDPath, func(*tokenRecord) {})
}

func beUint64(b []byte) uint64 {
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v
}

// applyShared makes the in-memory state what an applied batch says. A
// key's entry is made from what the replica holds now, one key at a time
// (as updateKey does), so the handler that wrote a change and the watch
// that brought it can come in either order.
func (s *server) applyShared(b *clusterBatch) {
	for _, k := range b.keys {
		s.upsertKey(k)
	}
	for _, t := range b.tokens {
		s.admins.mu.RLock()
		known := s.admins.byID[t.ID] != nil
		s.admins.mu.RUnlock()
		if known {
			s.admins.update(t)
		} else {
			s.admins.addOrgToken(t)
		}
	}
	if b.root != nil {
		s.admins.setRoot(*b.root)
	}
}

// upsertKey adds a key to the index, or updates its entry, from the
// replica's record.
func (s *server) upsertKey(rec *keyRecord) *keyEntry {
	s.keyUpdates.Lock()
	defer s.keyUpdates.Unlock()
	cur, err := s.store.Key(rec.OrgID, rec.ID)
	if err != nil {
		cur = *rec
	}
	if e := s.index.get(cur.Prefix, cur.ID); e != nil {
		s.applyKey(&cur)
		return e
	}
	return s.addKeyRow(recordRow(&cur))
}

// clusterMetrics are a cluster node's gauges of its freshness.
func clusterMetrics(c *cluster, now func() time.Time) []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "keyhole_cluster_fresh",
			Help: "1 while this node is confirmed current with the cluster within --max-staleness, else 0 (it refuses keys)."},
			func() float64 { return float64(boolInt(c.fresh(now()))) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "keyhole_cluster_confirmed_age_seconds",
			Help: "Time since this node last confirmed it had every committed change."},
			func() float64 { return now().Sub(time.Unix(0, c.confirmed.Load())).Seconds() }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "keyhole_cluster_applied_revision",
			Help: "The etcd revision this node's replica has applied."},
			func() float64 { return float64(c.applied.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "keyhole_cluster_watch_lag_revisions",
			Help: "How many revisions the replica is behind the newest change the last confirmation read."},
			func() float64 { return float64(max(0, c.headSeen.Load()-c.applied.Load())) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "keyhole_cluster_owner_nodes",
			Help: "Live nodes that own keys (announce a --cluster-addr), as this node sees them."},
			func() float64 { return float64(len(*c.owners.nodes.Load())) }),
		c.owners.forwards, c.owners.forwardUs,
	}
}

// clusterCmd is keyhole cluster: import a one-node file into a cluster,
// or show the cluster's members.
func clusterCmd(c *cli, args []string) error {
	fs := newFlagSet("cluster")
	dbPath := fs.String("db", "keyhole.db", "import: the one-node bbolt `FILE` to copy (the server on it must be stopped)")
	endpoints := fs.String("etcd-endpoints", "http://127.0.0.1:2379", "the cluster's etcd client `URLs` (a node's --cluster-addr as http://HOST:PORT), comma-separated")
	tlsDir := fs.String("cluster-tls", "", "`DIR` of the cluster's mTLS certificates (ca.crt, node.crt, node.key), as its nodes use")
	sub := first(args)
	if slices.Contains([]string{"import", "status", "add", "remove"}, sub) {
		args = args[1:]
	} else if !isHelpFlag(sub) {
		return usageErrorf("cluster", "want the subcommand import, status, add or remove: keyhole cluster import --db FILE --etcd-endpoints URL,…")
	}
	ops, err := parseArgsAnywhere(fs, args, c.getenv)
	if err != nil {
		return err
	}
	member := sub == "add" || sub == "remove"
	switch {
	case member && len(ops) != 1:
		return usageErrorf("cluster", "%s wants one member: keyhole cluster add NAME=PEER_URL, keyhole cluster remove NAME", sub)
	case !member && len(ops) > 0:
		return usageErrorf("cluster", "unexpected argument %q", ops[0])
	}
	cli, err := etcdClient(*endpoints, *tlsDir, zerolog.Nop())
	if err != nil {
		return fmt.Errorf("--etcd-endpoints: %w", err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	switch sub {
	case "status":
		return clusterStatus(ctx, cli, c.stdout)
	case "add":
		return clusterAdd(ctx, cli, ops[0], c.stdout)
	case "remove":
		return clusterRemove(ctx, cli, ops[0], c.stdout)
	}
	st, err := openStoreReadOnly(*dbPath, lockTimeout)
	if err != nil {
		return err
	}
	defer st.Close()
	n, err := clusterImport(ctx, cli, st)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "keyhole: imported %d records from %s (%d were in the cluster already, left as they are)\n", n.added, *dbPath, n.existing)
	return nil
}

type importCount struct{ added, existing int }

// clusterImport copies a one-node file's orgs, org admin tokens, keys and
// root token hash into the cluster. A record already there (by id) is
// left as it is, so running it again adds nothing. The file's audit log
// is not copied.
func clusterImport(ctx context.Context, cli *clientv3.Client, st *store) (n importCount, err error) {
	var kvs []kvPair
	err = st.db.View(func(tx *bolt.Tx) error {
		for _, b := range []struct {
			bucket []byte
			kind   string
		}{{bucketOrgs, "orgs/"}, {bucketTokens, "tokens/"}} {
			err := tx.Bucket(b.bucket).ForEach(func(k, v []byte) error {
				kvs = append(kvs, kvPair{clusterPrefix + b.kind + string(k), bytesClone(v)})
				return nil
			})
			if err != nil {
				return err
			}
		}
		return tx.Bucket(bucketKeys).ForEach(func(k, v []byte) error {
			var rec keyRecord
			if err := decodeRecord(v, &rec); err != nil {
				return fmt.Errorf("key %s: %w", k, err)
			}
			rec.Row = 0
			buf, err := encodeRecord(&rec)
			kvs = append(kvs, kvPair{clusterPrefix + keyETCDPath(&rec), buf})
			return err
		})
	})
	if err != nil {
		return n, err
	}
	if hash, ok, err := st.RootTokenHash(); err != nil {
		return n, err
	} else if ok {
		kvs = append(kvs, kvPair{clusterPrefix + "meta/" + string(metaRootToken), hash[:]})
	}
	put := func(batch []kvPair) (bool, error) {
		var cmps []clientv3.Cmp
		var ops []clientv3.Op
		for _, kv := range batch {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(kv.key), "=", 0))
			ops = append(ops, clientv3.OpPut(kv.key, string(kv.value)))
		}
		resp, err := cli.Txn(ctx).If(cmps...).Then(append(ops, clientv3.OpPut(clusterHead, ""))...).Commit()
		if err != nil {
			return false, err
		}
		return resp.Succeeded, nil
	}
	for batch := range slices.Chunk(kvs, maxTxnOps) {
		ok, err := put(batch)
		if err != nil {
			return n, err
		}
		if ok {
			n.added += len(batch)
			continue
		}
		for _, kv := range batch { // some were there: one at a time
			ok, err := put([]kvPair{kv})
			if err != nil {
				return n, err
			}
			if ok {
				n.added++
			} else {
				n.existing++
			}
		}
	}
	return n, nil
}

func bytesClone(b []byte) []byte { return append([]byte(nil), b...) }

// clusterStatus prints the members, the leader, each member's raft and
// store progress, and the revision of the newest shared change.
func clusterStatus(ctx context.Context, cli *clientv3.Client, w io.Writer) error {
	ml, err := cli.MemberList(ctx)
	if err != nil {
		return fmt.Errorf("cluster members: %w", err)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tID\tLEADER\tRAFT TERM\tRAFT INDEX\tAPPLIED\tREVISION\tDB SIZE\tCLIENT URL\tERRORS")
	for _, m := range ml.Members {
		if len(m.ClientURLs) == 0 {
			fmt.Fprintf(tw, "%s\t%x\t\t\t\t\t\t\t\tnot started\n", m.Name, m.ID)
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := cli.Status(sctx, m.ClientURLs[0])
		cancel()
		if err != nil {
			fmt.Fprintf(tw, "%s\t%x\t\t\t\t\t\t\t%s\t%v\n", m.Name, m.ID, m.ClientURLs[0], err)
			continue
		}
		fmt.Fprintf(tw, "%s\t%x\t%v\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", m.Name, m.ID, st.Leader == m.ID, st.RaftTerm, st.RaftIndex,
			st.RaftAppliedIndex, st.Header.Revision, st.DbSize, m.ClientURLs[0], strings.Join(st.Errors, "; "))
	}
	tw.Flush()
	resp, err := cli.Get(ctx, clusterHead)
	if err != nil {
		return fmt.Errorf("newest change: %w", err)
	}
	var head int64
	if len(resp.Kvs) == 0 {
		fmt.Fprintln(w, "\nno keyhole records in this cluster yet")
	} else {
		head = resp.Kvs[0].ModRevision
		fmt.Fprintf(w, "\nnewest keyhole change: revision %d (a node whose replica is older than --max-staleness fails closed)\n", head)
	}
	return printNodes(ctx, cli, w, head)
}

// printNodes lists the live keyhole nodes (their presence, announce) with
// the revision each has applied, how far behind head that is, and where
// the others reach it for the keys it owns.
func printNodes(ctx context.Context, cli *clientv3.Client, w io.Writer, head int64) error {
	resp, err := cli.Get(ctx, nodesPrefix, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("keyhole nodes: %w", err)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nNODE\tAPPLIED\tBEHIND\tNODE API (owns keys)")
	for _, kv := range resp.Kvs {
		var p nodePresence
		if json.Unmarshal(kv.Value, &p) != nil {
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", strings.TrimPrefix(string(kv.Key), nodesPrefix), p.Applied, max(head-p.Applied, 0),
			cmp.Or(p.URL, "none: owns no keys"))
	}
	if len(resp.Kvs) == 0 {
		fmt.Fprintln(tw, "(no keyhole node is running)")
	}
	return tw.Flush()
}

// isClusterReplica says whether the file is a cluster node's copy of the
// cluster's records (claimFile made it one).
func (st *store) isClusterReplica() (bool, error) {
	var ok bool
	err := st.db.View(func(tx *bolt.Tx) error {
		ok = tx.Bucket(bucketCluster) != nil
		return nil
	})
	return ok, err
}
