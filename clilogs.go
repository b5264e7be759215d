package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// keyhole logs and keyhole audit: pages of the request log and the audit
// log, and the request log followed as it grows (--follow).

type logsOptions struct {
	limit        int
	before       string
	keyID        string
	env          string
	status       string
	follow       bool
	interval     time.Duration
	unidentified bool
}

func logsCmd(c *cli, args []string) error {
	fs := newFlagSet("logs")
	f := addAdminFlags(fs)
	var o logsOptions
	fs.IntVar(&o.limit, "limit", defaultLogLimit, "`N` entries, 1 to 1000 (with --follow, those shown first)")
	fs.StringVar(&o.before, "before", "", "older entries: the `CURSOR` a page ended with")
	fs.StringVar(&o.keyID, "key", "", "only the requests of the key `KEY_ID`")
	fs.StringVar(&o.env, "env", "", "only the requests of `ENV`, test or live")
	fs.StringVar(&o.status, "status", "", "only the answers of `STATUS`, like 429 or 4xx")
	fs.BoolVar(&o.follow, "follow", false, "print new entries as they come, oldest first, until Ctrl-C")
	fs.DurationVar(&o.interval, "interval", 2*time.Second, "how often --follow asks for new entries")
	fs.BoolVar(&o.unidentified, "unidentified", false, "the server-wide log of requests whose key was not identified (root), instead of ORG's")
	a, ops, err := parseAdmin(c, fs, f, args, "[ORG]")
	if err != nil {
		return err
	}
	if o.unidentified == (len(ops) == 1) {
		return usageErrorf("logs", "want ORG, or --unidentified for the server-wide log: keyhole logs ORG")
	}
	if err := o.check(); err != nil {
		return usageErrorf("logs", "%v", err)
	}
	path := "/logs"
	if !o.unidentified {
		path = apiPath("orgs", ops[0], "logs")
	}
	if o.follow {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return (&follower{a: a, path: path, query: o.query()}).run(ctx, o.limit, o.interval)
	}
	return printLogPage(a, path, o.query())
}

func (o *logsOptions) check() error {
	switch {
	case o.limit < 1 || o.limit > maxLogLimit:
		return fmt.Errorf("--limit %d: want 1 to %d", o.limit, maxLogLimit)
	case o.interval < 100*time.Millisecond:
		return fmt.Errorf("--interval %s: want at least 100ms", o.interval)
	case !validEnvFilter(o.env):
		return fmt.Errorf("--env %q: want test or live", o.env)
	case o.status != "" && !validStatusFilter(o.status):
		return fmt.Errorf("--status %q: want a status like 429 or a class like 4xx", o.status)
	case o.follow && o.before != "":
		return errors.New("--follow prints new entries; --before pages back: give one of them")
	}
	return nil
}

func (o *logsOptions) query() url.Values {
	q := url.Values{"limit": {strconv.Itoa(o.limit)}}
	for name, v := range map[string]string{"before": o.before, "key_id": o.keyID, "env": o.env, "status": o.status} {
		if v != "" {
			q.Set(name, v)
		}
	}
	return q
}

func printLogPage(a *adminConn, path string, q url.Values) error {
	body, err := a.get(path, q)
	if err != nil || a.json {
		return a.printed(body, err)
	}
	var page logPage
	if err := json.Unmarshal(body, &page); err != nil {
		return err
	}
	printLogHeader(a.out.stdout)
	for _, e := range page.Entries {
		printLogLine(a.out.stdout, &e)
	}
	printNext(a.out.stdout, page.Next)
	return nil
}

// printNext says how to read the page before, if there is one.
func printNext(w io.Writer, next *string) {
	if next != nil {
		fmt.Fprintf(w, "\nOlder entries: --before %s\n", *next)
	}
}

// A log line has fixed columns, so that the lines --follow prints as they
// come stay aligned with the header; the path, of any length, is last.
const logLineFormat = "%-20s  %-6s  %-7s  %8s  %-4s  %-20s  %-20s  %s\n"

func printLogHeader(w io.Writer) {
	fmt.Fprintf(w, logLineFormat, "TIME", "STATUS", "METHOD", "LATENCY", "ENV", "KEY", "REQUEST", "PATH")
}

func printLogLine(w io.Writer, e *logEntry) {
	status := strconv.Itoa(e.Status)
	if e.Count > 1 {
		status += "×" + strconv.FormatUint(uint64(e.Count), 10)
	}
	fmt.Fprintf(w, logLineFormat, shortTime(&e.Time), status, cell(e.Method), strconv.FormatFloat(e.LatencyMS, 'f', 1, 64)+"ms",
		cell(e.Env), cell(e.KeyID), cell(e.RequestID), cell(e.Path))
}

// follower prints a log's new entries as they come. Entries' ids grow, on
// each node of a cluster apart (an entry names its node; none on one
// node); a poll reads pages from the newest back, with the log's cursor,
// until it reaches, for every node it printed entries of, the newest entry
// printed before: an entry can come later than a newer one, and on a
// cluster, from another node.
type follower struct {
	a     *adminConn
	path  string
	query url.Values
	last  map[string]uint64 // by node: the id of the newest entry printed
	began bool              // the header is printed, once the server has answered
}

// logRef is what the follower reads of an entry: its node and id.
type logRef struct {
	node string
	id   uint64
}

// run prints the newest limit entries, then new ones every interval,
// until ctx ends (Ctrl-C), which is success.
func (f *follower) run(ctx context.Context, limit int, interval time.Duration) error {
	most := limit
	for {
		err := f.poll(ctx, most)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		most = 0 // once caught up, every new entry
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}

// poll prints the entries newer than f.last, oldest first: at most most
// of them when most is not 0.
func (f *follower) poll(ctx context.Context, most int) error {
	var fresh []json.RawMessage
	var refs []logRef
	q := cloneValues(f.query)
	if most == 0 {
		q.Set("limit", strconv.Itoa(maxLogLimit))
	}
	reached := map[string]bool{} // the nodes whose newest printed entry this poll read back to
	for {
		page, err := f.page(ctx, q)
		if err != nil {
			return err
		}
		full := false
		for i, raw := range page.raw {
			ref := page.refs[i]
			if last, ok := f.last[ref.node]; ok && ref.id <= last {
				reached[ref.node] = true
				continue
			}
			if full = most != 0 && len(fresh) >= most; full {
				break
			}
			fresh, refs = append(fresh, raw), append(refs, ref)
		}
		if full || page.next == nil || len(f.last) > 0 && len(reached) == len(f.last) {
			break
		}
		q.Set("before", *page.next)
	}
	return f.print(fresh, refs)
}

type rawLogPage struct {
	raw  []json.RawMessage
	refs []logRef
	next *string
}

// page reads one page, each entry as the API wrote it and its id.
func (f *follower) page(ctx context.Context, q url.Values) (rawLogPage, error) {
	body, err := f.a.call(ctx, http.MethodGet, f.path+"?"+q.Encode(), nil)
	if err != nil {
		return rawLogPage{}, err
	}
	var page struct {
		Entries []json.RawMessage `json:"entries"`
		Next    *string           `json:"next"`
	}
	if err := json.Unmarshal(body, &page); err != nil {
		return rawLogPage{}, fmt.Errorf("reading the log: %w", err)
	}
	p := rawLogPage{raw: page.Entries, next: page.Next, refs: make([]logRef, len(page.Entries))}
	for i, raw := range page.Entries {
		var e struct{ ID, Node string }
		if json.Unmarshal(raw, &e) != nil {
			return p, errors.New("reading the log: an entry without an id")
		}
		p.refs[i].node = e.Node
		if p.refs[i].id, err = strconv.ParseUint(e.ID, 10, 64); err != nil {
			return p, fmt.Errorf("reading the log: entry id %q is not a number", e.ID)
		}
	}
	return p, nil
}

// print writes the new entries, given newest first, oldest first: a JSON
// object a line under --json.
func (f *follower) print(fresh []json.RawMessage, refs []logRef) error {
	if !f.began && !f.a.json {
		printLogHeader(f.a.out.stdout)
	}
	f.began = true
	for i := len(fresh) - 1; i >= 0; i-- {
		if f.a.json {
			fmt.Fprintf(f.a.out.stdout, "%s\n", fresh[i])
		} else {
			var e logEntry
			if err := json.Unmarshal(fresh[i], &e); err != nil {
				return err
			}
			printLogLine(f.a.out.stdout, &e)
		}
		if f.last == nil {
			f.last = map[string]uint64{}
		}
		f.last[refs[i].node] = max(f.last[refs[i].node], refs[i].id)
	}
	return nil
}

func cloneValues(v url.Values) url.Values {
	c := url.Values{}
	for k, vs := range v {
		c[k] = append([]string(nil), vs...)
	}
	return c
}

func auditCmd(c *cli, args []string) error {
	fs := newFlagSet("audit")
	f := addAdminFlags(fs)
	limit := fs.Int("limit", defaultLogLimit, "`N` entries, 1 to 1000")
	filters := map[string]*string{
		"before": fs.String("before", "", "older entries: the `CURSOR` a page ended with"),
		"actor":  fs.String("actor", "", "only the entries of `ACTOR`: root, system or an admin token's id"),
		"action": fs.String("action", "", "only the entries of `ACTION`, like key.revoked"),
		"target": fs.String("target", "", "only the entries that touched the record `ID`"),
	}
	a, ops, err := parseAdmin(c, fs, f, args, "[ORG]")
	if err != nil {
		return err
	}
	q := url.Values{"limit": {strconv.Itoa(*limit)}}
	for name, v := range filters {
		if *v != "" {
			q.Set(name, *v)
		}
	}
	path := "/audit"
	if len(ops) == 1 {
		path = apiPath("orgs", ops[0], "audit")
	}
	body, err := a.get(path, q)
	if err != nil || a.json {
		return a.printed(body, err)
	}
	return printAudit(a.out.stdout, body)
}

func printAudit(w io.Writer, body []byte) error {
	var page auditPage
	if err := json.Unmarshal(body, &page); err != nil {
		return err
	}
	rows := make([][]string, len(page.Entries))
	for i, e := range page.Entries {
		actor := e.Actor
		if e.ActorName != nil {
			actor += " (" + *e.ActorName + ")"
		}
		rows[i] = []string{shortTime(&e.Time), actor, e.Action, strings.Join(e.TargetIDs, ","),
			strings.Join(e.Fields, ","), deref(e.Client), deref(e.RequestID)}
	}
	printTable(w, []string{"TIME", "ACTOR", "ACTION", "TARGETS", "FIELDS", "CLIENT", "REQUEST"}, rows)
	printNext(w, page.Next)
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
