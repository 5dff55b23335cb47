// Package tiers runs the recovery-site tier engines on the points that
// replication commits on this node (see Engine).
package tiers

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/blockstore/imgfmt"
	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/internal/clock"
	"github.com/lifeboat-dr/lifeboat/internal/durable"
	"github.com/lifeboat-dr/lifeboat/internal/logpolicy"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/archive"
	"github.com/lifeboat-dr/lifeboat/node/internal/standby"
)

// Engine runs the recovery-site tier engines on the points replication
// commits here: for a hot copy, the standby images (DATA_DIR/standby/
// SERVICE/VOLUME.img) follow the newest point, each applied atomically;
// for a cold copy with an export format, every point that arrives (cold
// points arrive on the service's schedule) is exported into the site's
// archive directory. Warm copies need nothing beyond the block store.
type Engine struct {
	o    Options
	mu   sync.Mutex
	todo map[string]blockstore.Point // newest point per service not yet handled
	wake chan struct{}
	sets map[string]*standby.Set // open standby sets, by service
	// busy is held while a point is handled; take holds it to move a
	// standby away. A service whose standby a failover took is skipped
	// until its epoch is past that failover's (the service came back).
	busy   sync.Mutex
	paused map[string]uint64 // service → the epoch when its standby was taken
}

// Options configure an Engine.
type Options struct {
	Name    mesh.NodeID
	Site    mesh.Site
	DataDir string            // standby images live in DataDir/standby/SERVICE
	Store   *blockstore.Store // nil on a witness: Run returns at once
	Catalog interface{ Catalog() *catalog.Catalog }
	// Services lists the services with points on this node; Newest gives
	// a service's newest point (nil = none).
	Services func() []string
	Newest   func(service string) *blockstore.Point
	// NoteTier records what the engine did for a service in its next
	// watermark.
	NoteTier func(service string, fn func(*catalog.Watermark))
	Logs     *logpolicy.Repeats
	Logger   *slog.Logger
	Clock    clock.Clock // nil = the real clock
	// Counters, by service label; nil = not counted.
	StandbyApplied, Exports, Errors *prometheus.CounterVec
}

// New returns an Engine; Run starts it.
func New(o Options) *Engine {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.Clock = clock.Or(o.Clock)
	for _, c := range []**prometheus.CounterVec{&o.StandbyApplied, &o.Exports, &o.Errors} {
		if *c == nil {
			*c = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "unregistered"}, []string{"service"})
		}
	}
	return &Engine{o: o, todo: map[string]blockstore.Point{}, wake: make(chan struct{}, 1), sets: map[string]*standby.Set{}, paused: map[string]uint64{}}
}

// Arrived tells the engines that a point of service was committed here.
func (t *Engine) Arrived(service string, p blockstore.Point) {
	t.mu.Lock()
	if cur, ok := t.todo[service]; !ok || p.Time.After(cur.Time) {
		t.todo[service] = p
	}
	t.mu.Unlock()
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// copyHere returns the policy's copy of service at this node's site, if
// this node holds it.
func (t *Engine) copyHere(cat *catalog.Catalog, service string) *config.Copy {
	if cat.Policy == nil || cat.Policy.Cluster == nil || cat.Holder(service, string(t.o.Site)) != t.o.Name {
		return nil
	}
	svc := cat.Service(service)
	if svc == nil {
		return nil
	}
	return svc.Copy(string(t.o.Site))
}

// Run handles the points that arrive until ctx ends.
func (t *Engine) Run(ctx context.Context) error {
	if t.o.Store == nil {
		return nil
	}
	defer func() {
		t.mu.Lock()
		for _, s := range t.sets {
			s.Close()
		}
		t.mu.Unlock()
	}()
	// After a restart, bring hot standbys to the newest point held.
	for _, name := range t.o.Services() {
		if p := t.o.Newest(name); p != nil {
			t.Arrived(name, *p)
		}
	}
	tick := t.o.Clock.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.wake:
		case <-tick.C():
			// A hot copy that became one again (the service failed
			// back home) gets its standby images without waiting for
			// a new point.
			cat := t.o.Catalog.Catalog()
			for _, name := range t.o.Services() {
				if c := t.copyHere(cat, name); c != nil && c.Tier == config.TierHot {
					if p := t.o.Newest(name); p != nil {
						t.Arrived(name, *p)
					}
				}
			}
		}
		t.mu.Lock()
		todo := t.todo
		t.todo = map[string]blockstore.Point{}
		t.mu.Unlock()
		for service, p := range todo {
			err := t.handle(ctx, service, p)
			if err == nil {
				t.o.Logs.OK("tier/" + service)
				continue
			}
			if ctx.Err() == nil {
				// Every tick while it lasts (a peer down, a full disk):
				// once at WARN with the hint, then a count (issue 14
				// item 6).
				t.o.Logs.Fail("tier/"+service, "tier engine: the standby or export is behind; will retry", err,
					"the standby images or the cold export stay at the last point that worked; check the disk of the standby or archive directory and the error",
					"service", service, "point", p.ID)
				t.o.Errors.WithLabelValues(service).Inc()
				// Try again at the next tick or point.
				t.mu.Lock()
				if _, ok := t.todo[service]; !ok {
					t.todo[service] = p
				}
				t.mu.Unlock()
			}
		}
	}
}

func (t *Engine) handle(ctx context.Context, service string, p blockstore.Point) error {
	t.busy.Lock()
	defer t.busy.Unlock()
	t.mu.Lock()
	pausedAt, paused := t.paused[service]
	t.mu.Unlock()
	cat := t.o.Catalog.Catalog()
	if paused {
		if st := cat.Services[service]; st != nil && st.Epoch <= pausedAt+1 {
			return nil
		}
	}
	c := t.copyHere(cat, service)
	if c == nil {
		return nil
	}
	switch c.Tier {
	case config.TierHot:
		return t.applyHot(ctx, service, p)
	case config.TierCold:
		return t.exportCold(ctx, service, c, p)
	}
	return nil
}

// standbyDir is where a service's standby images live.
func (t *Engine) standbyDir(service string) string {
	return filepath.Join(t.o.DataDir, "standby", service)
}

// Set returns the service's standby set, opening it.
func (t *Engine) Set(service string) (*standby.Set, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s := t.sets[service]; s != nil {
		return s, nil
	}
	s, err := standby.Open(t.standbyDir(service), standby.Options{Logger: t.o.Logger.With("service", service)})
	if err != nil {
		return nil, err
	}
	t.sets[service] = s
	return s, nil
}

// applyHot brings the service's standby images to p.
func (t *Engine) applyHot(ctx context.Context, service string, p blockstore.Point) error {
	s, err := t.Set(service)
	if err != nil {
		return fmt.Errorf("open standby images: %w", err)
	}
	if cur, ok := s.Point(); ok && !p.Time.After(cur.Time) {
		return nil
	}
	st, err := s.Apply(ctx, t.o.Store, p)
	if err != nil {
		return fmt.Errorf("apply point %s to the standby images: %w", p.ID, err)
	}
	t.o.Logger.Info("standby images at a new point", "service", service, "point", p.ID, "point_time", p.Time,
		"blocks", st.Blocks, "bytes", st.Bytes, "took", st.Duration.Round(time.Millisecond))
	t.o.StandbyApplied.WithLabelValues(service).Inc()
	t.o.NoteTier(service, func(w *catalog.Watermark) { w.Standby, w.StandbyTime = p.ID, p.Time })
	return nil
}

// Take moves the service's standby directory to dst when its images are
// at point p, for a failover, and stops the hot tier from touching the
// service until the service has failed over again (home: the standby is
// then rebuilt). It reports false, changing nothing, when the images are
// not at p.
func (t *Engine) Take(service string, p blockstore.Point, dst string) (bool, error) {
	t.busy.Lock()
	defer t.busy.Unlock()
	s, err := t.Set(service)
	if err != nil {
		return false, err
	}
	if cur, ok := s.Point(); !ok || cur.ID != p.ID {
		return false, nil
	}
	var epoch uint64
	if st := t.o.Catalog.Catalog().Services[service]; st != nil {
		epoch = st.Epoch
	}
	t.mu.Lock()
	t.paused[service] = epoch
	delete(t.sets, service)
	t.mu.Unlock()
	if err := s.Close(); err != nil {
		return false, err
	}
	if err := durable.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return false, err
	}
	if err := os.RemoveAll(dst); err != nil {
		return false, err
	}
	if err := os.Rename(t.standbyDir(service), dst); err != nil {
		return false, fmt.Errorf("move the standby images: %w", err)
	}
	if err := durable.SyncDir(filepath.Dir(dst)); err != nil {
		return false, err
	}
	t.o.NoteTier(service, func(w *catalog.Watermark) { w.Standby, w.StandbyTime = "", time.Time{} })
	return true, durable.SyncDir(filepath.Dir(t.standbyDir(service)))
}

// exportCold exports p into the site's archive directory and prunes the
// exports the copy's retention no longer keeps.
func (t *Engine) exportCold(ctx context.Context, service string, c *config.Copy, p blockstore.Point) error {
	if c.Export == config.ExportNone || c.Export == "" {
		return nil
	}
	cat := t.o.Catalog.Catalog()
	site := cat.Policy.Cluster.Site(string(t.o.Site))
	if site == nil || site.ArchiveDir == "" {
		t.o.Logger.Warn("cold copy has an export format but the site has no archive_dir: nothing exported", "service", service, "site", t.o.Site)
		return nil
	}
	o := archive.Options{Logger: t.o.Logger.With("service", service), Now: t.o.Clock.Now, ImageFormat: imgfmt.Format(c.Export)}
	start := t.o.Clock.Now()
	m, err := archive.Export(ctx, t.o.Store, p, site.ArchiveDir, o)
	if err != nil {
		return fmt.Errorf("export point %s into %s: %w", p.ID, site.ArchiveDir, err)
	}
	t.o.Logger.Info("cold copy exported", "service", service, "point", p.ID, "dir", filepath.Join(site.ArchiveDir, service, m.DirName()),
		"took", t.o.Clock.Now().Sub(start).Round(time.Millisecond))
	t.o.Exports.WithLabelValues(service).Inc()
	t.o.NoteTier(service, func(w *catalog.Watermark) { w.Export, w.ExportTime = p.ID, p.Time })
	r := c.Retention
	gone, err := archive.Prune(site.ArchiveDir, service, archive.Retention{
		KeepLast: r.KeepLast, All: time.Duration(r.All), Hourly: time.Duration(r.Hourly),
		Daily: time.Duration(r.Daily), Weekly: time.Duration(r.Weekly), Monthly: time.Duration(r.Monthly),
		Yearly: time.Duration(r.Yearly), Lock: time.Duration(r.Lock),
	}, o)
	if err != nil {
		return fmt.Errorf("prune exports of %s: %w", service, err)
	}
	for _, e := range gone {
		t.o.Logger.Info("old export removed by retention", "service", service, "export", e.Path)
	}
	return nil
}
