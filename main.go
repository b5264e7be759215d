// Command keyhole issues API keys to organizations and guards an HTTP API
// with them. See README.md for how to run it and SPEC.md-style contract.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = ""

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
	trustedSpec   string

	rateLimits     []rateLimit
	trustedProxies []netip.Prefix // --trusted-proxies

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

func main() {
	if err := runMain(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "keyhole:", err)
		os.Exit(1)
	}
}

func runMain(args []string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		cfg, err := parseServeFlags(args, os.Getenv)
		if err != nil {
			return err
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return serve(ctx, cfg, stderr, nil)
	case "admin-token":
		return adminTokenCmd(args, stdout)
	case "backup":
		return backupCmd(args, stdout)
	case "seed":
		return seedCmd(args, stdout)
	case "version":
		fmt.Fprintln(stdout, "keyhole", buildVersion())
		return nil
	}
	return fmt.Errorf("unknown command %q; commands: serve, admin-token reset, backup, version", cmd)
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" {
		return info.Main.Version
	}
	return "(devel)"
}

// newFlagSet binds every flag to its KEYHOLE_* variable; a flag on the
// command line wins over the variable.
func parseWithEnv(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		name := "KEYHOLE_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(name); v != "" && envErr == nil {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("%s=%q: %w", name, v, err)
			}
		}
	})
	if envErr != nil {
		return envErr
	}
	return fs.Parse(args)
}

func parseServeFlags(args []string, getenv func(string) string) (config, error) {
	var c config
	fs := flag.NewFlagSet("keyhole serve", flag.ContinueOnError)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "listen address")
	fs.StringVar(&c.dbPath, "db", "keyhole.db", "bbolt file (created 0600)")
	fs.StringVar(&c.brand, "brand", "kh", "key prefix brand: keys look like kh_live_…")
	fs.StringVar(&c.keyStyle, "key-style", stylePrefixed, "prefixed or split")
	fs.StringVar(&c.upstream, "upstream", "", "URL to reverse-proxy guarded requests to")
	fs.StringVar(&c.rulesPath, "rules", "", "JSON file of route → scope rules")
	fs.StringVar(&c.testBase, "test-base", "/api/v1/dev/", "base path of the test environment")
	fs.StringVar(&c.liveBase, "live-base", "/api/v1/prod/", "base path of the live environment")
	fs.StringVar(&c.rateLimitSpec, "rate-limits", "5/1m,100/1h", "default per-key windows, LIMIT/DURATION list")
	fs.IntVar(&c.logRetention, "log-retention", 10000, "request-log entries kept per organization")
	fs.DurationVar(&c.flushInterval, "flush-interval", time.Second, "most time logs, counters and last-used wait in memory")
	fs.StringVar(&c.adminToken, "admin-token", "", "sets the root admin token")
	fs.BoolVar(&c.demo, "demo", false, "on an empty db, create org demo with a test and a live key")
	fs.StringVar(&c.trustedSpec, "trusted-proxies", "", "CIDRs of proxies whose X-Forwarded-For names the client, comma-separated")
	if err := parseWithEnv(fs, args, getenv); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return c, c.validate()
}

func (c *config) validate() error {
	var err error
	if c.rateLimits, err = parseRateLimits(c.rateLimitSpec); err != nil {
		return fmt.Errorf("--rate-limits: %w", err)
	}
	if c.trustedProxies, err = parseTrustedProxies(c.trustedSpec); err != nil {
		return err
	}
	switch {
	case !validBrand(c.brand):
		return fmt.Errorf("--brand %q: want 1 to 16 lowercase letters or digits", c.brand)
	case c.keyStyle != stylePrefixed && c.keyStyle != styleSplit:
		return fmt.Errorf("--key-style %q: want prefixed or split", c.keyStyle)
	case !validBase(c.testBase) || !validBase(c.liveBase):
		return fmt.Errorf("--test-base and --live-base must start and end with / and not be /")
	case strings.HasPrefix(c.testBase, c.liveBase) || strings.HasPrefix(c.liveBase, c.testBase):
		return fmt.Errorf("--test-base %q and --live-base %q must not contain each other", c.testBase, c.liveBase)
	case c.logRetention < 1:
		return fmt.Errorf("--log-retention must be at least 1")
	case c.flushInterval <= 0:
		return fmt.Errorf("--flush-interval must be positive")
	case c.dbPath == "":
		return fmt.Errorf("--db must name a file")
	}
	for _, reserved := range []string{"/admin/", "/v1/", "/healthz", "/readyz", "/metrics"} {
		if strings.HasPrefix(c.testBase, reserved) || strings.HasPrefix(c.liveBase, reserved) {
			return fmt.Errorf("base paths must not be under %s, which keyhole serves itself", reserved)
		}
	}
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

// serve runs keyhole until ctx ends, then drains requests and flushes.
// ready, if not nil, receives the listening address.
func serve(ctx context.Context, cfg config, stderr io.Writer, ready chan<- string) error {
	logger := zerolog.New(stderr).With().Timestamp().Logger()
	st, err := openStore(cfg.dbPath, lockTimeout)
	if err != nil {
		return err
	}
	defer st.Close()
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
	if err := s.firstStart(stderr); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.addr, err)
	}
	fmt.Fprintf(stderr, "keyhole: listening on http://%s\n", ln.Addr())
	if cfg.demo {
		s.printDemoHint(stderr, ln.Addr().String())
	}
	if ready != nil {
		ready <- ln.Addr().String()
	}
	return s.run(ctx, ln)
}

// firstStart sets the root token from --admin-token, or on an empty db makes
// one and prints it once; with --demo it also seeds the demo org.
func (s *server) firstStart(stderr io.Writer) error {
	empty, err := s.store.IsEmpty()
	if err != nil {
		return err
	}
	if s.cfg.adminToken != "" {
		if len(s.cfg.adminToken) < 16 {
			s.log.Warn().Msg("--admin-token is shorter than 16 characters; anyone who guesses it controls keyhole")
		}
		if err := s.store.SetRootTokenHash(hashKey(s.cfg.adminToken)); err != nil {
			return err
		}
	} else if empty {
		token := s.cfg.brand + "_admin_" + randomHex(16)
		if err := s.store.SetRootTokenHash(hashKey(token)); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "keyhole: root admin token (shown once; store it now):\n\n    %s\n\n", token)
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

func adminTokenCmd(args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "reset" {
		return fmt.Errorf("usage: keyhole admin-token reset --db FILE [--brand kh]")
	}
	fs := flag.NewFlagSet("keyhole admin-token reset", flag.ContinueOnError)
	dbPath := fs.String("db", "keyhole.db", "bbolt file")
	brand := fs.String("brand", "kh", "key prefix brand")
	if err := parseWithEnv(fs, args[1:], os.Getenv); err != nil {
		return err
	}
	st, err := openStore(*dbPath, lockTimeout)
	if errors.Is(err, errLocked) {
		return fmt.Errorf("%w; stop the server first", err)
	}
	if err != nil {
		return err
	}
	defer st.Close()
	token := *brand + "_admin_" + randomHex(16)
	if err := st.SetRootTokenHash(hashKey(token)); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s\n", token)
	return nil
}

func backupCmd(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("keyhole backup", flag.ContinueOnError)
	dbPath := fs.String("db", "keyhole.db", "bbolt file")
	if err := parseWithEnv(fs, args, os.Getenv); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("usage: keyhole backup --db FILE OUT")
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
	return writeBackup(st, fs.Arg(0), stdout)
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
