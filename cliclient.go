package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// The admin commands (orgs, keys, tokens, logs, audit) are a client of a
// running server's admin API: this file is how they reach it. The token
// comes from the environment or a file, never a flag: a flag's value is in
// the process list (ps, /proc/PID/cmdline) for every user of the machine
// to read, and in the shell's history.

const adminCommandsNote = `Admin commands (orgs, keys, tokens, logs, audit) talk to a running server,
--server or KEYHOLE_SERVER (default ` + defaultServer + `), with the admin token
in KEYHOLE_ADMIN_TOKEN or in the file --token-file names (never a flag: the
process list would show it). --json prints the API's JSON as it is; a new key
or token is shown once. Exit status: 0 done, 1 failed (server unreachable or
5xx), 2 bad command line, 3 not found, 4 token refused (401, 403, 429),
5 request refused (400).
`

const (
	defaultServer = "http://127.0.0.1:8080" // serve's default --addr
	tokenVariable = "KEYHOLE_ADMIN_TOKEN"
)

// adminHTTP is the admin commands' one HTTP client. A request never takes
// longer than its timeout: a server that hangs fails the command.
var adminHTTP = &http.Client{Timeout: 30 * time.Second}

// adminFlags are the flags every admin command takes.
type adminFlags struct {
	server    string
	tokenFile string
	json      bool
}

func addAdminFlags(fs *flag.FlagSet) *adminFlags {
	f := &adminFlags{}
	fs.StringVar(&f.server, "server", defaultServer, "`URL` of the running keyhole")
	fs.StringVar(&f.tokenFile, "token-file", "", "`FILE` holding the admin token (else $"+tokenVariable+")")
	fs.BoolVar(&f.json, "json", false, "print the API's JSON as it is, for scripts")
	return f
}

// connectionEnv is getenv for an admin command's flags: only those of its
// connection are read from the environment. A command's own (--name,
// --env, --limit…) come from its line alone, so that a variable set for
// something else (KEYHOLE_ENV=production) never names, filters or edits
// a record.
func connectionEnv(getenv func(string) string) func(string) string {
	return func(name string) string {
		switch name {
		case flagEnvName("server"), flagEnvName("token-file"), flagEnvName("json"):
			return getenv(name)
		}
		return ""
	}
}

// adminConn is one admin command's connection: where, with which token,
// and how it prints.
type adminConn struct {
	cmd   string // "keys create", for messages
	base  string // the server's URL, without a final /
	token string
	json  bool
	out   *cli
}

// connect checks the flags and reads the token.
func (f *adminFlags) connect(c *cli, cmd string) (*adminConn, error) {
	base, err := serverURL(f.server)
	if err != nil {
		return nil, usageErrorf(cmd, "--server %q: %v", f.server, err)
	}
	token, err := f.readToken(c.getenv)
	if err != nil {
		return nil, usageErrorf(cmd, "%v", err)
	}
	if u, _ := url.Parse(base); u.Scheme == "http" && !isLoopback(u.Hostname()) {
		fmt.Fprintf(c.stderr, "keyhole %s: warning: the admin token goes to %s unencrypted; use https\n", cmd, u.Host)
	}
	return &adminConn{cmd: cmd, base: base, token: token, json: f.json, out: c}, nil
}

func serverURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		u.RawQuery != "" || u.Fragment != "" {
		return "", errors.New("want a URL like http://127.0.0.1:8080 or https://keyhole.example.com")
	}
	return strings.TrimSuffix(u.String(), "/"), nil
}

func isLoopback(host string) bool {
	ip := net.ParseIP(host)
	return host == "localhost" || ip != nil && ip.IsLoopback()
}

// readToken is the admin token: --token-file's, else the variable's. What
// it says of a bad one never includes the token.
func (f *adminFlags) readToken(getenv func(string) string) (string, error) {
	token, from := getenv(tokenVariable), tokenVariable
	if f.tokenFile != "" {
		b, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return "", fmt.Errorf("--token-file: %v", err)
		}
		token, from = strings.TrimSpace(string(b)), "--token-file "+f.tokenFile
	}
	switch {
	case token == "":
		return "", fmt.Errorf("no admin token: set %s, or give --token-file FILE", tokenVariable)
	case len(token) > 256 || strings.ContainsFunc(token, func(r rune) bool { return r <= ' ' || r >= 0x7f }):
		return "", fmt.Errorf("the admin token in %s is not one: want one line of printable ASCII, no spaces", from)
	}
	return token, nil
}

// apiFailure is an answer of the server that is not a success: the
// contract's error code and message, and the exit status it makes.
type apiFailure struct {
	cmd       string
	status    int
	code      string
	message   string
	requestID string
}

func (e *apiFailure) Error() string {
	msg := fmt.Sprintf("%s: %s (HTTP %d", e.code, e.message, e.status)
	if e.requestID != "" {
		msg += ", request " + e.requestID
	}
	return msg + ")"
}

func (e *apiFailure) exitStatus() int {
	switch {
	case e.status == http.StatusNotFound:
		return exitNotFound
	case e.status == http.StatusUnauthorized || e.status == http.StatusForbidden || e.status == http.StatusTooManyRequests:
		return exitRefused
	case e.status >= 400 && e.status < 500:
		return exitRejected
	}
	return exitFailed
}

// failure reads an error answer; one not in the contract's shape (a proxy's
// page) is named by its status.
func (a *adminConn) failure(resp *http.Response, body []byte) *apiFailure {
	var eb errorBody
	f := &apiFailure{cmd: a.cmd, status: resp.StatusCode, requestID: resp.Header.Get("X-Request-Id")}
	if json.Unmarshal(body, &eb) == nil && eb.Error.Code != "" {
		f.code, f.message = eb.Error.Code, eb.Error.Message
		if eb.RequestID != "" {
			f.requestID = eb.RequestID
		}
		return f
	}
	f.code, f.message = "http_error", "the server answered "+resp.Status+", not keyhole's JSON"
	return f
}

// call sends method path (under /admin/v1) with body, if not nil, as JSON,
// and returns the answer's body if it is a success.
func (a *adminConn) call(ctx context.Context, method, path string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+"/admin/v1"+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "keyhole-cli/"+describeBuild(version, nil))
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := adminHTTP.Do(req)
	if err != nil {
		return nil, a.unreachable(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, &commandError{a.cmd, fmt.Errorf("reading the answer of %s: %w", a.base, err)}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, a.failure(resp, data)
	}
	return data, nil
}

func (a *adminConn) unreachable(err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	return &commandError{a.cmd, fmt.Errorf("cannot reach keyhole at %s (is it running? --server or KEYHOLE_SERVER names it): %w", a.base, err)}
}

// commandError is a command's failure that is not the server's answer: the
// server could not be reached, or its answer read. Exit status 1.
type commandError struct {
	cmd string
	err error
}

func (e *commandError) Error() string { return e.err.Error() }
func (e *commandError) Unwrap() error { return e.err }

// get, post, patch: call with the context of a command that runs to its end.
func (a *adminConn) get(path string, q url.Values) ([]byte, error) {
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	return a.call(context.Background(), http.MethodGet, path, nil)
}

func (a *adminConn) post(path string, body any) ([]byte, error) {
	return a.call(context.Background(), http.MethodPost, path, body)
}

func (a *adminConn) patch(path string, body any) ([]byte, error) {
	return a.call(context.Background(), http.MethodPatch, path, body)
}

// apiPath joins the segments of an admin API path, each escaped.
func apiPath(segments ...string) string {
	var b strings.Builder
	for _, s := range segments {
		b.WriteString("/" + url.PathEscape(s))
	}
	return b.String()
}
