// Package lifecycle keeps a node's store to what the policy says: it thins
// the points of every service the node holds at its site by that site's
// retention ladder, never deleting a point another site, a standby, a
// failover, a drill, a branch or a lock still needs, and then collects the
// garbage the deleted points leave. One goroutine per node does it all.
//
// What a site keeps of a service is: the points its ladder keeps
// (internal/ladder: last, all, hourly, daily, weekly, monthly, yearly, in
// the site's time zone), plus the pinned points:
//
//   - "pinned: base for SITE": for each other site of the service with a
//     watermark in the catalog, the point that site holds newest if this
//     node holds it too (the base of the next incremental either way),
//     else this node's newest point not newer than it;
//   - "pinned: standby": the point this site's standby images are at;
//   - "pinned: failover": the point of the service's last failover (the
//     base of its failback) and of one still running;
//   - "pinned: drill": the point of a drill still running;
//   - "pinned: branch NAME": the divergent points of a branch kept here;
//   - "pinned: clean before suspect P": the newest point not suspect
//     older than a suspect point P (issue 16: the ransomware signal), so
//     that the copy from before the attack outlives the attack;
//   - "pinned: in use": a point the store has pinned in memory (a
//     replication session's base, an open image);
//   - "locked until T": the retention lock fixed when the point was
//     recorded (blockstore refuses to delete it, whatever asks).
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/internal/clock"
	"github.com/lifeboat-dr/lifeboat/internal/ladder"
	"github.com/lifeboat-dr/lifeboat/internal/logpolicy"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// Store is what the engine needs of the node's block store.
type Store interface {
	Points(ctx context.Context, volume string) ([]blockstore.Point, error)
	// Maintenance gives DeletePoints and GC (and Verify), Holds the
	// points' locks and pins.
	Maintenance() blockstore.Maintenance
	Holds() blockstore.Holds
}

// Options configure an Engine.
type Options struct {
	Site    mesh.Site
	Store   Store // nil on a witness: Run returns at once
	Catalog interface{ Catalog() *catalog.Catalog }
	Clock   clock.Clock // nil = the real clock
	Logger  *slog.Logger
	Logs    *logpolicy.Repeats
	// Every is the time between thinning passes (default 1m); Kick starts
	// one at once (new points).
	Every time.Duration
	// GCEvery is the least time between two garbage collections (default
	// 1h); one runs only after a pass deleted points.
	GCEvery time.Duration
	// GCRate bounds the bytes/s GC rewrites (0 = unlimited).
	GCRate int64
	// GCThreshold is the dead fraction of a pack at which GC rewrites it
	// (0 = the store's default, 0.25).
	GCThreshold float64
}

// Engine thins points and collects garbage; see the package comment.
type Engine struct {
	o    Options
	log  *slog.Logger
	kick chan struct{}

	mu      sync.Mutex
	deleted int       // points deleted since the last GC
	lastGC  time.Time // when the last GC ended
	sum     Summary
}

// Summary is what the engine last did, for status and stats.
type Summary struct {
	LastPass      time.Time            `json:"last_pass,omitzero"`
	PointsDeleted int64                `json:"points_deleted"` // since the node started
	LastError     string               `json:"last_error,omitempty"`
	GC            *blockstore.GCReport `json:"gc,omitempty"` // the last collection
	GCAt          time.Time            `json:"gc_at,omitzero"`
}

// New returns an Engine; Run starts it.
func New(o Options) *Engine {
	o.Clock = clock.Or(o.Clock)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Logs == nil {
		o.Logs = logpolicy.New(logpolicy.Options{Log: o.Logger, Now: o.Clock.Now})
	}
	if o.Every <= 0 {
		o.Every = time.Minute
	}
	if o.GCEvery <= 0 {
		o.GCEvery = time.Hour
	}
	return &Engine{o: o, log: o.Logger.With("component", "lifecycle"), kick: make(chan struct{}, 1)}
}

// Kick asks for a thinning pass now (a new point arrived).
func (e *Engine) Kick() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// Summary returns what the engine last did.
func (e *Engine) Summary() Summary {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.sum
}

// Run thins and collects until ctx ends.
func (e *Engine) Run(ctx context.Context) error {
	if e.o.Store == nil {
		return nil
	}
	t := e.o.Clock.NewTicker(e.o.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
		case <-e.kick:
		}
		e.Pass(ctx)
	}
}

// Pass runs one thinning pass over every service and, when it is due, a
// garbage collection.
func (e *Engine) Pass(ctx context.Context) {
	plans, err := e.Thin(ctx, "", false)
	n := 0
	for _, p := range plans {
		n += len(p.Deleted)
	}
	e.mu.Lock()
	e.sum.LastPass = e.o.Clock.Now()
	e.sum.PointsDeleted += int64(n)
	e.deleted += n
	due := e.deleted > 0 && e.o.Clock.Now().Sub(e.lastGC) >= e.o.GCEvery
	if err != nil {
		e.sum.LastError = err.Error()
	} else {
		e.sum.LastError = ""
	}
	e.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			e.o.Logs.Fail("lifecycle/thin", "thinning points failed", err, "check the block store (lifeboat verify --admin)")
		}
		return
	}
	e.o.Logs.OK("lifecycle/thin")
	if due {
		if _, err := e.Collect(ctx, false); err != nil && ctx.Err() == nil {
			e.o.Logs.Fail("lifecycle/gc", "garbage collection failed", err, "check the block store (lifeboat verify --admin)")
		} else {
			e.o.Logs.OK("lifecycle/gc")
		}
	}
}

// Collect runs a garbage collection now.
func (e *Engine) Collect(ctx context.Context, dryRun bool) (blockstore.GCReport, error) {
	rep, err := e.o.Store.Maintenance().GC(ctx, blockstore.GCOptions{Rate: e.o.GCRate, Threshold: e.o.GCThreshold, DryRun: dryRun})
	if err != nil || dryRun {
		return rep, err
	}
	e.mu.Lock()
	e.deleted, e.lastGC = 0, e.o.Clock.Now()
	e.sum.GC, e.sum.GCAt = &rep, e.lastGC
	e.mu.Unlock()
	e.log.Info("garbage collected", "packs_deleted", rep.PacksDeleted, "packs_rewritten", rep.PacksRewritten,
		"bytes_before", rep.BytesBefore, "bytes_after", rep.BytesAfter)
	return rep, nil
}

// Plan is what thinning keeps and deletes of one service at this site.
type Plan struct {
	Service string      `json:"service"`
	Site    string      `json:"site"`
	Points  []PointPlan `json:"points"` // newest first
	// Deleted and Refused are set by a pass that deletes (not a dry run).
	Deleted []string             `json:"deleted,omitempty"`
	Refused []blockstore.Refusal `json:"refused,omitempty"`
}

// PointPlan is one point and why it is kept; Keep is empty for a point
// thinning deletes.
type PointPlan struct {
	ID        string    `json:"id"`
	Time      time.Time `json:"time"`
	Keep      []string  `json:"keep,omitempty"`
	LockUntil time.Time `json:"lock_until,omitzero"`
}

// Kept reports whether p is kept.
func (p PointPlan) Kept() bool { return len(p.Keep) > 0 }

// Thin computes, for service (every service when ""), which points this
// site keeps and why, and deletes the others unless dryRun.
func (e *Engine) Thin(ctx context.Context, service string, dryRun bool) ([]Plan, error) {
	if e.o.Store == nil {
		return nil, errors.New("this node holds no points (a witness)")
	}
	cat := e.o.Catalog.Catalog()
	cl := cat.PolicyCluster()
	if cl == nil {
		return nil, nil // no policy: no ladder to thin by
	}
	all, err := e.o.Store.Points(ctx, "")
	if err != nil {
		return nil, err
	}
	locks, err := e.o.Store.Holds().Locks(ctx)
	if err != nil {
		return nil, err
	}
	inUse := map[string]bool{}
	for _, id := range e.o.Store.Holds().Pinned() {
		inUse[id] = true
	}
	groups := map[string][]blockstore.Point{}
	for _, p := range all {
		groups[p.Group] = append(groups[p.Group], p)
	}
	var plans []Plan
	for _, name := range slices.Sorted(maps.Keys(groups)) {
		if service != "" && name != service {
			continue
		}
		r, loc, ok := RetentionAt(cl, name, e.o.Site)
		if !ok {
			continue // not a service of this site's in the policy: left alone
		}
		pins := Pins(cat, name, e.o.Site, groups[name])
		for id := range inUse {
			pins[id] = append(pins[id], "pinned: in use")
		}
		plans = append(plans, Decide(name, e.o.Site, groups[name], r.Ladder(loc), pins, locks, e.o.Clock.Now()))
	}
	if dryRun {
		return plans, nil
	}
	for i := range plans {
		p := &plans[i]
		var drop []string
		for _, pt := range p.Points {
			if !pt.Kept() {
				drop = append(drop, pt.ID)
			}
		}
		if len(drop) == 0 {
			continue
		}
		rep, err := e.o.Store.Maintenance().DeletePoints(ctx, drop)
		if err != nil {
			return plans, fmt.Errorf("thin %s: %w", p.Service, err)
		}
		p.Deleted, p.Refused = rep.Deleted, rep.Refused
		if len(rep.Deleted) > 0 {
			e.log.Debug("points thinned by retention", "service", p.Service, "deleted", len(rep.Deleted), "refused", len(rep.Refused))
		}
	}
	return plans, nil
}

// RetentionAt returns the retention table of service at site: the
// service's at its primary, the copy's at a copy site; ok is false when
// the site has no part in the service. loc is the site's time zone.
func RetentionAt(cl *config.Cluster, service string, site mesh.Site) (r config.Retention, loc *time.Location, ok bool) {
	s := cl.Service(service)
	if s == nil {
		return r, nil, false
	}
	loc = time.UTC
	if st := cl.Site(string(site)); st != nil {
		loc = st.Location()
	}
	if s.Primary == string(site) {
		return s.Retention, loc, true
	}
	for _, c := range s.Copies {
		if c.Site == string(site) {
			return c.Retention, loc, true
		}
	}
	return r, nil, false
}

// Pins returns the points of service at site that other parts of the
// cluster still need, with why; pts are the site's points of the service.
func Pins(cat *catalog.Catalog, service string, site mesh.Site, pts []blockstore.Point) map[string][]string {
	pins := map[string][]string{}
	st := cat.Services[service]
	if st == nil {
		return pins
	}
	held := map[string]bool{}
	for _, p := range pts {
		held[p.ID] = true
	}
	add := func(id, why string) {
		if held[id] && !slices.Contains(pins[id], why) {
			pins[id] = append(pins[id], why)
		}
	}
	for _, s := range slices.Sorted(maps.Keys(st.Watermarks)) {
		w := st.Watermarks[s]
		if s == string(site) {
			if w.Standby != "" {
				add(w.Standby, "pinned: standby")
			}
			continue
		}
		if w.Point == "" {
			continue
		}
		why := "pinned: base for " + s
		if held[w.Point] {
			add(w.Point, why)
			continue
		}
		// The newest point here not newer than theirs: what they hold of
		// ours when they are behind, our newest when they are ahead.
		var base *blockstore.Point
		for i := range pts {
			if !pts[i].Time.After(w.Time) && (base == nil || pts[i].Time.After(base.Time)) {
				base = &pts[i]
			}
		}
		if base != nil {
			add(base.ID, why)
		}
	}
	if n := len(st.Failovers); n > 0 {
		add(st.Failovers[n-1].Point, "pinned: failover")
		for _, f := range st.Failovers {
			if !f.Done {
				add(f.Point, "pinned: failover")
			}
		}
	}
	for _, d := range st.Drills {
		if d.Finished.IsZero() {
			add(d.Point, "pinned: drill")
		}
	}
	for _, b := range st.Branches {
		if b.Site == string(site) {
			for _, id := range b.Points {
				add(id, "pinned: branch "+b.Name)
			}
		}
	}
	for _, m := range st.Marks {
		if !m.IsSuspect() {
			continue
		}
		var clean *blockstore.Point
		for i := range pts {
			p := &pts[i]
			if mk, ok := st.Mark(p.ID); p.Time.Before(m.Time) && !(ok && mk.IsSuspect()) && (clean == nil || p.Time.After(clean.Time)) {
				clean = p
			}
		}
		if clean != nil {
			add(clean.ID, "pinned: clean before suspect "+m.Point)
		}
	}
	return pins
}

// Decide returns what a site keeps of one service's points (any order)
// under rules at now, given the pinned points and the store's locks.
func Decide(service string, site mesh.Site, pts []blockstore.Point, rules ladder.Rules, pins map[string][]string, locks map[string]time.Time, now time.Time) Plan {
	pts = slices.Clone(pts)
	sort.SliceStable(pts, func(i, j int) bool { return pts[i].Time.After(pts[j].Time) })
	times := make([]time.Time, len(pts))
	for i, p := range pts {
		times[i] = p.Time
	}
	why := rules.Keep(times, now)
	plan := Plan{Service: service, Site: string(site), Points: make([]PointPlan, len(pts))}
	for i, p := range pts {
		pp := PointPlan{ID: p.ID, Time: p.Time, Keep: slices.Clone(why[i])}
		pp.Keep = append(pp.Keep, pins[p.ID]...)
		if until, ok := locks[p.ID]; ok && until.After(now) {
			pp.LockUntil = until
			pp.Keep = append(pp.Keep, "locked until "+until.UTC().Format(time.RFC3339))
		}
		plan.Points[i] = pp
	}
	return plan
}

// LockFor is the lock-until time of a point recorded now at site: the
// point's time plus its site's retention lock; zero when none. The store
// calls it (blockstore.Options.LockFor) as it commits each point.
func LockFor(cat *catalog.Catalog, site mesh.Site, p blockstore.Point) time.Time {
	cl := cat.PolicyCluster()
	if cl == nil {
		return time.Time{}
	}
	r, _, ok := RetentionAt(cl, p.Group, site)
	if !ok || r.Lock <= 0 {
		return time.Time{}
	}
	return p.Time.Add(time.Duration(r.Lock))
}
