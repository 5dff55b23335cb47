package standby

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/internal/durable"
	"github.com/lifeboat-dr/lifeboat/internal/flock"
)

// Sentinel errors callers branch on.
var (
	// ErrOlder means Apply was given a point that is not newer than the
	// one the images are at.
	ErrOlder = errors.New("point is not newer than the standby's")
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("standby set closed")
	// ErrCorrupt marks damaged state or journal files.
	ErrCorrupt = errors.New("corrupt standby file")
	// ErrLocked means another process has the directory open.
	ErrLocked = errors.New("standby directory is in use by another process")
)

// CorruptError reports a damaged or unexpected file that Open refuses to
// repair. Hint tells the operator what to do.
type CorruptError struct {
	Path   string
	Offset int64 // -1 when not about one place in the file
	Err    error
	Hint   string
}

func (e *CorruptError) Error() string {
	s := e.Path
	if e.Offset >= 0 {
		s += fmt.Sprintf("@%d", e.Offset)
	}
	return s + ": " + e.Err.Error()
}

func (e *CorruptError) Unwrap() error { return e.Err }

// Source is what Apply reads points from. *blockstore.Store satisfies it;
// it must be safe for concurrent use (Get is called from several
// goroutines).
type Source interface {
	// Diff calls fn for every block whose ID differs between a and b, in
	// block order.
	Diff(ctx context.Context, a, b blockstore.VolumeState, fn func(blockstore.Change) error) error
	// Get returns the plaintext of a block (never ZeroID).
	Get(ctx context.Context, id blockstore.ID) ([]byte, error)
	// Restore writes a volume state to w; holes are skipped unless
	// o.WriteZeros.
	Restore(ctx context.Context, v blockstore.VolumeState, w io.WriterAt, o blockstore.RestoreOptions) error
}

var _ Source = (*blockstore.Store)(nil)

// Options configure a Set. The zero value gives the defaults.
type Options struct {
	// Logger receives recovery messages; nil means slog.Default().
	Logger *slog.Logger
}

// Stats describe what an Apply did.
type Stats struct {
	// Volumes is the number of images changed, created or removed.
	Volumes int
	// Blocks is the number of blocks written or zeroed, including the
	// non-zero blocks of images written whole.
	Blocks int64
	// Bytes is the number of data bytes written to images.
	Bytes int64
	// Journal is the size of the journal in bytes.
	Journal int64
	// Duration is the wall-clock time Apply took.
	Duration time.Duration
}

// Set is the standby images of one service in one directory, all at one
// point. Apply and Close serialize; Point and Path are safe for concurrent
// use with them. One process at a time may have a directory open (flock).
type Set struct {
	dir  string
	log  *slog.Logger
	lock *flock.Lock
	// hook, when set (by tests), is called at each step of an update; an
	// error it returns fails the update there.
	hook func(step string) error

	mu      sync.Mutex // serializes Apply and Close
	pending *journal   // a committed journal whose replay failed
	closed  bool

	smu  sync.RWMutex
	cur  blockstore.Point
	have bool // cur is valid and the images are at it
}

const lockName = "lock"

// Open opens (creating if needed) the standby directory dir and brings it
// to a consistent state: a journal with a valid commit record is replayed
// (finishing an Apply interrupted by a crash), one without is discarded,
// and temporary files are removed. It refuses, with a *CorruptError naming
// the file, a damaged state or committed journal, image files the state
// does not list, and listed images that are missing or have the wrong size.
func Open(dir string, o Options) (*Set, error) {
	return open(dir, o, nil)
}

func open(dir string, o Options, hook func(string) error) (*Set, error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	if err := durable.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open standby: %w", err)
	}
	lock, err := flock.TryLock(filepath.Join(dir, lockName))
	if errors.Is(err, flock.ErrLocked) {
		return nil, fmt.Errorf("open standby %s: %w", dir, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open standby: %w", err)
	}
	s := &Set{dir: dir, log: log, lock: lock, hook: hook}
	if err := s.recover(); err != nil {
		lock.Unlock()
		return nil, err
	}
	return s, nil
}

// recover brings the directory to a consistent state (see Open).
func (s *Set) recover() error {
	cur, have, err := readState(s.dir)
	if err != nil {
		return err
	}
	s.cur, s.have = cur, have
	jpath := filepath.Join(s.dir, journalName)
	j, err := loadJournal(jpath)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case errors.Is(err, errUncommitted):
		s.log.Warn("discarding uncommitted standby journal left by a crash", "path", jpath)
		if err := os.Remove(jpath); err != nil {
			return fmt.Errorf("open standby: %w", err)
		}
	case err != nil:
		return err
	case have && j.target.ID == cur.ID:
		// The state was written, the journal not yet removed.
		if err := os.Remove(jpath); err != nil {
			return fmt.Errorf("open standby: %w", err)
		}
	case j.base == "" && !have || have && j.base == cur.ID:
		s.log.Info("finishing standby update interrupted by a crash", "service", j.target.Group, "point", j.target.ID)
		if err := s.finish(j); err != nil {
			return fmt.Errorf("open standby: finish point %s: %w", j.target.ID, err)
		}
	default:
		at := "no point"
		if have {
			at = "point " + cur.ID
		}
		return &CorruptError{Path: jpath, Offset: -1, Hint: journalHint,
			Err: fmt.Errorf("%w: journal goes from point %q to %s, but the state is at %s", ErrCorrupt, j.base, j.target.ID, at)}
	}
	return s.check()
}

// check removes temporary files and checks that the directory holds
// exactly the state's images, each of its volume's size.
func (s *Set) check() error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("open standby: %w", err)
	}
	want := map[string]int64{}
	if s.have {
		for _, v := range s.cur.Volumes {
			f, _ := fileName(v.Name)
			want[f] = v.Size
		}
	}
	removed := false
	for _, e := range entries {
		name, path := e.Name(), filepath.Join(s.dir, e.Name())
		switch {
		case strings.HasSuffix(name, imageExt+newExt) || name == stateName+".tmp":
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("open standby: remove temporary file: %w", err)
			}
			removed = true
		case strings.HasSuffix(name, imageExt):
			size, ok := want[name]
			if !ok {
				return &CorruptError{Path: path, Offset: -1, Err: errors.New("image file that the standby state does not list"),
					Hint: "move the file out of the standby directory"}
			}
			fi, err := e.Info()
			if err != nil {
				return fmt.Errorf("open standby: %w", err)
			}
			if !fi.Mode().IsRegular() || fi.Size() != size {
				return &CorruptError{Path: path, Offset: -1, Err: fmt.Errorf("%w: image is %d bytes (%s), the state says %d", ErrCorrupt, fi.Size(), fi.Mode().Type(), size),
					Hint: stateHint}
			}
			delete(want, name)
		}
	}
	for name := range want {
		return &CorruptError{Path: filepath.Join(s.dir, name), Offset: -1, Err: fmt.Errorf("%w: image listed in the state is missing", ErrCorrupt), Hint: stateHint}
	}
	if removed {
		return durable.SyncDir(s.dir)
	}
	return nil
}

// Close releases the directory. It does not stop an Apply in progress; it
// waits for it.
func (s *Set) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.lock.Unlock()
}

// Point returns the point every image is at; ok is false before the first
// Apply, and while an interrupted Apply has left the images between two
// points (a later Apply, or Open, finishes it).
func (s *Set) Point() (p blockstore.Point, ok bool) {
	s.smu.RLock()
	defer s.smu.RUnlock()
	if !s.have {
		return blockstore.Point{}, false
	}
	p = s.cur
	p.Volumes = slices.Clone(p.Volumes)
	return p, true
}

// Path returns the image path of a volume (its full name, SERVICE/VOLUME),
// whether or not the image exists yet; "" for a name that makes no image
// file name.
func (s *Set) Path(volume string) string {
	f, err := fileName(volume)
	if err != nil {
		return ""
	}
	return filepath.Join(s.dir, f)
}

func (s *Set) step(name string) error {
	if s.hook != nil {
		return s.hook(name)
	}
	return nil
}

func (s *Set) setPoint(p blockstore.Point, have bool) {
	s.smu.Lock()
	s.cur, s.have = p, have
	s.smu.Unlock()
}

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
