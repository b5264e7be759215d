package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"text/tabwriter"
	"time"
)

// cli is what a command runs with: its output and its environment.
type cli struct {
	stdout, stderr io.Writer
	getenv         func(string) string
}

// command is one of keyhole's subcommands, or a group of them (keyhole
// keys create): a group has subs and no run.
type command struct {
	name    string
	args    string // what follows "keyhole NAME" in its usage line
	summary string
	run     func(c *cli, args []string) error
	subs    []command
}

// commands lists the subcommands, in the order help shows them. It is a
// function, not a variable: help is one of them.
func commands() []command {
	return []command{
		{"serve", "[flags]", "Run the server (the default command).", serveCmd, nil},
		{"admin-token", "reset [--db FILE] [--brand kh]", "Issue a new root admin token and print it; the server must be stopped.", adminTokenCmd, nil},
		{"backup", "[--db FILE] OUT", "Write a consistent copy of the db to OUT (created 0600); the server must be stopped.", backupCmd, nil},
		{"seed", "[--db FILE] [--orgs N] [--keys M]", "Fill a db with many organizations and keys, for benchmarks.", seedCmd, nil},
		{"orgs", "list|show|create", "Organizations, on a running server (see the admin commands below).", nil, orgsCommands()},
		{"keys", "list|show|create|update|revoke|roll ORG …", "An organization's API keys.", nil, keysCommands()},
		{"tokens", "list|create|revoke|roll ORG …", "An organization's admin tokens.", nil, tokensCommands()},
		{"logs", "ORG [--follow]", "An organization's request log, newest first; --follow prints new entries until Ctrl-C.", logsCmd, nil},
		{"audit", "[ORG]", "The audit log, an organization's or the whole of it: who changed what.", auditCmd, nil},
		{"cluster", "import|status|add NAME=PEER_URL|remove NAME [--db FILE] [--etcd-endpoints URL,…]", "Copy a one-node db's orgs, keys and tokens into a cluster (idempotent), show the cluster's members, or add or remove one.", clusterCmd, nil},
		{"version", "", "Print keyhole's version.", versionCmd, nil},
		{"help", "[COMMAND]", "Show this help, or a command's.", helpCmd, nil},
	}
}

func lookupCommand(name string) (command, bool) {
	return findCommand(commands(), name)
}

func findCommand(cmds []command, name string) (command, bool) {
	for _, cmd := range cmds {
		if cmd.name == name {
			return cmd, true
		}
	}
	return command{}, false
}

// lookupPath finds the command "keys create" (named so) or "serve".
func lookupPath(path string) (command, bool) {
	names := strings.Fields(path)
	cmd, ok := lookupCommand(first(names))
	if !ok || cmd.subs == nil || len(names) < 2 {
		return cmd, ok
	}
	sub, ok := findCommand(cmd.subs, names[1])
	sub.name = cmd.name + " " + sub.name
	return sub, ok
}

// exec runs cmd with args, a group its subcommand.
func (cmd command) exec(c *cli, args []string) error {
	if cmd.subs == nil {
		return cmd.run(c, args)
	}
	if isHelpFlag(first(args)) {
		return &helpText{groupHelp(cmd)}
	}
	sub, ok := findCommand(cmd.subs, first(args))
	if !ok {
		msg := "want a subcommand"
		if len(args) > 0 {
			msg = fmt.Sprintf("unknown subcommand %q", args[0])
		}
		return &usageError{cmd: "keyhole " + cmd.name, msg: msg, usage: groupHelp(cmd)}
	}
	return sub.run(c, args[1:])
}

// groupHelp is the help of a group: its subcommands' usage lines.
func groupHelp(g command) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: keyhole %s COMMAND …\n\n%s\n\nCommands:\n", g.name, g.summary)
	for _, sub := range g.subs {
		fmt.Fprintf(&b, "  keyhole %s %s %s\n      %s\n", g.name, sub.name, sub.args, sub.summary)
	}
	fmt.Fprintf(&b, "\nRun 'keyhole %s COMMAND --help' for a command's flags.\n", g.name)
	return b.String()
}

// helpText is help the user asked for: printed to stdout, exit status 0.
type helpText struct{ text string }

func (h *helpText) Error() string { return "help requested" }

// usageError is a command line keyhole cannot run: a bad flag or value, a
// missing argument, an unknown command. Exit status 2.
type usageError struct {
	cmd   string // "keyhole serve"
	msg   string
	usage string // printed after the message, if set
}

func (e *usageError) Error() string { return e.msg }

func usageErrorf(cmd, format string, args ...any) error {
	return &usageError{cmd: "keyhole " + cmd, msg: fmt.Sprintf(format, args...)}
}

// loggedError has already been written to the log; it carries the exit
// status.
type loggedError struct{ status int }

func (e loggedError) Error() string { return "logged" }

func main() {
	os.Exit(runCLI(os.Args[1:], &cli{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}))
}

// runCLI runs the command args name and returns the exit status.
func runCLI(args []string, c *cli) int {
	return c.report(c.dispatch(args))
}

func (c *cli) dispatch(args []string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		switch first(args) {
		case "-h", "-help", "--help":
			return helpCmd(c, nil)
		case "-version", "--version":
			return versionCmd(c, nil)
		}
		return serveCmd(c, args)
	}
	cmd, ok := lookupCommand(args[0])
	if !ok {
		return &usageError{cmd: "keyhole", msg: fmt.Sprintf("unknown command %q", args[0]), usage: topUsage()}
	}
	return cmd.exec(c, args[1:])
}

func first(args []string) string {
	if len(args) == 0 {
		return ""
	}
	return args[0]
}

// report prints what err calls for and returns the exit status.
func (c *cli) report(err error) int {
	var help *helpText
	var usage *usageError
	var logged loggedError
	var refused *apiFailure
	var failed *commandError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &help):
		fmt.Fprint(c.stdout, help.text)
		return exitOK
	case errors.As(err, &logged):
		return logged.status
	case errors.As(err, &refused):
		fmt.Fprintf(c.stderr, "keyhole %s: %s\n", refused.cmd, refused.Error())
		return refused.exitStatus()
	case errors.As(err, &failed):
		fmt.Fprintf(c.stderr, "keyhole %s: %v\n", failed.cmd, failed.err)
		return exitFailed
	case errors.As(err, &usage):
		fmt.Fprintf(c.stderr, "%s: %s\n", usage.cmd, usage.msg)
		if usage.usage != "" {
			fmt.Fprint(c.stderr, "\n"+usage.usage)
		} else {
			fmt.Fprintf(c.stderr, "Run '%s --help' for usage.\n", usage.cmd)
		}
		return exitUsage
	}
	fmt.Fprintln(c.stderr, "keyhole:", err)
	return exitFailed
}

// Exit statuses, for scripts; README.md's "Exit status" lists them.
const (
	exitOK       = 0
	exitFailed   = 1 // the server could not be reached, answered 5xx, or anything else failed
	exitUsage    = 2 // a command line keyhole cannot run
	exitNotFound = 3 // 404: no such organization, key or token (or not this token's to see)
	exitRefused  = 4 // 401, 403, 429: the admin token is invalid, revoked, not allowed, or throttled
	exitRejected = 5 // any other 4xx: the server refused the request's values or the record's state
)

// exitStatus is the status an error that was logged rather than printed
// ends the process with.
func exitStatus(err error) int {
	var usage *usageError
	if errors.As(err, &usage) {
		return 2
	}
	return 1
}

func topUsage() string {
	var b strings.Builder
	b.WriteString("keyhole issues API keys to organizations and guards an HTTP API with them.\n\nUsage:\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, cmd := range commands() {
		fmt.Fprintf(tw, "  keyhole %s %s\t%s\n", cmd.name, cmd.args, cmd.summary)
	}
	tw.Flush()
	b.WriteString("\nWith no command, or flags only, keyhole runs serve. Global options:\n" +
		"  -h, --help     show this help\n  --version      print keyhole's version\n\n" +
		"Run 'keyhole COMMAND --help' for a command's flags. Every flag can also be set\n" +
		"as KEYHOLE_<FLAG> (upper case, - as _); a flag on the command line wins. Of the\n" +
		"admin commands' flags, only --server, --token-file and --json are.\n\n" +
		adminCommandsNote)
	return b.String()
}

func helpCmd(c *cli, args []string) error {
	fs := newFlagSet("help")
	if err := parseFlags(fs, args, c.getenv); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return &helpText{topUsage()}
	}
	cmd, ok := lookupCommand(fs.Arg(0))
	switch {
	case ok && fs.NArg() == 2 && cmd.subs != nil:
		_, ok = findCommand(cmd.subs, fs.Arg(1))
	case fs.NArg() > 1:
		ok = false
	}
	if !ok {
		return &usageError{cmd: "keyhole help", msg: fmt.Sprintf("unknown command %q", strings.Join(fs.Args(), " ")), usage: topUsage()}
	}
	return cmd.exec(c, append(fs.Args()[1:], "--help"))
}

func versionCmd(c *cli, args []string) error {
	fs := newFlagSet("version")
	if err := parseFlags(fs, args, c.getenv); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("version", "unexpected argument %q", fs.Arg(0))
	}
	fmt.Fprintln(c.stdout, "keyhole", describeBuild(version, buildInfo()))
	return nil
}

// version is set at build time with -ldflags "-X main.version=…".
var version = ""

// describeBuild names the build: the version set at link time, else the
// module's (go install …@v1.2.3), else "devel"; with the VCS revision it
// was built from, when that is known and not already in the version.
func describeBuild(linked string, info *debug.BuildInfo) string {
	v := linked
	if v == "" && info != nil && info.Main.Version != "" && info.Main.Version != "(devel)" {
		v = info.Main.Version
	}
	if v == "" {
		v = "devel"
	}
	if info == nil {
		return v
	}
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" && !strings.Contains(v, rev) {
		v += " (revision " + rev
		if modified == "true" {
			v += ", modified"
		}
		v += ")"
	}
	return v
}

// newFlagSet is a flag set for command name that prints nothing itself:
// parseFlags reports help and errors.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("keyhole "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseFlags binds every flag to its KEYHOLE_* variable, a flag on the
// command line winning, and parses args. A value that does not parse is
// reported with the form the flag wants and the name it was given by;
// --help answers the command's help.
func parseFlags(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	p, err := newFlagParser(fs, getenv)
	if err != nil {
		return err
	}
	return p.parse(args)
}

// parseArgsAnywhere is parseFlags for a command that takes arguments, as
// people type them: flags before, between or after the arguments (keyhole
// keys list ORG --json); after "--" everything is an argument. It returns
// the arguments.
func parseArgsAnywhere(fs *flag.FlagSet, args []string, getenv func(string) string) ([]string, error) {
	p, err := newFlagParser(fs, getenv)
	if err != nil {
		return nil, err
	}
	var operands []string
	for err = p.parse(args); err == nil && fs.NArg() > 0; err = p.parse(args) {
		rest := fs.Args()
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(operands, rest...), nil
		}
		operands, args = append(operands, rest[0]), rest[1:]
	}
	return operands, err
}

// flagParser parses a command's flags: its help, and the first value that
// did not parse (formValue).
type flagParser struct {
	fs   *flag.FlagSet
	help string
	bad  *error
}

// newFlagParser makes fs's values say the form they want, and sets those
// given by KEYHOLE_* variables.
func newFlagParser(fs *flag.FlagSet, getenv func(string) string) (*flagParser, error) {
	cmd := strings.TrimPrefix(fs.Name(), "keyhole ")
	p := &flagParser{fs: fs, help: commandHelp(fs), bad: new(error)}
	fs.VisitAll(func(f *flag.Flag) { f.Value = wrapForm(f, p.bad) })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		name := flagEnvName(f.Name)
		if v := getenv(name); v != "" && envErr == nil {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = usageErrorf(cmd, "%s=%q: %v", name, v, err)
			}
		}
	})
	return p, envErr
}

func (p *flagParser) parse(args []string) error {
	*p.bad = nil
	err := p.fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return &helpText{p.help}
	case *p.bad != nil:
		return &usageError{cmd: p.fs.Name(), msg: (*p.bad).Error()}
	case err != nil:
		return usageErrorf(strings.TrimPrefix(p.fs.Name(), "keyhole "), "%v", err)
	}
	return nil
}

func flagEnvName(flagName string) string {
	return "KEYHOLE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// formValue is a flag's value that, when a value does not parse, says the
// form it wants and records, under the flag's name, the first such value.
type formValue struct {
	flag.Value
	name string
	form string
	bad  *error
}

func (v formValue) Set(s string) error {
	if err := v.Value.Set(s); err != nil {
		if *v.bad == nil {
			*v.bad = fmt.Errorf("--%s %q: want %s", v.name, s, v.form)
		}
		return errors.New("want " + v.form)
	}
	return nil
}

func (v formValue) IsBoolFlag() bool {
	b, ok := v.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// Forms of the values flags take, for the errors of wrong ones.
const (
	formDuration = "a duration such as 250ms or 1s"
	formNumber   = "a whole number such as 10"
	formBool     = "true or false"
)

func wrapForm(f *flag.Flag, bad *error) flag.Value {
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return f.Value
	}
	var form string
	switch g.Get().(type) {
	case time.Duration:
		form = formDuration
	case int, int64, uint, uint64:
		form = formNumber
	case bool:
		form = formBool
	default:
		return f.Value
	}
	return formValue{Value: f.Value, name: f.Name, form: form, bad: bad}
}

// commandHelp is the help of the command fs parses: its usage line, what
// it does, and each flag with its default and variable.
func commandHelp(fs *flag.FlagSet) string {
	cmd, _ := lookupPath(strings.TrimPrefix(fs.Name(), "keyhole "))
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: keyhole %s %s\n\n%s\n", cmd.name, cmd.args, cmd.summary)
	if cmd.name == "serve" {
		b.WriteString("README.md says more of each; the log goes to stderr, a new root token to stdout.\n")
	}
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	heading := "\nFlags (each also read from KEYHOLE_<FLAG>):\n"
	if fs.Lookup("token-file") != nil {
		heading = "\nFlags (--server, --token-file and --json also read from KEYHOLE_<FLAG>):\n"
	}
	n := 0
	fs.VisitAll(func(f *flag.Flag) {
		if n++; n == 1 {
			fmt.Fprint(tw, heading)
		}
		kind, usage := flag.UnquoteUsage(f)
		def := ""
		if f.DefValue != "" && f.DefValue != "false" {
			def = " (default " + f.DefValue + ")"
		}
		fmt.Fprintf(tw, "  --%s %s\t%s%s\n", f.Name, strings.ToUpper(kind), usage, def)
	})
	tw.Flush()
	if fs.Lookup("token-file") != nil {
		b.WriteString("\n" + adminCommandsNote)
	}
	return b.String()
}
