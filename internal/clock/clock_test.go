package clock

import (
	"context"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestFakeAfter(t *testing.T) {
	f := NewFake(t0)
	c := f.After(time.Hour)
	f.Advance(59 * time.Minute)
	select {
	case <-c:
		t.Fatal("fired 1 minute early")
	default:
	}
	f.Advance(2 * time.Minute)
	select {
	case at := <-c:
		if !at.Equal(t0.Add(time.Hour)) {
			t.Errorf("fired with %v, want the moment it fell due", at)
		}
	default:
		t.Fatal("did not fire")
	}
	if !f.Now().Equal(t0.Add(61 * time.Minute)) {
		t.Errorf("now %v", f.Now())
	}
	if f.Waiters() != 0 {
		t.Errorf("%d waiters after the timer fired", f.Waiters())
	}
	select {
	case <-f.After(0):
	default:
		t.Error("After(0) did not fire at once")
	}
}

func TestFakeTicker(t *testing.T) {
	f := NewFake(t0)
	tk := f.NewTicker(time.Minute)
	var got []time.Time
	for range 3 {
		f.Advance(time.Minute)
		got = append(got, <-tk.C())
	}
	if !got[2].Equal(t0.Add(3 * time.Minute)) {
		t.Errorf("third tick at %v", got[2])
	}
	// A reader that falls behind gets one tick, not a backlog.
	f.Advance(10 * time.Minute)
	<-tk.C()
	select {
	case <-tk.C():
		t.Error("a backlog of ticks")
	default:
	}
	tk.Stop()
	f.Advance(time.Hour)
	select {
	case <-tk.C():
		t.Error("tick after Stop")
	default:
	}
}

// TestYearOfSchedule: a loop that does something every day, driven by a
// Fake, runs a year in well under a second of real time.
func TestYearOfSchedule(t *testing.T) {
	f := NewFake(t0)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	days := make(chan time.Time)
	go func() {
		tk := f.NewTicker(24 * time.Hour)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case at := <-tk.C():
				days <- at
			}
		}
	}()
	if err := f.WaitFor(ctx, 1); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var last time.Time
	for range 365 {
		f.Advance(24 * time.Hour)
		last = <-days
	}
	if want := t0.AddDate(0, 0, 365); !last.Equal(want) {
		t.Errorf("last run at %v, want %v", last, want)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("a year took %v of real time", d)
	}
}

func TestSleep(t *testing.T) {
	f := NewFake(t0)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- Sleep(ctx, f, time.Hour) }()
	if err := f.WaitFor(ctx, 1); err != nil {
		t.Fatal(err)
	}
	f.Advance(time.Hour)
	if err := <-done; err != nil {
		t.Fatalf("Sleep: %v", err)
	}
	go func() { done <- Sleep(ctx, f, time.Hour) }()
	if err := f.WaitFor(ctx, 1); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("Sleep after cancel: %v", err)
	}
	if Or(nil) != Real || Or(f) != f {
		t.Error("Or")
	}
}
