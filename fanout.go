package main

import (
	"cmp"
	"context"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Fan-out: each cluster node logs and counts the requests it served in its
// own file, so a node asked for an organization's logs or usage asks every
// other live node (the owners' list: those with a --cluster-addr) over the
// node API, merges their answers with its own, and names the nodes that
// did not answer in missing_nodes. A log page of a cluster is newest first
// across the nodes, each entry naming its node; its cursor is the time of
// its last entry, in Unix nanoseconds (a number, as on one node), and the
// next page holds what is older.

const (
	nodeLogsPath  = nodeAPIPath + "logs"
	nodeUsagePath = nodeAPIPath + "usage"
	fanOutTimeout = 2 * time.Second
	maxNodeAnswer = 64 << 20
)

// nodeLogEntry is a log entry as the node API carries it, with its time in
// nanoseconds for the merge.
type nodeLogEntry struct {
	logEntry
	At int64 `json:"at"`
}

// nodeRoutes is the node API: what a node asks of the others.
func (s *server) nodeRoutes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+nodeTakePath, s.serveNodeTake)
	mux.HandleFunc("GET "+nodeLogsPath, s.serveNodeLogs)
	mux.HandleFunc("GET "+nodeUsagePath, s.serveNodeUsage)
	mux.HandleFunc("POST "+nodeHandoffPath, s.serveNodeHandoff)
	return mux
}

// serveNodeLogs answers this node's entries of a log query, for the node
// that merges them.
func (s *server) serveNodeLogs(w http.ResponseWriter, r *http.Request) {
	v := r.URL.Query()
	q, aerr := parseLogQuery(v)
	at, err := strconv.ParseInt(v.Get("before_at"), 10, 64)
	if aerr != nil || err != nil || at < 0 {
		http.Error(w, "bad log query", http.StatusBadRequest)
		return
	}
	q.before, q.beforeAt = 0, at
	page, aerr := s.readLogs(v.Get("org"), q)
	if aerr != nil {
		http.Error(w, aerr.message, aerr.status)
		return
	}
	out := make([]nodeLogEntry, len(page.Entries))
	for i, e := range page.Entries {
		out[i] = nodeLogEntry{e, e.at}
	}
	writeJSON(w, 200, out)
}

// serveNodeUsage answers this node's usage of a usage query.
func (s *server) serveNodeUsage(w http.ResponseWriter, r *http.Request) {
	buckets, aerr := s.readUsage(r.URL.Query().Get("org"), r.URL.Query())
	if aerr != nil {
		http.Error(w, aerr.message, aerr.status)
		return
	}
	writeJSON(w, 200, buckets)
}

// askNodes sends GET path?query to every other live node at once and
// decodes each answer into a new T; it returns the answers by node, and
// the nodes that did not answer.
func askNodes[T any](c *cluster, ctx context.Context, path string, query url.Values) (map[string]*T, []string) {
	ctx, cancel := context.WithTimeout(ctx, fanOutTimeout)
	defer cancel()
	var mu sync.Mutex
	answers, missing := map[string]*T{}, []string{}
	var wg sync.WaitGroup
	for _, n := range *c.owners.nodes.Load() {
		if n.name == c.owners.self {
			continue
		}
		wg.Go(func() {
			v := new(T)
			err := c.owners.callJSON(ctx, http.MethodGet, n.url+path+"?"+query.Encode(), nil, v)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				c.log.Warn().Err(err).Str("peer", n.name).Msg("a node did not answer a fan-out")
				missing = append(missing, n.name)
				return
			}
			answers[n.name] = v
		})
	}
	wg.Wait()
	slices.Sort(missing)
	return answers, missing
}

// clusterLogs answers a log query for every node: this node's page and
// the others', merged newest first, cut to the limit.
func (s *server) clusterLogs(w http.ResponseWriter, r *http.Request, org string, q logQuery) *apiError {
	q.beforeAt, q.before = int64(q.before), 0 // a cluster's cursor is a time
	page, aerr := s.readLogs(org, q)
	if aerr != nil {
		return aerr
	}
	query := r.URL.Query()
	query.Del("before")
	query.Set("org", org)
	query.Set("before_at", strconv.FormatInt(q.beforeAt, 10))
	answers, missing := askNodes[[]nodeLogEntry](s.store.cluster, r.Context(), nodeLogsPath, query)
	full := len(page.Entries) == q.limit
	all := page.Entries
	for i := range all {
		all[i].Node = s.store.cluster.name
	}
	for node, entries := range answers {
		full = full || len(*entries) == q.limit
		for _, e := range *entries {
			e.Node, e.at = node, e.At
			all = append(all, e.logEntry)
		}
	}
	slices.SortFunc(all, func(a, b logEntry) int {
		return cmp.Or(cmp.Compare(b.at, a.at), cmp.Compare(a.Node, b.Node))
	})
	out := logPage{Entries: all[:min(len(all), q.limit)], Missing: missing}
	if (full || len(all) > q.limit) && len(out.Entries) > 0 {
		next := strconv.FormatInt(out.Entries[len(out.Entries)-1].at, 10)
		out.Next = &next
	}
	writeJSON(w, 200, out)
	return nil
}

// clusterUsage adds the other nodes' counts to this node's answer, hour by
// hour, in the order of one node's answer.
func (s *server) clusterUsage(r *http.Request, org string, local usageAnswer) usageAnswer {
	query := r.URL.Query()
	query.Set("org", org)
	answers, missing := askNodes[[]usageBucket](s.store.cluster, r.Context(), nodeUsagePath, query)
	type hourEnv struct{ hour, env string }
	at := map[hourEnv]int{} // the place of each hour's sum in out
	out := usageAnswer{Buckets: []usageBucket{}, Missing: missing}
	for _, buckets := range append([]*[]usageBucket{&local.Buckets}, slices.Collect(maps.Values(answers))...) {
		for _, b := range *buckets {
			i, ok := at[hourEnv{b.Hour, b.Env}]
			if !ok {
				i = len(out.Buckets)
				at[hourEnv{b.Hour, b.Env}] = i
				out.Buckets = append(out.Buckets, usageBucket{Hour: b.Hour, Env: b.Env})
			}
			sum := &out.Buckets[i]
			sum.OK += b.OK
			sum.Client += b.Client
			sum.Limited += b.Limited
			sum.Server += b.Server
		}
	}
	slices.SortFunc(out.Buckets, func(a, b usageBucket) int { return cmp.Or(cmp.Compare(a.Hour, b.Hour), cmp.Compare(a.Env, b.Env)) })
	return out
}
