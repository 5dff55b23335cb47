package throttle

// Tests on a fake clock (testing/synctest): scheduling and bookkeeping,
// exact to the nanosecond. A bubble also fails a test whose Link leaks its
// goroutine.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// Rates used below and what New makes of them:
// 1e6 B/s: burst 20000, chunk 10000. 1e5 B/s: burst 16384, chunk 8192.

// oneStream in TestShares' tiers means one stream per tier, not two.
const oneStream Tier = -1

func TestShares(t *testing.T) {
	tests := []struct {
		name    string
		weights [3]int
		tiers   []Tier
		want    [numTiers]float64 // share of the bytes granted
	}{
		{"hot alone", [3]int{}, []Tier{Hot}, [3]float64{1, 0, 0}},
		{"cold alone", [3]int{}, []Tier{Cold}, [3]float64{0, 0, 1}},
		{"hot and cold", [3]int{}, []Tier{Hot, Cold}, [3]float64{16.0 / 17, 0, 1.0 / 17}},
		{"warm and cold", [3]int{}, []Tier{Warm, Cold}, [3]float64{0, 4.0 / 5, 1.0 / 5}},
		{"all three", [3]int{}, []Tier{Hot, Warm, Cold}, [3]float64{16.0 / 21, 4.0 / 21, 1.0 / 21}},
		{"equal weights", [3]int{1, 1, 1}, []Tier{Hot, Warm, Cold}, [3]float64{1.0 / 3, 1.0 / 3, 1.0 / 3}},
		{"cold weighted as hot", [3]int{Cold: 16}, []Tier{Hot, Cold}, [3]float64{0.5, 0, 0.5}},
		{"zero entries default", [3]int{Hot: 2}, []Tier{Hot, Warm, Cold}, [3]float64{2.0 / 7, 4.0 / 7, 1.0 / 7}},
		{"negative entries default", [3]int{-1, -1, -1}, []Tier{Hot, Cold}, [3]float64{16.0 / 17, 0, 1.0 / 17}},
		// One stream per tier: a tier's queue empties at every grant.
		{"hot and cold, one stream each", [3]int{}, []Tier{Hot, Cold, oneStream}, [3]float64{16.0 / 17, 0, 1.0 / 17}},
		{"all three, one stream each", [3]int{}, []Tier{Hot, Warm, Cold, oneStream}, [3]float64{16.0 / 21, 4.0 / 21, 1.0 / 21}},
	}
	// The pumps run until the link has granted budget bytes (20 s of the
	// rate); the shares are those of that many bytes.
	const bps, budget = 1e6, 20_000_000
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := New(Options{Rate: constRate(bps), Weights: tt.weights})
				defer l.Close()
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				// pump Waits for sizes in turn until budget bytes are granted.
				pump := func(tier Tier, sizes []int) {
					for i := 0; ; i++ {
						if l.Wait(ctx, tier, sizes[i%len(sizes)]) != nil {
							return
						}
						if granted(l.Stats()) >= budget {
							cancel()
						}
					}
				}
				var wg sync.WaitGroup
				one := slices.Contains(tt.tiers, oneStream)
				start := time.Now()
				for _, tier := range tt.tiers {
					if tier == oneStream {
						continue
					}
					// Waits below, at and above a chunk.
					wg.Go(func() { pump(tier, []int{1000, 25_000, 7000}) })
					if !one {
						wg.Go(func() { pump(tier, []int{10_000, 300}) })
					}
				}
				wg.Wait()
				took := time.Since(start)
				s := l.Stats()

				total := granted(s)
				t.Logf("granted %d bytes in %v: hot %.2f%%, warm %.2f%%, cold %.2f%%",
					total, took, share(s, Hot), share(s, Warm), share(s, Cold))
				// The bucket starts full: one burst more than rate×time.
				if want := bps*took.Seconds() + 20_000; total < budget || math.Abs(float64(total)-want) > 10_000 {
					t.Errorf("granted %d bytes in %v, want at least %d and %.0f ±10000", total, took, budget, want)
				}
				for tier := range numTiers {
					got := float64(s.Tiers[tier].Granted) / float64(total)
					if math.Abs(got-tt.want[tier]) > 0.01 {
						t.Errorf("%v got %.2f%% of the link, want %.2f%%", Tier(tier), 100*got, 100*tt.want[tier])
					}
				}
			})
		})
	}
}

// TestNoStarvation checks that a cold Wait completes at about cold's share
// while hot and warm saturate the link with many streams.
func TestNoStarvation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := New(Options{Rate: constRate(1e6)})
		defer l.Close()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		var wg sync.WaitGroup
		var sent [numTiers]atomic.Int64
		for range 4 {
			wg.Go(func() { pump(ctx, l, Hot, []int{30_000}, &sent[Hot]) })
			wg.Go(func() { pump(ctx, l, Warm, []int{5000}, &sent[Warm]) })
		}
		synctest.Wait() // all queued: cold comes last in the first round too
		start := time.Now()
		err := l.Wait(ctx, Cold, 100_000)
		took := time.Since(start)
		cancel()
		wg.Wait()
		// 1/21 of 1e6 B/s: 100000 bytes in 2.1 s.
		t.Logf("cold Wait(100000) took %v", took)
		if err != nil || took < 1900*time.Millisecond || took > 2300*time.Millisecond {
			t.Errorf("cold Wait(100000) = %v after %v, want nil after about 2.1 s", err, took)
		}
		if sent[Hot].Load() == 0 || sent[Warm].Load() == 0 {
			t.Errorf("hot sent %d, warm %d bytes meanwhile, want both > 0", sent[Hot].Load(), sent[Warm].Load())
		}
	})
}

// TestFIFO checks that Waits of one tier are granted in the order they
// came, even when the first is much larger.
func TestFIFO(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := New(Options{Rate: constRate(1e5)})
		defer l.Close()
		var mu sync.Mutex
		var order []int
		var wg sync.WaitGroup
		for i, n := range []int{100_000, 10, 5000, 1} {
			wg.Go(func() {
				if err := l.Wait(t.Context(), Warm, n); err != nil {
					t.Errorf("Wait(%d) = %v", n, err)
				}
				mu.Lock()
				order = append(order, i)
				mu.Unlock()
			})
			synctest.Wait() // queued before the next one starts
		}
		wg.Wait()
		if want := []int{0, 1, 2, 3}; !equal(order, want) {
			t.Errorf("Waits returned in order %v, want %v", order, want)
		}
	})
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestRateChange changes the rate while a Wait is blocked, and checks when
// the Wait returns: the new rate applies mid-Wait, within 250 ms.
func TestRateChange(t *testing.T) {
	tests := []struct {
		name string
		// rate by time since New
		rate func(since time.Duration) float64
		// the Wait starts at start
		start time.Duration
		// if not 0, a huge Wait at probe must return at once (unlimited)
		probe    time.Duration
		n        int
		min, max time.Duration // when the Wait returns, since New
	}{
		{
			name: "limited to unlimited",
			rate: func(d time.Duration) float64 { return step(d, time.Second, 1000, 0) },
			n:    1 << 30,
			min:  time.Second, max: 1250 * time.Millisecond,
		},
		{
			// 17384 bytes (the first burst and 1 s at 1000 B/s) before
			// the switch, the rest at 1e6 B/s.
			name: "slow to fast",
			rate: func(d time.Duration) float64 { return step(d, time.Second, 1000, 1e6) },
			n:    2_000_000,
			min:  2900 * time.Millisecond, max: 3250 * time.Millisecond,
		},
		{
			// The switch applies at 0.5 s to 0.75 s: then 0.52e6 to
			// 0.77e6 bytes are granted, the rest takes 2.3 to 4.8 s
			// more. Had the new rate waited for the Wait's end, it would
			// return at 0.98 s.
			name: "fast to slow",
			rate: func(d time.Duration) float64 { return step(d, 500*time.Millisecond, 1e6, 1e5) },
			n:    1_000_000,
			min:  3 * time.Second, max: 5400 * time.Millisecond,
		},
		{
			// The first burst (16384) at once, then next to nothing:
			// waits too long for a Duration must not trip the
			// dispatcher.
			name: "tiny to fast",
			rate: func(d time.Duration) float64 { return step(d, time.Second, 1e-12, 1e6) },
			n:    50_000,
			min:  time.Second + 33*time.Millisecond, max: time.Second + 140*time.Millisecond,
		},
		{
			// A fresh, full bucket of 16384 bytes, the rest at 1e5 B/s.
			name:  "unlimited to limited",
			rate:  func(d time.Duration) float64 { return step(d, time.Second, 0, 1e5) },
			start: time.Second,
			n:     200_000,
			min:   time.Second + 1836*time.Millisecond, max: time.Second + 1900*time.Millisecond,
		},
		{
			// The bucket refills during the unlimited spell: 16384 bytes
			// at once, the rest at 2e5 B/s.
			name: "limited, unlimited, limited",
			rate: func(d time.Duration) float64 {
				return step(d, 2*time.Second, step(d, time.Second, 1e5, 0), 2e5)
			},
			probe: 1500 * time.Millisecond,
			start: 2 * time.Second,
			n:     400_000,
			min:   2*time.Second + 1918*time.Millisecond, max: 2*time.Second + 1960*time.Millisecond,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				t0 := time.Now()
				l := New(Options{Rate: func(now time.Time) float64 { return tt.rate(now.Sub(t0)) }})
				defer l.Close()
				if tt.probe != 0 {
					// synctest: moves the fake clock to the probe's instant, taking no
					// time. Nothing better: the case is a Wait issued at that instant,
					// and no event of the idle Link marks it.
					time.Sleep(tt.probe)
					if err := l.Wait(t.Context(), Cold, 1<<40); err != nil || time.Since(t0) != tt.probe {
						t.Fatalf("Wait(1<<40) at %v = %v, returned at %v; want nil at once", tt.probe, err, time.Since(t0))
					}
				}
				// synctest: moves the fake clock to tt.start, taking no time.
				// Nothing better: the case is a Wait issued at that instant of
				// the rate's schedule, and no event of the Link marks it.
				time.Sleep(tt.start - time.Since(t0))
				err := l.Wait(t.Context(), Hot, tt.n)
				took := time.Since(t0)
				t.Logf("Wait(%d) returned at %v", tt.n, took)
				if err != nil || took < tt.min || took > tt.max {
					t.Errorf("Wait(%d) = %v at %v, want nil between %v and %v", tt.n, err, took, tt.min, tt.max)
				}
			})
		})
	}
}

// step returns before until at, after from then on.
func step(d, at time.Duration, before, after float64) float64 {
	if d < at {
		return before
	}
	return after
}

func TestUnlimited(t *testing.T) {
	tests := []struct {
		name string
		rate func(time.Time) float64
	}{
		{"nil", nil},
		{"zero", constRate(0)},
		{"negative", constRate(-1)},
		{"NaN", constRate(math.NaN())},
		{"infinite", constRate(math.Inf(1))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := New(Options{Rate: tt.rate})
				defer l.Close()
				start := time.Now()
				for _, tier := range []Tier{Hot, Cold} {
					if err := l.Wait(t.Context(), tier, 1<<40); err != nil {
						t.Fatalf("Wait = %v", err)
					}
				}
				if d := time.Since(start); d != 0 {
					t.Errorf("Waits took %v, want no time at all", d)
				}
				s := l.Stats()
				if s.Rate != 0 || s.Tiers[Hot].Granted != 1<<40 || s.Tiers[Cold].Granted != 1<<40 {
					t.Errorf("Stats = %+v, want rate 0 and 1<<40 bytes granted to hot and cold", s)
				}
			})
		})
	}
}

// TestCancel checks what a cancelled Wait leaves behind: nothing charged
// after it returns, no waiter, and the Wait queued behind it proceeds.
func TestCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := New(Options{Rate: constRate(1e5)})
		defer l.Close()
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(time.Second, cancel)
		start := time.Now()
		var err error
		var wg sync.WaitGroup
		wg.Go(func() { err = l.Wait(ctx, Hot, 1_000_000) })
		synctest.Wait() // the large Wait is queued
		behind := l.Wait(t.Context(), Hot, 5000)
		behindAt := time.Since(start)
		wg.Wait()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Wait = %v, want %v", err, context.Canceled)
		}
		if behind != nil || behindAt < time.Second || behindAt > time.Second+100*time.Millisecond {
			t.Errorf("the Wait behind returned %v at %v, want nil between 1s and 1.1s", behind, behindAt)
		}
		// Both got at most the first burst and the rate since.
		s := l.Stats()
		if g, most := s.Tiers[Hot].Granted, 16384+int64(1e5*time.Since(start).Seconds()); g > most {
			t.Errorf("granted %d bytes by %v, want <= %d", g, time.Since(start), most)
		}
		if w := s.Tiers[Hot].Waited; w < time.Second+behindAt {
			t.Errorf("Waited = %v, want >= %v", w, time.Second+behindAt)
		}
		// A Wait after them is granted exactly what it asked, at the
		// rate: a cancelled Wait still queued (the tier is FIFO) or
		// charged meanwhile would delay it by seconds.
		const more = 100_000
		t1 := time.Now()
		if err := l.Wait(t.Context(), Hot, more); err != nil {
			t.Fatal(err)
		}
		took := time.Since(t1)
		s2 := l.Stats()
		if g := s2.Tiers[Hot].Granted - s.Tiers[Hot].Granted; g != more || s2.Tiers[Hot].Waiters != 0 || took > time.Second+50*time.Millisecond {
			t.Errorf("a Wait(%d) after: took %v, granted %d more, %d waiters left; want at most 1.05s, %d, none",
				more, took, g, s2.Tiers[Hot].Waiters, more)
		}

		// A context that has already ended: nothing waits, nothing is
		// charged, limited or not.
		for _, r := range []float64{1e5, 0} {
			l := New(Options{Rate: constRate(r)})
			if err := l.Wait(ctx, Cold, 10); !errors.Is(err, context.Canceled) {
				t.Errorf("rate %v: Wait with an ended context = %v, want %v", r, err, context.Canceled)
			}
			if g := l.Stats().Tiers[Cold].Granted; g != 0 {
				t.Errorf("rate %v: granted %d after a Wait with an ended context, want 0", r, g)
			}
			l.Close()
		}
	})
}

func TestClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := New(Options{Name: "dc1-dc2", Rate: constRate(1000)})
		errs := make(chan error, numTiers)
		for tier := range numTiers {
			go func() { errs <- l.Wait(t.Context(), Tier(tier), 1<<20) }()
		}
		synctest.Wait()
		if s := l.Stats(); s.Tiers[Hot].Waiters+s.Tiers[Warm].Waiters+s.Tiers[Cold].Waiters != numTiers {
			t.Fatalf("Stats = %+v, want one waiter per tier", s)
		}
		l.Close()
		for range numTiers {
			if err := <-errs; !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "dc1-dc2") {
				t.Errorf("blocked Wait = %v, want %v naming the link", err, ErrClosed)
			}
		}
		if err := l.Wait(t.Context(), Hot, 1); !errors.Is(err, ErrClosed) {
			t.Errorf("Wait after Close = %v, want %v", err, ErrClosed)
		}
		if _, err := l.Writer(context.Background(), &bytes.Buffer{}, Hot).Write([]byte("x")); !errors.Is(err, ErrClosed) {
			t.Errorf("Write after Close = %v, want %v", err, ErrClosed)
		}
		l.Close()
		if s := l.Stats(); s.Tiers[Hot].Waiters+s.Tiers[Warm].Waiters+s.Tiers[Cold].Waiters != 0 {
			t.Errorf("Stats after Close = %+v, want no waiters", s)
		}
	})
}

func TestInvalidWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := New(Options{Rate: constRate(1000)})
		defer l.Close()
		for _, tt := range []struct {
			tier Tier
			n    int
		}{{Tier(3), 1}, {Tier(-1), 1}, {Hot, -1}} {
			if err := l.Wait(t.Context(), tt.tier, tt.n); err == nil {
				t.Errorf("Wait(%v, %d) = nil, want an error", tt.tier, tt.n)
			}
		}
		// Empty the bucket: a Wait of 0 still returns at once.
		if err := l.Wait(t.Context(), Hot, 16384); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := l.Wait(t.Context(), Hot, 0); err != nil || time.Since(start) != 0 {
			t.Errorf("Wait(0) = %v after %v, want nil at once", err, time.Since(start))
		}
	})
}

// TestNow checks that the rate is evaluated at the Link's clock, and again
// once 100 ms of it have passed.
func TestNow(t *testing.T) {
	var now atomic.Int64 // Unix nanoseconds
	now.Store(time.Date(2030, 1, 2, 17, 59, 59, 0, time.UTC).UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()).UTC() }
	var asked []time.Time // guarded by l.mu
	var l *Link
	evaluations := func() int {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(asked)
	}
	l = New(Options{
		Now: clock,
		Rate: func(at time.Time) float64 {
			asked = append(asked, at) // under the Link's lock
			if at.Hour() < 18 {
				return 10e6 / 8
			}
			return 50e6 / 8
		},
	})
	defer l.Close()
	l.mu.Lock()
	first := append([]time.Time(nil), asked...)
	l.mu.Unlock()
	if s := l.Stats(); s.Rate != 10e6/8 || len(first) != 1 || !first[0].Equal(clock()) {
		t.Errorf("after New: rate %v, asked at %v; want %v, asked once at %v", s.Rate, first, 10e6/8, clock())
	}
	now.Add(int64(time.Second - 50*time.Millisecond))
	if s := l.Stats(); s.Rate != 10e6/8 {
		t.Errorf("at 17:59:59.95: rate %v, want %v", s.Rate, 10e6/8)
	}
	now.Add(int64(60 * time.Millisecond))
	n := evaluations()
	if s := l.Stats(); s.Rate != 10e6/8 || evaluations() != n {
		t.Errorf("at 18:00:00.01, 60 ms after the last evaluation: rate %v, want %v still", s.Rate, 10e6/8)
	}
	now.Add(int64(40 * time.Millisecond))
	if s := l.Stats(); s.Rate != 50e6/8 {
		t.Errorf("at 18:00:00.05, 100 ms after the last evaluation: rate %v, want %v", s.Rate, 50e6/8)
	}
}

func TestWriter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := New(Options{Rate: constRate(1e5)})
		defer l.Close()
		data := make([]byte, 500_000)
		rng := rand.New(rand.NewPCG(1, 2))
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		var rec recorder
		start := time.Now()
		n, err := l.Writer(context.Background(), &rec, Cold).Write(data)
		took := time.Since(start)
		if n != len(data) || err != nil {
			t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(data))
		}
		if !bytes.Equal(rec.buf.Bytes(), data) {
			t.Errorf("bytes written differ from bytes given")
		}
		if rec.max > 8192 {
			t.Errorf("largest write passed on: %d bytes, want <= one chunk (8192)", rec.max)
		}
		// The first burst at once, the rest at the rate.
		if want := time.Duration(float64(len(data)-16384) / 1e5 * float64(time.Second)); took < want || took > want+50*time.Millisecond {
			t.Errorf("Write took %v, want %v", took, want)
		}
		if g := l.Stats().Tiers[Cold].Granted; g != int64(len(data)) {
			t.Errorf("granted %d, want %d", g, len(data))
		}

		// The underlying writer's error and count come back.
		boom := errors.New("boom")
		fw := &failing{after: 2, err: boom}
		if n, err := l.Writer(context.Background(), fw, Cold).Write(data[:50_000]); n != 2*8192 || !errors.Is(err, boom) {
			t.Errorf("Write to a writer failing on its third write = %d, %v; want %d, %v", n, err, 2*8192, boom)
		}
		short := &failing{after: 1 << 30, short: true}
		if n, err := l.Writer(context.Background(), short, Cold).Write(data[:100]); n != 99 || !errors.Is(err, io.ErrShortWrite) {
			t.Errorf("Write to a short writer = %d, %v; want 99, %v", n, err, io.ErrShortWrite)
		}

		// Unlimited: one write, at once.
		u := New(Options{})
		defer u.Close()
		var urec recorder
		start = time.Now()
		if n, err := u.Writer(context.Background(), &urec, Hot).Write(data); n != len(data) || err != nil || urec.writes != 1 || time.Since(start) != 0 {
			t.Errorf("unlimited Write = %d, %v in %d writes after %v; want %d, nil, in 1 write at once",
				n, err, urec.writes, time.Since(start), len(data))
		}
	})
}

type recorder struct {
	buf         bytes.Buffer
	writes, max int
}

func (r *recorder) Write(p []byte) (int, error) {
	r.writes++
	r.max = max(r.max, len(p))
	return r.buf.Write(p)
}

// failing fails after `after` writes with err, or writes one byte short.
type failing struct {
	after int
	err   error
	short bool
}

func (f *failing) Write(p []byte) (int, error) {
	if f.short {
		return len(p) - 1, nil
	}
	if f.after == 0 {
		return 0, f.err
	}
	f.after--
	return len(p), nil
}

func BenchmarkWait(b *testing.B) {
	for _, bm := range []struct {
		name string
		rate float64
	}{
		{"unlimited", 0},
		{"limited", 1e12}, // every Wait goes through the dispatcher
	} {
		b.Run(bm.name, func(b *testing.B) {
			l := New(Options{Rate: constRate(bm.rate)})
			defer l.Close()
			ctx := b.Context()
			b.SetBytes(1500)
			for b.Loop() {
				if err := l.Wait(ctx, Hot, 1500); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestOverhead: a Link charges its Overhead on top of the bytes waited for.
func TestOverhead(t *testing.T) {
	l := New(Options{Overhead: 1.0 / 32})
	defer l.Close()
	if err := l.Wait(t.Context(), Warm, 3200); err != nil {
		t.Fatal(err)
	}
	if got := l.Stats().Tiers[Warm].Granted; got != 3300 {
		t.Errorf("granted %d bytes for a Wait of 3200 with 1/32 overhead, want 3300", got)
	}
}
