package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/julienschmidt/httprouter"
)

const timeLayout = "2006-01-02T15:04:05.000Z07:00"

func formatTime(nanos int64) string { return time.Unix(0, nanos).UTC().Format(timeLayout) }

func optionalTime(nanos int64) *string {
	if nanos == 0 {
		return nil
	}
	t := formatTime(nanos)
	return &t
}

func validName(field, name string) *apiError {
	if strings.TrimSpace(name) == "" {
		return invalidRequest("Field %q is required.", field)
	}
	if len(name) > 200 || !utf8.ValidString(name) || strings.ContainsFunc(name, isControl) {
		return invalidRequest("Field %q must be at most 200 printable characters.", field)
	}
	return nil
}

func isControl(r rune) bool { return r < ' ' || r == 0x7f }

type orgView struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	CreatedAt string `json:"created_at"`
}

func viewOrg(o orgRecord) orgView {
	return orgView{ID: o.ID, Name: o.Name, CreatedAt: formatTime(o.CreatedAt)}
}

type nameRequest struct {
	Name string `json:"name"`
}

func (s *server) createOrg(w http.ResponseWriter, r *http.Request, _ httprouter.Params, c caller) *apiError {
	var req nameRequest
	if aerr := decodeStrict(w, r, &req, false); aerr != nil {
		return aerr
	}
	if aerr := validName("name", req.Name); aerr != nil {
		return aerr
	}
	o, err := s.newOrg(req.Name, s.newAudit(c, actionOrgCreated))
	if err != nil {
		return s.internal(err, "creating org")
	}
	writeJSON(w, 201, viewOrg(o))
	return nil
}

func (s *server) newOrg(name string, a auditEntry) (orgRecord, error) {
	o := orgRecord{ID: newID("org"), Name: name, CreatedAt: s.now().UnixNano()}
	return o, s.store.PutOrg(o, a)
}

func (s *server) listOrgs(w http.ResponseWriter, _ *http.Request, _ httprouter.Params, c caller) *apiError {
	orgs, err := s.store.Orgs()
	if err != nil {
		return s.internal(err, "listing orgs")
	}
	views := []orgView{}
	for _, o := range orgs {
		if c.root || o.ID == c.orgID {
			views = append(views, viewOrg(o))
		}
	}
	writeJSON(w, 200, map[string][]orgView{"orgs": views})
	return nil
}

func (s *server) getOrg(w http.ResponseWriter, _ *http.Request, p httprouter.Params, _ caller) *apiError {
	o, err := s.store.Org(p.ByName("org"))
	if err != nil {
		return s.internal(err, "loading org")
	}
	writeJSON(w, 200, viewOrg(o))
	return nil
}

// keyView is a key record as the API shows it: never a hash, and the key
// itself only in the create and roll answers.
type keyView struct {
	ID         string          `json:"id"`
	OrgID      string          `json:"org_id"`
	Name       string          `json:"name"`
	Env        string          `json:"env"`
	Prefix     string          `json:"prefix"`
	Scopes     []string        `json:"scopes"`
	RateLimits []rateLimit     `json:"rate_limits"`
	CreatedAt  string          `json:"created_at"`
	LastUsedAt *string         `json:"last_used_at"`
	ExpiresAt  *string         `json:"expires_at"`
	RevokedAt  *string         `json:"revoked_at"`
	Enabled    bool            `json:"enabled"`
	Meta       json.RawMessage `json:"meta"`        // null: none
	AllowedIPs []string        `json:"allowed_ips"` // []: any address
	Credits    *creditsView    `json:"credits"`     // null: no usage limit
	Key        string          `json:"key,omitempty"`
}

func (s *server) viewKey(k keyRecord) keyView {
	limits := k.RateLimits
	if limits == nil {
		limits = s.cfg.rateLimits
	}
	var lastUsed int64
	e := s.index.get(k.Prefix, k.ID)
	if e != nil {
		lastUsed = e.lastUsed.Load()
	}
	var credits *creditsView
	if k.Credits != nil {
		if e != nil {
			credits = s.credits.view(e.id, s.now().UnixNano())
		}
		if credits == nil {
			credits = &creditsView{Remaining: k.Credits.Remaining, Refill: k.Credits.Refill}
		}
	}
	return keyView{ID: k.ID, OrgID: k.OrgID, Name: k.Name, Env: k.Env, Prefix: k.Prefix,
		Scopes: nonNil(k.Scopes), RateLimits: limits, CreatedAt: formatTime(k.CreatedAt),
		LastUsedAt: optionalTime(lastUsed), ExpiresAt: optionalTime(k.ExpiresAt),
		RevokedAt: optionalTime(k.RevokedAt), Enabled: !k.Disabled, Meta: k.Meta,
		AllowedIPs: nonNil(k.AllowedIPs), Credits: credits}
}

type createKeyRequest struct {
	Name       string          `json:"name"`
	Env        string          `json:"env"`
	Scopes     []string        `json:"scopes"`
	RateLimits []rateLimit     `json:"rate_limits"`
	ExpiresAt  *string         `json:"expires_at"`
	Meta       json.RawMessage `json:"meta"`
	Enabled    *bool           `json:"enabled"`
	AllowedIPs []string        `json:"allowed_ips"`
	Credits    *creditsRequest `json:"credits"`
}

func (s *server) createKey(w http.ResponseWriter, r *http.Request, p httprouter.Params, c caller) *apiError {
	var req createKeyRequest
	if aerr := decodeStrict(w, r, &req, false); aerr != nil {
		return aerr
	}
	rec, aerr := s.validateNewKey(req, p.ByName("org"))
	if aerr != nil {
		return aerr
	}
	key, err := s.issueKey(&rec, s.newAudit(c, actionKeyCreated))
	if err != nil {
		return s.internal(err, "creating key")
	}
	view := s.viewKey(rec)
	view.Key = key
	writeJSON(w, 201, view)
	return nil
}

func (s *server) validateNewKey(req createKeyRequest, orgID string) (keyRecord, *apiError) {
	rec := keyRecord{OrgID: orgID, Name: req.Name, Env: req.Env, Scopes: []string{}}
	if aerr := validName("name", req.Name); aerr != nil {
		return rec, aerr
	}
	if req.Env != envTest && req.Env != envLive {
		return rec, invalidRequest(`Field "env" must be "test" or "live".`)
	}
	var aerr *apiError
	if req.Scopes != nil {
		if rec.Scopes, aerr = validScopes(req.Scopes); aerr != nil {
			return rec, aerr
		}
	}
	if req.RateLimits != nil {
		if rec.RateLimits, aerr = validLimits(req.RateLimits); aerr != nil {
			return rec, aerr
		}
	}
	now := s.now()
	if req.ExpiresAt != nil {
		if rec.ExpiresAt, aerr = validExpiry(*req.ExpiresAt, now); aerr != nil {
			return rec, aerr
		}
	}
	if rec.Meta, aerr = validMeta(req.Meta); aerr != nil {
		return rec, aerr
	}
	rec.Disabled = req.Enabled != nil && !*req.Enabled
	if rec.AllowedIPs, aerr = canonicalCIDRs(req.AllowedIPs); aerr != nil {
		return rec, aerr
	}
	if req.Credits != nil {
		if rec.Credits, aerr = validCredits(req.Credits, now); aerr != nil {
			return rec, aerr
		}
	}
	return rec, nil
}

func validScopes(scopes []string) ([]string, *apiError) {
	if len(scopes) > 50 {
		return nil, invalidRequest(`Field "scopes" may hold at most 50 scopes.`)
	}
	for _, sc := range scopes {
		if !validScope(sc) {
			return nil, invalidRequest(`Field "scopes" holds %q, which is not a scope like sms:send.`, sc)
		}
	}
	return nonNil(scopes), nil
}

func validLimits(given []rateLimit) ([]rateLimit, *apiError) {
	limits, err := normalizeLimits(given)
	if err != nil || len(limits) == 0 {
		return nil, invalidRequest(`Field "rate_limits": %s.`, problem(err, "give at least one window"))
	}
	return limits, nil
}

func validExpiry(given string, now time.Time) (int64, *apiError) {
	t, err := time.Parse(time.RFC3339Nano, given)
	if err != nil {
		return 0, invalidRequest(`Field "expires_at" must be an RFC 3339 time like 2030-01-02T15:04:05Z.`)
	}
	if !time.Unix(0, t.UnixNano()).Equal(t) { // past 2262 the nanoseconds wrap around
		return 0, invalidRequest(`Field "expires_at" must be before 2262-04-11.`)
	}
	if !t.After(now) {
		return 0, invalidRequest(`Field "expires_at" must be in the future.`)
	}
	return t.UnixNano(), nil
}

// maxMetaBytes is the most a key's meta may hold, as compact JSON.
const maxMetaBytes = 4 << 10

// validMeta checks a key's "meta": a JSON object of at most 4 KiB once
// compacted (null or absent: none). It is kept as encoding/json writes it
// (compact, with <, > and & escaped), so that the hand-written answers
// (verify, whoami) and the admin API's give the same bytes.
func validMeta(raw json.RawMessage) (json.RawMessage, *apiError) {
	trimmed := bytes.TrimLeft(raw, " \t\r\n")
	if len(trimmed) == 0 || bytes.HasPrefix(trimmed, []byte("null")) {
		return nil, nil
	}
	if trimmed[0] != '{' {
		return nil, invalidRequest(`Field "meta" must be a JSON object.`)
	}
	if !utf8.Valid(raw) {
		return nil, invalidRequest(`Field "meta" must be valid UTF-8.`)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		return nil, invalidRequest(`Field "meta" must be a JSON object.`)
	}
	if compact.Len() > maxMetaBytes {
		return nil, invalidRequest(`Field "meta" must be at most %d bytes of JSON; it is %d.`, maxMetaBytes, compact.Len())
	}
	out, err := json.Marshal(json.RawMessage(compact.Bytes()))
	if err != nil {
		return nil, invalidRequest(`Field "meta" must be a JSON object.`)
	}
	return out, nil
}

func problem(err error, fallback string) string {
	if err == nil {
		return fallback
	}
	return err.Error()
}

// issueKey gives rec an id, a fresh key and its hash, commits it with its
// audit entry a, and only then makes it usable. It returns the plaintext
// key, which is kept nowhere.
func (s *server) issueKey(rec *keyRecord, a auditEntry) (string, error) {
	key, lookup := s.format.newKey(rec.Env)
	rec.ID = newID("key")
	rec.Prefix = lookup
	rec.Hash = hashKey(key)
	rec.CreatedAt = s.now().UnixNano()
	if err := s.store.PutKey(rec, a); err != nil {
		return "", err
	}
	s.addKey(rec)
	return key, nil
}

func (s *server) listKeys(w http.ResponseWriter, r *http.Request, p httprouter.Params, _ caller) *apiError {
	q := r.URL.Query()
	env := q.Get("env")
	if env != "" && env != envTest && env != envLive {
		return invalidRequest(`Parameter "env" must be "test" or "live".`)
	}
	includeRevoked, err := parseBool(q.Get("include_revoked"))
	if err != nil {
		return invalidRequest(`Parameter "include_revoked" must be true or false.`)
	}
	keys, err := s.store.OrgKeys(p.ByName("org"))
	if err != nil {
		return s.internal(err, "listing keys")
	}
	views := []keyView{}
	for _, k := range keys {
		if (env == "" || k.Env == env) && (includeRevoked || k.RevokedAt == 0) {
			views = append(views, s.viewKey(k))
		}
	}
	writeJSON(w, 200, map[string][]keyView{"keys": views})
	return nil
}

func parseBool(s string) (bool, error) {
	if s == "" {
		return false, nil
	}
	return strconv.ParseBool(s)
}

func (s *server) loadKey(p httprouter.Params) (keyRecord, *apiError) {
	k, err := s.store.Key(p.ByName("org"), p.ByName("key"))
	if errors.Is(err, errNotFound) {
		return k, notFound("Key")
	}
	if err != nil {
		return k, s.internal(err, "loading key")
	}
	return k, nil
}

func (s *server) getKey(w http.ResponseWriter, _ *http.Request, p httprouter.Params, _ caller) *apiError {
	k, aerr := s.loadKey(p)
	if aerr != nil {
		return aerr
	}
	writeJSON(w, 200, s.viewKey(k))
	return nil
}

// patchKeyRequest is a PATCH body: each member present is changed, the
// others are left as they are. Pointers and lists tell absent from given;
// patchKey tells null from absent with the body's member names.
type patchKeyRequest struct {
	Name       *string         `json:"name"`
	Scopes     []string        `json:"scopes"`
	RateLimits []rateLimit     `json:"rate_limits"`
	ExpiresAt  *string         `json:"expires_at"`
	Meta       json.RawMessage `json:"meta"`
	Enabled    *bool           `json:"enabled"`
	AllowedIPs []string        `json:"allowed_ips"`
	Credits    *creditsRequest `json:"credits"`
}

// patchKey edits a key in place: any of name, scopes, rate_limits,
// expires_at, meta, enabled, allowed_ips and credits. null clears what
// can be cleared (expires_at, meta, allowed_ips, credits; rate_limits back
// to the server default; scopes to none). The whole body is checked
// before anything is written; the answer comes after the commit, and the
// next request sees the change. A revoked key cannot be edited.
func (s *server) patchKey(w http.ResponseWriter, r *http.Request, p httprouter.Params, c caller) *apiError {
	buf, aerr := readAdminBody(w, r)
	if aerr != nil {
		return aerr
	}
	var req patchKeyRequest
	if aerr := decodeStrictBytes(buf, &req, false); aerr != nil {
		return aerr
	}
	var given map[string]json.RawMessage
	if json.Unmarshal(buf, &given) != nil || given == nil {
		return invalidRequest("Request body must be a JSON object.")
	}
	edit, aerr := s.keyEdit(&req, given)
	if aerr != nil {
		return aerr
	}
	audit := s.newAudit(c, editAction(req.Enabled))
	k, _, err := s.store.UpdateKey(p.ByName("org"), p.ByName("key"), audit, func(k *keyRecord) ([]*keyRecord, error) {
		if k.RevokedAt != 0 {
			return nil, invalidRequest("Key %s is revoked and cannot be edited.", k.ID)
		}
		edit(k)
		return nil, nil
	})
	if aerr := s.storeError(err, "Key", "editing key"); aerr != nil {
		return aerr
	}
	s.updateKey(&k)
	writeJSON(w, 200, s.viewKey(k))
	return nil
}

// editAction is the audit action of an edit: disabling and enabling a key
// are named as such, whatever else the edit changes.
func editAction(enabled *bool) string {
	switch {
	case enabled == nil:
		return actionKeyUpdated
	case *enabled:
		return actionKeyEnabled
	}
	return actionKeyDisabled
}

// keyEdit checks every member of a PATCH body and gives the edit it
// makes. The edit may run more than once (store.UpdateKey): what it sets
// is made here, once.
func (s *server) keyEdit(req *patchKeyRequest, given map[string]json.RawMessage) (func(*keyRecord), *apiError) {
	isNull := func(name string) bool { return string(bytes.TrimSpace(given[name])) == "null" }
	var edits []func(*keyRecord)
	now := s.now()
	if _, ok := given["name"]; ok {
		if req.Name == nil {
			return nil, invalidRequest(`Field "name" must be a string.`)
		}
		if aerr := validName("name", *req.Name); aerr != nil {
			return nil, aerr
		}
		name := *req.Name
		edits = append(edits, func(k *keyRecord) { k.Name = name })
	}
	if _, ok := given["scopes"]; ok {
		scopes, aerr := validScopes(req.Scopes)
		if aerr != nil {
			return nil, aerr
		}
		edits = append(edits, func(k *keyRecord) { k.Scopes = scopes })
	}
	if _, ok := given["rate_limits"]; ok {
		var limits []rateLimit // null: the server default
		if !isNull("rate_limits") {
			var aerr *apiError
			if limits, aerr = validLimits(req.RateLimits); aerr != nil {
				return nil, aerr
			}
		}
		edits = append(edits, func(k *keyRecord) { k.RateLimits = limits })
	}
	if _, ok := given["expires_at"]; ok {
		var at int64 // null: never
		if req.ExpiresAt != nil {
			var aerr *apiError
			if at, aerr = validExpiry(*req.ExpiresAt, now); aerr != nil {
				return nil, aerr
			}
		}
		edits = append(edits, func(k *keyRecord) { k.ExpiresAt = at })
	}
	if _, ok := given["meta"]; ok {
		meta, aerr := validMeta(req.Meta)
		if aerr != nil {
			return nil, aerr
		}
		edits = append(edits, func(k *keyRecord) { k.Meta = meta })
	}
	if _, ok := given["enabled"]; ok {
		if req.Enabled == nil {
			return nil, invalidRequest(`Field "enabled" must be true or false.`)
		}
		disabled := !*req.Enabled
		edits = append(edits, func(k *keyRecord) { k.Disabled = disabled })
	}
	if _, ok := given["allowed_ips"]; ok {
		allowed, aerr := canonicalCIDRs(req.AllowedIPs)
		if aerr != nil {
			return nil, aerr
		}
		edits = append(edits, func(k *keyRecord) { k.AllowedIPs = allowed })
	}
	if _, ok := given["credits"]; ok {
		var credits *creditSetting // null: no usage limit
		if req.Credits != nil {
			var aerr *apiError
			if credits, aerr = validCredits(req.Credits, now); aerr != nil {
				return nil, aerr
			}
		}
		edits = append(edits, func(k *keyRecord) { k.Credits = credits })
	}
	return func(k *keyRecord) {
		for _, edit := range edits {
			edit(k)
		}
	}, nil
}

// revokeKey is idempotent: revoking a revoked key answers its record.
func (s *server) revokeKey(w http.ResponseWriter, r *http.Request, p httprouter.Params, c caller) *apiError {
	if aerr := decodeStrict(w, r, &struct{}{}, true); aerr != nil {
		return aerr
	}
	k, aerr := s.loadKey(p)
	if aerr != nil || k.RevokedAt != 0 {
		if aerr == nil {
			writeJSON(w, 200, s.viewKey(k))
		}
		return aerr
	}
	now := s.now().UnixNano()
	k, _, err := s.store.UpdateKey(k.OrgID, k.ID, s.newAudit(c, actionKeyRevoked), func(k *keyRecord) ([]*keyRecord, error) {
		if k.RevokedAt == 0 {
			k.RevokedAt = now
		}
		return nil, nil
	})
	if aerr := s.storeError(err, "Key", "revoking key"); aerr != nil {
		return aerr
	}
	s.updateKey(&k)
	writeJSON(w, 200, s.viewKey(k))
	return nil
}

// storeError is the answer for an error from a store verb: an apiError
// from the verb's own checks as it is, a missing record (a record) as 404.
func (s *server) storeError(err error, record, what string) *apiError {
	var aerr *apiError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &aerr):
		return aerr
	case errors.Is(err, errNotFound):
		return notFound(record)
	}
	return s.internal(err, what)
}

type rollRequest struct {
	ExpiresIn string `json:"expires_in"`
}

const maxGrace = 366 * 24 * time.Hour

// decodeGrace reads a roll's body: the grace period of what it replaces.
func decodeGrace(w http.ResponseWriter, r *http.Request) (time.Duration, *apiError) {
	var req rollRequest
	if aerr := decodeStrict(w, r, &req, true); aerr != nil {
		return 0, aerr
	}
	if req.ExpiresIn == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(req.ExpiresIn)
	if err != nil || d < 0 || d > maxGrace {
		return 0, invalidRequest(`Field "expires_in" must be a duration like 24h, between 0s and 8784h.`)
	}
	return d, nil
}

// rollKey issues a new key like the old one, expiry included, so that a
// roll never extends a temporary key's life; the old one expires after the
// grace period, or sooner if it was due to. Both records commit in one
// read-modify-write of the old one.
func (s *server) rollKey(w http.ResponseWriter, r *http.Request, p httprouter.Params, c caller) *apiError {
	grace, aerr := decodeGrace(w, r)
	if aerr != nil {
		return aerr
	}
	now := s.now()
	var key string
	old, added, err := s.store.UpdateKey(p.ByName("org"), p.ByName("key"), s.newAudit(c, actionKeyRolled), func(old *keyRecord) ([]*keyRecord, error) {
		var fresh *keyRecord
		var aerr *apiError
		key, fresh, aerr = s.rolled(old, grace, now)
		if aerr != nil {
			return nil, aerr
		}
		return []*keyRecord{fresh}, nil
	})
	if aerr := s.storeError(err, "Key", "rolling key"); aerr != nil {
		return aerr
	}
	s.addKey(added[0])
	s.updateKey(&old)
	view := s.viewKey(*added[0])
	view.Key = key
	writeJSON(w, 201, view)
	return nil
}

// rolled makes the new key of a roll of old, and sets old's new expiry.
func (s *server) rolled(old *keyRecord, grace time.Duration, now time.Time) (string, *keyRecord, *apiError) {
	if old.RevokedAt != 0 {
		return "", nil, invalidRequest("Key %s is revoked and cannot be rolled.", old.ID)
	}
	expiresAt := old.ExpiresAt
	if expiresAt != 0 && now.UnixNano() >= expiresAt {
		return "", nil, invalidRequest("Key %s has expired and cannot be rolled.", old.ID)
	}
	if end := now.Add(grace).UnixNano(); expiresAt == 0 || end < expiresAt {
		old.ExpiresAt = end
	}
	key, lookup := s.format.newKey(old.Env)
	fresh := &keyRecord{ID: newID("key"), OrgID: old.OrgID, Name: old.Name, Env: old.Env,
		Prefix: lookup, Hash: hashKey(key), Scopes: old.Scopes, RateLimits: old.RateLimits,
		CreatedAt: now.UnixNano(), ExpiresAt: expiresAt,
		Disabled: old.Disabled, Meta: old.Meta, AllowedIPs: old.AllowedIPs}
	if old.Credits != nil {
		// The new key starts from what the old one has left now, on the
		// same schedule; during the grace period each spends its own.
		c := *old.Credits
		if e := s.index.get(old.Prefix, old.ID); e != nil {
			if v := s.credits.view(e.id, now.UnixNano()); v != nil {
				c.Remaining = v.Remaining
			}
		}
		c.Gen, c.SetAt = rand.Uint64()|1, now.UnixNano()
		fresh.Credits = &c
	}
	return key, fresh, nil
}

// backup answers a consistent copy of the db, once its audit entry has
// committed: the copy holds it. The copy is first written to
// an unlinked temporary file, and only then sent: the bbolt read transaction
// that makes it consistent lasts as long as a local disk copy, not as long
// as the client takes to download, and while it is open, a commit that must
// grow the file's memory map waits for it.
func (s *server) backup(w http.ResponseWriter, _ *http.Request, _ httprouter.Params, c caller) *apiError {
	if err := s.store.Record(s.newAudit(c, actionBackupTaken)); err != nil {
		return s.internal(err, "recording the backup")
	}
	f, n, err := s.store.snapshot()
	if err != nil {
		return s.internal(err, "writing backup")
	}
	defer f.Close()
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", `attachment; filename="keyhole-backup.db"`)
	h.Set("Content-Length", strconv.FormatInt(n, 10))
	if _, err := io.Copy(w, f); err != nil {
		s.log.Warn().Err(err).Msg("sending backup")
	}
	return nil
}

func (s *server) internal(err error, what string) *apiError {
	s.log.Error().Err(err).Msg(what)
	return errInternal
}
