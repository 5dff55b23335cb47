// Package testwait is how lifeboat's tests wait: on a condition, polled on
// a time.Ticker until a deadline, never for a fixed time (issue 14). A
// wait that runs out fails the test naming what it waited for and the
// condition's last answer. Only tests import it.
package testwait

import (
	"errors"
	"testing"
	"time"
)

// Interval is how often For and Holds poll unless told otherwise.
const Interval = 20 * time.Millisecond

// For polls cond every Interval until it returns nil, and fails t (Fatalf,
// so from the test's goroutine only) if timeout passes first. cond runs
// once at once, so a condition that already holds costs no wait.
func For(t testing.TB, what string, timeout time.Duration, cond func() error) {
	t.Helper()
	ForEvery(t, what, timeout, Interval, cond)
}

// ForEvery is For with another polling interval, for conditions that are
// dear to check (one that runs a process, say).
func ForEvery(t testing.TB, what string, timeout, interval time.Duration, cond func() error) {
	t.Helper()
	if err := Until(timeout, interval, cond); err != nil {
		t.Fatalf("%s: not reached within %s: %v", what, timeout, err)
	}
}

// Until polls cond every interval until it returns nil (Until returns nil)
// or timeout passes (Until returns cond's last error). It is For for
// goroutines other than the test's and for callers that fail their own way.
func Until(timeout, interval time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if !time.Now().Before(deadline) {
			return err
		}
		<-tick.C
	}
}

// Holds polls cond every Interval for d and fails t at the first error it
// returns: it checks that something stays true (or never happens) while
// the code under test has time to get it wrong.
func Holds(t testing.TB, what string, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(Interval)
	defer tick.Stop()
	for {
		if err := cond(); err != nil {
			t.Fatalf("%s: broken after %s: %v", what, d-time.Until(deadline).Round(time.Millisecond), err)
		}
		if !time.Now().Before(deadline) {
			return
		}
		<-tick.C
	}
}

// True is For with a condition that says only whether it holds.
func True(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	ForEvery(t, what, timeout, Interval, func() error {
		if !cond() {
			return errNotYet
		}
		return nil
	})
}

var errNotYet = errors.New("still false")
