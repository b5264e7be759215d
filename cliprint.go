package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
)

// How the admin commands print: tables of records and one record's fields
// for people, the API's JSON as it is for scripts (--json), and the
// one-time reveal of a new key or token with the console's warning.

// secretFields hold what is shown once; a record's fields never show them.
var secretFields = map[string]bool{"key": true, "token": true}

// printJSON writes the API's answer as it is.
func printJSON(w io.Writer, body []byte) {
	w.Write(body)
	if !bytes.HasSuffix(body, []byte("\n")) {
		fmt.Fprintln(w)
	}
}

// printTable writes rows under a header, in aligned columns.
func printTable(w io.Writer, header []string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, row := range rows {
		for i := range row {
			row[i] = cell(row[i])
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	tw.Flush()
}

// cell is a value fit for a terminal: "-" for none, and quoted if it holds
// a control character (a logged path may), which could move the cursor or
// recolour the terminal, or a tab, which would break the columns.
func cell(s string) string {
	switch {
	case s == "":
		return "-"
	case strings.ContainsFunc(s, unicode.IsControl):
		return strconv.Quote(s)
	}
	return s
}

// printRecord writes a JSON object's fields, a line each in the answer's
// order, but never a secret field: that is for reveal.
func printRecord(w io.Writer, body []byte) error {
	fields, err := orderedFields(body)
	if err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, f := range fields {
		if !secretFields[f.name] {
			fmt.Fprintf(tw, "%s\t%s\n", f.name, cell(fieldText(f.name, f.value)))
		}
	}
	return tw.Flush()
}

type field struct {
	name  string
	value json.RawMessage
}

// orderedFields are an object's fields in the order the server wrote them.
func orderedFields(body []byte) ([]field, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("not a JSON object")
	}
	var fields []field
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		name, _ := tok.(string)
		fields = append(fields, field{name, v})
	}
	return fields, nil
}

// fieldText is a field's value for a person: a string as it is, a list of
// strings comma-separated, times to the second, rate limits as 5/1m.
func fieldText(name string, v json.RawMessage) string {
	var s string
	var list []string
	var limits []rateLimit
	switch {
	case string(v) == "null":
		return ""
	case json.Unmarshal(v, &s) == nil:
		if strings.HasSuffix(name, "_at") || name == "time" {
			return shortTime(&s)
		}
		return s
	case json.Unmarshal(v, &list) == nil:
		return strings.Join(list, ", ")
	case name == "rate_limits" && json.Unmarshal(v, &limits) == nil:
		return limitsText(limits)
	}
	return string(v)
}

func limitsText(limits []rateLimit) string {
	parts := make([]string, len(limits))
	for i, l := range limits {
		parts[i] = fmt.Sprintf("%d/%s", l.Limit, l.Window)
	}
	return strings.Join(parts, ", ")
}

// shortTime is an API time to the second, "" for none.
func shortTime(s *string) string {
	if s == nil {
		return ""
	}
	t, err := time.Parse(timeLayout, *s)
	if err != nil {
		return *s
	}
	return t.UTC().Format(time.RFC3339)
}

// neverOr is a last-used time, or "never".
func neverOr(s *string) string {
	if s == nil {
		return "never"
	}
	return shortTime(s)
}

// reveal shows a secret the server answers once, with the console's
// warning. Under --json the secret is in the JSON on stdout, and the
// warning goes to stderr, so that stdout is the answer alone.
func (a *adminConn) reveal(body []byte, secret, note string) error {
	if a.json {
		printJSON(a.out.stdout, body)
		fmt.Fprintf(a.out.stderr, "keyhole %s: %s %s\n", a.cmd, note, shownOnce)
		return nil
	}
	if err := printRecord(a.out.stdout, body); err != nil {
		return err
	}
	fmt.Fprintf(a.out.stdout, "\n%s %s\n\n    %s\n\n", note, shownOnce, secret)
	return nil
}

// shownOnce is the console's warning (console/widgets.js).
const shownOnce = "It won't be shown again."

// show prints a record: as it is under --json, else its fields.
func (a *adminConn) show(body []byte) error {
	if a.json {
		printJSON(a.out.stdout, body)
		return nil
	}
	return printRecord(a.out.stdout, body)
}
