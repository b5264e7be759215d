// Command keyhole issues API keys to organizations and guards an HTTP API
// with them. See README.md for how to run it and SPEC.md-style contract.
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

type config struct {
	addr          string
	dbPath        string
	brand         string
	keyStyle      string
	upstream      string
	rulesPath     string
	testBase      string
	liveBase      string
	rateLimitSpec string
	logRetention  int
	flushInterval time.Duration
	adminToken    string
	demo          bool
	logFormat     string // logJSON or logText
	// auditRetention is how long audit entries are kept.
	auditRetention time.Duration
	trustedSpec    string

	rateLimits     []rateLimit
	trustedProxies []netip.Prefix // --trusted-proxies

	cluster clusterOpts // --cluster-peers or --etcd-endpoints, and the rest (cluster.go)

	// Server limits; not flags. Zero means the default below; tests shorten them.
	readHeaderTimeout time.Duration
	bodyReadTimeout   time.Duration
	idleTimeout       time.Duration
	drainTimeout      time.Duration
}

// The server's limits (SECURITY.md explains each).
const (
	// readHeaderTimeout is how long a client has to send a request's
	// headers: a slow-loris connection is closed after it.
	defaultReadHeaderTimeout = 10 * time.Second
	// bodyReadTimeout is how long a client has to send a request body that
	// keyhole reads itself (admin API, verify, a refused guarded request);
	// see limitBodyReads for the proxied uploads it does not bound.
	defaultBodyReadTimeout = 30 * time.Second
	// idleTimeout closes a keep-alive connection that sends nothing.
	defaultIdleTimeout = 120 * time.Second
	// drainTimeout bounds how long a shutdown waits for requests in flight
	// before it closes their connections and flushes.
	defaultDrainTimeout = 10 * time.Second
	// maxHeaderBytes bounds a request's header block; more is a 431.
	maxHeaderBytes = 64 << 10
)

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func parseServeFlags(args []string, getenv func(string) string) (config, error) {
	var c config
	fs := newFlagSet("serve")
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "listen `ADDRESS`, host:port")
	fs.StringVar(&c.dbPath, "db", "keyhole.db", "bbolt `FILE` (created 0600)")
	fs.StringVar(&c.brand, "brand", "kh", "key prefix `BRAND`: keys look like kh_live_…")
	fs.StringVar(&c.keyStyle, "key-style", stylePrefixed, "`STYLE` of new keys: prefixed or split")
	fs.StringVar(&c.upstream, "upstream", "", "`URL` to reverse-proxy guarded requests to")
	fs.StringVar(&c.rulesPath, "rules", "", "JSON `FILE` of route → scope rules")
	fs.StringVar(&c.testBase, "test-base", "/api/v1/dev/", "base `PATH` of the test environment")
	fs.StringVar(&c.liveBase, "live-base", "/api/v1/prod/", "base `PATH` of the live environment")
	fs.StringVar(&c.rateLimitSpec, "rate-limits", "5/1m,100/1h", "default per-key windows, a `LIMIT/DURATION,…` list")
	fs.IntVar(&c.logRetention, "log-retention", 10000, "`N`, the request-log entries kept per organization")
	fs.DurationVar(&c.flushInterval, "flush-interval", time.Second, "most time logs, counters and last-used wait in memory")
	fs.StringVar(&c.adminToken, "admin-token", "", "sets the root admin `TOKEN` (at least 16 characters)")
	fs.BoolVar(&c.demo, "demo", false, "on an empty db, create org demo with a test and a live key")
	c.auditRetention = defaultAuditKeep
	fs.Var(daysFlag{&c.auditRetention}, "audit-retention", "how long audit entries are kept, like 365d or 720h")
	fs.StringVar(&c.logFormat, "log-format", logJSON, "`FORMAT` of the log on stderr: json, or text for a terminal")
	fs.StringVar(&c.trustedSpec, "trusted-proxies", "", "`CIDRs` of proxies whose X-Forwarded-For names the client, comma-separated")
	fs.StringVar(&c.cluster.nodeName, "node-name", "", "this cluster node's `NAME` (its etcd member's, with --cluster-peers)")
	fs.StringVar(&c.cluster.peers, "cluster-peers", "", "embedded etcd members of the cluster, `NAME=PEER_URL,…`, this node's included")
	fs.StringVar(&c.cluster.addr, "cluster-addr", "", "`HOST:PORT` where the other nodes reach this one: its etcd member's client address with --cluster-peers, and where it counts the rate limits and credits of the keys it owns")
	fs.StringVar(&c.cluster.tlsDir, "cluster-tls", "", "`DIR` of the cluster's mTLS certificates: ca.crt, and this node's node.crt and node.key")
	fs.BoolVar(&c.cluster.insecure, "cluster-insecure", false, "plaintext between cluster nodes and etcd instead of --cluster-tls, for tests and one-machine trials")
	fs.StringVar(&c.cluster.state, "cluster-state", clusterStateNew, "new: the --cluster-peers members start a cluster together; existing: this member joins a running one, after keyhole cluster add")
	fs.StringVar(&c.cluster.endpoints, "etcd-endpoints", "", "an existing etcd cluster's client `URLs`, comma-separated, instead of --cluster-peers")
	fs.DurationVar(&c.cluster.maxStaleness, "max-staleness", time.Second, "a cluster node not confirmed current for this long fails closed")
	if err := parseFlags(fs, args, getenv); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, usageErrorf("serve", "unexpected argument %q", fs.Arg(0))
	}
	return c, c.validate()
}

// validate checks what the flags' types do not, and names the form wanted.
func (c *config) validate() error {
	var err error
	if c.rateLimits, err = parseRateLimits(c.rateLimitSpec); err != nil {
		return usageErrorf("serve", "--rate-limits: %v", err)
	}
	if c.trustedProxies, err = parseTrustedProxies(c.trustedSpec); err != nil {
		return err
	}
	switch {
	case !validBrand(c.brand):
		return usageErrorf("serve", "--brand %q: want 1 to 16 lowercase letters or digits", c.brand)
	case c.keyStyle != stylePrefixed && c.keyStyle != styleSplit:
		return usageErrorf("serve", "--key-style %q: want prefixed or split", c.keyStyle)
	case c.logRetention < 1:
		return usageErrorf("serve", "--log-retention %d: want a whole number of at least 1", c.logRetention)
	case c.flushInterval <= 0:
		return usageErrorf("serve", "--flush-interval %s: want a positive duration such as 250ms or 1s", c.flushInterval)
	case c.auditRetention < time.Hour:
		return usageErrorf("serve", "--audit-retention %s: want at least 1h, like 365d or 720h", c.auditRetention)
	case strings.Contains(c.adminToken, orgTokenKind):
		return usageErrorf("serve", "--admin-token is an org admin token (%s…), which must not become the root token; "+
			"is KEYHOLE_ADMIN_TOKEN set for the admin commands in this shell?", orgTokenKind)
	case c.dbPath == "":
		return usageErrorf("serve", "--db is empty: want the path of a file")
	case c.logFormat != logJSON && c.logFormat != logText:
		return usageErrorf("serve", "--log-format %q: want json or text", c.logFormat)
	}
	if err := c.cluster.validate(c); err != nil {
		return err
	}
	return c.validateBases()
}

func (c *config) validateBases() error {
	switch {
	case !validBase(c.testBase) || !validBase(c.liveBase):
		return usageErrorf("serve", "--test-base %q, --live-base %q: want paths that start and end with / and are not /, such as /api/v1/dev/", c.testBase, c.liveBase)
	case strings.HasPrefix(c.testBase, c.liveBase) || strings.HasPrefix(c.liveBase, c.testBase):
		return usageErrorf("serve", "--test-base %q and --live-base %q must not contain each other", c.testBase, c.liveBase)
	}
	for _, reserved := range []string{"/admin/", "/v1/", "/healthz", "/readyz", "/metrics"} {
		if strings.HasPrefix(c.testBase, reserved) || strings.HasPrefix(c.liveBase, reserved) {
			return usageErrorf("serve", "base paths must not be under %s, which keyhole serves itself", reserved)
		}
	}
	return nil
}

// daysFlag is a duration flag that also takes whole days, like 365d.
type daysFlag struct{ d *time.Duration }

func (f daysFlag) String() string {
	if f.d == nil {
		return ""
	}
	if *f.d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", *f.d/(24*time.Hour))
	}
	return f.d.String()
}

func (f daysFlag) Set(s string) error {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseInt(days, 10, 32)
		if err != nil || n < 0 || n > 100*366 {
			return fmt.Errorf("want a duration like 365d or 720h")
		}
		*f.d = time.Duration(n) * 24 * time.Hour
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration like 365d or 720h")
	}
	*f.d = d
	return nil
}

func validBrand(b string) bool {
	if b == "" || len(b) > 16 {
		return false
	}
	for i := 0; i < len(b); i++ {
		if c := b[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

func validBase(b string) bool {
	return len(b) > 1 && strings.HasPrefix(b, "/") && strings.HasSuffix(b, "/") && isCanonicalPath(b)
}

const lockTimeout = time.Second

// serveCmd runs the server. From its first line, stderr is the log: the
// errors that stop it, a bad flag's included, are log lines too.
func serveCmd(c *cli, args []string) error {
	cfg, err := parseServeFlags(args, c.getenv)
	var help *helpText
	if errors.As(err, &help) {
		return err
	}
	logger := newLogger(c.stderr, logFormatOf(args, c.getenv))
	redirectStdLog(logger)
	if err == nil {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		err = serve(ctx, cfg, c.stdout, logger, nil)
	}
	if err != nil {
		logger.Error().Msg(logMessage(err))
		return loggedError{exitStatus(err)}
	}
	return nil
}

// logMessage is an error as one log message; a usage error points to help.
func logMessage(err error) string {
	var usage *usageError
	if errors.As(err, &usage) {
		return usage.msg + "; run 'keyhole serve --help' for usage"
	}
	return err.Error()
}

// serve runs keyhole until ctx ends, then drains requests and flushes.
// What is shown to the operator once (a new root token, the demo keys)
// goes to stdout; everything else to the log. ready, if not nil,
// receives the listening address.
func serve(ctx context.Context, cfg config, stdout io.Writer, logger zerolog.Logger, ready chan<- string) error {
	st, err := openStore(cfg.dbPath, lockTimeout)
	if err != nil {
		return err
	}
	defer st.Close()
	if cfg.cluster.enabled() {
		c, err := startCluster(ctx, cfg.cluster, cfg.dbPath, st, logger)
		if err != nil {
			return err
		}
		st.cluster = c
		defer c.close() // before the store closes
	}
	// The collector is the process's, so the command paces it, not the
	// server: held off while the index loads (everything it allocates
	// stays live), then paced from the live heap until ctx ends.
	gcPercent := debug.SetGCPercent(-1)
	s, err := newServer(cfg, st, time.Now, logger)
	debug.SetGCPercent(gcPercent)
	if err != nil {
		return err
	}
	startGCPacer(ctx)
	if c := st.cluster; c != nil {
		apply := s.applyShared
		c.onApply.Store(&apply)
		c.node.routes.Store(s.nodeRoutes())
		move := s.handOff
		c.owners.onMove.Store(&move)
		shared := s.credits.merge
		c.onCredits.Store(&shared)
		s.behind.shareCredits = c.shareCredits
		c.run()
	}
	// Listen before the first start makes anything to show: if the address
	// is taken, no root token or demo key is made that nobody would see,
	// and the next start, on a still empty db, shows them.
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.addr, err)
	}
	if err := s.firstStart(stdout); err != nil {
		ln.Close()
		return err
	}
	addr := ln.Addr().String()
	if cfg.demo {
		s.printDemoHint(stdout, addr)
	}
	// Last: whoever waits for this line finds everything else printed.
	s.log.Info().Str("addr", addr).Str("version", describeBuild(version, buildInfo())).Msg("listening on http://" + addr)
	if ready != nil {
		ready <- addr
	}
	err = s.run(ctx, ln)
	if err == nil {
		s.log.Info().Msg("stopped")
	}
	return err
}

// firstStart sets the root token from --admin-token, or on an empty db makes
// one and shows it once on stdout; with --demo it also seeds the demo org.
// serve calls it once it listens.
func (s *server) firstStart(stdout io.Writer) error {
	empty, err := s.store.IsEmpty()
	if err != nil {
		return err
	}
	if err := s.setRootToken(empty, stdout); err != nil {
		return err
	}
	hash, ok, err := s.store.RootTokenHash()
	if err != nil {
		return err
	}
	if ok {
		s.admins.setRoot(hash)
	}
	if s.cfg.demo && empty {
		return s.seedDemo()
	}
	return nil
}

// setRootToken applies --admin-token (a value not applied before: a
// restart with the same one keeps a token rolled since), or makes the
// first root token of an empty db and shows it on stdout, the operator's
// terminal, never in the log that may be shipped elsewhere.
func (s *server) setRootToken(empty bool, stdout io.Writer) error {
	if s.cfg.adminToken != "" {
		if len(s.cfg.adminToken) < 16 {
			s.log.Warn().Msg("--admin-token is shorter than 16 characters; anyone who guesses it controls keyhole")
		}
		return s.store.ApplyAdminTokenFlag(hashKey(s.cfg.adminToken), systemAudit(actionRootSet, "--admin-token", s.now()))
	}
	if !empty {
		return nil
	}
	if s.store.cluster != nil {
		return errors.New("the cluster has no root admin token yet: start its nodes with the same --admin-token")
	}
	token := s.cfg.brand + "_admin_" + randomHex(16)
	if err := s.store.SetRootTokenHash(hashKey(token), systemAudit(actionRootCreated, "first start", s.now())); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "keyhole: root admin token (shown once; store it now):\n\n    %s\n\n", token)
	s.log.Warn().Msg("created the root admin token and printed it once to stdout; store it now (keyhole admin-token reset issues a new one)")
	return nil
}

func adminTokenCmd(c *cli, args []string) error {
	fs := newFlagSet("admin-token reset")
	dbPath := fs.String("db", "keyhole.db", "bbolt `FILE`")
	brand := fs.String("brand", "kh", "key prefix `BRAND` of the token")
	endpoints := fs.String("etcd-endpoints", "", "a cluster's etcd client `URLs`, comma-separated: reset the cluster's root token instead of a file's")
	tlsDir := fs.String("cluster-tls", "", "`DIR` of the cluster's mTLS certificates, with --etcd-endpoints")
	if first(args) == "reset" {
		args = args[1:]
	} else if !isHelpFlag(first(args)) {
		return usageErrorf("admin-token", "want the subcommand reset: keyhole admin-token reset --db FILE")
	}
	if err := parseFlags(fs, args, c.getenv); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("admin-token", "unexpected argument %q", fs.Arg(0))
	}
	token := *brand + "_admin_" + randomHex(16)
	entry := systemAudit(actionRootReset, "keyhole admin-token reset", time.Now())
	if *endpoints != "" {
		cli, err := etcdClient(*endpoints, *tlsDir, zerolog.Nop())
		if err != nil {
			return fmt.Errorf("--etcd-endpoints: %w", err)
		}
		defer cli.Close()
		ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
		defer cancel()
		if err := resetClusterRootToken(ctx, cli, hashKey(token), entry); err != nil {
			return err
		}
	} else if err := resetFileRootToken(*dbPath, hashKey(token), entry); err != nil {
		return err
	}
	// The token alone, so that TOKEN=$(keyhole admin-token reset) works.
	fmt.Fprintf(c.stdout, "%s\n", token)
	return nil
}

// resetFileRootToken sets a one-node file's root token hash; a cluster
// node's file, a copy of the cluster's, is refused.
func resetFileRootToken(dbPath string, hash [32]byte, a auditEntry) error {
	st, err := openStore(dbPath, lockTimeout)
	if errors.Is(err, errLocked) {
		return fmt.Errorf("%w; stop the server first", err)
	}
	if err != nil {
		return err
	}
	defer st.Close()
	if ok, err := st.isClusterReplica(); err != nil || ok {
		return cmp.Or(err, fmt.Errorf("%s is a cluster node's copy of the cluster's records: "+
			"reset the cluster's root token with keyhole admin-token reset --etcd-endpoints URL,…", dbPath))
	}
	return st.SetRootTokenHash(hash, a)
}

func isHelpFlag(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help"
}

func backupCmd(c *cli, args []string) error {
	fs := newFlagSet("backup")
	dbPath := fs.String("db", "keyhole.db", "bbolt `FILE` to copy (opened read-only)")
	if err := parseFlags(fs, args, c.getenv); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageErrorf("backup", "want one argument, the file to write: keyhole backup --db FILE OUT")
	}
	// Read-only: a backup never writes to the db, and a missing file is an
	// error rather than a new empty db. The running server holds the lock.
	st, err := openStoreReadOnly(*dbPath, lockTimeout)
	if errors.Is(err, errLocked) {
		return fmt.Errorf("%w; while the server runs, use GET /admin/v1/backup", err)
	}
	if err != nil {
		return err
	}
	defer st.Close()
	return writeBackup(st, fs.Arg(0), c.stdout)
}

// writeBackup writes to a temporary file and renames it, so a failed backup
// never leaves a half-written copy under the final name.
func writeBackup(st *store, out string, stdout io.Writer) error {
	tmp := out + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	n, err := st.WriteTo(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, out)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("backup: %w", err)
	}
	fmt.Fprintf(stdout, "keyhole: wrote %d bytes to %s\n", n, out)
	return nil
}
