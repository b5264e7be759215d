package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Key owners: in a cluster, each key's rate limits and credits are counted
// by one node, its owner, so that a limit holds across nodes as it does on
// one. The owner is chosen by rendezvous hashing of the key id over the
// live nodes (those announcing themselves with a --cluster-addr, under a
// lease: cluster.announce); every node computes it from the same list, so
// a key whose owner is this node costs no network hop. Any other node
// forwards the take (credits and windows together, all or none, as on one
// node) to the owner over the node API, on the owner's --cluster-addr.
//
// When the owner cannot be reached (it died and its lease has not run out
// yet, or the network between is cut), the node counts the key's windows
// in a bucket of its own holding limit/N of each window, N the live nodes:
// the nodes that can still reach each other then admit at most the limit
// between them. A key with credits is refused instead (503
// verification_failed), for at most the lease's time: credits are money,
// and a local share of them could not be bounded. When ownership moves
// because a node joins or stops, the old owner hands the key's windows to
// the new one (handoff.go). When an owner dies, the new owner starts the
// key's windows from its own state, full if it never owned the key, after
// the shares of its lease's time (README: Cluster). Credits do not depend
// on either: the owner shares their spending through etcd every flush, and
// each node keeps it (shareCredits), so a new owner continues from at most
// one flush interval before, as a restart of one node does.

const (
	nodeAPIPath  = "/keyhole/node/v1/"
	nodeTakePath = nodeAPIPath + "take"
	// forwardTimeout bounds one forwarded take; past it the node counts
	// the key in its own share, and asks that owner again after ownerRest.
	forwardTimeout = 500 * time.Millisecond
	ownerRest      = 2 * time.Second
	maxTakeBody    = 4 << 10
	// Takes for one owner go in batches, as many as are waiting when a
	// sender is free, up to maxBatch, with up to maxSenders batches on the
	// way: under load one request carries many takes, and alone a take
	// goes at once.
	maxBatch   = 256
	maxSenders = 4
	// nodeIdleTimeout closes idle connections to other nodes soon. An
	// embedded member serves the node API on its client port, behind a
	// multiplexer that reads each new connection's first bytes with no
	// deadline, and its Close waits for those reads. net/http's Transport
	// may dial a connection it then keeps idle, never used: the member
	// of a stopping node would wait for it as long as it stays open.
	nodeIdleTimeout = 2 * time.Second
)

// errOwnerUnreachable refuses a key with credits while its owner cannot be
// reached: its credits are counted only there.
var errOwnerUnreachable = &apiError{503, "verification_failed",
	"The keyhole node that counts this key's credits cannot be reached; try again in a few seconds."}

// ringNode is one live node that owns keys, and the takes waiting to be
// sent to it.
type ringNode struct {
	name, url string // url: scheme://host:port of its node API
	seed      uint64
	restUntil atomic.Int64 // Unix nanoseconds: a forward failed; count locally until then

	mu      sync.Mutex
	queue   []*pendingTake
	senders int // goroutines sending the queue, at most maxSenders
}

// pendingTake is one take on its way to the owner, and what came back.
type pendingTake struct {
	req  takeRequest
	ans  takeAnswer
	err  error
	done chan struct{}
}

// owners is this node's view of which node owns each key, and the means to
// ask the others.
type owners struct {
	self     string
	nodes    atomic.Pointer[[]*ringNode] // sorted by name
	client   *http.Client
	shares   *limiter // the buckets of keys whose owner cannot be reached
	shareSet sync.Map // shareKey -> *limitSet
	sets     sync.Map // a limit signature -> *limitSet, for owners' answers
	// onMove hands the windows of the keys this node no longer owns to
	// their new owners (handoff.go), when the live nodes change.
	onMove atomic.Pointer[func(from, to []*ringNode)]

	forwards  *prometheus.CounterVec
	forwardUs prometheus.Histogram
}

type shareKey struct {
	sig string
	n   int
}

func newOwners(self string, tlsDir string) (*owners, error) {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: forwardTimeout}).DialContext,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     nodeIdleTimeout,
		DisableCompression:  true,
	}
	if tlsDir != "" {
		tc, err := tlsInfo(tlsDir).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("--cluster-tls: %w", err)
		}
		tr.TLSClientConfig = tc
	}
	o := &owners{self: self, client: &http.Client{Transport: tr}, shares: newLimiter(),
		forwards: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keyhole_cluster_forwards_total",
			Help: "Takes of rate limits and credits sent to the key's owner node, by outcome: ok, or share (the owner was unreachable; counted in this node's share)."},
			[]string{"outcome"}),
		forwardUs: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "keyhole_cluster_forward_duration_seconds",
			Help: "Time of one take forwarded to its owner node, answered or not.", Buckets: durationBuckets}),
	}
	o.nodes.Store(&[]*ringNode{})
	return o, nil
}

// setMembers makes the live nodes those named, with their node API URLs;
// a node already known keeps its state.
func (o *owners) setMembers(members map[string]string) {
	old := *o.nodes.Load()
	if len(old) == len(members) && !slices.ContainsFunc(old, func(n *ringNode) bool { return members[n.name] != n.url }) {
		return
	}
	nodes := make([]*ringNode, 0, len(members))
	for _, name := range slices.Sorted(maps.Keys(members)) {
		if i := slices.IndexFunc(old, func(n *ringNode) bool { return n.name == name && n.url == members[name] }); i >= 0 {
			nodes = append(nodes, old[i])
			continue
		}
		h := fnv.New64a()
		h.Write([]byte(name))
		nodes = append(nodes, &ringNode{name: name, url: members[name], seed: h.Sum64()})
	}
	o.nodes.Store(&nodes)
	if move := o.onMove.Load(); move != nil {
		go (*move)(old, nodes) // HTTP calls: not on the watch's goroutine
	}
}

// owner is the node that owns key id, nil when no node announces itself.
func (o *owners) owner(id [8]byte) *ringNode { return ownerIn(*o.nodes.Load(), id) }

// ownerIn is the node of nodes that owns key id, nil for none.
func ownerIn(nodes []*ringNode, id [8]byte) *ringNode {
	var best *ringNode
	var bestScore uint64
	x := binary.LittleEndian.Uint64(id[:])
	for _, n := range nodes {
		if s := mix64(n.seed ^ x); best == nil || s > bestScore {
			best, bestScore = n, s
		}
	}
	return best
}

// mix64 is SplitMix64's finalizer: every bit of its input moves the output.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// remoteOwner is key id's owner when that is another node; nil when this
// node owns it or no node announces itself.
func (c *cluster) remoteOwner(id [8]byte) *ringNode {
	if n := c.owners.owner(id); n != nil && n.name != c.owners.self {
		return n
	}
	return nil
}

// takeRequest is a take forwarded to the key's owner: the lookup value and
// id name the key, the rest is checkArgs's and verify's (takewire.go).
type takeRequest struct {
	Lookup  string
	Key     [8]byte
	Allowed bool  // every earlier check passed: consume
	Cost    int64 // credits an allowed take spends
	Rev     int64 // the asking node's applied revision: the owner has the key once it has this
}

// takeAnswer is the owner's decision: each window's tokens after the take,
// under the windows named by Sig, and the credits.
type takeAnswer struct {
	Unknown    bool // the owner has no such key (yet): the rest is empty
	Allowed    bool
	Exceeded   bool
	Sig        string
	Tokens     []float64
	HasCredits bool
	Credits    int64
	RefillIn   int64
}

// forward asks owner n for the take, in the next batch to it; on any
// failure it says so, and the caller counts the key in its share. An owner
// that could not be reached, or failed, rests: it is asked again after
// ownerRest.
func (o *owners) forward(n *ringNode, req *takeRequest) (*takeAnswer, error) {
	start := time.Now()
	defer func() { o.forwardUs.Observe(time.Since(start).Seconds()) }()
	if start.UnixNano() < n.restUntil.Load() {
		return nil, errors.New("owner resting after a failure")
	}
	p := &pendingTake{req: *req, done: make(chan struct{})}
	n.mu.Lock()
	n.queue = append(n.queue, p)
	spawn := n.senders < maxSenders
	if spawn {
		n.senders++
	}
	n.mu.Unlock()
	if spawn {
		go o.send(n)
	}
	<-p.done
	if p.err != nil {
		return nil, p.err
	}
	return &p.ans, nil
}

// send sends n's queue in batches until it is empty.
func (o *owners) send(n *ringNode) {
	for {
		n.mu.Lock()
		batch := n.queue
		if len(batch) > maxBatch {
			batch, n.queue = batch[:maxBatch:maxBatch], slices.Clone(batch[maxBatch:])
		} else {
			n.queue = nil
		}
		if len(batch) == 0 {
			n.senders--
			n.mu.Unlock()
			return
		}
		n.mu.Unlock()
		err := o.sendBatch(n, batch)
		for _, p := range batch {
			if err != nil {
				p.err = err
			}
			close(p.done)
		}
	}
}

// sendBatch asks owner n for the takes of batch, and puts each answer in
// its take.
func (o *owners) sendBatch(n *ringNode, batch []*pendingTake) error {
	reqs := make([]takeRequest, len(batch))
	for i, p := range batch {
		reqs[i] = p.req
	}
	body, err := appendTakeRequests(nil, reqs)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), forwardTimeout)
	defer cancel()
	var answers []takeAnswer
	body, err = o.call(ctx, http.MethodPost, n.url+nodeTakePath, body, true)
	if err == nil {
		answers, err = decodeTakeAnswers(body)
	}
	var refused *nodeRefusal
	switch {
	case errors.As(err, &refused) && refused.status < 500:
		return fmt.Errorf("owner %s: %w", n.name, err) // it is up: no rest
	case err == nil && len(answers) != len(batch):
		err = fmt.Errorf("%d answers to %d takes", len(answers), len(batch))
	case err == nil:
		for i, p := range batch {
			p.ans, p.err = answers[i], o.checkAnswer(n, &answers[i])
		}
		return nil
	}
	n.restUntil.Store(time.Now().Add(ownerRest).UnixNano())
	return fmt.Errorf("owner %s: %w", n.name, err)
}

// nodeRefusal is a node API's answer other than the one wanted.
type nodeRefusal struct{ status int }

func (e *nodeRefusal) Error() string { return "answered " + http.StatusText(e.status) }

// call sends body (nil: none) to another node's API at url and returns
// its answer: a 200's body when answer, else nothing from a 204.
func (o *owners) call(ctx context.Context, method, url string, body []byte, answer bool) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	resp, err := o.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch {
	case !answer && resp.StatusCode == http.StatusNoContent:
		return nil, nil
	case !answer || resp.StatusCode != http.StatusOK:
		return nil, &nodeRefusal{resp.StatusCode}
	}
	return io.ReadAll(io.LimitReader(resp.Body, maxNodeAnswer))
}

// callJSON is call with in (nil: no body) as JSON, and the answer decoded
// into out (nil: none, a 204).
func (o *owners) callJSON(ctx context.Context, method, url string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return err
		}
	}
	answer, err := o.call(ctx, method, url, body, out != nil)
	if err != nil || out == nil {
		return err
	}
	return json.Unmarshal(answer, out)
}

// checkAnswer says whether an owner's answer can be used: a key it knows,
// with windows this node can read and a token count for each.
func (o *owners) checkAnswer(n *ringNode, ans *takeAnswer) error {
	if ans.Unknown {
		return fmt.Errorf("owner %s does not have the key yet", n.name)
	}
	if set, err := o.set(ans.Sig); err != nil || len(ans.Tokens) != len(set.limits) {
		return fmt.Errorf("owner %s: windows %q with %d tokens", n.name, ans.Sig, len(ans.Tokens))
	}
	return nil
}

// set is the limit set a signature ("5/1m,100/1h,") names.
func (o *owners) set(sig string) (*limitSet, error) {
	if s, ok := o.sets.Load(sig); ok {
		return s.(*limitSet), nil
	}
	limits, err := parseRateLimits(strings.TrimSuffix(sig, ","))
	if err != nil {
		return nil, err
	}
	s, _ := o.sets.LoadOrStore(sig, newLimitSet(limits))
	return s.(*limitSet), nil
}

// share is set with each window's limit divided among the live nodes (at
// least 1 each): what this node admits of a key whose owner is unreachable.
func (o *owners) share(set *limitSet) *limitSet {
	k := shareKey{set.sig, max(1, len(*o.nodes.Load()))}
	if s, ok := o.shareSet.Load(k); ok {
		return s.(*limitSet)
	}
	limits := slices.Clone(set.limits)
	for i := range limits {
		limits[i].Limit = max(1, limits[i].Limit/int64(k.n))
	}
	s, _ := o.shareSet.LoadOrStore(k, newLimitSet(limits))
	return s.(*limitSet)
}

// takeAt is the take of key k (found by lookup) for verify at its owner,
// another node; while that cannot be reached, in this node's share.
func (s *server) takeAt(owner *ringNode, k *keyEntry, lookup string, x *keyExtra, a *checkArgs, allowed bool, now int64) (decision, bool, *apiError) {
	o := s.store.cluster.owners
	ans, err := o.forward(owner, &takeRequest{Lookup: lookup, Key: k.id, Allowed: allowed, Cost: a.cost,
		Rev: s.store.cluster.applied.Load()})
	if err != nil {
		o.forwards.WithLabelValues("share").Inc()
		// A key with credits is refused, its share's state still reported
		// (SPEC 4: every answer for an identified key has the headers).
		refuse := allowed && x != nil && x.credits != nil
		d := o.shares.take(k.id, o.share(s.limitsFor(k)), now, allowed && !refuse, a.windows)
		if refuse {
			return d, false, errOwnerUnreachable
		}
		return d, false, nil
	}
	o.forwards.WithLabelValues("ok").Inc()
	set, _ := o.set(ans.Sig)
	d := decision{allowed: ans.Allowed, set: set, hasCredits: ans.HasCredits, credits: ans.Credits, refillIn: ans.RefillIn}
	d.report(ans.Tokens)
	if a.windows != nil {
		copy(a.windows[:], ans.Tokens)
	}
	return d, ans.Exceeded, nil
}

// serveNodeTake answers a batch of takes forwarded by another node for
// keys this node owns, in order. It is served only on the node API
// (--cluster-addr, mTLS with --cluster-tls), never on --addr.
func (s *server) serveNodeTake(w http.ResponseWriter, r *http.Request) {
	if !s.store.cluster.fresh(s.now()) {
		http.Error(w, "not confirmed current with the cluster", http.StatusServiceUnavailable)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBatch*maxTakeBody))
	reqs, derr := decodeTakeRequests(body)
	if err != nil || derr != nil {
		http.Error(w, "bad takes", http.StatusBadRequest)
		return
	}
	keys := make([]*keyEntry, len(reqs))
	var need int64 // the newest revision an asking node had applied for a key not here
	for i, t := range reqs {
		if keys[i] = s.index.getID(t.Lookup, t.Key); keys[i] == nil {
			need = max(need, t.Rev)
		}
	}
	if need > s.store.cluster.applied.Load() {
		// The asking node has applied more: wait for it, briefly.
		ctx, cancel := context.WithTimeout(r.Context(), forwardTimeout/2)
		s.store.cluster.waitApplied(ctx, need)
		cancel()
		for i, t := range reqs {
			if keys[i] == nil {
				keys[i] = s.index.getID(t.Lookup, t.Key)
			}
		}
	}
	answers := make([]takeAnswer, len(reqs))
	now := s.now().UnixNano()
	for i := range reqs {
		answers[i] = s.takeFor(keys[i], &reqs[i], now)
	}
	out, err := appendTakeAnswers(nil, answers)
	if err != nil {
		http.Error(w, "an answer past the format", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(out)
}

// takeFor is the owner's take for k as t asks: its credits and windows,
// as verify takes them on one node; for no key (k nil), an answer that
// says so, and the asking node counts it in its share.
func (s *server) takeFor(k *keyEntry, t *takeRequest, now int64) takeAnswer {
	if k == nil {
		return takeAnswer{Unknown: true}
	}
	var windows [maxWindows]float64
	var d decision
	var exceeded bool
	var x *keyExtra
	if k.flags.Load()&flagExtra != 0 {
		x = s.index.extra(k)
	}
	if x != nil && x.credits != nil {
		d, exceeded = s.credits.take(x.credits, t.Cost, t.Allowed, s.limiter, k.id, s.limitsFor(k), now, &windows)
	} else {
		d = s.limiter.take(k.id, s.limitsFor(k), now, t.Allowed, &windows)
	}
	return takeAnswer{Allowed: d.allowed, Exceeded: exceeded, Sig: d.set.sig,
		Tokens: windows[:len(d.set.limits)], HasCredits: d.hasCredits, Credits: d.credits, RefillIn: d.refillIn}
}

// nodeAPI serves the node API's routes (server.nodeRoutes) once the server
// is built; 503 until then.
type nodeAPI struct {
	routes atomic.Pointer[http.ServeMux]
}

func (n *nodeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	mux := n.routes.Load()
	if mux == nil {
		http.Error(w, "starting", http.StatusServiceUnavailable)
		return
	}
	mux.ServeHTTP(w, r)
}

// serveNodeAPI serves the node API on --cluster-addr for a node on
// --etcd-endpoints (an embedded member serves it beside etcd's own API).
func serveNodeAPI(o clusterOpts, h http.Handler) (stop func(), err error) {
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return nil, fmt.Errorf("--cluster-addr: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 2 * time.Minute}
	if o.tlsDir != "" {
		tc, err := tlsInfo(o.tlsDir).ServerConfig()
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("--cluster-tls: %w", err)
		}
		srv.TLSConfig = tc
		go srv.ServeTLS(ln, "", "")
	} else {
		go srv.Serve(ln)
	}
	return func() { srv.Close() }, nil
}

// shareCredits puts the spending of the keys this node owns, as a flush
// wrote it, into etcd for the other nodes: whichever becomes a key's owner
// next continues from it. A failure is logged; the key's next spending
// shares it again.
func (c *cluster) shareCredits(states map[[8]byte]creditState) {
	var ops []clientv3.Op
	for id, st := range states {
		if n := c.owners.owner(id); n == nil || n.name == c.owners.self {
			ops = append(ops, clientv3.OpPut(creditsPrefix+string(appendKeyID(nil, id)), string(encodeCreditState(st))))
		}
	}
	for batch := range slices.Chunk(ops, maxTxnOps) {
		ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
		_, err := c.cli.Txn(ctx).Then(batch...).Commit()
		cancel()
		if err != nil {
			c.log.Warn().Err(err).Msg("sharing credit spending with the cluster")
			return
		}
	}
}

// watchCredits keeps this node's credit book current with the spending
// the owners shared: this node may own those keys next. The book takes
// what is further along (creditBook.merge), so the order in which this
// watch and the nodes' watch deliver an owner's last share and its leaving
// does not matter, and an owner's own share changes nothing.
func (c *cluster) watchCredits(ctx context.Context) {
	c.watchPrefix(ctx, creditsPrefix, func() {}, func(name string, value []byte) {
		id, ok := parseKeyID(name)
		st, valid := decodeCreditState(value)
		fn := c.onCredits.Load()
		if ok && valid && fn != nil {
			(*fn)(id, st)
		}
	}, func() {})
}
