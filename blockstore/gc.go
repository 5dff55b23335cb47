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

// gcRun is one GC in progress, seen by the writer.
type gcRun struct {
	// hz is held shared by a lookup from noting its ID to the end of the
	// index lookup, and exclusively by the sweep from re-checking a batch
	// against the filter to committing its deletion.
	hz   sync.RWMutex
	live *liveFilter
}

// leaseSet counts writers' leases by the order they were taken, so that
// GC waits only for those older than itself.
type leaseSet struct {
	mu      sync.Mutex
	next    uint64
	held    map[uint64]struct{}
	changed chan struct{} // closed and replaced at each release
}

func (l *leaseSet) init() {
	l.held = map[uint64]struct{}{}
	l.changed = make(chan struct{})
}

func (l *leaseSet) take() func() {
	l.mu.Lock()
	id := l.next
	l.next++
	l.held[id] = struct{}{}
	l.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			delete(l.held, id)
			close(l.changed)
			l.changed = make(chan struct{})
			l.mu.Unlock()
		})
	}
}

// epoch returns the number of the next lease.
func (l *leaseSet) epoch() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.next
}

// wait returns when no lease numbered below before is held.
func (l *leaseSet) wait(ctx context.Context, before uint64) error {
	for {
		l.mu.Lock()
		old := false
		for id := range l.held {
			if id < before {
				old = true
				break
			}
		}
		ch := l.changed
		l.mu.Unlock()
		if !old {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// imageRoots are the volumes of open images: GC roots.
type imageRoots struct {
	mu   sync.Mutex
	next uint64
	vols map[uint64]VolumeState
}

func (r *imageRoots) init() { r.vols = map[uint64]VolumeState{} }

func (r *imageRoots) add(v VolumeState) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next++
	r.vols[r.next] = v
	return r.next
}

func (r *imageRoots) remove(id uint64) {
	r.mu.Lock()
	delete(r.vols, id)
	r.mu.Unlock()
}

func (r *imageRoots) list() []VolumeState {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]VolumeState, 0, len(r.vols))
	for _, v := range r.vols {
		out = append(out, v)
	}
	return out
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
func (s *Store) GC(ctx context.Context, o GCOptions) (GCReport, error) {
	return s.gc(ctx, o, nil)
}

// gc is GC; the points named in exclude are not marked (a dry-run prune
// treats them as deleted).
func (s *Store) gc(ctx context.Context, o GCOptions, exclude map[string]bool) (rep GCReport, err error) {
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
	n, err := s.countObjects(ctx)
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
func (s *Store) countObjects(ctx context.Context) (int64, error) {
	var n int64
	for _, k := range objectKinds {
		prefix := ref{kind: k}.key()[0]
		it, err := s.idx.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefix}, UpperBound: []byte{prefix + 1}})
		if err != nil {
			return 0, s.idx.err("gc: count index", err)
		}
		for it.First(); it.Valid(); it.Next() {
			if n++; n%65536 == 0 && ctx.Err() != nil {
				it.Close()
				return 0, ctx.Err()
			}
		}
		err = it.Close()
		if err != nil {
			return 0, s.idx.err("gc: count index", err)
		}
	}
	return n, nil
}

// markLive adds the pages and blocks of v to live, skipping subtrees whose
// page is already in visited.
func (m *mapPages) markLive(ctx context.Context, v VolumeState, live *liveFilter, visited map[ID]struct{}) error {
	g := v.Geometry()
	if g.Blocks() == 0 {
		return nil
	}
	var walk func(id ID, level int, index int64) error
	walk = func(id ID, level int, index int64) error {
		if id.IsZero() {
			return nil
		}
		if _, ok := visited[id]; ok {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		ids, err := m.load(id, level, childCount(g.Blocks(), level, index))
		if err != nil {
			return err
		}
		visited[id] = struct{}{}
		live.add(id)
		for i, c := range ids {
			if level == 0 {
				if !c.IsZero() {
					live.add(c)
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

// copier copies the live objects of packs being rewritten through the
// writer, in batches of a few MiB of one kind.
type copier struct {
	s        *Store
	run      *gcRun
	lim      *rate.Limiter
	rep      *GCReport
	progress func(done int64)
	read     int64

	cur    kind
	blocks [][]byte
	ids    []ID
	size   int
	rec    []byte
	plain  []byte
	seal   []byte
}

// put writes the batch.
func (c *copier) put() error {
	if len(c.blocks) == 0 {
		return nil
	}
	want := make([]int, len(c.blocks))
	for i := range want {
		want[i] = i
	}
	if err := c.s.w.write(c.cur, c.blocks, c.ids, want); err != nil {
		return fmt.Errorf("gc: copy: %w", err)
	}
	c.rep.BytesCopied += int64(c.size)
	c.blocks, c.ids, c.size = c.blocks[:0], c.ids[:0], 0
	return nil
}

// pack reads pack id frame by frame up to its committed length and copies
// every object that is live and that the index names in that frame.
func (c *copier) pack(ctx context.Context, id uint32, size int64) error {
	s := c.s
	f, err := os.Open(filepath.Join(s.dir, packsDir, packName(id)))
	if err != nil {
		return err
	}
	defer f.Close()
	var h [frameHeaderSize]byte
	for off := int64(packHeaderSize); off < size; {
		if err := ctx.Err(); err != nil {
			return err
		}
		// Damage ends the walk (or skips the frame): the sweep finds
		// the live entries left in the pack and copies them late, one
		// by one through the index; one that cannot be read keeps the
		// pack. A damaged record no entry names (a repaired block's)
		// is garbage like any other.
		if _, err := f.ReadAt(h[:], off); err != nil {
			return nil
		}
		n, err := frameSizeFromHeader(h[:])
		if err != nil || off+int64(n) > size {
			return nil
		}
		if err := c.wait(ctx, n); err != nil {
			return err
		}
		if cap(c.rec) < n {
			c.rec = make([]byte, n)
		}
		rec := c.rec[:n]
		if _, err := f.ReadAt(rec, off); err != nil {
			return nil
		}
		c.read += int64(n)
		c.progress(c.read)
		fr, err := decodeFrame(rec)
		if err != nil {
			off += int64(n)
			continue
		}
		var plain []byte
		var po uint32
		for slot, e := range fr.entries {
			eoff := po
			po += e.len
			if !c.run.live.has(e.id) {
				continue
			}
			loc, err := s.w.locate(ref{fr.kind, e.id})
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if loc.pack != id || loc.offset != uint64(off) || int(loc.slot) != slot {
				continue // the index names another copy
			}
			if plain == nil {
				plain, err = s.codec.plain(fr, c.plain[:0], &c.seal)
				if err != nil {
					break // the frame's live entries go late
				}
				if fr.codec != codecRaw {
					c.plain = plain
				}
			}
			if fr.kind != c.cur {
				if err := c.put(); err != nil {
					return err
				}
				c.cur = fr.kind
			}
			data := plain[eoff : eoff+e.len]
			if fr.kind != kindPoint && s.h.sum(data) != e.id {
				continue // damaged: late, where it keeps the pack
			}
			c.blocks = append(c.blocks, append([]byte(nil), data...))
			c.ids = append(c.ids, e.id)
			if c.size += int(e.len); c.size >= 4<<20 {
				if err := c.put(); err != nil {
					return err
				}
			}
		}
		off += int64(n)
	}
	return nil
}

// lateRef is an index entry that names a picked pack: a candidate for
// deletion, or an object resurrected there.
type lateRef struct {
	ref  ref
	pack uint32
}

// late copies objects that writers resurrected in picked packs after the
// copy pass, reading each through the index; an object it cannot copy
// keeps its pack.
func (c *copier) late(ctx context.Context, refs []lateRef, kept map[uint32]bool) error {
	r := blockReader{s: c.s, ctx: ctx, noRepair: true}
	for _, l := range refs {
		if err := ctx.Err(); err != nil {
			return err
		}
		loc, err := c.s.w.locate(l.ref)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if loc.pack != l.pack {
			continue // already elsewhere
		}
		b, err := r.get(l.ref)
		if err != nil || (l.ref.kind != kindPoint && c.s.h.sum(b) != l.ref.id) {
			kept[l.pack] = true // damaged: Scrub reports it, Repair mends it
			continue
		}
		if l.ref.kind != c.cur {
			if err := c.put(); err != nil {
				return err
			}
			c.cur = l.ref.kind
		}
		c.blocks = append(c.blocks, append([]byte(nil), b...))
		c.ids = append(c.ids, l.ref.id)
		if c.size += len(b); c.size >= 4<<20 {
			if err := c.put(); err != nil {
				return err
			}
		}
	}
	return c.put()
}

// wait takes n bytes from the rate limiter, in pieces no bigger than its
// burst.
func (c *copier) wait(ctx context.Context, n int) error {
	if c.lim == nil {
		return nil
	}
	for n > 0 {
		k := min(n, c.lim.Burst())
		if err := c.lim.WaitN(ctx, k); err != nil {
			return err
		}
		n -= k
	}
	return nil
}
