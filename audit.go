package main

import (
	"context"
	"net/http"
	"net/netip"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"
)

// The audit log: who changed what, when and from where. Every admin write
// records one entry, in the transaction of the change itself (the store's
// verbs take it: db.go), so that no change exists without its entry and
// no entry without its change. Nothing in the API edits or deletes an
// entry; entries older than --audit-retention are pruned in the
// background. An entry names fields, never their values: no key, token,
// secret or hash is ever in one.

// The actions an entry records.
const (
	actionOrgCreated    = "org.created"
	actionKeyCreated    = "key.created"
	actionKeyUpdated    = "key.updated"  // an edit: store.UpdateKey(org, key, s.newAudit(c, actionKeyUpdated), change) names the changed fields
	actionKeyDisabled   = "key.disabled" // an edit with "enabled": false; its fields name all it changed
	actionKeyEnabled    = "key.enabled"  // an edit with "enabled": true
	actionKeyRevoked    = "key.revoked"
	actionKeyRolled     = "key.rolled"
	actionTokenCreated  = "admin_token.created"
	actionTokenRevoked  = "admin_token.revoked"
	actionTokenRolled   = "admin_token.rolled"
	actionRootCreated   = "root_token.created" // on the first start
	actionRootSet       = "root_token.set"     // by a new --admin-token value
	actionRootReset     = "root_token.reset"   // by keyhole admin-token reset
	actionRootRolled    = "root_token.rolled"
	actionBackupTaken   = "backup.taken"
	defaultAuditKeep    = 365 * 24 * time.Hour
	auditPruneEvery     = time.Hour
	auditPruneBatch     = 10_000
	actorRoot           = "root"
	actorSystem         = "system" // keyhole itself, or one of its commands
	auditFilterMaxBytes = 100
)

var auditActions = []string{actionOrgCreated, actionKeyCreated, actionKeyUpdated, actionKeyDisabled,
	actionKeyEnabled, actionKeyRevoked,
	actionKeyRolled, actionTokenCreated, actionTokenRevoked, actionTokenRolled, actionRootCreated,
	actionRootSet, actionRootReset, actionRootRolled, actionBackupTaken}

// auditEntry is one entry as stored (codec.go: a JSON record).
type auditEntry struct {
	At        int64    `json:"at"`                   // Unix nanoseconds
	Actor     string   `json:"actor"`                // actorRoot, actorSystem or an org admin token's id
	ActorName string   `json:"actor_name,omitempty"` // the token's name then, or what the system did
	Action    string   `json:"action"`
	OrgID     string   `json:"org_id,omitempty"`
	TargetIDs []string `json:"target_ids,omitempty"` // the record changed, then those it made
	Fields    []string `json:"fields,omitempty"`     // names of the fields set or changed
	Client    string   `json:"client,omitempty"`     // the client's address, no port
	RequestID string   `json:"request_id,omitempty"`
}

// newAudit is the entry of an admin call by c, for the store to complete
// with what the change touched (auditEntry.about).
func (s *server) newAudit(c caller, action string) auditEntry {
	a := auditEntry{At: s.now().UnixNano(), Actor: actorRoot, Action: action, Client: c.client, RequestID: c.reqID}
	if !c.root {
		a.Actor, a.ActorName = c.tokenID, c.tokenName
	}
	return a
}

// systemAudit is the entry of a change keyhole makes itself: on start
// (--admin-token, the first root token, --demo) or from a command.
func systemAudit(action, what string, now time.Time) auditEntry {
	return auditEntry{At: now.UnixNano(), Actor: actorSystem, ActorName: what, Action: action}
}

// about completes a with what the store knows of the change.
func (a auditEntry) about(orgID string, fields []string, targets ...string) auditEntry {
	a.OrgID, a.Fields, a.TargetIDs = orgID, fields, targets
	return a
}

// unnamedFields are never named as changed: a record's identity, its
// hash, and what is set once when it is made.
var unnamedFields = map[string]bool{"id": true, "org_id": true, "hash": true, "row": true,
	"prefix": true, "created_at": true}

// changedFields names the fields of two records of one type whose values
// differ, by their API names (the audit tag, else the JSON name): what an
// entry says a change changed. An empty list is the same as none.
func changedFields[T any](before, after *T) []string {
	b, a := reflect.ValueOf(before).Elem(), reflect.ValueOf(after).Elem()
	names := []string{}
	for i := range b.NumField() {
		f := b.Type().Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if api := f.Tag.Get("audit"); api != "" {
			name = api // the record stores it otherwise than the API names it
		}
		if !f.IsExported() || name == "" || name == "-" || unnamedFields[name] {
			continue
		}
		if !sameValue(b.Field(i), a.Field(i)) {
			names = append(names, name)
		}
	}
	return names
}

func sameValue(x, y reflect.Value) bool {
	empty := func(v reflect.Value) bool {
		if v.Kind() == reflect.Slice || v.Kind() == reflect.Map {
			return v.Len() == 0
		}
		return v.IsZero()
	}
	return empty(x) && empty(y) || reflect.DeepEqual(x.Interface(), y.Interface())
}

// clientIP is the address an entry records: the peer's, without the port.
// Behind a proxy it is the proxy's; no forwarded header is believed.
func clientIP(r *http.Request) string {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return ap.Addr().Unmap().String()
}

// auditView is an entry as the API shows it.
type auditView struct {
	ID        string   `json:"id"`
	Time      string   `json:"time"`
	Actor     string   `json:"actor"`
	ActorName *string  `json:"actor_name"`
	Action    string   `json:"action"`
	OrgID     *string  `json:"org_id"`
	TargetIDs []string `json:"target_ids"`
	Fields    []string `json:"fields"`
	Client    *string  `json:"client"`
	RequestID *string  `json:"request_id"`
}

func viewAudit(seq uint64, a *auditEntry) auditView {
	return auditView{ID: strconv.FormatUint(seq, 10), Time: formatTime(a.At), Actor: a.Actor,
		ActorName: optionalString(a.ActorName), Action: a.Action, OrgID: optionalString(a.OrgID),
		TargetIDs: nonNil(a.TargetIDs), Fields: nonNil(a.Fields), Client: optionalString(a.Client),
		RequestID: optionalString(a.RequestID)}
}

func optionalString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

type auditPage struct {
	Entries []auditView `json:"entries"`
	Next    *string     `json:"next"`
}

// auditQuery is the filters and cursor of an audit request.
type auditQuery struct {
	org    string // "": every entry
	limit  int
	before uint64
	actor  string
	action string
	target string
}

func (q *auditQuery) matches(a *auditEntry) bool {
	return (q.actor == "" || a.Actor == q.actor) && (q.action == "" || a.Action == q.action) &&
		(q.target == "" || slices.Contains(a.TargetIDs, q.target))
}

var recordIDPattern = regexp.MustCompile(`^[a-z]+_[0-9a-f]{16}$`)

func parseAuditQuery(r *http.Request, org string) (auditQuery, *apiError) {
	v := r.URL.Query()
	q := auditQuery{org: org, actor: v.Get("actor"), action: v.Get("action"), target: v.Get("target")}
	var aerr *apiError
	if q.limit, q.before, aerr = parsePage(v); aerr != nil {
		return q, aerr
	}
	switch {
	case q.actor != "" && q.actor != actorRoot && q.actor != actorSystem && !recordIDPattern.MatchString(q.actor):
		return q, invalidRequest(`Parameter "actor" must be root, system or an admin token id like tok_0123456789abcdef.`)
	case q.action != "" && !slices.Contains(auditActions, q.action):
		return q, invalidRequest(`Parameter "action" must be one of %s.`, strings.Join(auditActions, ", "))
	case q.target != "" && !recordIDPattern.MatchString(q.target):
		return q, invalidRequest(`Parameter "target" must be an id like key_0123456789abcdef.`)
	}
	return q, nil
}

// orgAudit is an organization's entries, for its admins and root. An org
// admin sees what root did to its organization, but not from where.
func (s *server) orgAudit(w http.ResponseWriter, r *http.Request, p httprouter.Params, c caller) *apiError {
	q, aerr := parseAuditQuery(r, p.ByName("org"))
	if aerr != nil {
		return aerr
	}
	page, err := s.store.ReadAudit(q)
	if err != nil {
		return s.internal(err, "reading the audit log")
	}
	if !c.root {
		for i := range page.Entries {
			if e := &page.Entries[i]; e.Actor == actorRoot || e.Actor == actorSystem {
				e.Client = nil
			}
		}
	}
	writeJSON(w, 200, page)
	return nil
}

// allAudit is every entry (root).
func (s *server) allAudit(w http.ResponseWriter, r *http.Request, _ httprouter.Params, _ caller) *apiError {
	q, aerr := parseAuditQuery(r, "")
	if aerr != nil {
		return aerr
	}
	page, err := s.store.ReadAudit(q)
	if err != nil {
		return s.internal(err, "reading the audit log")
	}
	writeJSON(w, 200, page)
	return nil
}

// startAuditPruner runs pruneAuditEvery until stop is called, which
// waits for it to end.
func (s *server) startAuditPruner() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.pruneAuditEvery(ctx, auditPruneEvery)
	}()
	return func() { cancel(); <-done }
}

// pruneAuditEvery prunes the audit log now and every interval until ctx
// ends.
func (s *server) pruneAuditEvery(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := s.pruneAudit(); err != nil {
			s.log.Error().Err(err).Msg("pruning the audit log")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pruneAudit deletes the entries older than the retention, a batch to a
// transaction, so that admin writes are never held up for long.
func (s *server) pruneAudit() error {
	before := s.now().Add(-s.cfg.auditRetention).UnixNano()
	if c := s.store.cluster; c != nil {
		if err := c.pruneAudit(before); err != nil {
			return err
		}
	}
	for {
		n, err := s.store.PruneAudit(before, auditPruneBatch)
		if err != nil || n < auditPruneBatch {
			return err
		}
	}
}
