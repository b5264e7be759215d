package main

import (
	"net/http"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"
)

// The lifecycle of admin tokens: org admin tokens are issued (root only),
// listed, revoked and rolled; the root token is rolled. Like a key, a
// token is shown once, in the answer that made it, and only its SHA-256 is
// kept. Each change commits with its audit entry, and only then does the
// in-memory table (adminTokens) change: a revoked or rolled-away token is
// refused from the next request on.

const orgTokenKind = "_orgadmin_"

// tokenView is an org admin token as the API shows it: never its hash, and
// the token itself only in the answer that issued it.
type tokenView struct {
	ID         string  `json:"id"`
	OrgID      string  `json:"org_id"`
	Name       string  `json:"name"`
	Prefix     *string `json:"prefix"` // null for a token issued before prefixes were kept, until its next use
	CreatedAt  string  `json:"created_at"`
	LastUsedAt *string `json:"last_used_at"`
	ExpiresAt  *string `json:"expires_at"`
	RevokedAt  *string `json:"revoked_at"`
	Token      string  `json:"token,omitempty"`
}

func (s *server) viewToken(t tokenRecord) tokenView {
	use := s.admins.useOf(t.ID)
	prefix := t.Prefix
	if prefix == "" {
		prefix = use.prefix
	}
	return tokenView{ID: t.ID, OrgID: t.OrgID, Name: t.Name, Prefix: optionalString(prefix),
		CreatedAt: formatTime(t.CreatedAt), LastUsedAt: optionalTime(use.lastUsed),
		ExpiresAt: optionalTime(t.ExpiresAt), RevokedAt: optionalTime(t.RevokedAt)}
}

// A token's last use is noted in memory by lookup (touch) and written
// behind by the flush: takeUsed, putBackUsed; read back at start by
// restoreUse.

// tokenPrefix is the displayable start of an org admin token: its brand
// and kind, and the first 8 of its 32 hex digits.
func tokenPrefix(token string) string {
	i := strings.Index(token, orgTokenKind)
	if i < 0 || len(token) < i+len(orgTokenKind)+8 {
		return ""
	}
	return strings.Clone(token[:i+len(orgTokenKind)+8])
}

// takeUsed is what was used since the last call, by token id, for a flush.
func (a *adminTokens) takeUsed() map[string]tokenUse {
	a.usedMu.Lock()
	used := a.used
	a.used = nil
	a.usedMu.Unlock()
	uses := make(map[string]tokenUse, len(used))
	for t := range used {
		uses[t.id] = t.use()
	}
	return uses
}

// putBackUsed marks again the tokens of a flush that failed.
func (a *adminTokens) putBackUsed(uses map[string]tokenUse) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	for id := range uses {
		if t := a.byID[id]; t != nil {
			a.usedMu.Lock()
			if a.used == nil {
				a.used = make(map[*orgToken]struct{})
			}
			a.used[t] = struct{}{}
			a.usedMu.Unlock()
		}
	}
}

func (t *orgToken) use() tokenUse {
	u := tokenUse{lastUsed: t.lastUsed.Load()}
	if p := t.prefix.Load(); p != nil {
		u.prefix = *p
	}
	return u
}

// restoreUse is a token's use as the last flush wrote it, read at start.
func (a *adminTokens) restoreUse(id string, u tokenUse) {
	a.mu.RLock()
	t := a.byID[id]
	a.mu.RUnlock()
	if t == nil {
		return
	}
	t.lastUsed.Store(u.lastUsed)
	if u.prefix != "" && t.prefix.Load() == nil {
		t.prefix.Store(&u.prefix)
	}
}

// useOf is a token's last use and prefix as known in memory.
func (a *adminTokens) useOf(id string) tokenUse {
	a.mu.RLock()
	t := a.byID[id]
	a.mu.RUnlock()
	if t == nil {
		return tokenUse{}
	}
	return t.use()
}

// newOrgToken makes a token for orgID and its record; the token is kept
// nowhere.
func (s *server) newOrgToken(orgID, name string, now time.Time) (tokenRecord, string) {
	token := s.cfg.brand + orgTokenKind + randomHex(16)
	return tokenRecord{ID: newID("tok"), OrgID: orgID, Name: name, Prefix: tokenPrefix(token),
		Hash: hashKey(token), CreatedAt: now.UnixNano()}, token
}

func (s *server) createAdminToken(w http.ResponseWriter, r *http.Request, p httprouter.Params, c caller) *apiError {
	var req nameRequest
	if aerr := decodeStrict(w, r, &req, false); aerr != nil {
		return aerr
	}
	if aerr := validName("name", req.Name); aerr != nil {
		return aerr
	}
	rec, token := s.newOrgToken(p.ByName("org"), req.Name, s.now())
	if err := s.store.PutToken(rec, s.newAudit(c, actionTokenCreated)); err != nil {
		return s.internal(err, "creating admin token")
	}
	s.admins.addOrgToken(&rec)
	view := s.viewToken(rec)
	view.Token = token
	writeJSON(w, 201, view)
	return nil
}

func (s *server) listAdminTokens(w http.ResponseWriter, r *http.Request, p httprouter.Params, _ caller) *apiError {
	includeRevoked, err := parseBool(r.URL.Query().Get("include_revoked"))
	if err != nil {
		return invalidRequest(`Parameter "include_revoked" must be true or false.`)
	}
	tokens, err := s.store.OrgTokens(p.ByName("org"))
	if err != nil {
		return s.internal(err, "listing admin tokens")
	}
	views := []tokenView{}
	for _, t := range tokens {
		if includeRevoked || t.RevokedAt == 0 {
			views = append(views, s.viewToken(t))
		}
	}
	writeJSON(w, 200, map[string][]tokenView{"admin_tokens": views})
	return nil
}

// revokeAdminToken is idempotent: revoking a revoked token answers its
// record and records nothing.
func (s *server) revokeAdminToken(w http.ResponseWriter, r *http.Request, p httprouter.Params, c caller) *apiError {
	if aerr := decodeStrict(w, r, &struct{}{}, true); aerr != nil {
		return aerr
	}
	now := s.now().UnixNano()
	t, _, err := s.store.UpdateToken(p.ByName("org"), p.ByName("token"), s.newAudit(c, actionTokenRevoked),
		func(t *tokenRecord) ([]*tokenRecord, error) {
			if t.RevokedAt == 0 {
				t.RevokedAt = now
			}
			return nil, nil
		})
	if aerr := s.storeError(err, "Admin token", "revoking admin token"); aerr != nil {
		return aerr
	}
	s.admins.update(&t)
	writeJSON(w, 200, s.viewToken(t))
	return nil
}

// rollAdminToken issues a new token with the old one's name; the old one
// stops after the grace period, at once by default, as a key's roll.
func (s *server) rollAdminToken(w http.ResponseWriter, r *http.Request, p httprouter.Params, c caller) *apiError {
	grace, aerr := decodeGrace(w, r)
	if aerr != nil {
		return aerr
	}
	now := s.now()
	var token string
	old, added, err := s.store.UpdateToken(p.ByName("org"), p.ByName("token"), s.newAudit(c, actionTokenRolled),
		func(old *tokenRecord) ([]*tokenRecord, error) {
			var fresh *tokenRecord
			var aerr *apiError
			if fresh, token, aerr = s.rolledToken(old, grace, now); aerr != nil {
				return nil, aerr
			}
			return []*tokenRecord{fresh}, nil
		})
	if aerr := s.storeError(err, "Admin token", "rolling admin token"); aerr != nil {
		return aerr
	}
	s.admins.addOrgToken(added[0])
	s.admins.update(&old)
	view := s.viewToken(*added[0])
	view.Token = token
	writeJSON(w, 201, view)
	return nil
}

// rolledToken makes the new token of a roll of old, and sets old's expiry.
func (s *server) rolledToken(old *tokenRecord, grace time.Duration, now time.Time) (*tokenRecord, string, *apiError) {
	if old.RevokedAt != 0 {
		return nil, "", invalidRequest("Admin token %s is revoked and cannot be rolled.", old.ID)
	}
	if old.ExpiresAt != 0 && now.UnixNano() >= old.ExpiresAt {
		return nil, "", invalidRequest("Admin token %s has expired and cannot be rolled.", old.ID)
	}
	if end := now.Add(grace).UnixNano(); old.ExpiresAt == 0 || end < old.ExpiresAt {
		old.ExpiresAt = end
	}
	rec, token := s.newOrgToken(old.OrgID, old.Name, now)
	return &rec, token, nil
}

type rootTokenView struct {
	Token     string `json:"token"`
	CreatedAt string `json:"created_at"`
}

// rollRootToken replaces the root token; the one that called stops at once.
func (s *server) rollRootToken(w http.ResponseWriter, r *http.Request, _ httprouter.Params, c caller) *apiError {
	if aerr := decodeStrict(w, r, &struct{}{}, true); aerr != nil {
		return aerr
	}
	token := s.cfg.brand + "_admin_" + randomHex(16)
	hash := hashKey(token)
	a := s.newAudit(c, actionRootRolled)
	if err := s.store.SetRootTokenHash(hash, a); err != nil {
		return s.internal(err, "rolling the root token")
	}
	s.admins.setRoot(hash)
	writeJSON(w, 201, rootTokenView{Token: token, CreatedAt: formatTime(a.At)})
	return nil
}
