package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// TestConsoleKeyPage walks a key's page: the keys table's Expires column
// and search, no broken prefix or badge, then a key's record, its own usage
// and log, each field edited (seen by the API and by the next guarded
// request), a refused edit that changes nothing, disable and enable, roll
// and revoke.
func TestConsoleKeyPage(t *testing.T) {
	skipShort(t, "a console session in Chromium takes some 10 s")
	b := newBrowser(t)
	const root = "kh_admin_ba5e0000ba5e0000ba5e0000ba5e0000"
	srv := startKeyhole(t, "--db", filepath.Join(t.TempDir(), "console.db"), "--admin-token", root,
		"--flush-interval", "100ms")
	base := srv.url()

	r := srv.admin(root, "POST", "/orgs", `{"name":"Acme Corp"}`)
	mustStatus(t, "creating the org", r, 201)
	org := r.json(t)["id"].(string)
	newKey := func(name string) (id, prefix, secret string) {
		t.Helper()
		r := srv.admin(root, "POST", "/orgs/"+org+"/keys", `{"name":"`+name+`","env":"test"}`)
		mustStatus(t, "creating key "+name, r, 201)
		m := r.json(t)
		return m["id"].(string), m["prefix"].(string), m["key"].(string)
	}
	keyID, _, key := newKey("billing")
	otherID, otherPrefix, other := newKey("reports")
	ciID, _, _ := newKey("ci-runner")
	// A long name and many scopes press on the table's other columns.
	mustStatus(t, "creating a wide key", srv.admin(root, "POST", "/orgs/"+org+"/keys", `{"name":"nightly-export-of-invoices-and-payouts-to-the-warehouse","env":"live",
		"scopes":["invoices:read","payouts:read","customers:read","reports:write","exports:write","warehouse:load"],"expires_at":"2099-01-01T00:00:00Z"}`), 201)
	r = srv.admin(root, "POST", "/orgs/"+org+"/keys/"+ciID+"/roll", `{"expires_in":"24h"}`)
	mustStatus(t, "rolling ci-runner with a day's grace", r, 201)
	whoami := func(secret string) response {
		t.Helper()
		return srv.do("GET", "/api/v1/dev/whoami", "", bearer(secret)...)
	}
	for range 3 {
		mustStatus(t, "whoami with billing", whoami(key), 200)
	}
	for range 2 {
		mustStatus(t, "whoami with reports", whoami(other), 200)
	}
	record := func(id string) map[string]any {
		t.Helper()
		r := srv.admin(root, "GET", "/orgs/"+org+"/keys/"+id, "")
		mustStatus(t, "GET the key", r, 200)
		m := r.json(t)
		delete(m, "last_used_at")
		return m
	}
	verify := func(secret string) map[string]any {
		t.Helper()
		r := srv.do("POST", "/v1/keys/verify", `{"key":"`+secret+`"}`)
		mustStatus(t, "verify", r, 200)
		return r.json(t)
	}
	asJSON := func(v any) string {
		buf, _ := json.Marshal(v)
		return string(buf)
	}
	noNullErrors := func(where string) {
		t.Helper()
		for _, text := range mustEval[[]string](b, `[...document.querySelectorAll('.error:not([hidden])')].map(e => e.textContent)`) {
			if strings.Contains(text, "null") || strings.Contains(text, "undefined") {
				t.Errorf("%s: an error reads %q", where, text)
			}
		}
	}
	rows := func(n int) chromedp.Action[chromedp.Void] {
		return until(fmt.Sprintf(`document.querySelectorAll('#keys-table tbody tr').length === %d`, n))
	}
	// search types into the search box as a user does.
	search := func(text string) chromedp.Action[chromedp.Void] {
		return chromedp.Steps(
			chromedp.Evaluate[chromedp.Void](`(() => { const s = document.querySelector('#key-search'); s.value = '';
				s.dispatchEvent(new Event('input', { bubbles: true })); })()`),
			typeInto("#key-search", text))
	}
	// wrapped lists the cells' texts that take more than one line.
	wrapped := func(sel string) []string {
		return mustEval[[]string](b, `[...document.querySelectorAll(`+jsString(sel)+`)]
			.filter(e => e.getClientRects().length !== 1 || e.getBoundingClientRect().height > 1.8 * parseFloat(getComputedStyle(e).lineHeight || 20))
			.map(e => e.textContent)`)
	}

	b.do("signing in", chromedp.Navigate(base+"/#/orgs/"+org+"/keys"), typeInto("#token", root+kb.Enter), visible("#keys-table"), rows(5))

	// The table: a rolled key expires in a day, and a key never.
	ciRow := `#keys-table tr[data-key="` + ciID + `"]`
	b.do("seeing the rolled key's expiry", until(`/^in 2[34] hours$/.test(document.querySelector(`+jsString(ciRow+" td.expires")+`).textContent)`))
	b.waitText(`#keys-table tr[data-key="`+keyID+`"] td.expires`, "never")
	if got := mustEval[string](b, `document.querySelector(`+jsString(ciRow+" td.expires time")+`).title`); got == "" {
		t.Error("the Expires cell has no full time on hover")
	}

	// No prefix, badge or status breaks across lines at 1280 px.
	for _, sel := range []string{"#keys-table td.prefix code", "#keys-table .badge", "#keys-table .env", "#keys-table .codes code", "#keys-table time"} {
		if w := wrapped(sel); len(w) > 0 {
			t.Errorf("at 1280 px these %s take more than one line: %q", sel, w)
		}
	}

	// Search by name, then by prefix; the env filter still applies.
	b.do("searching by name", search("BILL"), rows(1), visible(`#keys-table tr[data-key="`+keyID+`"]`))
	b.do("searching by prefix", search(otherPrefix[:14]), rows(1), visible(`#keys-table tr[data-key="`+otherID+`"]`))
	b.do("searching for nothing known", search("zzz"), rows(0), visible(".empty"))
	b.waitText(".empty", "No keys match “zzz”.")
	b.do("searching live keys", search("ci-"), rows(2), click(`#key-filter input[value="live"]`), rows(0))
	b.waitText(".empty", "No live keys match")
	b.do("clearing", click(`#key-filter input[value=""]`), search(""), rows(5))
	b.do("searching again", search("ci-"), rows(2))
	b.shoot("13-keys-search")
	b.do("clearing the search", search(""), rows(5))
	b.shoot("13-keys")

	// The key's page: its record, its own usage and log.
	keyURL := "#/orgs/" + org + "/keys/" + keyID
	dd := func(field string) string { return `#key-record dd[data-field="` + field + `"]` }
	b.do("opening the key's page", click(`#keys-table tr[data-key="`+keyID+`"] a.key-link`),
		until(`location.hash === `+jsString(keyURL)), visible("#key-record"), visible("#key-edit"))
	b.waitText("#key-h", "billing")
	if !mustEval[bool](b, `document.activeElement === document.querySelector('#key-h')`) {
		t.Error("the key's heading does not have the focus")
	}
	if got := mustEval[string](b, `document.querySelector('nav.tabs a[aria-current="page"]').textContent`); got != "API keys" {
		t.Errorf("the current tab is %q; want API keys", got)
	}
	for field, want := range map[string]string{"id": keyID, "prefix": key[:16], "env": "test", "status": "active",
		"enabled": "yes", "scopes": "none", "allowed_ips": "any address", "credits": "no usage limit", "meta": "none",
		"expires_at": "never", "revoked_at": "no", "last_used_at": "just now", "created_at": "just now"} {
		b.waitText(dd(field), want)
	}
	b.do("seeing its usage", visible("#usage-test svg"), visible("#usage-test rect.bar-2xx"))
	if n := mustEval[int](b, `[...document.querySelectorAll('#usage-test rect')].reduce((n, r) => n + Number(r.dataset.count), 0)`); n != 3 {
		t.Errorf("the key's chart counts %d requests; want its 3", n)
	}
	if n := mustEval[int](b, `document.querySelectorAll('#usage-live, #log-key, #log-env').length`); n != 0 {
		t.Errorf("a test key's page has %d live charts or key and env filters; want none", n)
	}
	b.do("seeing its log", until(`document.querySelectorAll('#logs-table tbody tr').length === 3`))
	r = srv.admin(root, "GET", "/orgs/"+org+"/logs?key_id="+keyID, "")
	var logs struct {
		Entries []struct {
			ID string `json:"id"`
		} `json:"entries"`
	}
	json.Unmarshal(r.body, &logs)
	var want []string
	for _, e := range logs.Entries {
		want = append(want, e.ID)
	}
	if got := mustEval[[]string](b, `[...document.querySelectorAll('#logs-table tbody tr')].map(r => r.dataset.id)`); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("the key's log lists %v; want its own entries %v", got, want)
	}
	for _, sel := range []string{"#logs-table .badge", "#key-record .badge", "#key-record code.prefix", ".key-badges > *"} {
		if w := wrapped(sel); len(w) > 0 {
			t.Errorf("at 1280 px these %s take more than one line: %q", sel, w)
		}
	}
	b.shoot("14-key-page")

	// Edit: name, scopes, rate limits, meta and credits at once.
	set := func(sel, value string) chromedp.Action[chromedp.Void] {
		return chromedp.Steps(
			chromedp.Evaluate[chromedp.Void](`document.querySelector(`+jsString(sel)+`).value = ''`),
			typeInto(sel, value))
	}
	saved := func(what string) {
		t.Helper()
		b.waitText("#edit-status", "Saved: "+what+".")
		b.do("checking no error shows", until(`document.querySelector('#key-edit .error').hidden`))
	}
	b.do("editing five fields", set("#edit-name", "billing-v2"), set("#edit-scopes", "sms:send whoami:read"),
		set("#edit-limits", "7/1m, 100/1h"), set("#edit-meta", `{"plan": "pro", "customer": "cus_123"}`),
		set("#edit-credits", "5"), choose("#edit-refill", "monthly"), visible("#edit-refill-day"),
		set("#edit-refill-amount", "50"), set("#edit-refill-day", "15"), click("#edit-save"))
	saved("name, scopes, rate_limits, meta, credits")
	b.waitText("#key-h", "billing-v2")
	b.waitText(dd("scopes"), "sms:send")
	b.waitText(dd("scopes"), "whoami:read")
	b.waitText(dd("rate_limits"), "7/1m, 100/1h")
	b.waitText(dd("meta"), `"customer": "cus_123"`)
	b.waitText(dd("credits"), "5 requests left; refilled to 50 monthly on day 15")
	rec := record(keyID)
	for field, want := range map[string]string{"name": `"billing-v2"`, "scopes": `["sms:send","whoami:read"]`,
		"rate_limits": `[{"limit":7,"window":"1m"},{"limit":100,"window":"1h"}]`, "meta": `{"customer":"cus_123","plan":"pro"}`,
		"credits": `{"refill":{"amount":50,"day":15,"interval":"monthly"},"remaining":5}`, "allowed_ips": `[]`, "expires_at": `null`} {
		if got := asJSON(rec[field]); got != want {
			t.Errorf("after the edit the API has %s = %s; want %s", field, got, want)
		}
	}
	r = whoami(key)
	mustStatus(t, "whoami after the edit", r, 200)
	if got := asJSON(r.json(t)["meta"]); got != `{"customer":"cus_123","plan":"pro"}` {
		t.Errorf("whoami's meta = %s", got)
	}
	if got := asJSON(r.json(t)["scopes"]); got != `["sms:send","whoami:read"]` {
		t.Errorf("whoami's scopes = %s", got)
	}
	if r.header.Get("X-Ratelimit-Limit") != "7" || r.header.Get("X-Credits-Remaining") != "4" {
		t.Errorf("whoami's limit and credits headers = %q, %q; want 7 and 4", r.header.Get("X-Ratelimit-Limit"), r.header.Get("X-Credits-Remaining"))
	}
	if v := verify(key); v["name"] != "billing-v2" {
		t.Errorf("verify's name = %v", v["name"])
	}
	b.do("saving nothing", click("#edit-save"))
	b.waitText("#edit-status", "Nothing changed.")

	// Expiry and an allowlist that excludes this client: 403.
	expiry := mustEval[string](b, `(() => { const d = new Date(Date.now() + 2 * 864e5); d.setSeconds(0, 0);
		const el = document.querySelector('#edit-expires');
		el.value = new Date(d - d.getTimezoneOffset() * 6e4).toISOString().slice(0, 16);
		el.dispatchEvent(new Event('input', { bubbles: true }));
		return d.toISOString(); })()`)
	b.do("editing expiry and allowed IPs", set("#edit-ips", "192.0.2.0/24, 2001:db8::/32"), click("#edit-save"))
	saved("expires_at, allowed_ips")
	b.waitText(dd("expires_at"), "in 2 days")
	b.waitText(dd("allowed_ips"), "2001:db8::/32")
	rec = record(keyID)
	if rec["expires_at"] != expiry || asJSON(rec["allowed_ips"]) != `["192.0.2.0/24","2001:db8::/32"]` {
		t.Errorf("the API has expires_at %v (want %s), allowed_ips %v", rec["expires_at"], expiry, rec["allowed_ips"])
	}
	if r := whoami(key); r.status != 403 || r.errorCode(t) != "ip_not_allowed" {
		t.Errorf("whoami from outside the allowlist = %d %s; want 403 ip_not_allowed", r.status, r.errorCode(t))
	}

	// A refused edit shows the server's error by the form and changes nothing.
	before := record(keyID)
	b.do("allowing a CIDR with host bits", set("#edit-name", "renamed"), set("#edit-ips", "10.0.0.1/8"), click("#edit-save"))
	b.waitText("#key-edit .error", "10.0.0.1/8")
	b.waitText("#key-edit .error", "invalid_request")
	noNullErrors("a refused allowlist")
	b.do("meta that is no object", set("#edit-ips", "192.0.2.0/24"), set("#edit-meta", `[1, 2]`), click("#edit-save"))
	b.waitText("#key-edit .error", `"meta"`)
	noNullErrors("refused meta")
	b.shoot("15-key-edit-error")
	if after := record(keyID); asJSON(after) != asJSON(before) {
		t.Errorf("a refused edit changed the key:\n%s\n%s", asJSON(before), asJSON(after))
	}
	b.waitText("#key-h", "billing-v2")

	// Clearing: no expiry, any address, no meta, no credits.
	b.do("clearing the fields", set("#edit-name", "billing-v2"), chromedp.Evaluate[chromedp.Void](`for (const s of ['#edit-ips', '#edit-meta', '#edit-expires', '#edit-credits']) document.querySelector(s).value = ''`),
		choose("#edit-refill", ""), click("#edit-save"))
	saved("expires_at, meta, allowed_ips, credits")
	rec = record(keyID)
	for _, field := range []string{"expires_at", "meta", "credits"} {
		if rec[field] != nil {
			t.Errorf("after clearing, %s = %v", field, rec[field])
		}
	}
	if asJSON(rec["allowed_ips"]) != `[]` {
		t.Errorf("after clearing, allowed_ips = %v", rec["allowed_ips"])
	}
	b.waitText(dd("credits"), "no usage limit")
	b.waitText(dd("expires_at"), "never")
	mustStatus(t, "whoami after clearing", whoami(key), 200)

	// Disable and enable.
	b.do("disabling", click("#key-toggle"), visible(`.key-badges .badge.disabled`))
	b.waitText("#key-toggle", "Enable")
	b.waitText(dd("enabled"), "no")
	if rec := record(keyID); rec["enabled"] != false {
		t.Errorf("after Disable the API has enabled = %v", rec["enabled"])
	}
	if r := whoami(key); r.status != 401 || r.errorCode(t) != "key_disabled" {
		t.Errorf("whoami with the disabled key = %d %s; want 401 key_disabled", r.status, r.errorCode(t))
	}
	b.shoot("16-key-disabled")
	b.do("back to the table", click("#key-back"), visible(`#keys-table tr[data-key="`+keyID+`"][data-status="disabled"]`))
	b.do("the key's page again", click(`#keys-table tr[data-key="`+keyID+`"] a.key-link`), visible("#key-toggle"))
	b.waitText("#key-toggle", "Enable")
	b.do("enabling", click("#key-toggle"), visible(`.key-badges .badge.active`))
	b.waitText("#key-toggle", "Disable")
	mustStatus(t, "whoami with the enabled key", whoami(key), 200)

	// Its audit entries: created, three edits, disabled, enabled.
	b.do("opening the key's audit entries", click("#key-audit"), visible("#audit-table"),
		until(`document.querySelector('#audit-target').value === `+jsString(keyID)),
		until(`document.querySelectorAll('#audit-table tbody tr').length === 6`))
	if got := mustEval[string](b, `[...document.querySelectorAll('#audit-table tbody tr')].map(r => r.dataset.action).join(' ')`); got !=
		"key.enabled key.disabled key.updated key.updated key.updated key.created" {
		t.Errorf("the key's audit entries are %s", got)
	}
	b.do("filtering its disabling", choose("#audit-action", "key.disabled"),
		until(`document.querySelectorAll('#audit-table tbody tr').length === 1`))
	b.do("back to the key's page", chromedp.Navigate(base+"/"+keyURL), visible("#key-roll"))

	// Roll with a day's grace: the new key is revealed and linked, the old
	// one expires in a day; then revoke the old one.
	b.do("rolling", click("#key-roll"), visible("dialog #roll-grace"), choose("#roll-grace", "24h"),
		click("dialog button[type=submit]"), chromedp.WaitNotPresent(chromedp.CSS("dialog")), visible("#reveal-secret"), visible("#key-rolled-link"))
	rolled := mustEval[string](b, `document.querySelector('#reveal-secret').textContent`)
	if !regexp.MustCompile(`^kh_test_[0-9a-f]{32}$`).MatchString(rolled) {
		t.Fatalf("rolled key = %q", rolled)
	}
	b.do("seeing the grace period", until(`/in 2[34] hours/.test(document.querySelector(`+jsString(dd("expires_at"))+`).textContent)`))
	mustStatus(t, "whoami with the rolled key", whoami(rolled), 200)
	b.do("dismissing the key", click("#reveal-done"))
	b.do("revoking the old key", click("#key-revoke"), visible("dialog button.danger"), click("dialog button.danger"),
		chromedp.WaitNotPresent(chromedp.CSS("dialog")), visible(`.key-badges .badge.revoked`), chromedp.WaitNotVisible(chromedp.CSS("#key-edit")))
	b.waitText(".key-body", "A revoked key cannot be edited.")
	b.waitText(dd("revoked_at"), "just now")
	if n := mustEval[int](b, `[...document.querySelectorAll('.key-actions button')].filter(b => !b.hidden).length`); n != 0 {
		t.Errorf("a revoked key's page offers %d actions", n)
	}
	if r := whoami(key); r.status != 401 || r.errorCode(t) != "invalid_or_revoked" {
		t.Errorf("whoami with the revoked key = %d %s", r.status, r.errorCode(t))
	}
	b.do("opening the new key", click("#key-rolled-link"), until(`location.hash.includes('/keys/') && !location.hash.endsWith(`+jsString(keyID)+`)`),
		visible("#key-edit"))
	b.waitText("#key-h", "billing-v2")
	b.waitText(dd("status"), "active")

	// A key that does not exist.
	b.do("a key that is not there", chromedp.Navigate(base+"/#/orgs/"+org+"/keys/key_0123456789abcdef"), visible(".view .error:not([hidden])"))
	noNullErrors("a missing key")

	for _, m := range b.console() {
		text := m.String()
		if m.IsException() || strings.Contains(text, "Content Security Policy") || strings.Contains(text, "Refused to") {
			t.Errorf("browser console: %s", text)
		}
		for _, secret := range []string{root, key, other, rolled} {
			if strings.Contains(text, secret) {
				t.Errorf("a secret reached the browser console: %s", text)
			}
		}
	}
}
