package testwait

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeT records a Fatalf and stops its goroutine, as testing.T does,
// without failing the test.
type fakeT struct {
	testing.TB
	failed string
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// run calls fn with a fakeT on a goroutine of its own and returns what
// it failed with ("" if nothing).
func run(t *testing.T, fn func(testing.TB)) string {
	f := &fakeT{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	return f.failed
}

func TestUntil(t *testing.T) {
	var n atomic.Int32
	cond := func() error {
		if n.Add(1) < 3 {
			return errors.New("not yet")
		}
		return nil
	}
	if err := Until(time.Second, time.Millisecond, cond); err != nil || n.Load() != 3 {
		t.Errorf("Until = %v after %d calls, want nil after 3", err, n.Load())
	}
	never := errors.New("never")
	start := time.Now()
	if err := Until(30*time.Millisecond, time.Millisecond, func() error { return never }); err != never {
		t.Errorf("Until = %v, want the condition's last error", err)
	}
	if took := time.Since(start); took < 30*time.Millisecond {
		t.Errorf("Until gave up after %v, before its timeout", took)
	}
}

func TestForAndHolds(t *testing.T) {
	failed := run(t, func(t testing.TB) {
		For(t, "the impossible", 10*time.Millisecond, func() error { return errors.New("no") })
	})
	if !strings.Contains(failed, "the impossible") || !strings.Contains(failed, "no") {
		t.Errorf("For failed with %q, want what it waited for and the last error", failed)
	}
	if failed := run(t, func(t testing.TB) { For(t, "at once", time.Second, func() error { return nil }) }); failed != "" {
		t.Errorf("For failed with %q on a condition that held", failed)
	}
	var n atomic.Int32
	failed = run(t, func(t testing.TB) {
		Holds(t, "the count stays small", time.Second, func() error {
			if n.Add(1) > 2 {
				return errors.New("too big")
			}
			return nil
		})
	})
	if !strings.Contains(failed, "the count stays small") || n.Load() != 3 {
		t.Errorf("Holds failed with %q after %d calls, want a failure at the third", failed, n.Load())
	}
	if failed := run(t, func(t testing.TB) { Holds(t, "fine", 30*time.Millisecond, func() error { return nil }) }); failed != "" {
		t.Errorf("Holds failed with %q on a condition that held", failed)
	}
}
