package main

import (
	"bytes"
	"io"
	"log"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
)

// The formats of the server's log on stderr (--log-format). Either way
// every line has a time, a level and a message, and never a secret: what
// is shown to the operator once (a new root token, the demo keys) goes to
// stdout instead.
const (
	logJSON = "json" // one JSON object a line, for log shippers
	logText = "text" // zerolog's console format, for a terminal
)

// newLogger writes the log to w in format; text has colour only on a
// terminal.
func newLogger(w io.Writer, format string) zerolog.Logger {
	if format == logText {
		w = zerolog.ConsoleWriter{Out: w, NoColor: !isTerminal(w), TimeFormat: time.RFC3339}
	}
	return zerolog.New(w).With().Timestamp().Logger()
}

// logFormatOf is the format --log-format or KEYHOLE_LOG_FORMAT asks for,
// read before the flags are parsed, so that even a bad flag is logged in
// it; JSON unless text is asked for.
func logFormatOf(args []string, getenv func(string) string) string {
	format := getenv("KEYHOLE_LOG_FORMAT")
	for i, arg := range args {
		if arg == "--" {
			break
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		switch {
		case name != "log-format":
		case hasValue:
			format = value
		case i+1 < len(args):
			format = args[i+1]
		}
	}
	if format == logText {
		return logText
	}
	return logJSON
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// levelWriter turns what the standard library's loggers print (net/http's
// server and reverse proxy, the pprof build) into log lines of one level.
type levelWriter struct {
	log   zerolog.Logger
	level zerolog.Level
}

func (lw levelWriter) Write(p []byte) (int, error) {
	lw.log.WithLevel(lw.level).Msg(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// stdLogger is a standard library logger whose lines are warnings in l.
func stdLogger(l zerolog.Logger) *log.Logger {
	return log.New(levelWriter{l, zerolog.WarnLevel}, "", 0)
}

// redirectStdLog sends the standard library's default logger to l, for a
// process whose stderr is l's.
func redirectStdLog(l zerolog.Logger) {
	log.SetFlags(0)
	log.SetOutput(levelWriter{l, zerolog.WarnLevel})
}

func buildInfo() *debug.BuildInfo {
	info, _ := debug.ReadBuildInfo()
	return info
}
