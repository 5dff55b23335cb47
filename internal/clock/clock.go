// Package clock is the one clock of everything time-driven in lifeboat:
// intervals, schedules, retention, leases and RPO read the time and wait on
// it through a Clock, so that tests can put a Fake in its place and run a
// year of schedule in seconds.
package clock

import (
	"context"
	"sort"
	"sync"
	"time"
)

// Clock tells the time and waits on it.
type Clock interface {
	Now() time.Time
	// After returns a channel that receives the time once d has passed.
	After(d time.Duration) <-chan time.Time
	// NewTicker returns a ticker sending the time every d (d > 0).
	NewTicker(d time.Duration) Ticker
}

// Ticker is a time.Ticker of a Clock.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// Real is the operating system's clock.
var Real Clock = real{}

type real struct{}

func (real) Now() time.Time                         { return time.Now() }
func (real) After(d time.Duration) <-chan time.Time { return time.After(d) }
func (real) NewTicker(d time.Duration) Ticker       { return realTicker{time.NewTicker(d)} }

type realTicker struct{ t *time.Ticker }

func (t realTicker) C() <-chan time.Time { return t.t.C }
func (t realTicker) Stop()               { t.t.Stop() }

// Or returns c, or Real when c is nil.
func Or(c Clock) Clock {
	if c == nil {
		return Real
	}
	return c
}

// Sleep waits d on c, or until ctx ends (then it returns ctx's error).
func Sleep(ctx context.Context, c Clock, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-c.After(d):
		return nil
	}
}

// Fake is a clock that moves only when told to. Timers and tickers fire,
// in time order, as Advance or Set passes their moment; a ticker that
// missed several periods fires once, as a time.Ticker does when its
// reader is slow.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	waiters []*waiter
	added   chan struct{} // closed and replaced when a waiter is added
}

type waiter struct {
	at     time.Time
	period time.Duration // 0 = a one-shot timer
	c      chan time.Time
	done   bool
}

// NewFake returns a Fake clock at t.
func NewFake(t time.Time) *Fake { return &Fake{now: t, added: make(chan struct{})} }

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// After returns a channel that receives the fake time once it has moved
// on by d.
func (f *Fake) After(d time.Duration) <-chan time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := &waiter{at: f.now.Add(d), c: make(chan time.Time, 1)}
	if d <= 0 {
		w.c <- f.now
		return w.c
	}
	f.add(w)
	return w.c
}

// NewTicker returns a ticker of the fake clock.
func (f *Fake) NewTicker(d time.Duration) Ticker {
	if d <= 0 {
		panic("clock: non-positive ticker period")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	w := &waiter{at: f.now.Add(d), period: d, c: make(chan time.Time, 1)}
	f.add(w)
	return &fakeTicker{f: f, w: w}
}

func (f *Fake) add(w *waiter) {
	f.waiters = append(f.waiters, w)
	close(f.added)
	f.added = make(chan struct{})
}

type fakeTicker struct {
	f *Fake
	w *waiter
}

func (t *fakeTicker) C() <-chan time.Time { return t.w.c }
func (t *fakeTicker) Stop() {
	t.f.mu.Lock()
	t.w.done = true
	t.f.mu.Unlock()
}

// Advance moves the clock on by d, firing what falls due on the way.
func (f *Fake) Advance(d time.Duration) { f.Set(f.Now().Add(d)) }

// Set moves the clock to t (never back), firing what falls due on the way,
// earliest first.
func (f *Fake) Set(t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for {
		live := f.waiters[:0]
		for _, w := range f.waiters {
			if !w.done {
				live = append(live, w)
			}
		}
		f.waiters = live
		sort.Slice(f.waiters, func(i, j int) bool { return f.waiters[i].at.Before(f.waiters[j].at) })
		if len(f.waiters) == 0 || f.waiters[0].at.After(t) {
			break
		}
		w := f.waiters[0]
		if w.at.After(f.now) {
			f.now = w.at
		}
		select {
		case w.c <- f.now:
		default: // a slow reader misses a tick, as with time.Ticker
		}
		if w.period == 0 {
			w.done = true
		} else {
			for !w.at.After(f.now) {
				w.at = w.at.Add(w.period)
			}
		}
	}
	if t.After(f.now) {
		f.now = t
	}
}

// Waiters returns how many timers and tickers wait on the clock.
func (f *Fake) Waiters() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, w := range f.waiters {
		if !w.done {
			n++
		}
	}
	return n
}

// WaitFor returns once at least n timers and tickers wait on the clock (the
// code under test has reached its wait), or when ctx ends.
func (f *Fake) WaitFor(ctx context.Context, n int) error {
	for {
		f.mu.Lock()
		k := 0
		for _, w := range f.waiters {
			if !w.done {
				k++
			}
		}
		ch := f.added
		f.mu.Unlock()
		if k >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// WithNow is the real clock's timers with another source of the time (a
// node that runs with an offset, in tests of wall-clock schedules).
func WithNow(now func() time.Time) Clock { return withNow{now} }

type withNow struct{ now func() time.Time }

func (c withNow) Now() time.Time                       { return c.now() }
func (withNow) After(d time.Duration) <-chan time.Time { return time.After(d) }
func (withNow) NewTicker(d time.Duration) Ticker       { return realTicker{time.NewTicker(d)} }
