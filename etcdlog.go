package main

import (
	"github.com/rs/zerolog"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// An embedded etcd member logs through zap. zerologCore hands its lines to
// keyhole's logger instead, so that stderr has one format (--log-format),
// each etcd line marked "component":"etcd". zap is etcd's own dependency;
// keyhole uses it only here.
type zerologCore struct {
	log zerolog.Logger
	min zapcore.Level
}

// etcdLogger is the logger an embedded member writes to: lines at level
// (etcd's names: debug, info, warn, error, panic) and above.
func etcdLogger(log zerolog.Logger, level string) *zap.Logger {
	min, err := zapcore.ParseLevel(level)
	if err != nil {
		min = zapcore.ErrorLevel
	}
	return zap.New(&zerologCore{log: log.With().Str("component", "etcd").Logger(), min: min})
}

func (c *zerologCore) Enabled(l zapcore.Level) bool { return l >= c.min }

func (c *zerologCore) With(fields []zapcore.Field) zapcore.Core {
	return &zerologCore{log: c.log.With().Fields(fieldMap(fields)).Logger(), min: c.min}
}

func (c *zerologCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *zerologCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	level := zerolog.ErrorLevel // DPanic, Panic and Fatal too: zap acts on those itself
	switch e.Level {
	case zapcore.DebugLevel:
		level = zerolog.DebugLevel
	case zapcore.InfoLevel:
		level = zerolog.InfoLevel
	case zapcore.WarnLevel:
		level = zerolog.WarnLevel
	}
	c.log.WithLevel(level).Fields(fieldMap(fields)).Msg(e.Message)
	return nil
}

func (c *zerologCore) Sync() error { return nil }

// fieldMap is zap's fields as the values zerolog writes.
func fieldMap(fields []zapcore.Field) map[string]any {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		f.AddTo(enc)
	}
	return enc.Fields
}
