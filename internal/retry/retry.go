// Package retry is the one home of retrying with back-off (issue 14 item
// 4): exponential delays with jitter and a cap, bounded by a context, that
// stop at once on an error classified permanent. Loops that retry a call
// use Do; loops that need the delays themselves (a session that resets its
// back-off after running a while) use a Backoff.
//
// It never sleeps on the wall clock when Options.After is set, so tests
// drive it without sleeping, and it never logs: callers report failures
// through internal/logpolicy.
package retry

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"
)

// Options shapes the delays. The zero value is usable: 100 ms doubling to
// at most 30 s, 20% jitter, every error retryable except those marked with
// Permanent.
type Options struct {
	Initial    time.Duration // first delay; 0 = 100 ms
	Max        time.Duration // cap on a delay; 0 = 30 s
	Multiplier float64       // growth per attempt; below 1 = 2
	// Jitter spreads each delay uniformly over [d*(1-Jitter), d]; 0 = 0.2,
	// negative = none. Jitter keeps many retriers from waking together.
	Jitter float64
	// Retryable classifies an error; nil = every error is. An error marked
	// with Permanent is never retried, whatever Retryable says.
	Retryable func(error) bool
	// After is the clock; nil = time.After.
	After func(time.Duration) <-chan time.Time
	// Rand returns a number in [0, 1) for the jitter; nil = math/rand/v2.
	Rand func() float64
}

func (o Options) withDefaults() Options {
	if o.Initial <= 0 {
		o.Initial = 100 * time.Millisecond
	}
	if o.Max <= 0 {
		o.Max = 30 * time.Second
	}
	if o.Max < o.Initial {
		o.Max = o.Initial
	}
	if o.Multiplier < 1 {
		o.Multiplier = 2
	}
	switch {
	case o.Jitter == 0:
		o.Jitter = 0.2
	case o.Jitter < 0:
		o.Jitter = 0
	case o.Jitter > 1:
		o.Jitter = 1
	}
	if o.After == nil {
		o.After = time.After
	}
	if o.Rand == nil {
		o.Rand = rand.Float64
	}
	return o
}

// PermanentError marks an error that retrying will not cure.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent marks err as not worth retrying; nil stays nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// IsPermanent reports whether err, or an error it wraps, is marked with
// Permanent.
func IsPermanent(err error) bool {
	var pe *PermanentError
	return errors.As(err, &pe)
}

// Backoff hands out the delays of one retry loop. Not safe for concurrent
// use.
type Backoff struct {
	o    Options
	next time.Duration
}

// New returns a Backoff whose first delay is o.Initial.
func New(o Options) *Backoff {
	o = o.withDefaults()
	return &Backoff{o: o, next: o.Initial}
}

// Retryable reports whether err is worth another attempt under the
// options' classification: not nil, not marked Permanent, and retryable by
// Options.Retryable.
func (b *Backoff) Retryable(err error) bool {
	if err == nil || IsPermanent(err) {
		return false
	}
	return b.o.Retryable == nil || b.o.Retryable(err)
}

// Next returns the next delay (jittered) and grows the one after, up to
// the cap.
func (b *Backoff) Next() time.Duration {
	d := b.next
	b.next = min(time.Duration(float64(b.next)*b.o.Multiplier), b.o.Max)
	if b.o.Jitter > 0 {
		d -= time.Duration(b.o.Jitter * b.o.Rand() * float64(d))
	}
	return max(d, 0)
}

// Reset makes the next delay the initial one again (after a success).
func (b *Backoff) Reset() { b.next = b.o.Initial }

// Wait waits for the next delay; it returns ctx's error when ctx ends
// first.
func (b *Backoff) Wait(ctx context.Context) error {
	return Sleep(ctx, b.o.After, b.Next())
}

// Sleep waits d on the clock after (nil = time.After) or until ctx ends,
// and then returns ctx's error.
func Sleep(ctx context.Context, after func(time.Duration) <-chan time.Time, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d <= 0 {
		return nil
	}
	if after == nil {
		after = time.After
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-after(d):
		return nil
	}
}

// Do calls fn until it succeeds, returns an error that is not retryable
// (returned as is, unwrapped from Permanent), or ctx ends (then the last
// error of fn, joined with ctx's, so that callers see both why they
// stopped and what last failed). onRetry, when not nil, is told of each
// failure that will be retried and the delay before the next attempt.
func Do(ctx context.Context, o Options, fn func(context.Context) error, onRetry func(err error, wait time.Duration)) error {
	b := New(o)
	for {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		if !b.Retryable(err) {
			var pe *PermanentError
			if errors.As(err, &pe) && pe == err {
				return pe.Err
			}
			return err
		}
		if ctx.Err() != nil {
			return errors.Join(ctx.Err(), err)
		}
		d := b.Next()
		if onRetry != nil {
			onRetry(err, d)
		}
		if werr := Sleep(ctx, b.o.After, d); werr != nil {
			return errors.Join(werr, err)
		}
	}
}
