package blockstore

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
)

// packWriter is the store's write path: it appends frame records to the
// current pack, keeps the locations of what it wrote pending until a flush
// syncs the packs and commits the locations to the index, and answers
// lookups from both. It keeps a sticky error: after a failed write or flush
// it refuses writes until the store is reopened. Safe for concurrent use.
type packWriter struct {
	dir     string // the store directory
	idx     *index
	codec   *frameCodec
	log     *slog.Logger
	flushAt int
	reserve int64

	// mu guards the fields below.
	mu       sync.Mutex
	pack     *packFile
	nextPack uint32
	dirty    []*packFile // written since the last flush
	newFiles bool        // a pack file was created since the last dir sync
	pending  map[ref]location
	flushing map[ref]location // being written to the index by flush
	bgFlush  bool             // a background flush is running
	flushed  *sync.Cond       // signalled when a background flush ends
	err      error            // sticky write error
	closing  bool             // close has begun: no new writes

	// flushMu serializes flushes; it is taken before mu.
	flushMu sync.Mutex
	closed  bool

	// gc is the GC run in progress, if any: every lookup notes its ID in
	// the run's live filter before it asks the index (gc.go).
	gc atomic.Pointer[gcRun]
}

func newPackWriter(dir string, idx *index, codec *frameCodec, o Options, reserve int64) *packWriter {
	w := &packWriter{
		dir: dir, idx: idx, codec: codec, log: logger(o.Logger),
		flushAt: o.FlushEntries, reserve: reserve,
		pending: map[ref]location{},
	}
	w.flushed = sync.NewCond(&w.mu)
	if w.flushAt == 0 {
		w.flushAt = 1 << 16
	}
	return w
}

// buffered returns the location of r if it is written but not yet flushed.
func (w *packWriter) buffered(r ref) (location, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	loc, ok := w.pending[r]
	if !ok {
		loc, ok = w.flushing[r]
	}
	return loc, ok
}

// has reports whether the store holds r (durably or pending).
func (w *packWriter) has(r ref) (bool, error) {
	if w.idx.shut.Load() {
		return false, ErrClosed
	}
	if run := w.gc.Load(); run != nil {
		// A hit resurrects r for the running GC: note it before the
		// lookup, and keep the sweep from deleting r between the two.
		run.hz.RLock()
		defer run.hz.RUnlock()
		run.live.add(r.id)
	}
	if _, ok := w.buffered(r); ok {
		return true, nil
	}
	return w.idx.has(r)
}

// locate returns where r lives.
func (w *packWriter) locate(r ref) (location, error) {
	if w.idx.shut.Load() {
		return location{}, ErrClosed
	}
	if loc, ok := w.buffered(r); ok {
		return loc, nil
	}
	return w.idx.locate(r)
}

// putMissing stores the blocks whose IDs are not yet in the store. ids[i]
// is the ID of blocks[i]; ZeroID entries are skipped.
func (w *packWriter) putMissing(ctx context.Context, blocks [][]byte, ids []ID) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// Pick the blocks the store lacks, each once.
	var want []int
	seen := make(map[ID]struct{}, len(ids))
	for i, id := range ids {
		if id.IsZero() {
			continue
		}
		if _, dup := seen[id]; dup {
			continue
		}
		seen[id] = struct{}{}
		has, err := w.has(ref{kindBlock, id})
		if err != nil {
			return err
		}
		if !has {
			want = append(want, i)
		}
	}
	if len(want) == 0 {
		return nil
	}
	return w.write(kindBlock, blocks, ids, want)
}

// write compresses blocks[i] for i in want into frames and appends them
// to the current pack; their locations become pending until the next flush.
func (w *packWriter) write(k kind, blocks [][]byte, ids []ID, want []int) error {
	return w.writeFrames(k, blocks, ids, want, false)
}

// writeFrames is write; with over, the new locations replace pending ones
// (a repair: the pending copy may be the damaged one).
func (w *packWriter) writeFrames(k kind, blocks [][]byte, ids []ID, want []int, over bool) error {
	// Group into frames and compress outside the lock.
	recs, recIDs := w.codec.encode(k, blocks, ids, want)
	defer func() {
		for _, rec := range recs {
			putBuf(rec)
		}
	}()
	var total int64
	for _, rec := range recs {
		total += int64(len(rec))
	}
	if err := checkSpace(w.dir, total, w.reserve, "write pack"); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.writableLocked(); err != nil {
		return err
	}
	for r, rec := range recs {
		if w.pack == nil || w.pack.size+int64(len(rec)) > maxPackSize {
			if err := w.rotateLocked(); err != nil {
				return err
			}
		}
		off := w.pack.size
		if err := w.pack.append(rec); err != nil {
			w.err = err
			return err
		}
		var plainOff uint32
		for slot, e := range recIDs[r] {
			if _, ok := w.pending[ref{k, e.id}]; !ok || over {
				// A copy in w.flushing is superseded: both are sound.
				w.pending[ref{k, e.id}] = location{pack: w.pack.id, offset: uint64(off), recLen: uint32(len(rec)), slot: uint16(slot), plainOff: plainOff, plainLen: e.len}
			}
			plainOff += e.len
		}
	}
	if len(w.pending) >= w.flushAt && !w.bgFlush {
		// Flush in the background so that hashing and compressing go on
		// while the packs are synced.
		w.bgFlush = true
		go func() {
			err := w.flush()
			w.mu.Lock()
			w.bgFlush = false
			if err != nil && w.err == nil {
				w.err = err
			}
			w.flushed.Broadcast()
			w.mu.Unlock()
		}()
	}
	// Back-pressure: bound memory when the disk is slower than ingest.
	for len(w.pending) >= 4*w.flushAt && w.bgFlush && w.err == nil {
		w.flushed.Wait()
	}
	return w.err
}

// writable reports why the store takes no writes, if it does not.
func (w *packWriter) writable() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.writableLocked()
}

func (w *packWriter) writableLocked() error {
	if w.closing {
		return ErrClosed
	}
	if w.err != nil {
		return fmt.Errorf("store refuses writes after an earlier error (reopen it): %w", w.err)
	}
	return nil
}

// fail makes err the sticky error: a durable change outside the writer (a
// point record) failed half way.
func (w *packWriter) fail(err error) {
	w.mu.Lock()
	w.err = err
	w.mu.Unlock()
}

// rotateLocked starts a new pack.
func (w *packWriter) rotateLocked() error {
	p, err := createPack(filepath.Join(w.dir, packsDir), w.nextPack)
	if err != nil {
		w.err = err
		return err
	}
	w.nextPack++
	w.pack = p
	w.dirty = append(w.dirty, p)
	w.newFiles = true
	return nil
}

// sealPack ends appends to the current pack: the next write starts a new
// one, and the next flush syncs, commits and closes it. It returns the
// number of the next pack: every later write goes to it or above.
func (w *packWriter) sealPack() (uint32, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	err := w.writableLocked()
	w.pack = nil // stays in w.dirty for the next flush
	return w.nextPack, err
}

// flush syncs the packs, then records their blocks in the index: data
// reaches the disk before anything points at it. The I/O runs without w.mu,
// so that puts go on meanwhile; flushes are serialized by flushMu.
func (w *packWriter) flush() error {
	w.flushMu.Lock()
	defer w.flushMu.Unlock()
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return ErrClosed
	}
	if w.err != nil {
		w.mu.Unlock()
		return w.err
	}
	if len(w.dirty) == 0 && len(w.pending) == 0 {
		w.mu.Unlock()
		return nil
	}
	entries := w.pending
	w.pending, w.flushing = make(map[ref]location, len(entries)), entries
	packs := slices.Clone(w.dirty)
	sizes := make(map[uint32]int64, len(packs))
	for _, p := range packs {
		sizes[p.id] = p.size
	}
	// Seal a big current pack: appends go to a new one while this one is
	// synced (on ext4 an fsync stalls writers of the same file). A small
	// one goes on taking appends, so that frequent commits do not make
	// many small packs.
	w.dirty = w.dirty[:0]
	if w.pack != nil && w.pack.size < sealAt {
		w.dirty = append(w.dirty, w.pack)
	} else {
		w.pack = nil
	}
	newFiles := w.newFiles
	w.newFiles = false
	w.mu.Unlock()

	err := func() error {
		for _, p := range packs {
			if err := p.f.Sync(); err != nil {
				return fmt.Errorf("sync pack %s: %w", packName(p.id), err)
			}
		}
		if newFiles {
			if err := syncDir(filepath.Join(w.dir, packsDir)); err != nil {
				return err
			}
		}
		return w.idx.commit(entries, sizes)
	}()

	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.err = err
		return err
	}
	w.flushing = nil
	for _, p := range packs {
		if p != w.pack && !slices.Contains(w.dirty, p) {
			p.f.Close()
		}
	}
	return nil
}

// close stops writes, lets a background flush end, flushes the rest and
// closes the pack files; reads of the index fail with ErrClosed from then
// on. It reports false, doing nothing, when close had already begun.
func (w *packWriter) close() (bool, error) {
	w.mu.Lock()
	if w.closing {
		w.mu.Unlock()
		return false, nil
	}
	w.closing = true
	for w.bgFlush {
		w.flushed.Wait()
	}
	w.mu.Unlock()
	err := w.flush()
	w.flushMu.Lock()
	w.mu.Lock()
	w.closed = true
	w.idx.shut.Store(true)
	if w.pack != nil {
		w.pack.f.Close()
	}
	for _, p := range w.dirty {
		p.f.Close()
	}
	w.mu.Unlock()
	w.flushMu.Unlock()
	return true, err
}

// recover reconciles the pack directory with the committed pack lengths
// and finds the next pack number. It returns the damage found: packs
// shorter than committed or missing.
func (w *packWriter) recover() ([]error, error) {
	committed, err := w.idx.packLengths()
	if err != nil {
		return nil, err
	}
	pdir := filepath.Join(w.dir, packsDir)
	entries, err := os.ReadDir(pdir)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	var damage []error
	seen := map[uint32]bool{}
	changed := false
	for _, e := range entries {
		id, ok := parsePackName(e.Name())
		if !ok {
			if filepath.Ext(e.Name()) == ".tmp" {
				os.Remove(filepath.Join(pdir, e.Name()))
			}
			continue
		}
		seen[id] = true
		if id >= w.nextPack {
			w.nextPack = id + 1
		}
		path := filepath.Join(pdir, e.Name())
		want, ok := committed[id]
		if !ok {
			// Written after the last commit, so nothing acknowledged is in it.
			w.log.Warn("removing uncommitted pack left by a crash", "pack", path)
			if err := os.Remove(path); err != nil {
				return nil, fmt.Errorf("open store: remove uncommitted pack: %w", err)
			}
			changed = true
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
		switch {
		case fi.Size() > want:
			w.log.Warn("truncating pack tail written after the last commit", "pack", path, "size", fi.Size(), "committed", want)
			if err := truncateDurable(path, want); err != nil {
				return nil, fmt.Errorf("open store: %w", err)
			}
		case fi.Size() < want:
			damage = append(damage, &CorruptError{Path: path, Offset: fi.Size(), Err: fmt.Errorf("%w: pack is %d bytes, %d were committed", errCorrupt, fi.Size(), want),
				Hint: "the disk lost data after it was synced; restore this pack from another site or run prune to drop points that need it"})
		}
	}
	for id := range committed {
		if id >= w.nextPack {
			w.nextPack = id + 1
		}
		if !seen[id] {
			path := filepath.Join(pdir, packName(id))
			damage = append(damage, &CorruptError{Path: path, Offset: -1, Err: fmt.Errorf("%w: committed pack is missing", errCorrupt),
				Hint: "restore the pack file from a backup or another site"})
		}
	}
	for _, d := range damage {
		w.log.Error("store damage found on open", "err", d)
	}
	if changed {
		return damage, syncDir(pdir)
	}
	return damage, nil
}
