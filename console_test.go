package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// The console tests: headers and file rules without a browser, then the
// whole console in a real headless Chromium against a real keyhole process.

func TestConsoleHeaders(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t)
	r := te.do("GET", "/", "")
	mustStatus(t, "GET /", r, 200)
	want := map[string]string{
		"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
			"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
		"X-Content-Type-Options": "nosniff",
		"Referrer-Policy":        "no-referrer",
		"X-Frame-Options":        "DENY",
		"Content-Type":           "text/html; charset=utf-8",
	}
	for name, v := range want {
		if got := r.header.Get(name); got != v {
			t.Errorf("GET / %s = %q; want %q", name, got, v)
		}
	}
	if !strings.Contains(string(r.body), `<script type="module" src="/console/app.js"></script>`) {
		t.Errorf("GET / does not load the console module:\n%s", r.body)
	}

	for file, ctype := range map[string]string{"app.js": "text/javascript; charset=utf-8",
		"style.css": "text/css; charset=utf-8", "icon.svg": "image/svg+xml"} {
		r := te.do("GET", "/console/"+file, "")
		mustStatus(t, "GET /console/"+file, r, 200)
		if got := r.header.Get("Content-Type"); got != ctype {
			t.Errorf("/console/%s Content-Type = %q; want %q", file, got, ctype)
		}
		if r.header.Get("Content-Security-Policy") == "" || r.header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("/console/%s lacks the security headers: %v", file, r.header)
		}
		again := te.do("GET", "/console/"+file, "", "If-None-Match", r.header.Get("ETag"))
		mustStatus(t, "GET /console/"+file+" with its ETag", again, 304)
	}
	head := te.do("HEAD", "/", "")
	mustStatus(t, "HEAD /", head, 200)
	if len(head.body) != 0 {
		t.Errorf("HEAD / has a body of %d bytes", len(head.body))
	}
	for _, p := range []string{"/console/nope.js", "/console/", "/console/../handlers.go", "/index.htm"} {
		if r := te.do("GET", p, ""); r.status != 404 || r.errorCode(t) != "not_found" {
			t.Errorf("GET %s = %d %s; want 404 not_found", p, r.status, r.body)
		}
	}
	// The console takes nothing from the guarded surface or the admin API.
	if r := te.do("GET", "/api/v1/dev/", ""); r.status != 401 {
		t.Errorf("GET /api/v1/dev/ = %d; want the guarded surface's 401", r.status)
	}
	if r := te.do("GET", "/admin/v1/orgs", ""); r.status != 401 {
		t.Errorf("GET /admin/v1/orgs without a token = %d; want 401", r.status)
	}
}

var (
	externalURL = regexp.MustCompile(`(?i)(\b[a-z][a-z0-9+.-]*:)?//[a-z0-9-]+(\.[a-z0-9-]+)+[^\s'"<>)]*`)
	scriptTag   = regexp.MustCompile(`(?is)<script\b([^>]*)>(.*?)</script\s*>`)
	eventAttr   = regexp.MustCompile(`(?i)<[^>]*\son[a-z]+\s*=`)
	styleAttr   = regexp.MustCompile(`(?i)<[^>]*\sstyle\s*=|<style\b`)
	jsImport    = regexp.MustCompile(`(?m)^import\b[^'"]*['"]([^'"]+)['"]`)
	fileRef     = regexp.MustCompile(`\s(?:src|href)="([^"#]+)"`)
	unsafeJS    = regexp.MustCompile(`\binnerHTML\b|\bouterHTML\b|insertAdjacentHTML|document\.write|\beval\(|new Function|` +
		`\blocalStorage\s*[.\[]|\bconsole\.[a-z]+\(|setAttribute\(\s*['"]style|\.cssText\b`)
)

// TestConsoleFilesAreSelfContained checks the rules the CSP relies on: no
// inline script or style, no file from another site, no markup built from
// strings, no secret in localStorage or the console.
func TestConsoleFilesAreSelfContained(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t)
	names := map[string]bool{}
	err := fs.WalkDir(consoleFiles, "console", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		names[strings.TrimPrefix(name, "console/")] = true
		buf, err := fs.ReadFile(consoleFiles, name)
		if err != nil {
			return err
		}
		text := string(buf)
		for _, u := range externalURL.FindAllString(text, -1) {
			if u != "http://www.w3.org/2000/svg" { // the SVG namespace name, never fetched
				t.Errorf("%s refers to another site: %s", name, u)
			}
		}
		switch path.Ext(name) {
		case ".html":
			for _, m := range scriptTag.FindAllStringSubmatch(text, -1) {
				if !strings.Contains(m[1], "src=") || strings.TrimSpace(m[2]) != "" {
					t.Errorf("%s has an inline script: %s", name, m[0])
				}
			}
			if m := eventAttr.FindString(text); m != "" {
				t.Errorf("%s has an inline event handler: %s", name, m)
			}
			if m := styleAttr.FindString(text); m != "" {
				t.Errorf("%s has an inline style: %s", name, m)
			}
			for _, m := range fileRef.FindAllStringSubmatch(text, -1) {
				if r := te.do("GET", m[1], ""); r.status != 200 {
					t.Errorf("%s refers to %s, which answers %d", name, m[1], r.status)
				}
			}
		case ".js":
			if m := unsafeJS.FindString(text); m != "" {
				t.Errorf("%s uses %s", name, m)
			}
			for _, m := range jsImport.FindAllStringSubmatch(text, -1) {
				if !strings.HasPrefix(m[1], "./") {
					t.Errorf("%s imports %s, which is not one of the console's files", name, m[1])
				} else if _, err := fs.Stat(consoleFiles, "console/"+m[1][2:]); err != nil {
					t.Errorf("%s imports %s, which does not exist", name, m[1])
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"index.html", "app.js", "style.css"} {
		if !names[want] {
			t.Errorf("console/%s is missing", want)
		}
	}
}

// browser is one headless Chromium tab, with what the page wrote to its
// console.
type browser struct {
	t     *testing.T
	ctx   context.Context
	shots string

	mu       sync.Mutex
	messages []chromedp.ConsoleMessage
}

func chromiumPath() string {
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	return "/usr/bin/chromium"
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	exe := chromiumPath()
	if _, err := os.Stat(exe); err != nil {
		integrationMissing(t, "chromium is not installed (Debian package chromium)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.NoFirstRun,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil { // starts the browser, with no timeout
		t.Fatalf("starting chromium: %v", err)
	}
	b := &browser{t: t, ctx: ctx, shots: os.Getenv("KEYHOLE_SCREENSHOTS")}
	if b.shots != "" {
		if err := os.MkdirAll(b.shots, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.messages = append(b.messages, m)
			b.mu.Unlock()
		}
	}()
	return b
}

// console is what the page wrote to its console so far.
func (b *browser) console() []chromedp.ConsoleMessage {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]chromedp.ConsoleMessage(nil), b.messages...)
}

// do runs steps with a time limit, failing the test with what the page said.
func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.fail(what, err)
	}
}

func (b *browser) fail(what string, err error) {
	b.t.Helper()
	var said strings.Builder
	for _, m := range b.console() {
		fmt.Fprintf(&said, "  %s\n", m)
	}
	page, _ := evalJS[string](b, `document.body.innerText + '\n' + performance.getEntriesByType('resource').map(e => e.name + ' ' + e.responseStatus).join('\n')`)
	b.t.Fatalf("%s: %v\npage text:\n%s\nbrowser console:\n%s", what, err, page, said.String())
}

func evalJS[T any](b *browser, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
}

func mustEval[T any](b *browser, expr string) T {
	b.t.Helper()
	v, err := evalJS[T](b, expr)
	if err != nil {
		b.fail("evaluating "+expr, err)
	}
	return v
}

// until waits for a JavaScript condition; it never sleeps a fixed time.
func until(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(15*time.Second), chromedp.WithPollingInterval(50*time.Millisecond))
}

func (b *browser) waitText(sel, text string) {
	b.t.Helper()
	b.do(fmt.Sprintf("waiting for %q in %s", text, sel), until(fmt.Sprintf(
		`document.querySelector(%s)?.textContent.includes(%s)`, jsString(sel), jsString(text))))
}

func jsString(s string) string {
	buf, _ := json.Marshal(s)
	return string(buf)
}

// shoot checks that the page fits 360 px without sideways scrolling, and
// writes full-page screenshots at 1280 and 360 px when KEYHOLE_SCREENSHOTS
// names a folder.
func (b *browser) shoot(name string) {
	b.t.Helper()
	settle := chromedp.Evaluate[chromedp.Void](`new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))`, chromedp.EvalAwaitPromise)
	for _, width := range []int64{1280, 360} {
		b.do("resizing to "+fmt.Sprint(width), chromedp.EmulateViewport(width, 800), settle)
		if width == 360 {
			if over := mustEval[int](b, `document.documentElement.scrollWidth - innerWidth`); over > 0 {
				b.t.Errorf("page %s is %d px wider than a 360 px screen", name, over)
			}
		}
		if b.shots == "" {
			continue
		}
		ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		cancel()
		if err != nil {
			b.fail("screenshot of "+name, err)
		}
		file := filepath.Join(b.shots, fmt.Sprintf("%s-%d.png", name, width))
		if err := os.WriteFile(file, png, 0o644); err != nil {
			b.t.Fatal(err)
		}
	}
	b.do("resizing back", chromedp.EmulateViewport(1280, 900), settle)
}

// click is a chromedp click on the first match of a CSS selector, once visible.
func click(sel string) chromedp.Action[chromedp.Void] {
	return chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible)
}

func visible(sel string) chromedp.Action[chromedp.Void] {
	return chromedp.WaitVisible(chromedp.CSS(sel))
}

func typeInto(sel, text string) chromedp.Action[chromedp.Void] {
	return chromedp.SendKeys(chromedp.CSS(sel), text, chromedp.NodeVisible)
}

// choose sets a select's value the way a user does, with a change event.
func choose(sel, value string) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(() => { const s = document.querySelector(%s); s.value = %s;
		s.dispatchEvent(new Event('change', { bubbles: true })); })()`, jsString(sel), jsString(value)))
}

// TestConsoleBrowser walks the console as an operator does: sign in, create
// an organization and its admin token, create a key and see it once, use it,
// find the request in the logs and the chart, revoke it, sign out, and sign
// in as the org admin.
func TestConsoleBrowser(t *testing.T) {
	skipShort(t, "a whole console session in Chromium takes some 10 s")
	b := newBrowser(t)
	const root = "kh_admin_c0ffee00c0ffee00c0ffee00c0ffee00"
	srv := startKeyhole(t, "--db", filepath.Join(t.TempDir(), "console.db"), "--admin-token", root,
		"--flush-interval", "100ms")
	base := srv.url()

	// Sign in: a wrong token is refused at the form, the right one lands on
	// the organizations, and the token sits in sessionStorage only.
	b.do("opening the console", chromedp.Navigate(base+"/"), visible("#signin-form #token"))
	b.shoot("1-signin")
	b.do("signing in with a wrong token", typeInto("#token", "kh_admin_not-the-token"), click("#signin-form button[type=submit]"))
	b.waitText("#signin-form .error", "Admin token is invalid or revoked.")
	b.do("signing in with the keyboard", chromedp.Evaluate[chromedp.Void](`document.querySelector('#token').value = ''`), typeInto("#token", root+kb.Enter),
		visible("#orgs-table"), until(`location.hash === '#/orgs'`))
	if got := mustEval[string](b, `sessionStorage.getItem('keyhole.token')`); got != root {
		t.Errorf("sessionStorage token = %q; want the root token", got)
	}

	// Organizations: an API error shows by the form; then create one and
	// issue its admin token, revealed once.
	b.do("creating an org with no name", click("#org-form button[type=submit]"))
	b.waitText(`section[aria-labelledby="new-org-h"] .error`, `Field "name" is required.`)
	b.do("creating an org", typeInto("#org-name", "Acme Corp"), click("#org-form button[type=submit]"))
	b.waitText("#orgs-table", "Acme Corp")
	b.do("checking the form error is gone", until(`document.querySelector('section[aria-labelledby="new-org-h"] .error').hidden`))
	org := mustEval[string](b, `document.querySelector('#orgs-table tr[data-org]').dataset.org`)
	b.do("opening the admin token dialog", click(`tr[data-org="`+org+`"] .issue-token`), visible("dialog #token-name"))
	b.do("issuing the admin token", click("dialog button[type=submit]"), visible("#reveal-secret"),
		chromedp.WaitNotPresent(chromedp.CSS("dialog")))
	orgToken := mustEval[string](b, `document.querySelector('#reveal-secret').textContent`)
	if !regexp.MustCompile(`^kh_orgadmin_[0-9a-f]{32}$`).MatchString(orgToken) {
		t.Fatalf("revealed org admin token = %q", orgToken)
	}
	b.waitText(".reveal", "It won't be shown again.")
	b.shoot("2-orgs")
	b.do("dismissing the token", click("#reveal-done"), chromedp.WaitNotPresent(chromedp.CSS("#reveal-secret")))

	// Keys: an empty name gets the API's error at the form; a new key is
	// revealed once, with a copy button, and listed without its secret.
	b.do("opening the org", click(`tr[data-org="`+org+`"] a`), visible("#key-form"), visible("#keys-table"))
	b.waitText("main h1", "Acme Corp")
	b.do("creating a key with no name", click("#key-create"))
	b.waitText("#key-form .error", `Field "name" is required.`)
	b.do("creating a live key",
		typeInto("#key-name", "billing-service"),
		click(`#key-env input[value="live"]`),
		typeInto("#key-scopes", "sms:send, whoami:read"),
		typeInto("#key-limits", "100/1m, 1000/1h"),
		click("#key-create"),
		visible("#reveal-secret"))
	key := mustEval[string](b, `document.querySelector('#reveal-secret').textContent`)
	if !regexp.MustCompile(`^kh_live_[0-9a-f]{32}$`).MatchString(key) {
		t.Fatalf("revealed key = %q", key)
	}
	b.waitText(".reveal", "It won't be shown again.")
	b.do("copying the key", click("#reveal-copy"))
	b.waitText(".copy-status", "won't be shown again")
	keyID := mustEval[string](b, `document.querySelector('#keys-table tr[data-key]').dataset.key`)
	keyRow := `#keys-table tr[data-key="` + keyID + `"]`
	for _, want := range []string{"billing-service", key[:16], "live", "sms:send", "whoami:read", "never", "active"} {
		b.waitText(keyRow, want)
	}
	b.do("checking the form is empty again", until(`document.querySelector('#key-name').value === '' && !document.querySelector('#key-form .error:not([hidden])')`))
	b.shoot("3-keys-reveal")
	if stored := mustEval[string](b, `JSON.stringify([location.href, {...sessionStorage}, {...localStorage}, document.cookie])`); strings.Contains(stored, key) {
		t.Errorf("the key is kept outside the reveal panel: %s", stored)
	}
	if !strings.Contains(mustEval[string](b, `JSON.stringify({...sessionStorage})`), root) {
		t.Errorf("sessionStorage lost the admin token")
	}
	if n := mustEval[int](b, `localStorage.length`); n != 0 {
		t.Errorf("localStorage holds %d items; want none", n)
	}

	b.do("reloading", chromedp.Reload(), visible(keyRow))
	if mustEval[bool](b, fmt.Sprintf(`document.documentElement.outerHTML.includes(%s) || !!document.querySelector('#reveal-secret')`, jsString(key))) {
		t.Fatal("the key is still shown after a reload")
	}

	// Use the key: the request shows up in the logs by itself.
	if r := srv.do("GET", "/api/v1/prod/whoami", "", bearer(key)...); r.status != 200 {
		t.Fatalf("whoami with the new key = %d %s", r.status, r.errorCode(t))
	}
	b.do("opening the logs", click(`nav.tabs a[href$="/logs"]`), visible("#logs-table"))
	b.waitText("#logs-table tbody", "/api/v1/prod/whoami")
	b.waitText("#logs-table tbody tr", "billing-service")
	b.waitText("#logs-table tbody tr", "200")
	if r := srv.do("GET", "/api/v1/prod/no-such-thing", "", bearer(key)...); r.status != 404 {
		t.Fatalf("a request to an unknown path = %d; want 404", r.status)
	}
	b.waitText("#logs-table tbody tr", "/api/v1/prod/no-such-thing") // no click: the page refreshes itself
	b.do("filtering 4xx", choose("#log-status", "4xx"),
		until(`(() => { const rows = [...document.querySelectorAll('#logs-table tbody tr')];
			return rows.length === 1 && rows[0].textContent.includes('404'); })()`))
	b.do("clearing the filter", choose("#log-status", ""), until(`document.querySelectorAll('#logs-table tbody tr').length === 2`))
	b.do("filtering test", choose("#log-env", "test"), visible(".empty"))
	b.do("clearing the env filter", choose("#log-env", ""), until(`document.querySelectorAll('#logs-table tbody tr').length === 2`))
	b.shoot("4-logs")

	// Load older: more than one page of entries, walked with the cursor.
	total := 2
	for range 53 {
		srv.do("GET", "/api/v1/prod/whoami", "", bearer(key)...)
		total++
	}
	b.do("reloading the logs", chromedp.Reload(), visible("#logs-table"),
		until(`document.querySelectorAll('#logs-table tbody tr').length === 50`), visible("#log-older"))
	b.do("loading older entries", click("#log-older"),
		until(fmt.Sprintf(`document.querySelectorAll('#logs-table tbody tr').length === %d`, total)),
		chromedp.WaitNotVisible(chromedp.CSS("#log-older")))
	if ids := mustEval[[]string](b, `[...document.querySelectorAll('#logs-table tbody tr')].map(r => r.dataset.id)`); !newestFirst(ids) {
		t.Errorf("log rows are not newest first without gaps: %v", ids)
	}

	// Usage: live bars for this hour, 2xx and 4xx, and none for test.
	b.do("opening usage", click(`nav.tabs a[href$="/usage"]`), visible("#usage-live svg"), visible("#usage-live rect.bar-2xx"))
	sum := func(sel string) int {
		return mustEval[int](b, `[...document.querySelectorAll(`+jsString(sel)+`)].reduce((n, r) => n + Number(r.dataset.count), 0)`)
	}
	if ok, bad := sum("#usage-live rect.bar-2xx"), sum("#usage-live rect.bar-4xx"); ok != total-1 || bad != 1 {
		t.Errorf("live chart has %d 2xx and %d 4xx; want %d and 1", ok, bad, total-1)
	}
	if n := mustEval[int](b, `document.querySelectorAll('#usage-test rect').length`); n != 0 {
		t.Errorf("test chart has %d bars; want none", n)
	}
	b.waitText("#usage-test", "No requests in the last 48 hours")
	b.shoot("5-usage")

	// Revoke, with confirmation: Escape cancels, the button revokes, and the
	// server refuses the key at once.
	b.do("back to keys", click(`nav.tabs a[href$="/keys"]`), visible(keyRow))
	b.do("checking last used", until(`/just now|minute/.test(document.querySelector('`+keyRow+` .last-used').textContent)`))
	b.do("opening the revoke dialog", click(keyRow+" .revoke"), visible("dialog button.danger"))
	b.shoot("6-revoke-confirm")
	b.do("cancelling with Escape", chromedp.KeyEvent(kb.Escape), chromedp.WaitNotPresent(chromedp.CSS("dialog")))
	if st := mustEval[string](b, `document.querySelector(`+jsString(keyRow)+`).dataset.status`); st != "active" {
		t.Fatalf("after cancelling, the key is %s", st)
	}
	b.do("revoking", click(keyRow+" .revoke"), click("dialog button.danger"),
		chromedp.WaitNotPresent(chromedp.CSS("dialog")), visible(keyRow+`[data-status="revoked"]`))
	b.waitText(keyRow, "revoked")
	if r := srv.do("GET", "/api/v1/prod/whoami", "", bearer(key)...); r.status != 401 || r.errorCode(t) != "invalid_or_revoked" {
		t.Fatalf("the revoked key got %d %s; want 401 invalid_or_revoked", r.status, r.errorCode(t))
	}

	// A key's "Logs" link opens the logs filtered to that key.
	b.do("opening the key's logs", click(keyRow+" a.button"), visible("#logs-table"),
		until(`document.querySelector('#log-key').value === '`+keyID+`'`),
		until(`document.querySelectorAll('#logs-table tbody tr').length === 50`))
	b.do("back to keys", click(`nav.tabs a[href$="/keys"]`), visible(keyRow+`[data-status="revoked"]`))

	// Roll a test key: the new key is revealed, the old one stops now.
	b.do("creating a test key", typeInto("#key-name", "ci-runner"), click("#key-create"), visible("#reveal-secret"))
	testKey := mustEval[string](b, `document.querySelector('#reveal-secret').textContent`)
	b.do("dismissing it", click("#reveal-done"), chromedp.WaitNotPresent(chromedp.CSS("#reveal-secret")))
	testID := mustEval[string](b, `[...document.querySelectorAll('#keys-table tr[data-key]')].find(r => r.textContent.includes('ci-runner')).dataset.key`)
	testRow := `#keys-table tr[data-key="` + testID + `"]`
	b.do("rolling it", click(testRow+" .roll"), visible("dialog #roll-grace"), click("dialog button[type=submit]"),
		chromedp.WaitNotPresent(chromedp.CSS("dialog")), visible("#reveal-secret"), visible(testRow+`[data-status="expired"]`))
	rolled := mustEval[string](b, `document.querySelector('#reveal-secret').textContent`)
	if !strings.HasPrefix(rolled, "kh_test_") || rolled == testKey {
		t.Fatalf("rolled key = %q (old %q)", rolled, testKey)
	}
	if r := srv.do("GET", "/api/v1/dev/whoami", "", bearer(testKey)...); r.status != 401 || r.errorCode(t) != "key_expired" {
		t.Errorf("the rolled-away key got %d %s; want 401 key_expired", r.status, r.errorCode(t))
	}
	if r := srv.do("GET", "/api/v1/dev/whoami", "", bearer(rolled)...); r.status != 200 {
		t.Errorf("the rolled key got %d %s; want 200", r.status, r.errorCode(t))
	}
	b.do("filtering test keys", click(`#key-filter input[value="test"]`),
		until(`[...document.querySelectorAll('#keys-table tbody tr')].every(r => r.querySelector('.env').textContent === 'test')`),
		until(`document.querySelectorAll('#keys-table tbody tr').length === 2`))
	b.do("filtering live keys", click(`#key-filter input[value="live"]`),
		until(`document.querySelectorAll('#keys-table tbody tr').length === 1`))

	// Sign out clears sessionStorage; the org admin lands on its organization.
	b.do("signing out", click("#sign-out"), visible("#signin-form #token"))
	if n := mustEval[int](b, `sessionStorage.length`); n != 0 {
		t.Errorf("sessionStorage holds %d items after sign out", n)
	}
	b.do("signing in as the org admin", typeInto("#token", orgToken+kb.Enter), visible("#key-form"), visible(keyRow))
	if got, want := mustEval[string](b, `location.hash`), "#/orgs/"+org+"/keys"; got != want {
		t.Errorf("org admin landed on %q; want %q", got, want)
	}
	b.waitText("#who", "Org admin")
	if n := mustEval[int](b, `document.querySelectorAll('#nav a, .crumb').length`); n != 0 {
		t.Errorf("the org admin sees %d links to the organization list", n)
	}
	b.do("trying the org list as org admin", chromedp.Navigate(base+"/#/orgs"),
		until(`location.hash === '#/orgs/`+org+`/keys'`), visible(keyRow))
	b.shoot("7-org-admin")

	for _, m := range b.console() {
		text := m.String()
		if m.IsException() || strings.Contains(text, "Content Security Policy") || strings.Contains(text, "Refused to") {
			t.Errorf("browser console: %s", text)
		}
		for _, secret := range []string{key, testKey, rolled, orgToken, root} {
			if strings.Contains(text, secret) {
				t.Errorf("a secret reached the browser console: %s", text)
			}
		}
	}
}

// newestFirst reports whether log ids count down by one.
func newestFirst(ids []string) bool {
	for i := 1; i < len(ids); i++ {
		var a, b int
		fmt.Sscan(ids[i-1], &a)
		fmt.Sscan(ids[i], &b)
		if b != a-1 {
			return false
		}
	}
	return len(ids) > 0
}

// TestConsoleClusterLogs: on a cluster node, the console's log page shows
// every node's requests, and its poll adds those that come later from
// each node, whose ids count apart.
func TestConsoleClusterLogs(t *testing.T) {
	skipShort(t, "starts a 3-member etcd cluster and Chromium")
	b := newBrowser(t)
	nodes := startTestCluster(t, 3)
	waitOwners(t, nodes, 3)
	org := nodes[0].admin(t, "POST", "/orgs", `{"name":"acme"}`, 201)["id"].(string)
	key, _ := newKeyOn(t, nodes[0], nodes, org, `{"name":"k","env":"live"}`) // a probe on each node: 3 entries
	traffic := func(nd *clusterNode, n int) {
		for range n {
			nd.verify(t, key)
		}
	}
	// n0's ids run ahead of the others', and its entries are the newest.
	traffic(nodes[1], 2)
	traffic(nodes[2], 2)
	traffic(nodes[0], 8)
	rows := `document.querySelectorAll('#logs-table tbody tr').length`
	b.do("signing in on n1", chromedp.Navigate("http://"+nodes[1].addr+"/"), visible("#token"),
		typeInto("#token", testRootToken+kb.Enter), visible("#orgs-table"))
	b.do("opening the logs", chromedp.Navigate("http://"+nodes[1].addr+"/#/orgs/"+org+"/logs"), visible("#logs-table"),
		until(rows+` === 15`))
	if got := mustEval[string](b, `[...new Set([...document.querySelectorAll('#logs-table tbody tr')].map(r => r.dataset.node))].sort().join(',')`); got != "n0,n1,n2" {
		t.Fatalf("the log's rows come from nodes %q; want n0,n1,n2", got)
	}
	// New entries of n1 and n2 have lower ids than n0's newest shown.
	traffic(nodes[1], 2)
	traffic(nodes[2], 2)
	b.do("waiting for the poll to add every node's new requests", until(rows+` === 19`))
}
