package main

import (
	"fmt"
	"io"
)

// demoKey is a key made by --demo, held only until its curl line is printed.
type demoKey struct {
	env string
	key string
}

// seedDemo creates org demo with one test and one live key.
func (s *server) seedDemo() error {
	org, err := s.newOrg("demo", systemAudit(actionOrgCreated, "--demo", s.now()))
	if err != nil {
		return err
	}
	for _, env := range []string{envTest, envLive} {
		rec := keyRecord{OrgID: org.ID, Name: "demo " + env + " key", Env: env, Scopes: []string{"*"}}
		key, err := s.issueKey(&rec, systemAudit(actionKeyCreated, "--demo", s.now()))
		if err != nil {
			return err
		}
		s.demoKeys = append(s.demoKeys, demoKey{env: env, key: key})
	}
	s.demoOrg = org.ID
	return nil
}

// printDemoHint prints ready-to-paste commands once to w, the operator's
// stdout (they hold the keys), then forgets the keys.
func (s *server) printDemoHint(w io.Writer, addr string) {
	if len(s.demoKeys) == 0 {
		s.log.Warn().Msg("--demo: the db already has data, so no demo keys were made (use a fresh --db to see them)")
		return
	}
	s.log.Info().Str("org_id", s.demoOrg).Msg("--demo: made org demo with a test and a live key; printed curl commands with them to stdout")
	base := "http://" + addr
	fmt.Fprintf(w, "\nkeyhole demo: org %q (id %s) with one test and one live key. Try:\n\n", "demo", s.demoOrg)
	for _, k := range s.demoKeys {
		fmt.Fprintf(w, "  curl -s -H 'Authorization: Bearer %s' %s%swhoami\n", k.key, base, s.baseFor(k.env))
	}
	live := s.demoKeys[len(s.demoKeys)-1].key
	fmt.Fprintf(w, "  curl -s -H 'Authorization: Bearer %s' %s%swhoami   # 401: a live key on the test base\n", live, base, s.cfg.testBase)
	fmt.Fprintf(w, "  curl -s -X POST %s/v1/keys/verify -d '{\"key\":\"%s\"}'\n\n", base, live)
	s.demoKeys = nil
}
