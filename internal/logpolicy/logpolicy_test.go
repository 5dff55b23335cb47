package logpolicy

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// record is one captured log line.
type record struct {
	level slog.Level
	msg   string
	attrs map[string]any
}

// capture is a slog.Handler that keeps every line.
type capture struct {
	mu    sync.Mutex
	lines []record
}

func (c *capture) Enabled(context.Context, slog.Level) bool { return true }
func (c *capture) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *capture) WithGroup(string) slog.Handler            { return c }
func (c *capture) Handle(_ context.Context, r slog.Record) error {
	rec := record{level: r.Level, msg: r.Message, attrs: map[string]any{}}
	r.Attrs(func(a slog.Attr) bool { rec.attrs[a.Key] = a.Value.Any(); return true })
	c.mu.Lock()
	c.lines = append(c.lines, rec)
	c.mu.Unlock()
	return nil
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *clock                   { return &clock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)} }
func setup() (*Repeats, *capture, *clock) {
	c, clk := &capture{}, newClock()
	return New(Options{Log: slog.New(c), Interval: time.Minute, Now: clk.now}), c, clk
}

func TestFailFirstThenSummaryThenRecovery(t *testing.T) {
	t.Parallel()
	r, c, clk := setup()
	errDown := errors.New("peer down")
	// A failure every 5 s for 3 minutes: the first line, then one
	// summary a minute.
	logged := 0
	for range 36 {
		if r.Fail("svc/dc2", "replicate", errDown, "check the link to dc2", "service", "svc") {
			logged++
		}
		clk.advance(5 * time.Second)
	}
	if logged != 3 || len(c.lines) != 3 {
		t.Fatalf("logged %d lines (%d captured), want 3: first and two summaries", logged, len(c.lines))
	}
	first := c.lines[0]
	if first.level != slog.LevelWarn || first.msg != "replicate" || first.attrs["hint"] != "check the link to dc2" || first.attrs["service"] != "svc" {
		t.Errorf("first line = %+v", first)
	}
	if _, ok := first.attrs["failures"]; ok {
		t.Errorf("first line has a count: %+v", first)
	}
	sum := c.lines[1]
	if sum.level != slog.LevelWarn || sum.attrs["failures"] != int64(12) || sum.attrs["failures_total"] != int64(13) || sum.attrs["failing_for"] != time.Minute {
		t.Errorf("summary = %+v, want 12 failures since the first line, 13 in all, for 1m", sum)
	}
	if got := r.Failing("svc/dc2"); got != 36 {
		t.Errorf("Failing = %d, want 36", got)
	}
	if !r.OK("svc/dc2") {
		t.Fatal("OK did not know the key was failing")
	}
	rec := c.lines[len(c.lines)-1]
	if rec.level != slog.LevelInfo || rec.msg != "recovered" || rec.attrs["failure"] != "replicate" || rec.attrs["failures_total"] != int64(36) || rec.attrs["service"] != "svc" {
		t.Errorf("recovery line = %+v", rec)
	}
	// Recovered: a new failure is a first failure again.
	n := len(c.lines)
	if !r.Fail("svc/dc2", "replicate", errDown, "") || len(c.lines) != n+1 {
		t.Error("a failure after recovery was not logged at once")
	}
	if _, ok := c.lines[n].attrs["hint"]; ok {
		t.Error("an empty hint was logged")
	}
}

func TestKeysAreIndependent(t *testing.T) {
	t.Parallel()
	r, c, clk := setup()
	err := errors.New("x")
	r.Fail("a", "tier engine", err, "")
	r.Fail("b", "tier engine", err, "")
	clk.advance(time.Second)
	r.Fail("a", "tier engine", err, "")
	if len(c.lines) != 2 {
		t.Fatalf("%d lines, want 2 (one first line per key)", len(c.lines))
	}
	if r.OK("c") {
		t.Error("OK of a key that never failed reports failing")
	}
	r.Forget("a")
	if r.Failing("a") != 0 || r.OK("a") {
		t.Error("Forget kept the key")
	}
	if len(c.lines) != 2 {
		t.Errorf("OK of an unknown key or Forget logged: %d lines", len(c.lines))
	}
}

func TestOKWithoutFailureIsQuiet(t *testing.T) {
	t.Parallel()
	r, c, _ := setup()
	for range 10 {
		r.OK("k")
	}
	if len(c.lines) != 0 {
		t.Errorf("%d lines for successes only", len(c.lines))
	}
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	r := New(Options{})
	if r.interval != DefaultInterval || r.log == nil || r.now == nil {
		t.Errorf("defaults not applied: %+v", r)
	}
}
