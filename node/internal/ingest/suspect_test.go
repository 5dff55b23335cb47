package ingest

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
)

// defaultSuspect are the policy's defaults: 30% changed, 80%
// incompressible, over 5 minutes.
var defaultSuspect = config.Suspect{Changed: config.DefaultSuspectChanged, Incompressible: config.DefaultSuspectIncompressible,
	Window: config.DefaultSuspectWindow}

const volBlocks = 10000

// points feeds a detector points of erp/data every step from t0.
type points struct {
	t    *testing.T
	d    *Detector
	th   config.Suspect
	at   time.Time
	step time.Duration
	n    int
}

func newPoints(t *testing.T, th config.Suspect, step time.Duration) *points {
	return &points{t: t, d: NewDetector(0), th: th, at: time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC), step: step}
}

// add observes one point with changed blocks, incompressible of them.
func (p *points) add(changed, incompressible int64) *Jump {
	p.n++
	p.at = p.at.Add(p.step)
	return p.d.Observe(Sample{Volume: "erp/data", Point: fmt.Sprintf("p%d", p.n), Time: p.at, Blocks: volBlocks,
		Changed: changed, Incompressible: incompressible}, p.th, p.at)
}

// churn is a normal point: a few blocks, mostly compressible (up to 0.5%
// of the volume in 30 s).
func (p *points) churn(r *rand.Rand) *Jump {
	changed := int64(r.IntN(max(2, int(volBlocks/200*p.step/(30*time.Second)))))
	return p.add(changed, changed*int64(r.IntN(40))/100)
}

// warm feeds an hour of churn.
func (p *points) warm(r *rand.Rand) {
	p.t.Helper()
	for range int(time.Hour / p.step) {
		if j := p.churn(r); j != nil {
			p.t.Fatalf("churn tripped: %+v", j)
		}
	}
}

func TestDetectorNormalChurnNeverTrips(t *testing.T) {
	t.Parallel()
	for _, step := range []time.Duration{time.Second, 30 * time.Second, 10 * time.Minute} {
		t.Run(step.String(), func(t *testing.T) {
			t.Parallel()
			p := newPoints(t, defaultSuspect, step)
			if j := p.d.Observe(Sample{Volume: "erp/data", Time: p.at, Blocks: volBlocks, Changed: volBlocks, Incompressible: volBlocks, First: true}, defaultSuspect, p.at); j != nil {
				t.Fatalf("the initial copy tripped the signal: %+v", j)
			}
			r := rand.New(rand.NewPCG(1, 2))
			for i := range 5000 {
				var j *Jump
				if i%500 == 499 {
					// a nightly job rewrites a third of the volume with compressible data
					j = p.add(volBlocks/3, volBlocks/30)
				} else {
					j = p.churn(r)
				}
				if j != nil {
					t.Fatalf("point %d tripped the signal: %+v", i, j)
				}
			}
		})
	}
}

func TestDetectorJumpTrips(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name                    string
		th                      config.Suspect
		changed, incompressible int64
		trips                   bool
	}{
		{"60% random", defaultSuspect, 6000, 5940, true},
		{"whole volume random", defaultSuspect, volBlocks, volBlocks, true},
		{"20% random is under changed", defaultSuspect, 2000, 1980, false},
		{"20% random under a lower threshold", config.Suspect{Changed: 0.1, Incompressible: 0.8, Window: defaultSuspect.Window}, 2000, 1980, true},
		{"60% compressible", defaultSuspect, 6000, 600, false},
		{"60% random, signal off", config.Suspect{Changed: 0.3, Incompressible: 0.8, Window: defaultSuspect.Window, Off: true}, 6000, 5940, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p := newPoints(t, c.th, 30*time.Second)
			p.warm(rand.New(rand.NewPCG(3, 4)))
			j := p.add(c.changed, c.incompressible)
			if (j != nil) != c.trips {
				t.Fatalf("a point of %d changed, %d incompressible: %+v, want tripped %v", c.changed, c.incompressible, j, c.trips)
			}
			if j == nil {
				return
			}
			s := j.Suspicion
			if j.Point != fmt.Sprintf("p%d", p.n) || !j.Time.Equal(p.at) || s.Volume != "erp/data" || s.Changed < 0.19 || s.Incompressible < 0.8 ||
				s.BaselineChanged > 0.1 || s.BaselineIncompressible > 0.4 || !s.At.Equal(p.at) {
				t.Errorf("jump %+v: want this point, its window's shares and a low baseline", j)
			}
			// One mark per episode: the next points do not trip again.
			for range 20 {
				if j := p.add(0, 0); j != nil {
					t.Fatalf("after the jump: %+v", j)
				}
			}
		})
	}
}

// An attack spread over many small points (an intercept agent writing a
// point a second) trips once the window holds enough of it, and names its
// first point.
func TestDetectorSpreadAttack(t *testing.T) {
	t.Parallel()
	p := newPoints(t, defaultSuspect, time.Second)
	p.warm(rand.New(rand.NewPCG(5, 6)))
	first := p.n + 1
	var j *Jump
	for i := range 200 { // 0.5% of the volume a second: 30% after 60 s
		if j = p.add(volBlocks/200, volBlocks/200); j != nil {
			t.Logf("tripped at the %d. point of the attack", i+1)
			break
		}
	}
	if j == nil {
		t.Fatal("a spread attack never tripped")
	}
	if j.Point != fmt.Sprintf("p%d", first) || j.Suspicion.Changed < 0.3 {
		t.Fatalf("jump %+v: want the attack's first point p%d", j, first)
	}
}

func TestDetectorWarmsUp(t *testing.T) {
	t.Parallel()
	// After a restart the baseline is empty: no alarm until it has
	// baselineWarmup windows.
	p := newPoints(t, defaultSuspect, time.Minute)
	for i := range 10 {
		if j := p.add(6000, 6000); j != nil && i < 5*baselineWarmup {
			t.Fatalf("point %d (minute %d) tripped before the baseline had %d windows", i, i+1, baselineWarmup)
		}
	}
	p = newPoints(t, defaultSuspect, time.Minute)
	for range 5*baselineWarmup + 1 {
		p.add(0, 0)
	}
	if j := p.add(6000, 6000); j == nil {
		t.Fatal("a jump after the warm-up did not trip")
	}
}

func TestDetectorBaselineAdapts(t *testing.T) {
	t.Parallel()
	p := newPoints(t, defaultSuspect, 5*time.Minute) // a window per point
	p.warm(rand.New(rand.NewPCG(7, 8)))
	// The workload changes for good: every point now rewrites 60% of the
	// volume with media that does not compress. The first points trip;
	// then the baseline has followed and the same points are normal.
	tripped := 0
	for i := range 20 {
		if j := p.add(6000, 6000); j != nil {
			tripped++
			if i > 8 {
				t.Fatalf("point %d of the new workload still trips: %+v", i, j)
			}
		}
		p.add(0, 0) // a quiet point between: each episode ends
	}
	if tripped == 0 || tripped > 4 {
		t.Fatalf("%d points of the new workload tripped, want 1 to 4", tripped)
	}
}

func TestDetectorBounded(t *testing.T) {
	t.Parallel()
	d := NewDetector(3)
	now := time.Unix(1e9, 0)
	for _, v := range []string{"a/1", "a/2", "a/3", "a/4"} {
		d.Observe(Sample{Volume: v, Time: now, Blocks: 10}, defaultSuspect, now)
	}
	if len(d.vols) != 3 || d.lru.Len() != 3 {
		t.Fatalf("%d baselines kept, want 3", len(d.vols))
	}
	if _, ok := d.vols["a/1"]; ok {
		t.Error("the least recently used baseline was kept")
	}
	// A window of many points keeps at most maxRecent of them.
	p := newPoints(t, defaultSuspect, time.Millisecond)
	for range 3 * maxRecent {
		p.add(1, 0)
	}
	if b := p.d.get("erp/data"); len(b.recent) > maxRecent {
		t.Fatalf("%d points kept in the window, want at most %d", len(b.recent), maxRecent)
	}
}
