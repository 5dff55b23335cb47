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
// commits here and each volume of it, the engine counts the blocks the
// point changed and those of them that did not compress (blockframe.
// Incompressible, measured as the blocks arrive). It judges the points of
// the last [service.suspect] window together, so that an attack spread
// over many small points (an intercept agent's, or a big volume's) is seen
// whole: when the window's shares (changed blocks over the volume's
// blocks, incompressible over changed) both reach the service's
// thresholds and stand far above the volume's trailing baseline, the
// first point of the window that wrote mostly incompressible blocks is
// suspect: its mark goes to the catalog (OpMarks), which status, metrics,
// retention (the newest clean point before it is pinned) and failover
// (which passes it and every later point over) read. One mark per episode:
// a volume trips again only after its window fell below the thresholds.
//
// The baseline is an exponentially weighted moving average, per volume,
// of the shares of past windows (consecutive, not overlapping), kept in
// memory only: after a restart it is rebuilt from the next points, and no
// point of the volume is judged before baselineWarmup windows closed (a
// restart never raises a false alarm, at the price of a blind spot of a
// window or two). The volume's first point (its initial copy) is never
// judged and never counted.
const (
	// baselineWeight is the weight of the newest window in the average:
	// the baseline follows a lasting change of workload in a few windows.
	baselineWeight = 0.25
	// baselineWarmup is how many windows a volume's baseline needs before
	// the signal may trip.
	baselineWarmup = 2
	// jumpFactor: the changed share must be at least this many times the
	// baseline's.
	jumpFactor = 3
	// jumpMargin: the incompressible share must stand at least this far
	// above the baseline's (a share near 1 cannot triple).
	jumpMargin = 0.2
	// maxBaselines bounds the volumes whose baselines are kept; the least
	// recently used goes first.
	maxBaselines = 4096
	// maxRecent bounds the points of a window kept per volume; past it
	// the two oldest are merged (the older's ID kept).
	maxRecent = 256
)

// Sample is one volume's figures in one point.
type Sample struct {
	Volume         string // SERVICE/VOLUME
	Point          string // the point's ID
	Time           time.Time
	Blocks         int64 // the volume's blocks
	Changed        int64 // blocks the point wrote
	Incompressible int64 // of Changed, those that did not compress
	First          bool  // the volume's first point here (its initial copy)
}

// recentPoint is one point in a volume's current window.
type recentPoint struct {
	point                   string
	time                    time.Time
	changed, incompressible int64
}

// baseline is one volume's trailing averages and current windows.
type baseline struct {
	volume                  string
	changed, incompressible float64 // averages over past windows
	windows                 int
	// The window being summed for the baseline (consecutive windows).
	start                         time.Time
	sumChanged, sumIncompressible int64
	recent                        []recentPoint // the sliding window judged, oldest first
	tripped                       bool          // an episode was marked; cleared when the window falls below the thresholds
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

// Jump is a tripped signal: the first point of the jump and the window's
// figures.
type Jump struct {
	Point     string
	Time      time.Time
	Suspicion catalog.Suspicion
}

// Observe adds s to its volume's window and baseline and returns the jump
// when the window jumped far above the baseline under th; nil otherwise.
func (d *Detector) Observe(s Sample, th config.Suspect, now time.Time) *Jump {
	if s.Blocks <= 0 || s.First {
		return nil // the initial copy says nothing of the workload
	}
	window := time.Duration(th.Window)
	if window <= 0 {
		window = time.Duration(config.DefaultSuspectWindow)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	b := d.get(s.Volume)
	if n := len(b.recent); n > 0 && s.Time.Before(b.recent[n-1].time) {
		s.Time = b.recent[n-1].time // a clock stepped back: keep the order
	}
	b.fold(s, window)
	b.recent = append(b.recent, recentPoint{point: s.Point, time: s.Time, changed: s.Changed, incompressible: s.Incompressible})
	for len(b.recent) > 0 && !b.recent[0].time.After(s.Time.Add(-window)) && len(b.recent) > 1 {
		b.recent = b.recent[1:]
	}
	if len(b.recent) > maxRecent {
		b.recent[1].point, b.recent[1].time = b.recent[0].point, b.recent[0].time
		b.recent[1].changed += b.recent[0].changed
		b.recent[1].incompressible += b.recent[0].incompressible
		b.recent = b.recent[1:]
	}
	var changed, incompressible int64
	for _, r := range b.recent {
		changed += r.changed
		incompressible += r.incompressible
	}
	cs, is := shares(changed, incompressible, s.Blocks)
	if cs < th.Changed || is < th.Incompressible {
		b.tripped = false
	}
	if th.Off || b.tripped || b.windows < baselineWarmup || !jumped(cs, is, b, th) {
		return nil
	}
	b.tripped = true
	first := b.recent[len(b.recent)-1]
	for _, r := range b.recent {
		if r.changed > 0 && float64(r.incompressible) >= th.Incompressible*float64(r.changed) {
			first = r
			break
		}
	}
	return &Jump{Point: first.point, Time: first.time, Suspicion: catalog.Suspicion{Volume: s.Volume, Changed: cs, Incompressible: is,
		BaselineChanged: b.changed, BaselineIncompressible: b.incompressible, At: now.UTC()}}
}

// fold adds s to the baseline's current window, first closing that window
// into the averages when s falls past its span.
func (b *baseline) fold(s Sample, window time.Duration) {
	if !b.start.IsZero() && !s.Time.Before(b.start.Add(window)) {
		cs, is := shares(b.sumChanged, b.sumIncompressible, s.Blocks)
		if b.windows == 0 {
			b.changed, b.incompressible = cs, is
		} else {
			b.changed += baselineWeight * (cs - b.changed)
			// A window that changed nothing says nothing of what changes
			// look like: the incompressible average moves only with them.
			if b.sumChanged > 0 {
				b.incompressible += baselineWeight * (is - b.incompressible)
			}
		}
		b.windows++
		b.start, b.sumChanged, b.sumIncompressible = time.Time{}, 0, 0
	}
	if b.start.IsZero() {
		b.start = s.Time
	}
	b.sumChanged += s.Changed
	b.sumIncompressible += s.Incompressible
}

// shares returns the changed share of blocks and the incompressible share
// of changed.
func shares(changed, incompressible, blocks int64) (float64, float64) {
	cs := min(1, float64(changed)/float64(blocks))
	is := 0.0
	if changed > 0 {
		is = min(1, float64(incompressible)/float64(changed))
	}
	return cs, is
}

// jumped says whether a window's shares reach th and stand far above b.
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

// worst returns the jump of the volume that changed most, nil for none.
func worst(jumps []*Jump) *Jump {
	var w *Jump
	for _, j := range jumps {
		if j != nil && (w == nil || j.Suspicion.Changed > w.Suspicion.Changed) {
			w = j
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
	var jumps []*Jump
	for _, smp := range samples {
		smp.Point, smp.Time = p.ID, p.Time
		jumps = append(jumps, s.e.det.Observe(smp, s.svc.Suspect, now))
	}
	j := worst(jumps)
	if j == nil {
		return
	}
	w := &j.Suspicion
	s.e.o.Mark(catalog.PointMark{Service: p.Group, Point: j.Point, Time: j.Time, Suspect: w})
	s.e.log.Warn("point marked suspect: its writes look like ransomware (most blocks rewritten with data that does not compress); failover and drill pass it over and the newest clean point before it is kept. Check the server now; if the writes were expected, clear it with `lifeboat points clear-suspect`",
		"service", p.Group, "volume", w.Volume, "point", j.Point, "newest", p.ID,
		"changed", pct(w.Changed), "incompressible", pct(w.Incompressible),
		"baseline_changed", pct(w.BaselineChanged), "baseline_incompressible", pct(w.BaselineIncompressible))
}

// pct formats a share as a percentage for logs and messages.
func pct(f float64) string { return strconv.FormatFloat(100*f, 'f', 0, 64) + "%" }
