package main

import (
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"slices"
)

// Handing off: when the live nodes change (a node joins, or stops and says
// so), a key can get another owner. The node that owned it sends the new
// owner its windows' state, and the new owner keeps the fewer tokens of
// its own and the handed one, so that a limit holds through a rolling
// restart. A node that stops hands off all it owned before it leaves. A
// node that dies cannot: its keys start their windows from the new
// owner's own state (README: Cluster, the bounds).

const (
	nodeHandoffPath = nodeAPIPath + "handoff"
	maxHandoff      = 1000 // keys in one handoff request
)

// handoffItem is one key's windows, as its old owner held them.
type handoffItem struct {
	Key   string      `json:"key"`
	State bucketState `json:"state"`
}

// handOff sends the window state of every key this node counted under
// from and another node owns under to, to that node. A failure is logged:
// the key then starts from the new owner's state.
func (s *server) handOff(from, to []*ringNode) {
	o := s.store.cluster.owners
	moved := s.limiter.statesOf(func(id [8]byte) bool {
		was, now := ownerIn(from, id), ownerIn(to, id)
		return (was == nil || was.name == o.self) && now != nil && now.name != o.self
	})
	batches := map[*ringNode][]handoffItem{}
	for id, st := range moved {
		n := ownerIn(to, id)
		batches[n] = append(batches[n], handoffItem{Key: string(appendKeyID(nil, id)), State: st})
	}
	for n, items := range batches {
		for chunk := range slices.Chunk(items, maxHandoff) {
			ctx, cancel := context.WithTimeout(context.Background(), fanOutTimeout)
			err := o.callJSON(ctx, http.MethodPost, n.url+nodeHandoffPath, chunk, nil)
			cancel()
			if err != nil {
				s.log.Warn().Err(err).Str("peer", n.name).Int("keys", len(chunk)).Msg("handing keys' windows to their new owner")
			}
		}
	}
}

// serveNodeHandoff takes keys' windows from their old owner.
func (s *server) serveNodeHandoff(w http.ResponseWriter, r *http.Request) {
	var items []handoffItem
	dec := json.NewDecoder(io.LimitReader(r.Body, maxNodeAnswer))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&items); err != nil || len(items) > maxHandoff {
		http.Error(w, "bad handoff", http.StatusBadRequest)
		return
	}
	now := s.now().UnixNano()
	for _, it := range items {
		id, ok := parseKeyID(it.Key)
		set, err := s.store.cluster.owners.set(it.State.Signature)
		if ok && err == nil && len(it.State.Tokens) == len(set.limits) {
			s.limiter.merge(id, it.State, set, now)
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// statesOf copies the state of the keys pick picks. The limiter's lock,
// which every request takes, is held only to copy the ids.
func (l *limiter) statesOf(pick func(id [8]byte) bool) map[[8]byte]bucketState {
	l.mu.Lock()
	ids := slices.Collect(maps.Keys(l.keys))
	l.mu.Unlock()
	ids = slices.DeleteFunc(ids, func(id [8]byte) bool { return !pick(id) })
	out := make(map[[8]byte]bucketState, len(ids))
	for _, id := range ids {
		kb := l.buckets(id)
		kb.mu.Lock()
		if kb.state.Signature != "" {
			st := kb.state
			st.Tokens = slices.Clone(st.Tokens)
			out[id] = st
		}
		kb.mu.Unlock()
	}
	return out
}

// merge takes a key's windows handed over by its old owner: each window
// keeps the fewer tokens of the two, both brought up to now.
func (l *limiter) merge(id [8]byte, theirs bucketState, set *limitSet, now int64) {
	theirs.Tokens = slices.Clone(theirs.Tokens)
	refill(&theirs, set, now)
	kb := l.buckets(id)
	kb.mu.Lock()
	defer kb.mu.Unlock()
	if kb.state.Signature != set.sig || len(kb.state.Tokens) != len(set.limits) {
		kb.state = theirs
	} else {
		refill(&kb.state, set, now)
		for i := range kb.state.Tokens {
			kb.state.Tokens[i] = min(kb.state.Tokens[i], theirs.Tokens[i])
		}
	}
	if !kb.dirty {
		kb.dirty = true
		l.markDirty(id)
	}
}
