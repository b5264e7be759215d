package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"
)

// keyhole keys update: an edit of a key in place (PATCH
// /admin/v1/orgs/:org/keys/:key), only of what the line names.

// keyEditFlags are keys update's flags, each a member of the PATCH body.
type keyEditFlags struct {
	name, scopes, limits, expiresAt, meta, allowedIPs, credits string
	enable, disable, noExpiry, defaultLimits                   bool
}

func keysUpdateCmd(c *cli, args []string) error {
	fs := newFlagSet("keys update")
	f := addAdminFlags(fs)
	var e keyEditFlags
	fs.StringVar(&e.name, "name", "", "rename the key to `NAME`")
	fs.StringVar(&e.scopes, "scopes", "", "replace its scopes with `SCOPES`, comma-separated ('' for none)")
	fs.StringVar(&e.limits, "rate-limits", "", "its own windows, a `LIMIT/DURATION,…` list")
	fs.BoolVar(&e.defaultLimits, "default-rate-limits", false, "back to the server's windows")
	fs.StringVar(&e.expiresAt, "expires-at", "", "when it stops working, an RFC 3339 `TIME`")
	fs.BoolVar(&e.noExpiry, "no-expiry", false, "it never expires")
	fs.BoolVar(&e.enable, "enable", false, "it works again")
	fs.BoolVar(&e.disable, "disable", false, "refuse it (401 key_disabled) until --enable")
	fs.StringVar(&e.meta, "meta", "", "replace its meta with the `JSON` object (null clears it)")
	fs.StringVar(&e.allowedIPs, "allowed-ips", "", "the addresses it may come from, a `CIDR,…` list ('' for any)")
	fs.StringVar(&e.credits, "credits", "", `its usage limit, `+"`JSON`"+` like {"remaining":1000,"refill":{"amount":1000,"interval":"monthly","day":1}} (null: none)`)
	a, ops, err := parseAdmin(c, fs, f, args, "ORG", "KEY")
	if err != nil {
		return err
	}
	body, err := e.body(given(fs))
	if err != nil {
		return usageErrorf("keys update", "%v", err)
	}
	return a.printed(a.patch(apiPath("orgs", ops[0], "keys", ops[1]), body))
}

// given is the names of the flags the line set.
func given(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// body is the PATCH body of the flags set: only what they change.
func (e *keyEditFlags) body(set map[string]bool) (map[string]any, error) {
	if err := e.exclusive(set); err != nil {
		return nil, err
	}
	b := map[string]any{}
	if set["name"] {
		b["name"] = e.name
	}
	if set["scopes"] {
		b["scopes"] = splitList(e.scopes)
	}
	if set["allowed-ips"] {
		b["allowed_ips"] = splitList(e.allowedIPs)
	}
	switch {
	case set["enable"]:
		b["enabled"] = e.enable
	case set["disable"]:
		b["enabled"] = !e.disable
	}
	if err := e.timesAndLimits(set, b); err != nil {
		return nil, err
	}
	if err := e.objects(set, b); err != nil {
		return nil, err
	}
	if len(b) == 0 {
		return nil, errors.New("nothing to change: give --name, --scopes, --rate-limits, --expires-at, --enable, --disable, --meta, --allowed-ips or --credits")
	}
	return b, nil
}

// exclusive refuses flags that undo each other.
func (e *keyEditFlags) exclusive(set map[string]bool) error {
	for _, pair := range [][2]string{{"enable", "disable"}, {"expires-at", "no-expiry"}, {"rate-limits", "default-rate-limits"}} {
		if set[pair[0]] && set[pair[1]] {
			return fmt.Errorf("--%s and --%s: give one of them", pair[0], pair[1])
		}
	}
	return nil
}

func (e *keyEditFlags) timesAndLimits(set map[string]bool, b map[string]any) error {
	switch {
	case set["expires-at"]:
		if _, err := time.Parse(time.RFC3339Nano, e.expiresAt); err != nil {
			return fmt.Errorf("--expires-at %q: want an RFC 3339 time like 2030-01-02T15:04:05Z", e.expiresAt)
		}
		b["expires_at"] = e.expiresAt
	case set["no-expiry"] && e.noExpiry:
		b["expires_at"] = nil
	}
	switch {
	case set["rate-limits"]:
		limits, err := parseRateLimits(e.limits)
		if err != nil {
			return fmt.Errorf("--rate-limits: %v", err)
		}
		b["rate_limits"] = limits
	case set["default-rate-limits"] && e.defaultLimits:
		b["rate_limits"] = nil
	}
	return nil
}

// objects are --meta and --credits, JSON given as it is.
func (e *keyEditFlags) objects(set map[string]bool, b map[string]any) error {
	for _, o := range []struct{ flag, field, value string }{{"meta", "meta", e.meta}, {"credits", "credits", e.credits}} {
		if !set[o.flag] {
			continue
		}
		v := strings.TrimSpace(o.value)
		if !json.Valid([]byte(v)) || !strings.HasPrefix(v, "{") && v != "null" {
			return fmt.Errorf("--%s %q: want a JSON object, or null", o.flag, o.value)
		}
		b[o.field] = json.RawMessage(v)
	}
	return nil
}
