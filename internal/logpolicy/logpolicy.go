// Package logpolicy is the one home of the logging policy for failures
// that repeat (issue 14 item 6; STYLE.md 5a and 6): a loop that fails
// every few seconds logs the first failure once at WARN with what to do
// about it, then while it keeps failing at most one summary line per
// interval with the count, and one INFO line when it succeeds again. It
// never logs at ERROR: a retried failure is a warning, and what needs a
// human says so in its hint.
//
// Failures are keyed by what failed (a service, a peer, a service and a
// site...), so that two different things failing are both reported.
package logpolicy

import (
	"log/slog"
	"sync"
	"time"
)

// DefaultInterval is the least time between two lines about one key.
const DefaultInterval = 5 * time.Minute

// Options configures a Repeats. The zero value logs to slog.Default every
// DefaultInterval by the wall clock.
type Options struct {
	Log      *slog.Logger
	Interval time.Duration    // least time between two lines of one key; 0 = DefaultInterval
	Now      func() time.Time // the clock; nil = time.Now
}

// Repeats tracks the failing keys. Safe for concurrent use.
type Repeats struct {
	log      *slog.Logger
	interval time.Duration
	now      func() time.Time
	mu       sync.Mutex
	m        map[string]*failing
}

type failing struct {
	msg     string
	attrs   []any
	since   time.Time // first failure
	logged  time.Time // last line
	count   int       // failures in all
	unseen  int       // failures since the last line
	lastErr error
}

// New returns a Repeats.
func New(o Options) *Repeats {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Repeats{log: o.Log, interval: o.Interval, now: o.Now, m: map[string]*failing{}}
}

// Fail records a failure of key. The first one (since the key last
// succeeded) is logged at WARN as msg with err, hint (what to do; may be
// empty) and attrs; later ones are counted, and once Interval has passed
// since the last line, one summary line goes out: msg again, with the
// count since the last line, the total, how long it has been failing and
// the latest error. Fail reports whether it logged.
func (r *Repeats) Fail(key, msg string, err error, hint string, attrs ...any) bool {
	now := r.now()
	r.mu.Lock()
	f, ok := r.m[key]
	if !ok {
		f = &failing{msg: msg, since: now}
		r.m[key] = f
	}
	f.count++
	f.unseen++
	f.lastErr = err
	f.attrs = attrs
	if ok && now.Sub(f.logged) < r.interval {
		r.mu.Unlock()
		return false
	}
	first := !ok
	count, unseen, since := f.count, f.unseen, f.since
	f.logged, f.unseen = now, 0
	r.mu.Unlock()

	args := make([]any, 0, len(attrs)+10)
	args = append(args, attrs...)
	args = append(args, "err", err)
	if hint != "" {
		args = append(args, "hint", hint)
	}
	if first {
		r.log.Warn(msg, args...)
		return true
	}
	args = append(args, "failures", unseen, "failures_total", count, "failing_for", now.Sub(since).Round(time.Second))
	r.log.Warn(msg, args...)
	return true
}

// OK records a success of key. When key was failing it logs one INFO line
// "recovered" naming the failure, the count and how long it lasted, and
// forgets the key. It reports whether key was failing.
func (r *Repeats) OK(key string) bool {
	now := r.now()
	r.mu.Lock()
	f, ok := r.m[key]
	delete(r.m, key)
	r.mu.Unlock()
	if !ok {
		return false
	}
	args := make([]any, 0, len(f.attrs)+6)
	args = append(args, f.attrs...)
	args = append(args, "failure", f.msg, "failures_total", f.count, "failing_for", now.Sub(f.since).Round(time.Second))
	r.log.Info("recovered", args...)
	return true
}

// Failing reports how many failures of key were counted since it last
// succeeded (0: it is not failing).
func (r *Repeats) Failing(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if f, ok := r.m[key]; ok {
		return f.count
	}
	return 0
}

// Forget drops key without a line: what it tracked is gone (a sender
// stopped, a service removed).
func (r *Repeats) Forget(key string) {
	r.mu.Lock()
	delete(r.m, key)
	r.mu.Unlock()
}
