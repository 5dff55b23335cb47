package retry

import (
	"context"
	"errors"
	"testing"
	"time"
)

// fakeClock fires every wait at once and records its length.
type fakeClock struct{ waits []time.Duration }

func (c *fakeClock) after(d time.Duration) <-chan time.Time {
	c.waits = append(c.waits, d)
	ch := make(chan time.Time, 1)
	ch <- time.Time{}
	return ch
}

func TestBackoffDelays(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		o    Options
		want []time.Duration
	}{
		{"defaults without jitter", Options{Jitter: -1},
			[]time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}},
		{"capped", Options{Initial: time.Second, Max: 3 * time.Second, Jitter: -1},
			[]time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second}},
		{"full jitter at the top of the range", Options{Initial: time.Second, Jitter: 0.5, Rand: func() float64 { return 0.999999 }},
			[]time.Duration{500 * time.Millisecond, time.Second}},
		{"no jitter at the bottom of the range", Options{Initial: time.Second, Jitter: 0.5, Rand: func() float64 { return 0 }},
			[]time.Duration{time.Second, 2 * time.Second}},
		{"multiplier 3", Options{Initial: time.Second, Multiplier: 3, Jitter: -1},
			[]time.Duration{time.Second, 3 * time.Second, 9 * time.Second}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := New(tc.o)
			for i, want := range tc.want {
				got := b.Next()
				// The jitter may round by a nanosecond or two.
				if d := got - want; d < -time.Microsecond || d > time.Microsecond {
					t.Errorf("delay %d = %v, want %v", i, got, want)
				}
			}
		})
	}
}

func TestBackoffReset(t *testing.T) {
	t.Parallel()
	b := New(Options{Initial: time.Second, Jitter: -1})
	b.Next()
	b.Next()
	b.Reset()
	if got := b.Next(); got != time.Second {
		t.Errorf("after Reset: %v, want 1s", got)
	}
}

func TestDo(t *testing.T) {
	t.Parallel()
	errBusy := errors.New("busy")
	errBad := errors.New("bad")
	cases := []struct {
		name      string
		retryable func(error) bool
		results   []error // what fn returns, call by call; nil ends
		wantErr   error
		wantCalls int
	}{
		{"succeeds first", nil, []error{nil}, nil, 1},
		{"retries until success", nil, []error{errBusy, errBusy, nil}, nil, 3},
		{"stops on Permanent", nil, []error{errBusy, Permanent(errBad), nil}, errBad, 2},
		{"stops on what the classifier calls permanent", func(err error) bool { return !errors.Is(err, errBad) },
			[]error{errBusy, errBad, nil}, errBad, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := &fakeClock{}
			calls := 0
			var retried []error
			err := Do(t.Context(), Options{Initial: time.Second, Jitter: -1, Retryable: tc.retryable, After: clk.after},
				func(context.Context) error {
					calls++
					return tc.results[calls-1]
				},
				func(err error, _ time.Duration) { retried = append(retried, err) })
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Errorf("err = %v, want %v", err, tc.wantErr)
			}
			if IsPermanent(err) {
				t.Errorf("Do returned %v still marked permanent", err)
			}
			if calls != tc.wantCalls {
				t.Errorf("calls = %d, want %d", calls, tc.wantCalls)
			}
			if len(clk.waits) != tc.wantCalls-1 || len(retried) != tc.wantCalls-1 {
				t.Errorf("waited %v and reported %d retries, want %d", clk.waits, len(retried), tc.wantCalls-1)
			}
		})
	}
}

func TestDoStopsWithContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	errBusy := errors.New("busy")
	// A clock that never fires: only the context ends the wait.
	never := func(time.Duration) <-chan time.Time { return nil }
	calls := 0
	err := Do(ctx, Options{After: never}, func(context.Context) error {
		calls++
		cancel()
		return errBusy
	}, nil)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, errBusy) {
		t.Errorf("err = %v, want canceled and the last error", err)
	}
	if calls != 1 {
		t.Errorf("calls = %d, want 1", calls)
	}
}

func TestSleep(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := Sleep(ctx, nil, time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("Sleep on a canceled context = %v", err)
	}
	clk := &fakeClock{}
	if err := Sleep(t.Context(), clk.after, time.Minute); err != nil || len(clk.waits) != 1 || clk.waits[0] != time.Minute {
		t.Errorf("Sleep = %v, waits %v", err, clk.waits)
	}
}

func TestPermanent(t *testing.T) {
	t.Parallel()
	if Permanent(nil) != nil {
		t.Error("Permanent(nil) is not nil")
	}
	base := errors.New("x")
	err := Permanent(base)
	if !IsPermanent(err) || !errors.Is(err, base) || err.Error() != "x" {
		t.Errorf("Permanent(x) = %v", err)
	}
	b := New(Options{Retryable: func(error) bool { return true }})
	if b.Retryable(err) || b.Retryable(nil) || !b.Retryable(base) {
		t.Error("Backoff.Retryable classifies wrongly")
	}
}
