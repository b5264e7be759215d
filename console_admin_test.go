package main

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// TestConsoleAdminTokensAndAudit walks the console's "Admin tokens" and
// "Audit log" pages: root issues, rolls and revokes an organization's admin
// tokens, finds those changes in the organization's audit log with its
// filters and cursor and in the whole log, then an org admin sees only its
// organization's entries, rolls the token it is signed in with and revokes it.
func TestConsoleAdminTokensAndAudit(t *testing.T) {
	skipShort(t, "a console session in Chromium takes some 10 s")
	b := newBrowser(t)
	const root = "kh_admin_5eed00005eed00005eed00005eed0000"
	srv := startKeyhole(t, "--db", filepath.Join(t.TempDir(), "console.db"), "--admin-token", root,
		"--flush-interval", "100ms")
	base := srv.url()
	id := func(r response) string {
		t.Helper()
		s, _ := r.json(t)["id"].(string)
		return s
	}
	newOrg := func(name string) string {
		t.Helper()
		r := srv.admin(root, "POST", "/orgs", `{"name":"`+name+`"}`)
		mustStatus(t, "creating org "+name, r, 201)
		return id(r)
	}
	newKey := func(org, name string) string {
		t.Helper()
		r := srv.admin(root, "POST", "/orgs/"+org+"/keys", `{"name":"`+name+`","env":"test"}`)
		mustStatus(t, "creating key "+name, r, 201)
		return id(r)
	}
	// adminCall is an org admin token's next call.
	adminCall := func(token, org string) response {
		t.Helper()
		return srv.admin(token, "GET", "/orgs/"+org+"/keys", "")
	}
	org := newOrg("Acme Corp")
	other := newOrg("Other Inc")
	newKey(org, "billing")
	otherKey := newKey(other, "other-service")
	rows := func(table string) int {
		return mustEval[int](b, `document.querySelectorAll('#`+table+` tbody tr').length`)
	}
	reveal := func(what string) string {
		t.Helper()
		b.waitText(".reveal", "It won't be shown again.")
		secret := mustEval[string](b, `document.querySelector('#reveal-secret').textContent`)
		if !regexp.MustCompile(`^kh_orgadmin_[0-9a-f]{32}$`).MatchString(secret) {
			t.Fatalf("%s: revealed token = %q", what, secret)
		}
		b.do("dismissing "+what, click("#reveal-done"), chromedp.WaitNotPresent(chromedp.CSS("#reveal-secret")))
		return secret
	}
	tokenRow := func(token string) string {
		return `#tokens-table tr[data-prefix="` + token[:20] + `"]`
	}
	noNullErrors := func(where string) {
		t.Helper()
		for _, text := range mustEval[[]string](b, `[...document.querySelectorAll('.error:not([hidden])')].map(e => e.textContent)`) {
			if strings.Contains(text, "null") || strings.Contains(text, "undefined") {
				t.Errorf("%s: an error reads %q", where, text)
			}
		}
	}

	b.do("signing in as root", chromedp.Navigate(base+"/"), typeInto("#token", root+kb.Enter), visible("#orgs-table"))
	b.do("opening the org's admin tokens", click(`tr[data-org="`+org+`"] a`), visible("#keys-table"),
		click(`nav.tabs a[href$="/tokens"]`), visible("#tokens-table"), until(`location.hash.endsWith('/tokens')`))
	b.waitText(".empty", "No admin tokens yet.")

	// Issue: a nameless token gets the API's error in the dialog; a named
	// one is revealed once and listed by its prefix, never used yet.
	clearName := chromedp.Evaluate[chromedp.Void](`document.querySelector('#token-name').value = ''`)
	b.do("issuing a nameless token", click("#token-issue"), visible("dialog #token-name"), clearName, click("dialog button[type=submit]"))
	b.waitText("dialog .error", `Field "name" is required.`)
	noNullErrors("the issue dialog")
	b.do("cancelling", chromedp.KeyEvent(kb.Escape), chromedp.WaitNotPresent(chromedp.CSS("dialog")))
	b.do("issuing a token", click("#token-issue"), visible("dialog #token-name"), clearName, typeInto("#token-name", "ops"),
		click("dialog button[type=submit]"), chromedp.WaitNotPresent(chromedp.CSS("dialog")), visible("#reveal-secret"))
	b.shoot("8-admin-token-reveal")
	ops := reveal("the ops token")
	opsRow := tokenRow(ops)
	b.do("finding the ops token", visible(opsRow))
	for _, want := range []string{"ops", ops[:20], "never", "active"} {
		b.waitText(opsRow, want)
	}
	opsID := mustEval[string](b, `document.querySelector(`+jsString(opsRow)+`).dataset.token`)
	b.do("reloading", chromedp.Reload(), visible(opsRow))
	if mustEval[bool](b, fmt.Sprintf(`document.documentElement.outerHTML.includes(%s) || !!document.querySelector('#reveal-secret')`, jsString(ops))) {
		t.Fatal("the token is still shown after a reload")
	}

	// Its use shows as its last use.
	mustStatus(t, "a call with the ops token", adminCall(ops, org), 200)
	b.do("waiting for its last use", until(`(document.querySelector('#tokens-refresh').click(),
		/just now|minute/.test(document.querySelector(`+jsString(opsRow+" .last-used")+`).textContent))`))

	// Roll with a grace period: the new token is revealed, the old one
	// keeps working until it expires.
	b.do("issuing another token", click("#token-issue"), visible("dialog #token-name"), clearName, typeInto("#token-name", "ci"),
		click("dialog button[type=submit]"), visible("#reveal-secret"))
	ci := reveal("the ci token")
	b.do("rolling it", click(tokenRow(ci)+" .roll"), visible("dialog #roll-grace"), choose("#roll-grace", "1h"),
		click("dialog button[type=submit]"), chromedp.WaitNotPresent(chromedp.CSS("dialog")), visible("#reveal-secret"))
	b.waitText(".reveal", "rolled admin token")
	ci2 := reveal("the rolled ci token")
	if ci2 == ci {
		t.Fatal("the roll revealed the old token")
	}
	b.do("seeing both ci tokens", visible(tokenRow(ci2)), visible(tokenRow(ci)+`[data-status="active"] .expires time`))
	for _, tok := range []string{ci, ci2} {
		mustStatus(t, "a call with a ci token in the grace period", adminCall(tok, org), 200)
	}
	ciID := mustEval[string](b, `document.querySelector(`+jsString(tokenRow(ci))+`).dataset.token`)
	ci2ID := mustEval[string](b, `document.querySelector(`+jsString(tokenRow(ci2))+`).dataset.token`)

	// Revoke: the token's next call is refused.
	b.do("revoking the ops token", click(opsRow+" .revoke"), visible("dialog button.danger"), click("dialog button.danger"),
		chromedp.WaitNotPresent(chromedp.CSS("dialog")), visible(opsRow+`[data-status="revoked"] .revoked-at time`))
	if r := adminCall(ops, org); r.status != 401 || r.errorCode(t) != "invalid_or_revoked" {
		t.Fatalf("the revoked token's next call = %d %s; want 401 invalid_or_revoked", r.status, r.body)
	}
	if n := rows("tokens-table"); n != 3 {
		t.Errorf("the table lists %d tokens; want 3", n)
	}
	b.shoot("9-admin-tokens")

	// The organization's audit log, newest first: these changes, by root.
	b.do("opening the audit log", click(`nav.tabs a[href$="/audit"]`), visible("#audit-table"),
		until(`document.querySelectorAll('#audit-table tbody tr').length === 6`))
	actions := func() []string {
		return mustEval[[]string](b, `[...document.querySelectorAll('#audit-table tbody tr')].map(r => r.dataset.action)`)
	}
	want := []string{"admin_token.revoked", "admin_token.rolled", "admin_token.created", "admin_token.created", "key.created", "org.created"}
	if got := actions(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("audit actions = %v; want %v", got, want)
	}
	revokedRow := `#audit-table tr[data-action="admin_token.revoked"]`
	for _, s := range []string{"Root admin", "ops", opsID, "revoked_at", "127.0.0.1", "req_"} {
		b.waitText(revokedRow, s)
	}
	rolledRow := `#audit-table tr[data-action="admin_token.rolled"]`
	for _, s := range []string{ciID, ci2ID, "expires_at"} {
		b.waitText(rolledRow, s)
	}
	rowCount := func(n int) chromedp.Action[chromedp.Void] {
		return until(fmt.Sprintf(`document.querySelectorAll('#audit-table tbody tr').length === %d`, n))
	}
	b.do("filtering by action", choose("#audit-action", "admin_token.created"), rowCount(2),
		until(`location.hash.includes('action=admin_token.created')`))
	b.do("clearing the filters", click("#audit-clear"), rowCount(6), chromedp.WaitNotVisible(chromedp.CSS("#audit-clear")))
	b.do("filtering by a row's target", click(revokedRow+` button[data-filter="target"]`), rowCount(2),
		until(`document.querySelector('#audit-target').value === '`+opsID+`'`))
	if got := actions(); strings.Join(got, " ") != "admin_token.revoked admin_token.created" {
		t.Errorf("entries of the ops token = %v", got)
	}
	b.do("reloading with the filter", chromedp.Reload(), visible("#audit-table"), rowCount(2),
		until(`document.querySelector('#audit-target').value === '`+opsID+`'`))
	b.do("filtering by actor root", click("#audit-clear"), rowCount(6), choose("#audit-actor", "root"), rowCount(6))
	b.do("filtering by actor system", choose("#audit-actor", "system"), visible(".empty"))
	b.waitText(".empty", "No entries match these filters.")
	b.do("a target that is no id", click("#audit-clear"), rowCount(6), typeInto("#audit-target", "nope"+kb.Enter))
	b.waitText("#audit-filters + .error", `Parameter "target" must be an id like`)
	noNullErrors("the audit page")
	b.do("clearing it", click("#audit-clear"), rowCount(6), chromedp.WaitNotVisible(chromedp.CSS("#audit-filters + .error")))
	b.shoot("10-audit")

	// More than a page: "Load older" walks the cursor back, newest first.
	for i := range 55 {
		newKey(org, fmt.Sprintf("bulk-%d", i))
	}
	b.do("refreshing", click("#audit-refresh"), rowCount(50), visible("#audit-older"))
	b.do("loading older entries", click("#audit-older"), rowCount(61), chromedp.WaitNotVisible(chromedp.CSS("#audit-older")))
	if ids := mustEval[[]string](b, `[...document.querySelectorAll('#audit-table tbody tr')].map(r => r.dataset.id)`); !countsDown(ids) {
		t.Errorf("audit rows are not newest first: %v", ids)
	}
	b.do("filtering the bulk keys", choose("#audit-action", "key.created"), rowCount(50), visible("#audit-older"),
		click("#audit-older"), rowCount(56))
	b.do("back to all", click("#audit-clear"), rowCount(50))

	// Root's whole log: every organization's entries, and the root
	// token's, which belong to none.
	b.do("opening the whole audit log", click("#nav-audit"), visible("#audit-table"), until(`location.hash === '#/audit'`),
		rowCount(50))
	b.do("filtering org creations", choose("#audit-action", "org.created"), rowCount(2))
	b.waitText("#audit-table", "Other Inc")
	b.do("filtering the root token", choose("#audit-action", "root_token.set"), rowCount(1))
	b.waitText("#audit-table tbody tr", "keyhole")
	b.do("filtering the other org's key", click("#audit-clear"), rowCount(50), typeInto("#audit-target", otherKey+kb.Enter), rowCount(1))
	b.waitText("#audit-table tbody tr", "Other Inc")
	b.shoot("11-audit-all")
	noNullErrors("the whole audit log")

	// An org admin: no issuing, its own token marked, only its org's
	// entries (root's without their client), no whole log.
	b.do("signing out", click("#sign-out"), visible("#signin-form #token"))
	b.do("signing in with the rolled ci token", typeInto("#token", ci2+kb.Enter), visible("#keys-table"),
		click(`nav.tabs a[href$="/tokens"]`), visible(tokenRow(ci2)))
	b.waitText(tokenRow(ci2), "this session")
	if mustEval[bool](b, `!!document.querySelector('#token-issue') || document.querySelectorAll('#tokens-table .tag').length !== 1`) {
		t.Error("the org admin may issue tokens, or more than one token is marked as this session")
	}
	b.do("revoking the old ci token as org admin", click(tokenRow(ci)+" .revoke"), click("dialog button.danger"),
		chromedp.WaitNotPresent(chromedp.CSS("dialog")), visible(tokenRow(ci)+`[data-status="revoked"]`))
	b.do("opening the audit log", click(`nav.tabs a[href$="/audit"]`), visible("#audit-table"), rowCount(50))
	if text := mustEval[string](b, `document.querySelector('#audit-table').textContent`); strings.Contains(text, otherKey) ||
		strings.Contains(text, other) || !strings.Contains(text, "127.0.0.1") {
		t.Errorf("the org admin's audit log shows another org, or no client of its own call:\n%s", text)
	}
	b.waitText(revokedRow, "ci")
	b.waitText(revokedRow+" .client", "127.0.0.1")
	if n := mustEval[int](b, `[...document.querySelectorAll('#audit-table tr[data-action="key.created"] .client')].filter(c => c.textContent !== '—').length`); n != 0 {
		t.Errorf("the org admin sees the client of %d of root's entries", n)
	}
	b.do("filtering by its own actor", click(revokedRow+` button[data-filter="actor"]`), rowCount(1),
		until(`document.querySelector('#audit-actor').value === '`+ci2ID+`'`))
	b.do("trying the whole log", chromedp.Navigate(base+"/#/audit"), until(`location.hash === '#/orgs/`+org+`/keys'`), visible("#keys-table"))
	if r := srv.admin(ci2, "GET", "/audit", ""); r.status != 403 {
		t.Errorf("the org admin's GET /audit = %d; want 403", r.status)
	}

	// Rolling the token in use goes on with the new one; revoking it signs out.
	b.do("opening admin tokens", click(`nav.tabs a[href$="/tokens"]`), visible(tokenRow(ci2)+" .roll"))
	b.do("rolling its own token", click(tokenRow(ci2)+" .roll"), visible("dialog #roll-grace"))
	b.waitText("dialog", "This tab is signed in with this token")
	b.do("confirming", click("dialog button[type=submit]"), chromedp.WaitNotPresent(chromedp.CSS("dialog")), visible("#reveal-secret"))
	ci3 := reveal("the org admin's rolled token")
	b.do("seeing the new token as this session", visible(tokenRow(ci3)+" .tag"), visible(tokenRow(ci2)+`[data-status="expired"]`))
	if got := mustEval[string](b, `sessionStorage.getItem('keyhole.token')`); got != ci3 {
		t.Errorf("after rolling its own token the tab holds %q; want the new one", got)
	}
	if r := adminCall(ci2, org); r.status != 401 {
		t.Errorf("the rolled-away token's next call = %d; want 401", r.status)
	}
	b.shoot("12-org-admin-tokens")
	b.do("revoking its own token", click(tokenRow(ci3)+" .revoke"), visible("dialog button.danger"))
	b.waitText("dialog", "revoking it signs you out")
	b.do("confirming", click("dialog button.danger"), visible("#signin-form #token"))
	b.waitText("#signin-form .error", "You revoked the admin token this tab was signed in with.")
	noNullErrors("the sign-in page")
	if r := adminCall(ci3, org); r.status != 401 {
		t.Errorf("the revoked token's next call = %d; want 401", r.status)
	}
	if n := mustEval[int](b, `sessionStorage.length`); n != 0 {
		t.Errorf("sessionStorage holds %d items after the token was revoked", n)
	}

	for _, m := range b.console() {
		text := m.String()
		if m.IsException() || strings.Contains(text, "Content Security Policy") || strings.Contains(text, "Refused to") {
			t.Errorf("browser console: %s", text)
		}
		for _, secret := range []string{root, ops, ci, ci2, ci3} {
			if strings.Contains(text, secret) {
				t.Errorf("a secret reached the browser console: %s", text)
			}
		}
	}
}

// countsDown reports whether ids, numbers, strictly decrease.
func countsDown(ids []string) bool {
	for i := 1; i < len(ids); i++ {
		var a, b int
		fmt.Sscan(ids[i-1], &a)
		fmt.Sscan(ids[i], &b)
		if b >= a {
			return false
		}
	}
	return len(ids) > 0
}
