package lifecycle

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// What the admin API serves of the engine: points with why they are kept,
// prune (thin now, then collect), stats and verify of the node's store.

// KeptPoint is a point and why this site keeps it; Keep is empty for a
// point the next thinning pass deletes.
type KeptPoint struct {
	blockstore.Point
	Keep      []string  `json:"keep,omitempty"`
	LockUntil time.Time `json:"lock_until,omitzero"`
	// From the point's mark in the catalog (issue 16): Suspect says the
	// ransomware signal flagged it and nobody cleared it (Suspicion has
	// the figures, also once cleared), Damaged what of it is lost by
	// site. Verified is the point's newest verification: result ok,
	// failed, skipped or "not checked", with each check's evidence paths
	// on the node that ran it.
	Suspect   bool                 `json:"suspect"`
	Suspicion *catalog.Suspicion   `json:"suspicion,omitempty"`
	Damaged   map[string]string    `json:"damaged,omitempty"`
	Verified  catalog.Verification `json:"verified"`
}

// Explain adds to each point why it is kept (points of services the site's
// policy does not thin are kept as "not in this site's policy").
func (e *Engine) Explain(ctx context.Context, service string, pts []blockstore.Point) ([]KeptPoint, error) {
	plans, err := e.Thin(ctx, service, true)
	if err != nil {
		return nil, err
	}
	why := map[string]PointPlan{}
	for _, p := range plans {
		for _, pp := range p.Points {
			why[pp.ID] = pp
		}
	}
	out := make([]KeptPoint, len(pts))
	cat := e.o.Catalog.Catalog()
	for i, p := range pts {
		pp, ok := why[p.ID]
		if !ok {
			pp.Keep = []string{"not in this site's policy"}
		}
		out[i] = KeptPoint{Point: p, Keep: pp.Keep, LockUntil: pp.LockUntil, Verified: cat.VerifiedOf(p.Group, p.ID)}
		if m, ok := cat.Services[p.Group].Mark(p.ID); ok {
			out[i].Suspect, out[i].Suspicion, out[i].Damaged = m.IsSuspect(), m.Suspect, m.Damaged
		}
	}
	return out, nil
}

// PruneResult is what `lifeboat prune --admin` did or, in a dry run,
// would do.
type PruneResult struct {
	DryRun  bool                 `json:"dry_run"`
	Plans   []Plan               `json:"services"`
	Deleted int                  `json:"points_deleted"`
	Refused int                  `json:"points_refused"`
	GC      *blockstore.GCReport `json:"gc,omitempty"`
}

// Prune thins service (every service when "") now and then collects the
// garbage; a dry run reports what thinning would delete and what a
// collection would reclaim.
func (e *Engine) Prune(ctx context.Context, service string, dryRun bool) (PruneResult, error) {
	res := PruneResult{DryRun: dryRun}
	plans, err := e.Thin(ctx, service, dryRun)
	res.Plans = plans
	if err != nil {
		return res, err
	}
	for _, p := range plans {
		if dryRun {
			for _, pp := range p.Points {
				if !pp.Kept() {
					res.Deleted++
				}
			}
			continue
		}
		res.Deleted += len(p.Deleted)
		res.Refused += len(p.Refused)
	}
	if !dryRun {
		e.mu.Lock()
		e.sum.PointsDeleted += int64(res.Deleted)
		e.mu.Unlock()
	}
	gc, err := e.Collect(ctx, dryRun)
	if err != nil {
		return res, err
	}
	res.GC = &gc
	return res, nil
}

// SpaceStore is the part of the store stats read.
type SpaceStore interface {
	Stats(ctx context.Context) (blockstore.Stats, error)
	Space() (free, size int64, err error)
}

// Stats is `lifeboat stats --admin`: the node's store, its disk, and per
// service the points held and kept.
type Stats struct {
	Site        string           `json:"site"`
	Store       blockstore.Stats `json:"store"`
	FreeBytes   int64            `json:"free_bytes"`
	SizeBytes   int64            `json:"size_bytes"`
	FreePercent float64          `json:"free_percent"`
	// Reclaimable is the dead bytes the last collection found (it then
	// reclaimed those in packs worth rewriting); -1 = no collection yet.
	Reclaimable int64          `json:"reclaimable_bytes"`
	Services    []ServiceStats `json:"services"`
	Lifecycle   Summary        `json:"lifecycle"`
}

// ServiceStats counts one service's points at this node.
type ServiceStats struct {
	Service string    `json:"service"`
	Points  int       `json:"points"`
	Deletes int       `json:"to_delete"` // points the next pass deletes
	Oldest  time.Time `json:"oldest,omitzero"`
	Newest  time.Time `json:"newest,omitzero"`
}

// Stats reports the store, its free space and the services' points.
func (e *Engine) Stats(ctx context.Context) (Stats, error) {
	ss, ok := e.o.Store.(SpaceStore)
	if !ok || e.o.Store == nil {
		return Stats{}, errors.New("this node holds no points (a witness)")
	}
	st := Stats{Site: string(e.o.Site), Reclaimable: -1, Lifecycle: e.Summary(), Services: []ServiceStats{}}
	var err error
	if st.Store, err = ss.Stats(ctx); err != nil {
		return st, err
	}
	if st.FreeBytes, st.SizeBytes, err = ss.Space(); err != nil {
		return st, err
	}
	if st.SizeBytes > 0 {
		st.FreePercent = 100 * float64(st.FreeBytes) / float64(st.SizeBytes)
	}
	if gc := st.Lifecycle.GC; gc != nil {
		st.Reclaimable = gc.DeadBytes
	}
	plans, err := e.Thin(ctx, "", true)
	if err != nil {
		return st, err
	}
	for _, p := range plans {
		s := ServiceStats{Service: p.Service, Points: len(p.Points)}
		for _, pp := range p.Points {
			if !pp.Kept() {
				s.Deletes++
			}
			if s.Oldest.IsZero() || pp.Time.Before(s.Oldest) {
				s.Oldest = pp.Time
			}
			if pp.Time.After(s.Newest) {
				s.Newest = pp.Time
			}
		}
		st.Services = append(st.Services, s)
	}
	slices.SortFunc(st.Services, func(a, b ServiceStats) int {
		if a.Service < b.Service {
			return -1
		}
		return 1
	})
	return st, nil
}

// Verify checks the node's whole store.
func (e *Engine) Verify(ctx context.Context) (blockstore.VerifyReport, error) {
	if e.o.Store == nil {
		return blockstore.VerifyReport{}, errors.New("this node holds no points (a witness)")
	}
	return e.o.Store.Maintenance().Verify(ctx, blockstore.VerifyOptions{})
}
