package main

import (
	"fmt"
	"strconv"
	"time"
)

// seedCmd fills a db with many organizations and keys for benchmarks:
// records are made as the admin API makes them (same ids, key format and
// hash), but written thousands to a transaction. The keys' plaintext is
// thrown away: a benchmark creates the keys it uses through the API.
func seedCmd(c *cli, args []string) error {
	fs := newFlagSet("seed")
	dbPath := fs.String("db", "keyhole.db", "bbolt `FILE`")
	orgs := fs.Int("orgs", 10000, "`N` organizations to create")
	keys := fs.Int("keys", 1000000, "`M` keys to create, spread evenly over the organizations")
	brand := fs.String("brand", "kh", "key prefix brand")
	// KEYHOLE_DB and KEYHOLE_BRAND apply, as to every command.
	if err := parseFlags(fs, args, c.getenv); err != nil {
		return err
	}
	if *orgs < 1 || *keys < 0 {
		return usageErrorf("seed", "--orgs %d, --keys %d: want at least 1 organization and 0 keys", *orgs, *keys)
	}
	st, err := openStore(*dbPath, lockTimeout)
	if err != nil {
		return err
	}
	defer st.Close()
	start := time.Now()
	f := keyFormat{brand: *brand, style: stylePrefixed}
	if err := seedRecords(st, f, *orgs, *keys, time.Now()); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "keyhole: seeded %d organizations and %d keys in %s\n", *orgs, *keys, time.Since(start).Round(time.Millisecond))
	return nil
}

const seedBatch = 20000

func seedRecords(st *store, f keyFormat, orgs, keys int, now time.Time) error {
	orgRecs := make([]orgRecord, orgs)
	for i := range orgRecs {
		orgRecs[i] = orgRecord{ID: newID("org"), Name: "org " + strconv.Itoa(i), CreatedAt: now.UnixNano()}
	}
	err := st.PutBulk(orgRecs, nil)
	for done := 0; err == nil && done < keys; done += seedBatch {
		batch := make([]*keyRecord, min(seedBatch, keys-done))
		for j := range batch {
			i := done + j
			env := []string{envTest, envLive}[i%2]
			key, lookup := f.newKey(env)
			batch[j] = &keyRecord{ID: newID("key"), OrgID: orgRecs[i%orgs].ID, Name: "seeded", Env: env,
				Prefix: lookup, Hash: hashKey(key), Scopes: []string{}, CreatedAt: now.UnixNano()}
		}
		err = st.PutBulk(nil, batch)
	}
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	return nil
}
