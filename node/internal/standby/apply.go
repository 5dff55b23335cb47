package standby

// Apply: planning an update of the images to a point, writing it through
// the journal or beside the old images, committing and finishing it.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/internal/durable"
)

// op kinds of a plan.
const (
	opDiff    = iota // write the changed blocks through the journal
	opReplace        // write a new image beside the old one, then rename
	opRemove         // remove the image
)

// op is what Apply does to one image file.
type op struct {
	kind     int
	file     string
	old, new blockstore.VolumeState
}

// Apply brings every image to point pt, atomically: after a crash at any
// moment, Open finds every image at the previous point or every image at
// pt. An image whose volume is new, changed block size or changed more than
// half its blocks is written whole beside the old one and renamed into
// place; other images get the changed blocks through the journal; images
// of volumes that pt lacks are removed.
//
// Applying the current point again does nothing; an older one (or another
// at the same time) is ErrOlder. ctx is checked until the point is
// committed; after that Apply finishes regardless. If it fails after the
// commit, Point reports no point until a later Apply (or Open) finishes the
// update.
func (s *Set) Apply(ctx context.Context, src Source, pt blockstore.Point) (Stats, error) {
	start := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Stats{}, ErrClosed
	}
	if err := checkPoint(pt); err != nil {
		return Stats{}, fmt.Errorf("apply point %s: %w", pt.ID, err)
	}
	if s.pending != nil {
		if err := s.finish(s.pending); err != nil {
			return Stats{}, fmt.Errorf("apply point %s: finish point %s first: %w", pt.ID, s.pending.target.ID, err)
		}
	} else {
		// A journal that an earlier Apply applied but failed to remove.
		os.Remove(filepath.Join(s.dir, journalName))
	}
	cur, have := s.cur, s.have
	if have {
		if pt.ID == cur.ID {
			return Stats{Duration: time.Since(start)}, nil
		}
		if pt.Group != cur.Group {
			return Stats{}, fmt.Errorf("apply point %s of %q: the standby holds %q", pt.ID, pt.Group, cur.Group)
		}
		if !pt.Time.After(cur.Time) {
			return Stats{}, fmt.Errorf("apply point %s (%s): %w (%s, %s)", pt.ID, pt.Time.Format(time.RFC3339Nano), ErrOlder, cur.ID, cur.Time.Format(time.RFC3339Nano))
		}
	}
	pt.Volumes = slices.Clone(pt.Volumes)
	whole := map[string]bool{} // image files to write whole
	for {
		st, err := s.apply(ctx, src, cur, have, pt, whole)
		var bg *baseGoneError
		if errors.As(err, &bg) && !whole[bg.file] {
			// The store dropped the base's map between planning and
			// journalling (prune; page caches hide it for a while).
			s.log.Info("standby base point no longer in the store; writing the image whole", "volume", bg.volume, "point", cur.ID, "err", bg.err)
			whole[bg.file] = true
			continue
		}
		if err != nil {
			return st, fmt.Errorf("apply point %s: %w", pt.ID, err)
		}
		st.Duration = time.Since(start)
		s.log.Debug("standby images updated", "service", pt.Group, "point", pt.ID, "volumes", st.Volumes, "blocks", st.Blocks, "bytes", st.Bytes, "duration", st.Duration)
		return st, nil
	}
}

// baseGoneError means the store lacks a map page that the diff of an image
// needs; the image can be written whole instead.
type baseGoneError struct {
	file, volume string
	err          error
}

func (e *baseGoneError) Error() string { return fmt.Sprintf("journal volume %q: %v", e.volume, e.err) }
func (e *baseGoneError) Unwrap() error { return e.err }

// apply plans and performs one update; whole names image files to write
// whole regardless.
func (s *Set) apply(ctx context.Context, src Source, cur blockstore.Point, have bool, pt blockstore.Point, whole map[string]bool) (Stats, error) {
	base := ""
	if have {
		base = cur.ID
	}
	ops, err := s.plan(ctx, src, cur, have, pt, whole)
	if err != nil {
		return Stats{}, err
	}
	if len(ops) == 0 {
		// No image changes (a point with no writes): the state alone moves.
		if err := ctx.Err(); err != nil {
			return Stats{}, err
		}
		if err := writeFileDurable(filepath.Join(s.dir, stateName), encodeState(pt)); err != nil {
			return Stats{}, fmt.Errorf("write standby state: %w", err)
		}
		s.setPoint(pt, true)
		return Stats{}, nil
	}
	st, j, err := s.build(ctx, src, base, ops, pt)
	if err != nil {
		s.discard(ops)
		return st, err
	}
	s.pending = j
	s.setPoint(cur, false)
	if err = s.step("committed"); err == nil {
		err = s.finish(j)
	}
	return st, err
}

// plan decides what to do to each image file.
func (s *Set) plan(ctx context.Context, src Source, cur blockstore.Point, have bool, pt blockstore.Point, whole map[string]bool) ([]op, error) {
	old := map[string]blockstore.VolumeState{}
	if have {
		for _, v := range cur.Volumes {
			f, _ := fileName(v.Name)
			old[f] = v
		}
	}
	var ops []op
	for _, v := range pt.Volumes {
		f, _ := fileName(v.Name)
		o, ok := old[f]
		delete(old, f)
		switch {
		case !ok || o.BlockSize != v.BlockSize || whole[f]:
			ops = append(ops, op{kind: opReplace, file: f, old: o, new: v})
		case o.Root == v.Root && o.Size == v.Size:
			// unchanged
		default:
			// Count the changes first (map pages only): a volume rewritten
			// for the most part is cheaper to write whole than twice
			// (journal and image), and a base the store no longer holds
			// can only be written whole.
			blocks := v.Geometry().Blocks()
			var n int64
			err := src.Diff(ctx, o, v, func(c blockstore.Change) error {
				if c.Block < blocks {
					n++
				}
				return nil
			})
			switch {
			case errors.Is(err, blockstore.ErrNotFound):
				s.log.Info("standby base point no longer in the store; writing the image whole", "volume", v.Name, "point", cur.ID, "err", err)
				ops = append(ops, op{kind: opReplace, file: f, old: o, new: v})
			case err != nil:
				return nil, fmt.Errorf("diff volume %q: %w", v.Name, err)
			case n > v.Used/2:
				ops = append(ops, op{kind: opReplace, file: f, old: o, new: v})
			default:
				ops = append(ops, op{kind: opDiff, file: f, old: o, new: v})
			}
		}
	}
	for f := range old {
		ops = append(ops, op{kind: opRemove, file: f})
	}
	slices.SortStableFunc(ops[len(ops)-len(old):], func(a, b op) int { return strings.Compare(a.file, b.file) })
	return ops, nil
}

// discard removes what a failed build left.
func (s *Set) discard(ops []op) {
	os.Remove(filepath.Join(s.dir, journalName))
	for _, o := range ops {
		if o.kind == opReplace {
			os.Remove(filepath.Join(s.dir, o.file+newExt))
		}
	}
}

// build writes new images beside the old ones and the journal, and commits
// it. Nothing the state names is touched.
func (s *Set) build(ctx context.Context, src Source, base string, ops []op, pt blockstore.Point) (Stats, *journal, error) {
	st := Stats{Volumes: len(ops)}
	files := make([]string, len(ops))
	for i, o := range ops {
		files[i] = o.file
	}
	for _, o := range ops {
		if o.kind != opReplace {
			continue
		}
		n, err := s.writeImage(ctx, src, o)
		if err != nil {
			return st, nil, err
		}
		st.Blocks += o.new.Used
		st.Bytes += n
	}
	if err := s.step("images-built"); err != nil {
		return st, nil, err
	}
	jpath := filepath.Join(s.dir, journalName)
	jw, err := createJournal(jpath)
	if err != nil {
		return st, nil, err
	}
	defer jw.close()
	bg := encodeBegin(base, files, pt)
	if len(bg) > maxBeginBytes {
		return st, nil, fmt.Errorf("journal begin record: %d bytes, limit %d", len(bg), maxBeginBytes)
	}
	jw.add(record{typ: recBegin, n: uint32(len(bg)), payload: bg})
	for i, o := range ops {
		idx := uint16(i)
		switch o.kind {
		case opRemove:
			jw.add(record{typ: recRemove, file: idx})
		case opReplace:
			jw.add(record{typ: recReplace, file: idx})
		case opDiff:
			if err := s.journalDiff(ctx, src, jw, idx, o, &st); err != nil {
				return st, nil, err
			}
		}
	}
	// The records and the directory entries (new images, the journal) are
	// durable before the commit record is written, so a durable commit
	// record implies a complete journal.
	if err := jw.sync(); err != nil {
		return st, nil, err
	}
	if err := durable.SyncDir(s.dir); err != nil {
		return st, nil, err
	}
	if err := s.step("journal-synced"); err != nil {
		return st, nil, err
	}
	if err := ctx.Err(); err != nil {
		return st, nil, err
	}
	if err := jw.commit(); err != nil {
		return st, nil, err
	}
	if err := jw.close(); err != nil {
		return st, nil, err
	}
	st.Journal = jw.size
	return st, &journal{path: jpath, base: base, files: files, target: pt}, nil
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	f *os.File
	n atomic.Int64
}

func (w *countingWriter) WriteAt(p []byte, off int64) (int, error) {
	n, err := w.f.WriteAt(p, off)
	w.n.Add(int64(n))
	return n, err
}

// writeImage writes volume o.new whole into FILE.new, sparse, and syncs it.
func (s *Set) writeImage(ctx context.Context, src Source, o op) (int64, error) {
	path := filepath.Join(s.dir, o.file+newExt)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, fmt.Errorf("create image: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(o.new.Size); err != nil {
		return 0, fmt.Errorf("size image %s: %w", path, err)
	}
	w := &countingWriter{f: f}
	if err := src.Restore(ctx, o.new, w, blockstore.RestoreOptions{}); err != nil {
		return 0, fmt.Errorf("write image %s of volume %q: %w", path, o.new.Name, err)
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("sync image %s: %w", path, err)
	}
	return w.n.Load(), f.Close()
}

// batchBytes bounds the blocks journalDiff holds in memory at once.
const batchBytes = 8 << 20

// journalDiff appends the records that take image o.file from o.old to
// o.new: a truncate if the size changes, then a write per changed block and
// a zero record per run of blocks that became zero. Blocks are read in
// batches, several at a time.
func (s *Set) journalDiff(ctx context.Context, src Source, jw *journalWriter, idx uint16, o op, st *Stats) error {
	if o.old.Size != o.new.Size {
		if err := jw.add(record{typ: recTruncate, file: idx, off: o.new.Size}); err != nil {
			return err
		}
	}
	g := o.new.Geometry()
	blocks := g.Blocks()
	bs := int64(g.BlockSize)
	maxBatch := max(1, batchBytes/g.BlockSize)
	type item struct {
		blk  int64
		id   blockstore.ID
		data []byte
	}
	batch := make([]item, 0, maxBatch)
	var zeroOff, zeroLen int64 // pending run of zeroed blocks
	flushZero := func() error {
		if zeroLen == 0 {
			return nil
		}
		err := jw.add(record{typ: recZero, file: idx, off: zeroOff, n: uint32(zeroLen)})
		zeroLen = 0
		return err
	}
	flush := func() error {
		if err := fetch(ctx, src, len(batch), func(i int) blockstore.ID { return batch[i].id }, func(i int, b []byte) error {
			it := &batch[i]
			if want := g.BlockLen(it.blk); len(b) != want {
				return fmt.Errorf("volume %q block %d: stored block %s is %d bytes, want %d", o.new.Name, it.blk, it.id.Short(), len(b), want)
			}
			it.data = b
			return nil
		}); err != nil {
			return err
		}
		for _, it := range batch {
			off := it.blk * bs
			n := int64(g.BlockLen(it.blk))
			st.Blocks++
			if it.id.IsZero() {
				if zeroLen > 0 && zeroOff+zeroLen == off && zeroLen+n <= maxZeroLen {
					zeroLen += n
					continue
				}
				if err := flushZero(); err != nil {
					return err
				}
				zeroOff, zeroLen = off, n
				continue
			}
			if err := flushZero(); err != nil {
				return err
			}
			if err := jw.add(record{typ: recWrite, file: idx, off: off, n: uint32(n), payload: it.data}); err != nil {
				return err
			}
			st.Bytes += n
		}
		clear(batch)
		batch = batch[:0]
		return nil
	}
	err := src.Diff(ctx, o.old, o.new, func(c blockstore.Change) error {
		if c.Block >= blocks {
			return nil // past the new end: the truncate drops it
		}
		batch = append(batch, item{blk: c.Block, id: c.New})
		if len(batch) == maxBatch {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err == nil {
		err = flushZero()
	}
	if errors.Is(err, blockstore.ErrNotFound) {
		return &baseGoneError{file: o.file, volume: o.new.Name, err: err}
	}
	if err != nil {
		return fmt.Errorf("journal volume %q: %w", o.new.Name, err)
	}
	return nil
}

// finish applies a committed journal to the images, records its point as
// the state and removes the journal. Every step is idempotent, so finish
// may run again after a crash at any moment.
func (s *Set) finish(j *journal) error {
	// From here until the state is written the images are between points.
	s.pending = j
	s.smu.Lock()
	s.have = false
	s.smu.Unlock()
	if err := s.replay(j); err != nil {
		return err
	}
	if err := writeFileDurable(filepath.Join(s.dir, stateName), encodeState(j.target)); err != nil {
		return fmt.Errorf("write standby state: %w", err)
	}
	s.setPoint(j.target, true)
	s.pending = nil
	if err := s.step("state-written"); err != nil {
		return err
	}
	// The removal need not be durable, nor even succeed: a journal whose
	// target is the state's point is removed by Open and by the next Apply.
	if err := os.Remove(j.path); err != nil {
		s.log.Warn("cannot remove applied standby journal", "path", j.path, "err", err)
		return nil
	}
	return s.step("journal-removed")
}

// replay performs the journal's records on the images in order, then
// syncs every image touched and the directory. A failed fsync is not
// retried on its own: a later replay rewrites every record first.
func (s *Set) replay(j *journal) error {
	f, err := os.Open(j.path)
	if err != nil {
		return fmt.Errorf("replay journal: %w", err)
	}
	defer f.Close()
	jr := newJournalReader(j.path, f)
	var img *os.File
	imgIdx := -1
	closeImg := func() error {
		if img == nil {
			return nil
		}
		err := img.Sync()
		if cerr := img.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			err = fmt.Errorf("sync image %s: %w", img.Name(), err)
		}
		img, imgIdx = nil, -1
		return err
	}
	defer closeImg()
	openImg := func(idx int) error {
		if idx == imgIdx {
			return nil
		}
		if err := closeImg(); err != nil {
			return err
		}
		path := filepath.Join(s.dir, j.files[idx])
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("open image: %w", err)
		}
		img, imgIdx = f, idx
		return nil
	}
	for {
		r, err := jr.next()
		if err != nil {
			return err
		}
		if r.typ != recBegin && r.typ != recCommit && int(r.file) >= len(j.files) {
			return &CorruptError{Path: j.path, Offset: jr.off, Err: fmt.Errorf("%w: record names file %d of %d", ErrCorrupt, r.file, len(j.files)), Hint: journalHint}
		}
		switch r.typ {
		case recCommit:
			if err := closeImg(); err != nil {
				return err
			}
			if err := durable.SyncDir(s.dir); err != nil {
				return err
			}
			return s.step("images-synced")
		case recTruncate:
			if err := openImg(int(r.file)); err != nil {
				return err
			}
			if err := img.Truncate(r.off); err != nil {
				return fmt.Errorf("size image %s: %w", img.Name(), err)
			}
		case recWrite:
			if err := openImg(int(r.file)); err != nil {
				return err
			}
			if err := s.step("write"); err != nil {
				return err
			}
			if _, err := img.WriteAt(r.payload, r.off); err != nil {
				return fmt.Errorf("write image %s at offset %d: %w", img.Name(), r.off, err)
			}
		case recZero:
			if err := openImg(int(r.file)); err != nil {
				return err
			}
			if err := s.step("write"); err != nil {
				return err
			}
			if err := zeroRange(img, r.off, int64(r.n)); err != nil {
				return err
			}
		case recReplace, recRemove:
			if int(r.file) == imgIdx {
				if err := closeImg(); err != nil {
					return err
				}
			}
			path := filepath.Join(s.dir, j.files[r.file])
			if r.typ == recRemove {
				if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("remove image: %w", err)
				}
				continue
			}
			err := os.Rename(path+newExt, path)
			if errors.Is(err, os.ErrNotExist) {
				// Renamed before a crash; the image must be there.
				_, err = os.Stat(path)
			}
			if err != nil {
				return fmt.Errorf("put new image in place: %w", err)
			}
		}
	}
}
