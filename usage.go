package main

import (
	"net/http"
	"strconv"

	"github.com/julienschmidt/httprouter"
)

// usageKey names one hourly counter row. The org is its interned number,
// so counting a request hashes 16 bytes, not two strings.
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

const maxUsageHours = 90 * 24

// orgUsage answers the hours that saw traffic, oldest first, test and live apart.
func (s *server) orgUsage(w http.ResponseWriter, r *http.Request, p httprouter.Params, _ caller) *apiError {
	q := r.URL.Query()
	env := q.Get("env")
	if env != "" && env != envTest && env != envLive {
		return invalidRequest(`Parameter "env" must be "test" or "live".`)
	}
	hours := 48
	if h := q.Get("hours"); h != "" {
		n, err := strconv.Atoi(h)
		if err != nil || n < 1 || n > maxUsageHours {
			return invalidRequest(`Parameter "hours" must be between 1 and %d.`, maxUsageHours)
		}
		hours = n
	}
	if err := s.behind.Flush(); err != nil {
		return s.internal(err, "flushing usage")
	}
	from := s.now().Unix()/3600*3600 - int64(hours-1)*3600
	buckets, err := s.store.ReadUsage(p.ByName("org"), env, from)
	if err != nil {
		return s.internal(err, "reading usage")
	}
	writeJSON(w, 200, map[string][]usageBucket{"buckets": buckets})
	return nil
}
