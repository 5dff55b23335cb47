package ingest

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
)

var defaultSuspect = config.Suspect{Changed: config.DefaultSuspectChanged, Incompressible: config.DefaultSuspectIncompressible}

const volBlocks = 10000

// churn is a normal point: a few percent of the blocks, mostly compressible.
func churn(r *rand.Rand) Sample {
	changed := int64(r.IntN(volBlocks / 20))
	return Sample{Volume: "erp/data", Blocks: volBlocks, Changed: changed, Incompressible: changed * int64(r.IntN(40)) / 100}
}

// attack rewrites share of the blocks with random data.
func attack(share float64) Sample {
	n := int64(share * volBlocks)
	return Sample{Volume: "erp/data", Blocks: volBlocks, Changed: n, Incompressible: n * 99 / 100}
}

func TestDetectorNormalChurnNeverTrips(t *testing.T) {
	t.Parallel()
	d := NewDetector(0)
	r := rand.New(rand.NewPCG(1, 2))
	now := time.Unix(1e9, 0)
	if s := d.Observe(Sample{Volume: "erp/data", Blocks: volBlocks, Changed: volBlocks, Incompressible: volBlocks, First: true}, defaultSuspect, now); s != nil {
		t.Fatalf("the initial copy tripped the signal: %+v", s)
	}
	for i := range 5000 {
		smp := churn(r)
		if i%100 == 99 {
			// a nightly job rewrites a third of the volume with compressible data
			smp.Changed, smp.Incompressible = volBlocks/3, volBlocks/30
		}
		if s := d.Observe(smp, defaultSuspect, now); s != nil {
			t.Fatalf("point %d (%+v) tripped the signal: %+v", i, smp, s)
		}
	}
}

func TestDetectorJumpTrips(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		th    config.Suspect
		smp   Sample
		trips bool
	}{
		{"60% random", defaultSuspect, attack(0.6), true},
		{"whole volume random", defaultSuspect, attack(1), true},
		{"20% random is under changed", defaultSuspect, attack(0.2), false},
		{"20% random under a lower threshold", config.Suspect{Changed: 0.1, Incompressible: 0.8}, attack(0.2), true},
		{"60% compressible", defaultSuspect, Sample{Volume: "erp/data", Blocks: volBlocks, Changed: 6000, Incompressible: 600}, false},
		{"60% random, signal off", config.Suspect{Changed: 0.3, Incompressible: 0.8, Off: true}, attack(0.6), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			d := NewDetector(0)
			r := rand.New(rand.NewPCG(3, 4))
			now := time.Unix(1e9, 0)
			for range 20 {
				if s := d.Observe(churn(r), c.th, now); s != nil {
					t.Fatalf("churn tripped: %+v", s)
				}
			}
			s := d.Observe(c.smp, c.th, now)
			if (s != nil) != c.trips {
				t.Fatalf("Observe(%+v) = %+v, want tripped %v", c.smp, s, c.trips)
			}
			if s != nil && (s.Volume != "erp/data" || s.Changed < 0.19 || s.Incompressible < 0.98 || s.BaselineChanged > 0.05 || s.BaselineIncompressible > 0.4 || !s.At.Equal(now)) {
				t.Errorf("suspicion %+v: want the volume, its shares and a low baseline", s)
			}
		})
	}
}

func TestDetectorWarmsUp(t *testing.T) {
	t.Parallel()
	d := NewDetector(0)
	now := time.Unix(1e9, 0)
	// After a restart the baseline is empty: no alarm until it has
	// baselineWarmup points.
	for i := range baselineWarmup {
		if s := d.Observe(attack(0.6), defaultSuspect, now); s != nil {
			t.Fatalf("point %d tripped with a baseline of %d points", i, i)
		}
	}
	d = NewDetector(0)
	for range baselineWarmup {
		d.Observe(Sample{Volume: "erp/data", Blocks: volBlocks}, defaultSuspect, now)
	}
	if s := d.Observe(attack(0.6), defaultSuspect, now); s == nil {
		t.Fatal("a jump after the warm-up did not trip")
	}
}

func TestDetectorBaselineAdapts(t *testing.T) {
	t.Parallel()
	d := NewDetector(0)
	r := rand.New(rand.NewPCG(5, 6))
	now := time.Unix(1e9, 0)
	for range 20 {
		d.Observe(churn(r), defaultSuspect, now)
	}
	// The workload changes for good: every point now rewrites 60% of the
	// volume with media that does not compress. The first points trip;
	// then the baseline has followed and the same points are normal.
	tripped := 0
	for i := range 20 {
		if s := d.Observe(attack(0.6), defaultSuspect, now); s != nil {
			tripped++
			if i > 5 {
				t.Fatalf("point %d of the new workload still trips: %+v", i, s)
			}
		}
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
		d.Observe(Sample{Volume: v, Blocks: 10}, defaultSuspect, now)
	}
	if len(d.vols) != 3 || d.lru.Len() != 3 {
		t.Fatalf("%d baselines kept, want 3", len(d.vols))
	}
	if _, ok := d.vols["a/1"]; ok {
		t.Error("the least recently used baseline was kept")
	}
}
