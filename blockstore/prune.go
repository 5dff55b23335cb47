package blockstore

import (
	"context"
	"os"
	"path/filepath"
)

// repackThreshold is the default fraction of dead bytes at which GC
// rewrites a pack.
const repackThreshold = 0.25

// PruneOptions control Prune.
type PruneOptions struct {
	// DryRun reports what would be deleted and changes nothing.
	DryRun bool
}

// PruneReport says what Prune did (or, in a dry run, would do).
type PruneReport struct {
	PointsKept    int     `json:"points_kept"`
	PointsDeleted int     `json:"points_deleted"`
	Deleted       []Point `json:"deleted"`
	// Refused are points the retention would drop that are locked or in
	// use; they are kept (and counted in PointsKept).
	Refused       []Refusal `json:"refused"`
	BlocksDeleted int64     `json:"blocks_deleted"`
	PagesDeleted  int64     `json:"pages_deleted"`
	PacksDeleted  int       `json:"packs_deleted"`
	PacksRepacked int       `json:"packs_repacked"`
	BytesBefore   int64     `json:"bytes_before"`
	BytesAfter    int64     `json:"bytes_after"`
	// GC is the report of the garbage collection that followed.
	GC GCReport `json:"gc"`
}

// Prune deletes the points r does not keep (DeletePoints: locked and
// pinned points are refused and reported), then collects garbage (GC with
// the default options). It runs concurrently with writers and readers like
// GC does.
func (m Maintenance) Prune(ctx context.Context, r Retention, o PruneOptions) (PruneReport, error) {
	s := m.s
	rep := PruneReport{Refused: []Refusal{}}
	if err := r.Validate(); err != nil {
		return rep, err
	}
	pts, err := s.Points(ctx, "")
	if err != nil {
		return rep, err
	}
	keep := r.keep(pts, s.now())
	var drop []string
	for i, p := range pts {
		if !keep[i] {
			drop = append(drop, p.ID)
		}
	}
	if len(drop) > 0 {
		d, err := m.deletePoints(ctx, drop, o.DryRun)
		if err != nil {
			return rep, err
		}
		gone := map[string]bool{}
		for _, id := range d.Deleted {
			gone[id] = true
		}
		for _, p := range pts {
			if gone[p.ID] {
				rep.Deleted = append(rep.Deleted, p)
			}
		}
		rep.Refused = append(rep.Refused, d.Refused...)
	}
	rep.PointsDeleted = len(rep.Deleted)
	rep.PointsKept = len(pts) - rep.PointsDeleted
	var exclude map[string]bool
	if o.DryRun {
		exclude = map[string]bool{}
		for _, p := range rep.Deleted {
			exclude[p.ID] = true
		}
	}
	g, err := m.gc(ctx, GCOptions{DryRun: o.DryRun}, exclude)
	rep.GC = g
	rep.BlocksDeleted, rep.PagesDeleted = g.BlocksDeleted, g.PagesDeleted
	rep.PacksDeleted, rep.PacksRepacked = g.PacksDeleted, g.PacksRewritten
	rep.BytesBefore, rep.BytesAfter = g.BytesBefore, g.BytesAfter
	return rep, err
}

// packBytes is the size of the pack files of the store in dir.
func packBytes(dir string) int64 {
	var n int64
	entries, _ := os.ReadDir(filepath.Join(dir, packsDir))
	for _, e := range entries {
		if _, ok := parsePackName(e.Name()); ok {
			if fi, err := e.Info(); err == nil {
				n += fi.Size()
			}
		}
	}
	return n
}
