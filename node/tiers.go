package node

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/node/internal/archive"
	"github.com/lifeboat-dr/lifeboat/node/internal/standby"
)

// tiers runs the recovery-site tier engines on the points replication
// commits here: for a hot copy, the standby images (DATA_DIR/standby/
// SERVICE/VOLUME.img) follow the newest point, each applied atomically;
// for a cold copy with an export format, every point that arrives (cold
// points arrive on the service's schedule) is exported into the site's
// archive directory. Warm copies need nothing beyond the block store.
type tiers struct {
	n    *Node
	mu   sync.Mutex
	todo map[string]blockstore.Point // newest point per service not yet handled
	wake chan struct{}
	sets map[string]*standby.Set // open standby sets, by service
}

func newTiers(n *Node) *tiers {
	return &tiers{n: n, todo: map[string]blockstore.Point{}, wake: make(chan struct{}, 1), sets: map[string]*standby.Set{}}
}

// arrived tells the engines that a point of service was committed here.
func (t *tiers) arrived(service string, p blockstore.Point) {
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
func (t *tiers) copyHere(service string) *config.Copy {
	cat := t.n.Catalog()
	if cat.Policy == nil || cat.Policy.Cluster == nil || cat.Holder(service, string(t.n.opts.Site)) != t.n.opts.Name {
		return nil
	}
	svc := cat.Policy.Cluster.Service(service)
	if svc == nil {
		return nil
	}
	return svc.Copy(string(t.n.opts.Site))
}

func (t *tiers) run(ctx context.Context) {
	if t.n.store == nil {
		return
	}
	defer func() {
		t.mu.Lock()
		for _, s := range t.sets {
			s.Close()
		}
		t.mu.Unlock()
	}()
	// After a restart, bring hot standbys to the newest point held.
	for _, name := range t.n.svcs.names() {
		if p, _ := t.n.svcs.get(name).newest(); p != nil {
			t.arrived(name, *p)
		}
	}
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.wake:
		case <-tick.C:
		}
		t.mu.Lock()
		todo := t.todo
		t.todo = map[string]blockstore.Point{}
		t.mu.Unlock()
		for service, p := range todo {
			if err := t.handle(ctx, service, p); err != nil && ctx.Err() == nil {
				t.n.log.Error("tier engine", "service", service, "point", p.ID, "err", err)
				t.n.metrics.tierErrors.WithLabelValues(service).Inc()
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

func (t *tiers) handle(ctx context.Context, service string, p blockstore.Point) error {
	c := t.copyHere(service)
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
func (t *tiers) standbyDir(service string) string {
	return filepath.Join(t.n.opts.DataDir, "standby", service)
}

func (t *tiers) set(service string) (*standby.Set, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s := t.sets[service]; s != nil {
		return s, nil
	}
	s, err := standby.Open(t.standbyDir(service), standby.Options{Logger: t.n.log.With("service", service)})
	if err != nil {
		return nil, err
	}
	t.sets[service] = s
	return s, nil
}

// applyHot brings the service's standby images to p.
func (t *tiers) applyHot(ctx context.Context, service string, p blockstore.Point) error {
	s, err := t.set(service)
	if err != nil {
		return fmt.Errorf("open standby images: %w", err)
	}
	if cur, ok := s.Point(); ok && !p.Time.After(cur.Time) {
		return nil
	}
	st, err := s.Apply(ctx, t.n.store, p)
	if err != nil {
		return fmt.Errorf("apply point %s to the standby images: %w", p.ID, err)
	}
	t.n.log.Info("standby images at a new point", "service", service, "point", p.ID, "point_time", p.Time,
		"blocks", st.Blocks, "bytes", st.Bytes, "took", st.Duration.Round(time.Millisecond))
	t.n.metrics.standbyApplied.WithLabelValues(service).Inc()
	t.n.noteTier(service, func(w *Watermark) { w.Standby, w.StandbyTime = p.ID, p.Time })
	return nil
}

// StandbyPath returns the path of a volume's standby image of service on
// this node and the point it is at; ok is false when there is none.
func (n *Node) StandbyPath(service, volume string) (path string, p blockstore.Point, ok bool) {
	s, err := n.tiers.set(service)
	if err != nil {
		return "", blockstore.Point{}, false
	}
	p, ok = s.Point()
	if !ok {
		return "", p, false
	}
	return s.Path(volume), p, true
}

// exportCold exports p into the site's archive directory and prunes the
// exports the copy's retention no longer keeps.
func (t *tiers) exportCold(ctx context.Context, service string, c *config.Copy, p blockstore.Point) error {
	if c.Export == config.ExportNone || c.Export == "" {
		return nil
	}
	cat := t.n.Catalog()
	site := cat.Policy.Cluster.Site(string(t.n.opts.Site))
	if site == nil || site.ArchiveDir == "" {
		t.n.log.Warn("cold copy has an export format but the site has no archive_dir: nothing exported", "service", service, "site", t.n.opts.Site)
		return nil
	}
	if c.Export != config.ExportRaw {
		// qcow2 and vhdx writers come with image export (issue 6).
		t.n.log.Warn("exporting raw images: this node writes only raw exports so far", "service", service, "export", c.Export)
	}
	o := archive.Options{Logger: t.n.log.With("service", service), Now: t.n.opts.Now}
	start := time.Now()
	m, err := archive.Export(ctx, t.n.store, p, site.ArchiveDir, o)
	if err != nil {
		return fmt.Errorf("export point %s into %s: %w", p.ID, site.ArchiveDir, err)
	}
	t.n.log.Info("cold copy exported", "service", service, "point", p.ID, "dir", filepath.Join(site.ArchiveDir, service, m.DirName()),
		"took", time.Since(start).Round(time.Millisecond))
	t.n.metrics.exports.WithLabelValues(service).Inc()
	t.n.noteTier(service, func(w *Watermark) { w.Export, w.ExportTime = p.ID, p.Time })
	r := c.Retention
	gone, err := archive.Prune(site.ArchiveDir, service, archive.Retention{
		KeepLast: r.KeepLast, All: time.Duration(r.All), Hourly: time.Duration(r.Hourly),
		Daily: time.Duration(r.Daily), Weekly: time.Duration(r.Weekly), Lock: time.Duration(r.Lock),
	}, o)
	if err != nil {
		return fmt.Errorf("prune exports of %s: %w", service, err)
	}
	for _, e := range gone {
		t.n.log.Info("old export removed by retention", "service", service, "export", e.Path)
	}
	return nil
}
