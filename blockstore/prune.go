package blockstore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/cockroachdb/pebble/v2"
)

// repackThreshold is the fraction of dead bytes at which a pack is rewritten.
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
	BlocksDeleted int64   `json:"blocks_deleted"`
	PagesDeleted  int64   `json:"pages_deleted"`
	PacksDeleted  int     `json:"packs_deleted"`
	PacksRepacked int     `json:"packs_repacked"`
	BytesBefore   int64   `json:"bytes_before"`
	BytesAfter    int64   `json:"bytes_after"`
}

// Prune deletes the points r does not keep, then collects garbage: blocks and
// map pages no kept point references are dropped from the index, packs with
// no live block are deleted and packs with at least a quarter dead bytes are
// rewritten, so that disk space is really reclaimed. It waits for writers'
// leases and keeps new ones out while it runs.
//
// Crash safety: point records go first (one synced write); live blocks are
// copied and synced before the index points at the copies; pack files are
// removed only after the index no longer names them.
func (s *Store) Prune(ctx context.Context, r Retention, o PruneOptions) (PruneReport, error) {
	var rep PruneReport
	if err := r.Validate(); err != nil {
		return rep, err
	}
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	// Seal the current pack so that nothing is appended to a pack being
	// examined.
	// With the lease held no writer runs. Flush what earlier writers left,
	// then seal the current pack and flush again, so that it is synced,
	// committed and closed: the repack below must write to a new pack, never
	// to one it may delete.
	if err := s.w.flush(); err != nil {
		return rep, err
	}
	if err := s.w.sealPack(); err != nil {
		return rep, err
	}
	if err := s.w.flush(); err != nil {
		return rep, err
	}
	rep.BytesBefore = packBytes(s.dir)
	pts, err := s.Points(ctx, "")
	if err != nil {
		return rep, err
	}
	keep := r.keep(pts, s.now())
	liveBlocks, livePages := map[ID]struct{}{}, map[ID]struct{}{}
	var dropPoints []Point
	for i, p := range pts {
		if !keep[i] {
			dropPoints = append(dropPoints, p)
			continue
		}
		rep.PointsKept++
		for _, v := range p.Volumes {
			if err := s.maps.mark(ctx, v, liveBlocks, livePages); err != nil {
				return rep, fmt.Errorf("prune: point %s volume %s: %w", p.ID, v.Name, err)
			}
		}
	}
	rep.PointsDeleted, rep.Deleted = len(dropPoints), dropPoints
	if !o.DryRun && len(dropPoints) > 0 {
		b := s.idx.db.NewBatch()
		for _, p := range dropPoints {
			b.Delete(pointKey(p.Time, p.ID), nil)
		}
		err := b.Commit(pebble.Sync)
		b.Close()
		if err != nil {
			return rep, fmt.Errorf("prune: delete points: %w", err)
		}
	}
	// Sweep: account live and dead bytes per pack.
	type usage struct{ live, dead int64 }
	packs := map[uint32]*usage{}
	committed, err := s.idx.packs()
	if err != nil {
		return rep, fmt.Errorf("prune: %w", err)
	}
	for _, id := range committed {
		packs[id] = &usage{}
	}
	var dead []ref
	livePoints := map[ID]struct{}{}
	for i, p := range pts {
		if keep[i] {
			livePoints[s.h.pointFrameID(p.ID)] = struct{}{}
		}
	}
	live := map[kind]map[ID]struct{}{kindBlock: liveBlocks, kindPage: livePages, kindPoint: livePoints}
	for _, k := range objectKinds {
		err = s.idx.scan(ctx, k, func(id ID, loc location) error {
			u := packs[loc.pack]
			if u == nil {
				u = &usage{}
				packs[loc.pack] = u
			}
			if _, ok := live[k][id]; ok {
				u.live += int64(loc.plainLen)
			} else {
				u.dead += int64(loc.plainLen)
				dead = append(dead, ref{k, id})
			}
			return nil
		})
		if err != nil {
			return rep, fmt.Errorf("prune: %w", err)
		}
	}
	for _, r := range dead {
		switch r.kind {
		case kindBlock:
			rep.BlocksDeleted++
		case kindPage:
			rep.PagesDeleted++
		}
	}
	var drop, repack []uint32
	for id, u := range packs {
		switch {
		case u.live == 0:
			drop = append(drop, id)
		case float64(u.dead) >= repackThreshold*float64(u.live+u.dead):
			repack = append(repack, id)
		}
	}
	slices.Sort(drop)
	slices.Sort(repack)
	rep.PacksDeleted, rep.PacksRepacked = len(drop), len(repack)
	if o.DryRun {
		rep.BytesAfter = rep.BytesBefore
		return rep, nil
	}
	if err := s.w.repack(ctx, &blockReader{s: s}, repack, live); err != nil {
		return rep, err
	}
	b := s.idx.db.NewBatch()
	defer b.Close()
	for _, r := range dead {
		b.Delete(r.key(), nil)
	}
	gone := append(drop, repack...)
	for _, id := range gone {
		b.Delete(packKey(id), nil)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return rep, fmt.Errorf("prune: update index: %w", err)
	}
	pdir := filepath.Join(s.dir, packsDir)
	for _, id := range gone {
		s.packs.drop(id)
		if err := os.Remove(filepath.Join(pdir, packName(id))); err != nil && !os.IsNotExist(err) {
			return rep, fmt.Errorf("prune: %w", err)
		}
	}
	if err := syncDir(pdir); err != nil {
		return rep, err
	}
	rep.BytesAfter = packBytes(s.dir)
	return rep, nil
}

// mark adds the pages and blocks of v to the live sets, skipping subtrees
// already marked.
func (m *mapPages) mark(ctx context.Context, v VolumeState, blocks, pages map[ID]struct{}) error {
	g := v.Geometry()
	if g.Blocks() == 0 {
		return nil
	}
	var walk func(id ID, level int, index int64) error
	walk = func(id ID, level int, index int64) error {
		if id.IsZero() {
			return nil
		}
		if _, ok := pages[id]; ok {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		ids, err := m.load(id, level, childCount(g.Blocks(), level, index))
		if err != nil {
			return err
		}
		pages[id] = struct{}{}
		for i, c := range ids {
			if level == 0 {
				if !c.IsZero() {
					blocks[c] = struct{}{}
				}
				continue
			}
			if err := walk(c, level-1, index*fanout+int64(i)); err != nil {
				return err
			}
		}
		return nil
	}
	return walk(v.Root, g.rootLevel(), 0)
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

// repack copies the live blocks and pages of the given packs, read with r,
// into new packs and makes the index point at the copies.
func (w *packWriter) repack(ctx context.Context, r *blockReader, packs []uint32, live map[kind]map[ID]struct{}) error {
	if len(packs) == 0 {
		return nil
	}
	want := map[uint32]bool{}
	for _, p := range packs {
		want[p] = true
	}
	type item struct {
		ref ref
		loc location
	}
	var items []item
	for _, k := range objectKinds {
		err := w.idx.scan(ctx, k, func(id ID, loc location) error {
			if _, ok := live[k][id]; ok && want[loc.pack] {
				items = append(items, item{ref{k, id}, loc})
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("prune: %w", err)
		}
	}
	// Read in pack order; write each kind in its own frames.
	slices.SortFunc(items, func(a, b item) int {
		if a.ref.kind != b.ref.kind {
			return int(a.ref.kind) - int(b.ref.kind)
		}
		if a.loc.pack != b.loc.pack {
			return int(a.loc.pack) - int(b.loc.pack)
		}
		if a.loc.offset != b.loc.offset {
			if a.loc.offset < b.loc.offset {
				return -1
			}
			return 1
		}
		return int(a.loc.slot) - int(b.loc.slot)
	})
	var (
		blocks [][]byte
		ids    []ID
		idx    []int
		size   int
		cur    kind
	)
	put := func() error {
		if len(blocks) == 0 {
			return nil
		}
		if err := w.write(cur, blocks, ids, idx); err != nil {
			return fmt.Errorf("prune: repack: %w", err)
		}
		blocks, ids, idx, size = blocks[:0], ids[:0], idx[:0], 0
		return nil
	}
	for _, it := range items {
		if it.ref.kind != cur {
			if err := put(); err != nil {
				return err
			}
			cur = it.ref.kind
		}
		b, err := r.get(it.ref)
		if err != nil {
			return fmt.Errorf("prune: repack: %w", err)
		}
		idx = append(idx, len(blocks))
		blocks = append(blocks, append([]byte(nil), b...))
		ids = append(ids, it.ref.id)
		if size += len(b); size >= 4<<20 {
			if err := put(); err != nil {
				return err
			}
		}
	}
	if err := put(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return w.flush()
}
