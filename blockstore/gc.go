package blockstore

import (
	"context"
	"errors"
	"fmt"

	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"golang.org/x/time/rate"
)

// GC design (doc.go, "Garbage collection", says it for operators):
//
//  1. Flush, seal the current pack and flush again: every object written
//     so far is committed, and new writes go to packs numbered from
//     boundary up, which this run never touches.
//  2. Install the run (packWriter.gc): from now on every lookup of Put,
//     Missing, Has and map-page writes adds its ID to the run's live
//     filter before it asks the index, under run.hz shared.
//  3. Wait for the leases taken before step 2 (their lookups were not
//     noted); later leases are not waited for.
//  4. Mark: walk every point record present (and the volumes of open
//     images) into the filter, with an exact visited-set of pages; then
//     once more for the points committed meanwhile.
//  5. Account live and dead bytes per pack below boundary in one stream
//     of the index; pick the packs to delete (no live object) and rewrite
//     (dead share at least the threshold).
//  6. Copy the live objects of packs to rewrite, frame by frame in pack
//     order, through the normal writer; flush (synced before the index
//     names the copies).
//  7. Sweep: stream the index again; entries that still name a picked
//     pack and are dead are deleted in small batches under run.hz held
//     exclusively, each re-checked against the filter there (a writer may
//     have resurrected it); a live one keeps its pack.
//  8. One synced batch drops the committed lengths of the packs no entry
//     names; then their files are removed under packReaders.rm, so that
//     no reader is mid-read of them.
//
// Memory: the filter (about 10 bits per object, sized from the index's
// counts), the page visited-set, the per-pack accounting, and batches of
// a few MiB; never a set of all live or dead objects.

// GCOptions control GC. The zero value is the default.
type GCOptions struct {
	// Threshold is the dead share of a pack's bytes at which it is
	// rewritten; 0 means 0.25. Packs with no live object are deleted.
	Threshold float64
	// Rate bounds the bytes per second read from packs being rewritten;
	// 0 means unlimited.
	Rate int64
	// DryRun reports what would be reclaimed and changes nothing.
	DryRun bool
	// Progress, if set, is called now and then from the GC's goroutine.
	Progress func(GCProgress)
}

// GCProgress says how far a GC run is.
type GCProgress struct {
	// Phase is "wait", "mark", "account", "copy", "sweep" or "remove".
	Phase string
	// Done and Total count objects (mark, account, sweep) or bytes
	// (copy); Total is 0 when unknown.
	Done, Total int64
}

// GCReport says what GC did (or, in a dry run, would do).
type GCReport struct {
	Scanned   int64 `json:"objects_scanned"`
	Live      int64 `json:"objects_live"`
	Dead      int64 `json:"objects_dead"`
	DeadBytes int64 `json:"dead_bytes"`
	// Reclaimable is the dead plaintext in the packs deleted or rewritten.
	Reclaimable    int64 `json:"reclaimable_bytes"`
	BlocksDeleted  int64 `json:"blocks_deleted"`
	PagesDeleted   int64 `json:"pages_deleted"`
	CopiesDeleted  int64 `json:"point_copies_deleted"`
	PacksDeleted   int   `json:"packs_deleted"`
	PacksRewritten int   `json:"packs_rewritten"`
	// PacksKept are packs picked for removal that a writer's dedup hit
	// kept for the next run.
	PacksKept   int           `json:"packs_kept"`
	BytesCopied int64         `json:"bytes_copied"`
	BytesBefore int64         `json:"bytes_before"`
	BytesAfter  int64         `json:"bytes_after"`
	FilterBytes int64         `json:"filter_bytes"`
	Wall        time.Duration `json:"wall_ns"`
	// MaxHold is the longest time the run held the lock that Put, Has,
	// Missing and map-page writes take.
	MaxHold time.Duration `json:"max_hold_ns"`
}

// Maintenance is the store's collection and checking: GC, Prune,
// DeletePoints and Verify (s.Maintenance().GC, ...).
type Maintenance struct{ s *Store }

// Maintenance returns the store's GC, prune and verify.
func (s *Store) Maintenance() Maintenance { return Maintenance{s} }

// gcRun is one GC in progress, seen by the writer.
type gcRun struct {
	// hz is held shared by a lookup from noting its ID to the end of the
	// index lookup, and exclusively by the sweep from re-checking a batch
	// against the filter to committing its deletion.
	hz   sync.RWMutex
	live *liveFilter
}

// packUsage is the accounting of one pack below the boundary.
type packUsage struct {
	live, dead int64    // plaintext bytes
	deadN      [3]int64 // dead objects by kind
}

// sweepBatch is how many deletions one exclusive hold of run.hz commits;
// maxLate bounds the resurrected objects one run copies late.
const (
	sweepBatch = 256
	maxLate    = 1 << 16
)

// GC reclaims the blocks, map pages and point-record copies that no point
// record (and no open Image) references: packs without a live object are
// deleted, packs whose dead share reaches the threshold are rewritten. It
// runs concurrently with writers and readers; it holds the lock they take
// for one small batch at a time and never blocks new leases. One GC (or
// Verify) runs at a time; Close ends a running GC.
func (m Maintenance) GC(ctx context.Context, o GCOptions) (GCReport, error) {
	return m.gc(ctx, o, nil)
}

// gc is GC; the points named in exclude are not marked (a dry-run prune
// treats them as deleted).
func (m Maintenance) gc(ctx context.Context, o GCOptions, exclude map[string]bool) (rep GCReport, err error) {
	s := m.s
	start := time.Now()
	defer func() { rep.Wall = time.Since(start) }()
	th := o.Threshold
	if th == 0 {
		th = repackThreshold
	}
	if th < 0 || th > 1 {
		return rep, fmt.Errorf("gc: threshold %v, want 0 to 1", th)
	}
	if o.Rate < 0 {
		return rep, fmt.Errorf("gc: rate %d, want 0 (unlimited) or more", o.Rate)
	}
	progress := func(phase string, done, total int64) {
		if o.Progress != nil {
			o.Progress(GCProgress{Phase: phase, Done: done, Total: total})
		}
	}
	select {
	case s.gcSem <- struct{}{}:
	case <-ctx.Done():
		return rep, ctx.Err()
	case <-s.stop:
		return rep, ErrClosed
	}
	defer func() { <-s.gcSem }()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	if s.idx.shut.Load() {
		return rep, ErrClosed
	}

	// 1. Everything written so far committed; new writes above boundary.
	if err := s.w.flush(); err != nil {
		return rep, err
	}
	boundary, err := s.w.sealPack()
	if err != nil {
		return rep, err
	}
	if err := s.w.flush(); err != nil {
		return rep, err
	}
	rep.BytesBefore = packBytes(s.dir)

	// 2. Install the run, sized from the index.
	n, err := s.idx.countObjects(ctx)
	if err != nil {
		return rep, err
	}
	run := &gcRun{live: newLiveFilter(n+n/8+4096, rand.Uint64())}
	rep.FilterBytes = run.live.bytes()
	s.w.gc.Store(run)
	defer s.w.gc.Store(nil)

	// 3. Leases older than the run.
	progress("wait", 0, 0)
	if err := s.leases.wait(ctx, s.leases.epoch()); err != nil {
		return rep, err
	}

	// 4. Mark.
	marked := map[string]bool{}
	visited := map[ID]struct{}{}
	var nMarked int64
	// One listing is enough: a point committed after it was written by a
	// writer whose lookups the run noted (its lease is newer than the run)
	// or from a pinned base, which the listing marked. A second pass marks
	// what was committed during the first, as a margin; more would never
	// end while writers commit.
	for pass := 0; pass < 2; pass++ {
		pts, err := s.Points(ctx, "")
		if err != nil {
			return rep, err
		}
		fresh := 0
		for _, p := range pts {
			if marked[p.ID] || exclude[p.ID] {
				continue
			}
			marked[p.ID] = true
			fresh++
			run.live.add(s.h.pointFrameID(p.ID))
			for _, v := range p.Volumes {
				if err := s.maps.markLive(ctx, v, run.live, visited); err != nil {
					return rep, fmt.Errorf("gc: mark point %s volume %s: %w", p.ID, v.Name, err)
				}
			}
			nMarked++
			progress("mark", nMarked, int64(len(pts)))
		}
		for _, v := range s.roots.list() {
			if err := s.maps.markLive(ctx, v, run.live, visited); err != nil && !errors.Is(err, ErrNotFound) {
				return rep, fmt.Errorf("gc: mark open image of %s: %w", v.Name, err)
			}
		}
		if fresh == 0 {
			break
		}
	}
	visited = nil

	// 5. Account.
	usage := map[uint32]*packUsage{}
	committed, err := s.idx.packLengths()
	if err != nil {
		return rep, fmt.Errorf("gc: %w", err)
	}
	for id := range committed {
		if id < boundary {
			usage[id] = &packUsage{}
		}
	}
	for _, k := range objectKinds {
		err := s.idx.scan(ctx, k, func(id ID, loc location) error {
			if loc.pack >= boundary {
				return nil
			}
			u := usage[loc.pack]
			if u == nil {
				u = &packUsage{}
				usage[loc.pack] = u
			}
			rep.Scanned++
			if run.live.has(id) {
				rep.Live++
				u.live += int64(loc.plainLen)
			} else {
				rep.Dead++
				rep.DeadBytes += int64(loc.plainLen)
				u.dead += int64(loc.plainLen)
				u.deadN[k]++
			}
			if rep.Scanned%65536 == 0 {
				progress("account", rep.Scanned, n)
			}
			return nil
		})
		if err != nil {
			return rep, fmt.Errorf("gc: %w", err)
		}
	}
	var drop, rewrite []uint32
	picked := map[uint32]bool{}
	for id, u := range usage {
		switch {
		case u.live == 0:
			drop = append(drop, id)
		case float64(u.dead) >= th*float64(u.live+u.dead):
			rewrite = append(rewrite, id)
		default:
			continue
		}
		picked[id] = true
		rep.Reclaimable += u.dead
	}
	slices.Sort(drop)
	slices.Sort(rewrite)
	if o.DryRun {
		rep.PacksDeleted, rep.PacksRewritten = len(drop), len(rewrite)
		for id := range picked {
			rep.BlocksDeleted += usage[id].deadN[kindBlock]
			rep.PagesDeleted += usage[id].deadN[kindPage]
			rep.CopiesDeleted += usage[id].deadN[kindPoint]
		}
		rep.BytesAfter = rep.BytesBefore
		return rep, nil
	}

	// 6. Copy the live objects of the packs to rewrite.
	var lim *rate.Limiter
	if o.Rate > 0 {
		lim = rate.NewLimiter(rate.Limit(o.Rate), int(max(o.Rate/10, 1<<20)))
	}
	var copyTotal int64
	for _, id := range rewrite {
		copyTotal += committed[id]
	}
	cp := &copier{s: s, run: run, lim: lim, rep: &rep, progress: func(done int64) { progress("copy", done, copyTotal) }}
	for _, id := range rewrite {
		if err := cp.pack(ctx, id, committed[id]); err != nil {
			return rep, fmt.Errorf("gc: rewrite pack %s: %w", packName(id), err)
		}
	}
	if err := cp.put(); err != nil {
		return rep, err
	}
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	if err := s.w.flush(); err != nil {
		return rep, err
	}

	// 7. Sweep. Live entries that still name a picked pack were
	// resurrected by a writer after the copy (or the accounting): they are
	// copied late, up to maxLate of them; beyond that their pack is kept
	// for the next run.
	kept := map[uint32]bool{}
	var late []lateRef
	lateAdd := func(k kind, id ID, pack uint32) {
		if len(late) < maxLate {
			late = append(late, lateRef{ref{k, id}, pack})
		} else {
			kept[pack] = true
		}
	}
	batch := make([]lateRef, 0, sweepBatch)
	var swept int64
	commit := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		b := s.idx.db.NewBatch()
		defer b.Close()
		run.hz.Lock()
		t0 := time.Now()
		var del [3]int64
		for _, c := range batch {
			if run.live.has(c.ref.id) {
				lateAdd(c.ref.kind, c.ref.id, c.pack) // resurrected by a writer
				continue
			}
			b.Delete(c.ref.key(), nil)
			del[c.ref.kind]++
		}
		err := b.Commit(pebble.NoSync)
		hold := time.Since(t0)
		run.hz.Unlock()
		rep.MaxHold = max(rep.MaxHold, hold)
		if err != nil {
			return s.idx.err("gc: delete index entries", err)
		}
		rep.BlocksDeleted += del[kindBlock]
		rep.PagesDeleted += del[kindPage]
		rep.CopiesDeleted += del[kindPoint]
		batch = batch[:0]
		return nil
	}
	if len(picked) > 0 {
		for _, k := range objectKinds {
			err := s.idx.scan(ctx, k, func(id ID, loc location) error {
				if !picked[loc.pack] {
					return nil
				}
				if run.live.has(id) {
					lateAdd(k, id, loc.pack)
					return nil
				}
				batch = append(batch, lateRef{ref{k, id}, loc.pack})
				if swept++; swept%65536 == 0 {
					progress("sweep", swept, rep.Dead)
				}
				if len(batch) == sweepBatch {
					return commit()
				}
				return nil
			})
			if err == nil {
				err = commit()
			}
			if err != nil {
				return rep, fmt.Errorf("gc: %w", err)
			}
		}
	}

	if len(late) > 0 {
		if err := cp.late(ctx, late, kept); err != nil {
			return rep, err
		}
		if err := s.w.flush(); err != nil {
			return rep, err
		}
	}

	// 8. Forget the packs no entry names (synced: it also makes the
	// deletions above durable), then remove their files.
	var gone []uint32
	for _, id := range append(drop, rewrite...) {
		if kept[id] {
			rep.PacksKept++
			continue
		}
		gone = append(gone, id)
	}
	slices.Sort(gone)
	b := s.idx.db.NewBatch()
	defer b.Close()
	for _, id := range gone {
		b.Delete(packKey(id), nil)
	}
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return rep, s.idx.err("gc: update index", err)
	}
	progress("remove", 0, int64(len(gone)))
	pdir := filepath.Join(s.dir, packsDir)
	for i, id := range gone {
		s.packs.rm.Lock()
		s.packs.drop(id)
		err := os.Remove(filepath.Join(pdir, packName(id)))
		s.packs.rm.Unlock()
		if err != nil && !os.IsNotExist(err) {
			return rep, fmt.Errorf("gc: %w", err)
		}
		progress("remove", int64(i+1), int64(len(gone)))
	}
	for _, id := range gone {
		if slices.Contains(drop, id) {
			rep.PacksDeleted++
		} else {
			rep.PacksRewritten++
		}
	}
	if err := syncDir(pdir); err != nil {
		return rep, err
	}
	rep.BytesAfter = packBytes(s.dir)
	return rep, nil
}

// countObjects counts the index entries of blocks, pages and point copies.
func (x *index) countObjects(ctx context.Context) (int64, error) {
	var n int64
	for _, k := range objectKinds {
		prefix := ref{kind: k}.key()[0]
		it, err := x.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefix}, UpperBound: []byte{prefix + 1}})
		if err != nil {
			return 0, x.err("gc: count index", err)
		}
		for it.First(); it.Valid(); it.Next() {
			if n++; n%65536 == 0 && ctx.Err() != nil {
				it.Close()
				return 0, ctx.Err()
			}
		}
		err = it.Close()
		if err != nil {
			return 0, x.err("gc: count index", err)
		}
	}
	return n, nil
}
