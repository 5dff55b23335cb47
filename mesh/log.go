package mesh

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// StdLogger returns a *log.Logger (for memberlist) that sends each line to
// l, with the level taken from memberlist's "[DEBUG]", "[INFO]", "[WARN]"
// and "[ERR]" prefixes (no prefix = INFO).
func StdLogger(l *slog.Logger, name string) *log.Logger {
	return log.New(LogWriter(l, name), "", 0)
}

// LogWriter returns an io.Writer that logs each line written to it to l as
// StdLogger does.
func LogWriter(l *slog.Logger, name string) io.Writer {
	if l == nil {
		l = slog.Default()
	}
	return &logWriter{l: l.With("component", name)}
}

type logWriter struct{ l *slog.Logger }

var levelPrefixes = []struct {
	prefix string
	level  slog.Level
}{
	{"[TRACE]", slog.LevelDebug - 4},
	{"[DEBUG]", slog.LevelDebug},
	{"[INFO]", slog.LevelInfo},
	{"[WARN]", slog.LevelWarn},
	{"[ERR]", slog.LevelError},
	{"[ERROR]", slog.LevelError},
}

func (w *logWriter) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		s := strings.TrimSpace(string(line))
		if s == "" {
			continue
		}
		level := slog.LevelInfo
		for _, lp := range levelPrefixes {
			if strings.HasPrefix(s, lp.prefix) {
				level = lp.level
				s = strings.TrimSpace(s[len(lp.prefix):])
				break
			}
		}
		// memberlist repeats its name as "memberlist: ..."; drop it.
		s = strings.TrimPrefix(s, "memberlist: ")
		w.l.Log(context.Background(), level, s)
	}
	return len(p), nil
}

// HCLogger adapts l to hclog.Logger for raft. Messages keep raft's text;
// key/value pairs become slog attributes.
func HCLogger(l *slog.Logger, name string) hclog.Logger {
	if l == nil {
		l = slog.Default()
	}
	h := &hcLogger{base: l, name: name, level: hclog.Debug}
	h.l = h.build()
	return h
}

type hcLogger struct {
	base  *slog.Logger
	l     *slog.Logger
	name  string
	args  []any
	level hclog.Level
}

func (h *hcLogger) build() *slog.Logger {
	l := h.base
	if h.name != "" {
		l = l.With("component", h.name)
	}
	if len(h.args) > 0 {
		l = l.With(h.args...)
	}
	return l
}

func slogLevel(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	}
	return slog.LevelInfo
}

// hcArgs turns hclog's key/value list into slog arguments, stringifying
// values slog cannot render nicely (hclog.Format and errors).
func hcArgs(args []any) []any {
	out := make([]any, 0, len(args))
	for i := 0; i < len(args); i++ {
		if i == len(args)-1 {
			out = append(out, "extra", fmt.Sprint(args[i]))
			break
		}
		k := fmt.Sprint(args[i])
		v := args[i+1]
		i++
		switch vv := v.(type) {
		case hclog.Format:
			if len(vv) > 0 {
				v = fmt.Sprintf(fmt.Sprint(vv[0]), vv[1:]...)
			}
		case error:
			v = vv.Error()
		}
		out = append(out, k, v)
	}
	return out
}

func (h *hcLogger) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.Off || level == hclog.NoLevel {
		level = hclog.Info
	}
	if level < h.level {
		return
	}
	h.l.Log(context.Background(), slogLevel(level), msg, hcArgs(args)...)
}

func (h *hcLogger) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }
func (h *hcLogger) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }
func (h *hcLogger) Info(msg string, args ...any)  { h.Log(hclog.Info, msg, args...) }
func (h *hcLogger) Warn(msg string, args ...any)  { h.Log(hclog.Warn, msg, args...) }
func (h *hcLogger) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }

func (h *hcLogger) enabled(level hclog.Level) bool {
	return level >= h.level && h.l.Enabled(context.Background(), slogLevel(level))
}

func (h *hcLogger) IsTrace() bool { return h.enabled(hclog.Trace) }
func (h *hcLogger) IsDebug() bool { return h.enabled(hclog.Debug) }
func (h *hcLogger) IsInfo() bool  { return h.enabled(hclog.Info) }
func (h *hcLogger) IsWarn() bool  { return h.enabled(hclog.Warn) }
func (h *hcLogger) IsError() bool { return h.enabled(hclog.Error) }

func (h *hcLogger) ImpliedArgs() []any { return h.args }

func (h *hcLogger) With(args ...any) hclog.Logger {
	c := *h
	c.args = append(append([]any(nil), h.args...), hcArgs(args)...)
	c.l = c.build()
	return &c
}

func (h *hcLogger) Name() string { return h.name }

func (h *hcLogger) Named(name string) hclog.Logger {
	if h.name != "" {
		name = h.name + "." + name
	}
	return h.ResetNamed(name)
}

func (h *hcLogger) ResetNamed(name string) hclog.Logger {
	c := *h
	c.name = name
	c.l = c.build()
	return &c
}

func (h *hcLogger) SetLevel(level hclog.Level) { h.level = level }
func (h *hcLogger) GetLevel() hclog.Level      { return h.level }

func (h *hcLogger) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(h.StandardWriter(opts), "", 0)
}

func (h *hcLogger) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return &logWriter{l: h.l}
}
