package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
)

// scopeRule says that requests with Method to paths matching Path need Scope.
// A rule must cover every spelling a common router serves as the same
// route, so it fails closed: segments match without regard to ASCII case
// (as Express and ASP.NET route by default), a trailing "/" on the path or
// the rule is ignored, "*" matches one segment, and a final "*" matches
// the rest of the path, nothing included ("/admin/*" guards "/admin" too).
type scopeRule struct {
	Method string `json:"method"`
	Path   string `json:"path"`
	Scope  string `json:"scope"`

	segments []string
}

const maxRulesFile = 1 << 20

func loadRules(path string) ([]scopeRule, error) {
	if path == "" {
		return nil, nil
	}
	buf, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	rules, err := parseRules(buf)
	if err != nil {
		return nil, fmt.Errorf("rules %s: %w", path, err)
	}
	return rules, nil
}

func parseRules(buf []byte) ([]scopeRule, error) {
	if len(buf) > maxRulesFile {
		return nil, fmt.Errorf("file is larger than %d bytes", maxRulesFile)
	}
	dec := json.NewDecoder(bytes.NewReader(buf))
	dec.DisallowUnknownFields()
	var rules []scopeRule
	if err := dec.Decode(&rules); err != nil {
		return nil, fmt.Errorf("want a JSON list of {\"method\",\"path\",\"scope\"}: %s", jsonProblem(err))
	}
	// Not dec.More(): it is false before a stray ']' or '}', so "[]]" passed.
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("unexpected data after the list")
	}
	for i := range rules {
		r := &rules[i]
		r.Method = strings.ToUpper(r.Method)
		switch {
		case r.Method != "" && r.Method != "*" && !isToken(r.Method):
			return nil, fmt.Errorf("rule %d: method %q is not an HTTP method", i, r.Method)
		case !strings.HasPrefix(r.Path, "/"):
			return nil, fmt.Errorf("rule %d: path %q must start with /", i, r.Path)
		case !validScope(r.Scope) || r.Scope == "*":
			return nil, fmt.Errorf("rule %d: scope %q is not a scope like sms:send", i, r.Scope)
		}
		r.segments = strings.Split(trimTrailingSlash(r.Path), "/")
	}
	return rules, nil
}

// requiredScope returns the scope of the first rule that matches, or "".
func requiredScope(rules []scopeRule, method, path string) string {
	for i := range rules {
		if rules[i].matches(method, path) {
			return rules[i].Scope
		}
	}
	return ""
}

func (r *scopeRule) matches(method, path string) bool {
	// HEAD runs the GET handler on most servers, so it needs what GET needs.
	if r.Method != "" && r.Method != "*" && r.Method != method && !(r.Method == "GET" && method == "HEAD") {
		return false
	}
	// Paths are canonical by now (checkPath): the only empty segment is
	// the first, so done (no segment left) is told apart from "".
	rest, done := trimTrailingSlash(path), false
	for i, seg := range r.segments {
		if seg == "*" && i == len(r.segments)-1 {
			return true
		}
		if done {
			return false
		}
		part, after, more := strings.Cut(rest, "/")
		if seg == "*" && part == "" || seg != "*" && !strings.EqualFold(seg, part) {
			return false
		}
		rest, done = after, !more
	}
	return done
}

func trimTrailingSlash(path string) string {
	if len(path) > 1 {
		return strings.TrimSuffix(path, "/")
	}
	return path
}

func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 'A' || c > 'Z' {
			return false
		}
	}
	return s != ""
}

// validScope accepts printable ASCII without spaces or commas, up to 100
// bytes: commas separate scopes in X-Keyhole-Scopes.
func validScope(s string) bool {
	if s == "" || len(s) > 100 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == ',' || c == '"' {
			return false
		}
	}
	return true
}
