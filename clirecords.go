package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// The admin commands over records: keyhole orgs, keys and tokens, each a
// call of the admin API (README.md's "Admin API" and "Admin tokens").

func orgsCommands() []command {
	return []command{
		{"list", "", "List the organizations the token sees (all, for root).", orgsListCmd, nil},
		{"show", "ORG", "Show an organization.", orgsShowCmd, nil},
		{"create", "NAME", "Create an organization (root token).", orgsCreateCmd, nil},
	}
}

func keysCommands() []command {
	return []command{
		{"list", "ORG [--env test|live] [--include-revoked]", "List an organization's keys; never a secret.", keysListCmd, nil},
		{"show", "ORG KEY", "Show a key.", keysShowCmd, nil},
		{"create", "ORG --name NAME --env test|live [--scopes a,b] [--rate-limits 5/1m,100/1h] [--expires-at TIME]",
			"Create a key; the key is shown once.", keysCreateCmd, nil},
		{"revoke", "ORG KEY", "Revoke a key: refused from the next request on, for good.", keysRevokeCmd, nil},
		{"roll", "ORG KEY [--expires-in 24h]", "Issue a new key like it, shown once; the old one stops after --expires-in (default: at once).", keysRollCmd, nil},
		{"update", "ORG KEY [--name N] [--scopes a,b] [--enable|--disable] [--expires-at TIME|--no-expiry] [--meta JSON] [--allowed-ips CIDR,…] [--credits JSON] …",
			"Edit a key in place: only what the flags name changes.", keysUpdateCmd, nil},
	}
}

func tokensCommands() []command {
	return []command{
		{"list", "ORG [--include-revoked]", "List an organization's admin tokens; never a secret.", tokensListCmd, nil},
		{"create", "ORG --name NAME", "Issue an org admin token (root token); it is shown once.", tokensCreateCmd, nil},
		{"revoke", "ORG TOKEN", "Revoke an admin token: refused from the next request on.", tokensRevokeCmd, nil},
		{"roll", "ORG TOKEN [--expires-in 1h]", "Issue a new token like it, shown once; the old one stops after --expires-in (default: at once).", tokensRollCmd, nil},
	}
}

// parseAdmin parses an admin command's line, wants the operands named
// (a name in [] is optional) and connects.
func parseAdmin(c *cli, fs *flag.FlagSet, f *adminFlags, args []string, names ...string) (*adminConn, []string, error) {
	cmd := strings.TrimPrefix(fs.Name(), "keyhole ")
	got, err := parseArgsAnywhere(fs, args, connectionEnv(c.getenv))
	if err != nil {
		return nil, nil, err
	}
	required := 0
	for _, n := range names {
		if !strings.HasPrefix(n, "[") {
			required++
		}
	}
	switch {
	case len(got) > len(names):
		return nil, nil, usageErrorf(cmd, "unexpected argument %q", got[len(names)])
	case len(got) < required:
		return nil, nil, usageErrorf(cmd, "missing %s: keyhole %s %s", names[len(got)], cmd, strings.Join(names, " "))
	}
	a, err := f.connect(c, cmd)
	return a, got, err
}

// simpleCmd is an admin command without flags of its own.
func simpleCmd(c *cli, name string, args []string, names ...string) (*adminConn, []string, error) {
	fs := newFlagSet(name)
	f := addAdminFlags(fs)
	return parseAdmin(c, fs, f, args, names...)
}

func orgsListCmd(c *cli, args []string) error {
	a, _, err := simpleCmd(c, "orgs list", args)
	if err != nil {
		return err
	}
	body, err := a.get("/orgs", nil)
	if err != nil || a.json {
		return a.printed(body, err)
	}
	var page struct{ Orgs []orgView }
	if err := json.Unmarshal(body, &page); err != nil {
		return err
	}
	rows := make([][]string, len(page.Orgs))
	for i, o := range page.Orgs {
		rows[i] = []string{o.ID, o.Name, shortTime(&o.CreatedAt)}
	}
	printTable(a.out.stdout, []string{"ID", "NAME", "CREATED"}, rows)
	return nil
}

// printed ends a command that answers body: under --json, as it is.
func (a *adminConn) printed(body []byte, err error) error {
	if err != nil {
		return err
	}
	return a.show(body)
}

func orgsShowCmd(c *cli, args []string) error {
	a, ops, err := simpleCmd(c, "orgs show", args, "ORG")
	if err != nil {
		return err
	}
	return a.printed(a.get(apiPath("orgs", ops[0]), nil))
}

func orgsCreateCmd(c *cli, args []string) error {
	a, ops, err := simpleCmd(c, "orgs create", args, "NAME")
	if err != nil {
		return err
	}
	return a.printed(a.post("/orgs", nameRequest{Name: ops[0]}))
}

func keysListCmd(c *cli, args []string) error {
	fs := newFlagSet("keys list")
	f := addAdminFlags(fs)
	env := fs.String("env", "", "only the keys of `ENV`, test or live")
	revoked := fs.Bool("include-revoked", false, "list revoked keys too")
	a, ops, err := parseAdmin(c, fs, f, args, "ORG")
	if err != nil {
		return err
	}
	if !validEnvFilter(*env) {
		return usageErrorf("keys list", "--env %q: want test or live", *env)
	}
	q := url.Values{}
	if *env != "" {
		q.Set("env", *env)
	}
	if *revoked {
		q.Set("include_revoked", "true")
	}
	body, err := a.get(apiPath("orgs", ops[0], "keys"), q)
	if err != nil || a.json {
		return a.printed(body, err)
	}
	return printKeys(a, body)
}

func printKeys(a *adminConn, body []byte) error {
	var page struct{ Keys []keyView }
	if err := json.Unmarshal(body, &page); err != nil {
		return err
	}
	now := time.Now()
	rows := make([][]string, len(page.Keys))
	for i, k := range page.Keys {
		rows[i] = []string{k.ID, k.Name, k.Env, k.Prefix, strings.Join(k.Scopes, ","), shortTime(&k.CreatedAt),
			neverOr(k.LastUsedAt), orNever(k.ExpiresAt), keyStatus(&k, now)}
	}
	printTable(a.out.stdout, []string{"ID", "NAME", "ENV", "PREFIX", "SCOPES", "CREATED", "LAST USED", "EXPIRES", "STATUS"}, rows)
	return nil
}

// validEnvFilter: none, or an environment.
func validEnvFilter(env string) bool {
	return env == "" || env == envTest || env == envLive
}

func orNever(s *string) string {
	if s == nil {
		return "never"
	}
	return shortTime(s)
}

// keyStatus is a key's: a record's, or disabled.
func keyStatus(k *keyView, now time.Time) string {
	status := recordStatus(k.RevokedAt, k.ExpiresAt, now)
	if status == "active" && !k.Enabled {
		return "disabled"
	}
	return status
}

// recordStatus is a key's or a token's: revoked, expired or active.
func recordStatus(revokedAt, expiresAt *string, now time.Time) string {
	if revokedAt != nil {
		return "revoked"
	}
	if expiresAt != nil {
		if t, err := time.Parse(timeLayout, *expiresAt); err == nil && !now.Before(t) {
			return "expired"
		}
	}
	return "active"
}

func keysShowCmd(c *cli, args []string) error {
	a, ops, err := simpleCmd(c, "keys show", args, "ORG", "KEY")
	if err != nil {
		return err
	}
	return a.printed(a.get(apiPath("orgs", ops[0], "keys", ops[1]), nil))
}

func keysCreateCmd(c *cli, args []string) error {
	fs := newFlagSet("keys create")
	f := addAdminFlags(fs)
	name := fs.String("name", "", "the key's `NAME` (required)")
	env := fs.String("env", "", "`ENV` of the key, test or live (required)")
	scopes := fs.String("scopes", "", "the key's `SCOPES`, comma-separated, like sms:send,sms:read")
	limits := fs.String("rate-limits", "", "the key's own windows, a `LIMIT/DURATION,…` list (default: the server's)")
	expires := fs.String("expires-at", "", "when the key stops working, an RFC 3339 `TIME` like 2030-01-02T15:04:05Z")
	a, ops, err := parseAdmin(c, fs, f, args, "ORG")
	if err != nil {
		return err
	}
	req, err := newKeyRequest(*name, *env, *scopes, *limits, *expires)
	if err != nil {
		return usageErrorf("keys create", "%v", err)
	}
	body, err := a.post(apiPath("orgs", ops[0], "keys"), req)
	if err != nil {
		return err
	}
	return a.revealKey(body)
}

// newKeyRequest is the body of a key's creation: only what was given.
func newKeyRequest(name, env, scopes, limits, expires string) (map[string]any, error) {
	if name == "" {
		return nil, fmt.Errorf("want --name NAME")
	}
	if env != envTest && env != envLive {
		return nil, fmt.Errorf("want --env test or --env live")
	}
	req := map[string]any{"name": name, "env": env}
	if list := splitList(scopes); len(list) > 0 {
		req["scopes"] = list
	}
	if limits != "" {
		parsed, err := parseRateLimits(limits)
		if err != nil {
			return nil, fmt.Errorf("--rate-limits: %v", err)
		}
		req["rate_limits"] = parsed
	}
	if expires != "" {
		if _, err := time.Parse(time.RFC3339Nano, expires); err != nil {
			return nil, fmt.Errorf("--expires-at %q: want an RFC 3339 time like 2030-01-02T15:04:05Z", expires)
		}
		req["expires_at"] = expires
	}
	return req, nil
}

// splitList is a comma-separated list, without blanks.
func splitList(s string) []string {
	list := []string{}
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			list = append(list, item)
		}
	}
	return list
}

// revealKey prints a new key's record and the key, once, with the
// console's warning (console/keys.js).
func (a *adminConn) revealKey(body []byte) error {
	var k keyView
	if err := json.Unmarshal(body, &k); err != nil {
		return err
	}
	return a.reveal(body, k.Key, fmt.Sprintf("Copy this %s key for “%s” now.", k.Env, k.Name))
}

func keysRevokeCmd(c *cli, args []string) error {
	a, ops, err := simpleCmd(c, "keys revoke", args, "ORG", "KEY")
	if err != nil {
		return err
	}
	return a.printed(a.post(apiPath("orgs", ops[0], "keys", ops[1], "revoke"), nil))
}

func keysRollCmd(c *cli, args []string) error {
	a, ops, grace, err := rollFlags(c, "keys roll", args, "KEY", "how long the old key keeps working")
	if err != nil {
		return err
	}
	body, err := a.post(apiPath("orgs", ops[0], "keys", ops[1], "roll"), grace)
	if err != nil {
		return err
	}
	return a.revealKey(body)
}

// rollFlags parses a roll's line: ORG, the record, --expires-in.
func rollFlags(c *cli, name string, args []string, record, graceUsage string) (*adminConn, []string, rollRequest, error) {
	fs := newFlagSet(name)
	f := addAdminFlags(fs)
	grace := fs.Duration("expires-in", 0, graceUsage+", like 24h (at most 8784h)")
	a, ops, err := parseAdmin(c, fs, f, args, "ORG", record)
	if err != nil {
		return nil, nil, rollRequest{}, err
	}
	var req rollRequest
	if *grace != 0 {
		req.ExpiresIn = grace.String()
	}
	return a, ops, req, nil
}

func tokensListCmd(c *cli, args []string) error {
	fs := newFlagSet("tokens list")
	f := addAdminFlags(fs)
	revoked := fs.Bool("include-revoked", false, "list revoked tokens too")
	a, ops, err := parseAdmin(c, fs, f, args, "ORG")
	if err != nil {
		return err
	}
	q := url.Values{}
	if *revoked {
		q.Set("include_revoked", "true")
	}
	body, err := a.get(apiPath("orgs", ops[0], "admin-tokens"), q)
	if err != nil || a.json {
		return a.printed(body, err)
	}
	return printTokens(a, body)
}

func printTokens(a *adminConn, body []byte) error {
	var page struct {
		Tokens []tokenView `json:"admin_tokens"`
	}
	if err := json.Unmarshal(body, &page); err != nil {
		return err
	}
	now := time.Now()
	rows := make([][]string, len(page.Tokens))
	for i, t := range page.Tokens {
		prefix := ""
		if t.Prefix != nil {
			prefix = *t.Prefix
		}
		rows[i] = []string{t.ID, t.Name, prefix, shortTime(&t.CreatedAt), neverOr(t.LastUsedAt), orNever(t.ExpiresAt),
			recordStatus(t.RevokedAt, t.ExpiresAt, now)}
	}
	printTable(a.out.stdout, []string{"ID", "NAME", "PREFIX", "CREATED", "LAST USED", "EXPIRES", "STATUS"}, rows)
	return nil
}

func tokensCreateCmd(c *cli, args []string) error {
	fs := newFlagSet("tokens create")
	f := addAdminFlags(fs)
	name := fs.String("name", "", "the token's `NAME`, like \"acme ops\" (required)")
	a, ops, err := parseAdmin(c, fs, f, args, "ORG")
	if err != nil {
		return err
	}
	if *name == "" {
		return usageErrorf("tokens create", "want --name NAME")
	}
	body, err := a.post(apiPath("orgs", ops[0], "admin-tokens"), nameRequest{Name: *name})
	if err != nil {
		return err
	}
	return a.revealToken(body)
}

// revealToken prints a new admin token's record and the token, once, with
// the console's warning (console/orgs.js).
func (a *adminConn) revealToken(body []byte) error {
	var t tokenView
	if err := json.Unmarshal(body, &t); err != nil {
		return err
	}
	return a.reveal(body, t.Token, "Copy this token now and hand it to the organization’s admin.")
}

func tokensRevokeCmd(c *cli, args []string) error {
	a, ops, err := simpleCmd(c, "tokens revoke", args, "ORG", "TOKEN")
	if err != nil {
		return err
	}
	return a.printed(a.post(apiPath("orgs", ops[0], "admin-tokens", ops[1], "revoke"), nil))
}

func tokensRollCmd(c *cli, args []string) error {
	a, ops, grace, err := rollFlags(c, "tokens roll", args, "TOKEN", "how long the old token keeps working")
	if err != nil {
		return err
	}
	body, err := a.post(apiPath("orgs", ops[0], "admin-tokens", ops[1], "roll"), grace)
	if err != nil {
		return err
	}
	return a.revealToken(body)
}
