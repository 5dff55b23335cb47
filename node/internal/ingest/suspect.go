package ingest

import (
	"container/list"
	"strconv"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// The ransomware signal (issue 16 item 4). For each point an agent
// commits here and each volume it changed, the engine counts the blocks
// the point changed and those of them that did not compress (blockframe.
// Incompressible, measured as the blocks arrive), and compares both
// shares with the volume's trailing baseline. A point whose shares both
// reach the service's thresholds ([service.suspect]) and stand far above
// the baseline is suspect: its mark goes to the catalog (OpMarks), which
// status, metrics, retention (the newest clean point before it is pinned)
// and failover (which passes it over) read.
//
// The baseline is an exponentially weighted moving average per volume,
// kept in memory only: after a restart it is rebuilt from the next
// points, and until it has baselineWarmup of them no point of the volume
// trips the signal (a restart never raises a false alarm, at the price of
// a blind spot of a few points). The volume's first point (its initial
// copy) never trips it either.
const (
	// baselineWeight is the weight of the newest point in the average:
	// the baseline follows a lasting change of workload in a few points.
	baselineWeight = 0.25
	// baselineWarmup is how many points a volume's baseline needs before
	// the signal may trip.
	baselineWarmup = 3
	// jumpFactor: the changed share must be at least this many times the
	// baseline's.
	jumpFactor = 3
	// jumpMargin: the incompressible share must stand at least this far
	// above the baseline's (a share near 1 cannot triple).
	jumpMargin = 0.2
	// maxBaselines bounds the volumes whose baselines are kept; the least
	// recently used goes first.
	maxBaselines = 4096
)

// Sample is one volume's figures in one point.
type Sample struct {
	Volume         string // SERVICE/VOLUME
	Blocks         int64  // the volume's blocks
	Changed        int64  // blocks the point wrote
	Incompressible int64  // of Changed, those that did not compress
	First          bool   // the volume's first point here (its initial copy)
}

// baseline is one volume's trailing averages.
type baseline struct {
	volume                  string
	changed, incompressible float64
	points                  int
}

// Detector keeps the volumes' baselines and judges their points. Safe for
// concurrent use.
type Detector struct {
	mu   sync.Mutex
	lru  *list.List // of *baseline, most recent first
	vols map[string]*list.Element
	max  int
}

// NewDetector returns a Detector that keeps at most max baselines (0 =
// maxBaselines).
func NewDetector(max int) *Detector {
	if max <= 0 {
		max = maxBaselines
	}
	return &Detector{lru: list.New(), vols: map[string]*list.Element{}, max: max}
}

// Observe folds s into its volume's baseline and returns the suspicion
// when s jumped far above the baseline it had, under th; nil otherwise.
func (d *Detector) Observe(s Sample, th config.Suspect, now time.Time) *catalog.Suspicion {
	if s.Blocks <= 0 {
		return nil
	}
	changed := min(1, float64(s.Changed)/float64(s.Blocks))
	incompressible := 0.0
	if s.Changed > 0 {
		incompressible = min(1, float64(s.Incompressible)/float64(s.Changed))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	b := d.get(s.Volume)
	var sus *catalog.Suspicion
	if !th.Off && !s.First && b.points >= baselineWarmup && jumped(changed, incompressible, b, th) {
		sus = &catalog.Suspicion{Volume: s.Volume, Changed: changed, Incompressible: incompressible,
			BaselineChanged: b.changed, BaselineIncompressible: b.incompressible, At: now.UTC()}
	}
	if s.First {
		return nil // the initial copy says nothing of the workload
	}
	if b.points == 0 {
		b.changed, b.incompressible = changed, incompressible
	} else {
		b.changed += baselineWeight * (changed - b.changed)
		// A point that changed nothing says nothing of what changes look
		// like: the incompressible average moves only with changes.
		if s.Changed > 0 {
			b.incompressible += baselineWeight * (incompressible - b.incompressible)
		}
	}
	b.points++
	return sus
}

// jumped says whether a point's shares reach th and stand far above b.
func jumped(changed, incompressible float64, b *baseline, th config.Suspect) bool {
	return changed >= th.Changed && incompressible >= th.Incompressible &&
		changed >= jumpFactor*b.changed && incompressible >= b.incompressible+jumpMargin
}

// get returns volume's baseline, made empty if new; d.mu is held.
func (d *Detector) get(volume string) *baseline {
	if e, ok := d.vols[volume]; ok {
		d.lru.MoveToFront(e)
		return e.Value.(*baseline)
	}
	b := &baseline{volume: volume}
	d.vols[volume] = d.lru.PushFront(b)
	for d.lru.Len() > d.max {
		old := d.lru.Back()
		d.lru.Remove(old)
		delete(d.vols, old.Value.(*baseline).volume)
	}
	return b
}

// worst returns the suspicion of the volume that changed most, nil for
// none.
func worst(sus []*catalog.Suspicion) *catalog.Suspicion {
	var w *catalog.Suspicion
	for _, s := range sus {
		if s != nil && (w == nil || s.Changed > w.Changed) {
			w = s
		}
	}
	return w
}

// sample is a volume's figures in the point being committed: it wrote
// changed blocks; first is the volume's first point here.
func (s *session) sample(name string, changed int, first bool) Sample {
	v := s.volumes[name]
	inc := min(s.volIncompressible[name], int64(changed))
	return Sample{Volume: s.svc.Name + "/" + name, Blocks: (int64(v.Size) + int64(v.BlockSize) - 1) / int64(v.BlockSize),
		Changed: int64(changed), Incompressible: inc, First: first}
}

// judge runs the ransomware signal over a committed point's samples and,
// when it trips, marks the point suspect in the catalog and says so once.
func (s *session) judge(p blockstore.Point, samples []Sample) {
	now := s.e.o.Clock.Now()
	var sus []*catalog.Suspicion
	for _, smp := range samples {
		sus = append(sus, s.e.det.Observe(smp, s.svc.Suspect, now))
	}
	w := worst(sus)
	if w == nil {
		return
	}
	s.e.o.Mark(catalog.PointMark{Service: p.Group, Point: p.ID, Time: p.Time, Suspect: w})
	s.e.log.Warn("point marked suspect: its writes look like ransomware (most blocks rewritten with data that does not compress); failover and drill pass it over and the newest clean point before it is kept. Check the server now; if the writes were expected, clear it with `lifeboat points clear-suspect`",
		"service", p.Group, "volume", w.Volume, "point", p.ID,
		"changed", pct(w.Changed), "incompressible", pct(w.Incompressible),
		"baseline_changed", pct(w.BaselineChanged), "baseline_incompressible", pct(w.BaselineIncompressible))
}

// pct formats a share as a percentage for logs and messages.
func pct(f float64) string { return strconv.FormatFloat(100*f, 'f', 0, 64) + "%" }
