package main

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"

	"github.com/julienschmidt/httprouter"
)

// usageKey names one organization's hourly counter row, which a flush adds
// up from its keys' (writeBehind.usage). The org is its interned number.
type usageKey struct {
	org  uint32 // in orgIDs
	live bool
	hour int64 // Unix seconds at the start of the hour
}

// usageCounts are the status classes of SPEC 7: 2xx, 4xx, 429, 5xx.
type usageCounts [4]uint64

func statusClass(status int) int {
	switch {
	case status == 429:
		return 2
	case status >= 500:
		return 3
	case status >= 400:
		return 1
	}
	return 0 // 1xx and 3xx count with 2xx: the request was served
}

type usageBucket struct {
	Hour    string `json:"hour"`
	Env     string `json:"env"`
	OK      uint64 `json:"2xx"`
	Client  uint64 `json:"4xx"`
	Limited uint64 `json:"429"`
	Server  uint64 `json:"5xx"`
}

const (
	maxUsageHours    = 90 * 24
	maxKeyUsageHours = 7 * 24 // keyUsageRetention
)

// orgUsage answers the hours that saw traffic, oldest first, test and live
// apart; with key_id, one key's.
func (s *server) orgUsage(w http.ResponseWriter, r *http.Request, p httprouter.Params, _ caller) *apiError {
	buckets, aerr := s.readUsage(p.ByName("org"), r.URL.Query())
	if aerr != nil {
		return aerr
	}
	answer := usageAnswer{Buckets: buckets}
	if s.store.cluster != nil {
		answer = s.clusterUsage(r, p.ByName("org"), answer)
	}
	writeJSON(w, 200, answer)
	return nil
}

// usageAnswer is a usage query's answer.
type usageAnswer struct {
	Buckets []usageBucket `json:"buckets"`
	// Missing names the cluster nodes that did not answer (fanout.go).
	Missing []string `json:"missing_nodes,omitempty"`
}

// readUsage is this node's usage of org as the query q asks.
func (s *server) readUsage(org string, q url.Values) ([]usageBucket, *apiError) {
	env, keyID := q.Get("env"), q.Get("key_id")
	if env != "" && env != envTest && env != envLive {
		return nil, invalidRequest(`Parameter "env" must be "test" or "live".`)
	}
	most := maxUsageHours
	if keyID != "" {
		most = maxKeyUsageHours
	}
	hours := 48
	if h := q.Get("hours"); h != "" {
		n, err := strconv.Atoi(h)
		if err != nil || n < 1 || n > most {
			return nil, invalidRequest(`Parameter "hours" must be between 1 and %d.`, most)
		}
		hours = n
	}
	if keyID != "" {
		if _, ok := parseKeyID(keyID); !ok {
			return nil, invalidRequest(`Parameter "key_id" must be a key id like key_0123456789abcdef.`)
		}
	}
	if err := s.behind.Flush(); err != nil {
		return nil, s.internal(err, "flushing usage")
	}
	to := s.now().Unix() / 3600 * 3600
	from := to - int64(hours-1)*3600
	if keyID != "" {
		return s.keyUsage(org, keyID, env, from, to)
	}
	buckets, err := s.store.ReadUsage(org, env, from)
	if err != nil {
		return nil, s.internal(err, "reading usage")
	}
	return buckets, nil
}

// keyUsage is one key's hours, from its own rows; a key of another
// organization is not found.
func (s *server) keyUsage(orgID, keyID, env string, from, to int64) ([]usageBucket, *apiError) {
	k, err := s.store.Key(orgID, keyID)
	if errors.Is(err, errNotFound) {
		return nil, notFound("Key")
	}
	if err != nil {
		return nil, s.internal(err, "loading key")
	}
	buckets := []usageBucket{}
	if env == "" || env == k.Env {
		if buckets, err = s.store.ReadKeyUsage(orgID, keyID, k.Env, from, to); err != nil {
			return nil, s.internal(err, "reading usage")
		}
	}
	return buckets, nil
}
