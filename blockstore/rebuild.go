package blockstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// RebuildReport says what RebuildIndex found in the packs.
type RebuildReport struct {
	Packs   int64 `json:"packs"`
	Frames  int64 `json:"frames"`
	Blocks  int64 `json:"blocks"`
	Pages   int64 `json:"pages"`
	Points  int64 `json:"points"`
	Skipped int64 `json:"frames_skipped"` // damaged frames left out of the index
	// Incomplete are points recovered from the packs whose map root is
	// not in any sound frame; they are left out.
	Incomplete []string `json:"points_incomplete,omitempty"`
	// Locks are the retention locks carried over from the old index (of
	// the points rebuilt); LocksLost says why the old index's locks could
	// not be read, when they could not ("" otherwise).
	Locks     int64  `json:"locks"`
	LocksLost string `json:"locks_lost,omitempty"`
	// OldIndex is where the index that was there went ("" if there was none).
	OldIndex string  `json:"old_index,omitempty"`
	Damage   []error `json:"-"`
}

// RebuildIndex replaces the index of the store in dir with one built from
// its packs alone: every sound frame's blocks and map pages (each re-hashed
// against its ID, or authenticated in an encrypted store), every point whose
// record the packs hold (every point committed by this version) and whose
// map root is present, and the packs' lengths. Damaged frames are skipped
// and reported. The old index is moved aside to index.damaged-TIME, not
// deleted. The store must not be open (RebuildIndex takes its lock).
//
// Retention locks ('l') are not in the packs (a lock raised after the
// commit has no record there to go in): they are carried over from the
// old index, read-only, for every point rebuilt. When the old index is
// gone or its locks cannot be read, LocksLost says why and the locks are
// lost; a node sets them again from its catalog (LockPoint), and an
// operator who locked points by hand must lock them again.
//
// What the packs cannot say either: points that prune removed come back
// if the pack holding their record was not rewritten since (run prune
// again), and per-service block scopes start empty (a node rebuilds them
// from its catalog). Progress, if set, is called with pack bytes read and
// the total.
func RebuildIndex(ctx context.Context, dir string, o Options, progress func(done, total int64)) (RebuildReport, error) {
	var rep RebuildReport
	lock, err := lockStore(dir)
	if err != nil {
		return rep, err
	}
	defer lock.Unlock()
	key, seal, err := openKeys(dir, o.KEK)
	if err != nil {
		return rep, err
	}
	h, err := newHasher(key)
	if err != nil {
		return rep, err
	}
	codec, err := newFrameCodec(seal, false)
	if err != nil {
		return rep, err
	}
	defer codec.close()
	rb := &rebuilder{dir: dir, h: h, codec: codec, idx: &index{dir: dir, seal: seal, log: logger(o.Logger)}, rep: &rep, progress: progress, o: o}

	fresh := filepath.Join(dir, indexDir+".rebuild")
	if err := os.RemoveAll(fresh); err != nil {
		return rep, fmt.Errorf("rebuild index: %w", err)
	}
	if err := rb.idx.open(fresh, o, false, false); err != nil {
		return rep, fmt.Errorf("rebuild index: %w", err)
	}
	db := rb.idx.db
	err = rb.run(ctx)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.RemoveAll(fresh)
		return rep, fmt.Errorf("rebuild index: %w", err)
	}
	// Swap: at every instant "index" is the old index, absent, or the new
	// one; a crash in between leaves a store that a second rebuild mends.
	old := filepath.Join(dir, indexDir)
	if _, err := os.Stat(old); err == nil {
		rep.OldIndex = fmt.Sprintf("%s.damaged-%s", old, time.Now().UTC().Format("20060102T150405Z"))
		if err := os.Rename(old, rep.OldIndex); err != nil {
			return rep, fmt.Errorf("rebuild index: move the old index aside: %w", err)
		}
	}
	if err := os.Rename(fresh, old); err != nil {
		return rep, fmt.Errorf("rebuild index: %w", err)
	}
	return rep, syncDir(dir)
}

// rebuilder builds a new index from the packs of a store that is not open.
type rebuilder struct {
	dir      string // the store directory
	h        *hasher
	codec    *frameCodec
	idx      *index // the new index
	rep      *RebuildReport
	progress func(done, total int64)
	o        Options
}

// run scans every pack into the new index.
func (rb *rebuilder) run(ctx context.Context) error {
	rep, db := rb.rep, rb.idx.db
	pdir := filepath.Join(rb.dir, packsDir)
	entries, err := os.ReadDir(pdir)
	if err != nil {
		return err
	}
	var packs []uint32
	var total, done int64
	for _, e := range entries {
		if id, ok := parsePackName(e.Name()); ok {
			packs = append(packs, id)
			if fi, err := e.Info(); err == nil {
				total += fi.Size()
			}
		}
	}
	slices.Sort(packs)
	b := db.NewBatch()
	pending := 0
	commit := func(opt *pebble.WriteOptions) error {
		err := b.Commit(opt)
		b.Close()
		b, pending = db.NewBatch(), 0
		return err
	}
	defer func() { b.Close() }()
	pages := map[ID]struct{}{}
	points := map[string]Point{}
	for _, id := range packs {
		path := filepath.Join(pdir, packName(id))
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rep.Packs++
		var emitErr error
		end, err := rb.scanPack(ctx, id, path, data, func(k kind, fid ID, loc location, body []byte) {
			if k == kindPoint {
				p, _ := decodePoint(body) // checked by scanPack
				pk := pointKey(p.Time, p.ID)
				b.Set(pk, rb.idx.sealValue(pk, body), nil)
				points[p.ID] = p
			}
			if k == kindPage {
				pages[fid] = struct{}{}
			}
			key := ref{k, fid}.key()
			b.Set(key, rb.idx.sealValue(key, encodeLocation(loc)), nil)
			if pending++; pending >= 1<<16 && emitErr == nil {
				emitErr = commit(pebble.NoSync)
			}
		})
		if err != nil {
			return err
		}
		if emitErr != nil {
			return emitErr
		}
		b.Set(packKey(id), binary.LittleEndian.AppendUint64(nil, uint64(end)), nil)
		done += int64(len(data))
		if rb.progress != nil {
			rb.progress(done, total)
		}
	}
	// Points whose map root is gone cannot be restored: leave them out.
	for _, p := range points {
		complete := true
		for _, v := range p.Volumes {
			if _, ok := pages[v.Root]; !ok && !v.Root.IsZero() {
				complete = false
			}
		}
		if complete {
			rep.Points++
			continue
		}
		rep.Incomplete = append(rep.Incomplete, p.ID)
		b.Delete(pointKey(p.Time, p.ID), nil)
		k := ref{kindPoint, rb.h.pointFrameID(p.ID)}.key()
		b.Delete(k, nil)
		delete(points, p.ID)
	}
	locks, err := rb.oldLocks(ctx)
	if err != nil {
		rep.LocksLost = err.Error()
		rb.idx.log.Warn("rebuild index: retention locks lost (a node sets them again from its catalog)", "err", err)
	}
	for id, until := range locks {
		if _, ok := points[id]; ok {
			k := lockKey(id)
			b.Set(k, rb.idx.sealValue(k, encodeLock(until)), nil)
			rep.Locks++
		}
	}
	if err := commit(pebble.Sync); err != nil {
		return err
	}
	if err := db.Flush(); err != nil && !errors.Is(err, pebble.ErrReadOnly) {
		return err
	}
	return nil
}

// scanPack reads the frames of pack id (its bytes are data) and calls emit
// for every sound object in them: blocks and pages whose plaintext hashes
// to their ID, point records that decode to their point. Damaged frames are
// counted and reported in rb.rep, and the scan resynchronises at the next
// frame magic. It returns the end of the last sound frame.
func (rb *rebuilder) scanPack(ctx context.Context, id uint32, path string, data []byte, emit func(k kind, id ID, loc location, body []byte)) (int, error) {
	rep := rb.rep
	damage := func(off int, err error) {
		rep.Damage = append(rep.Damage, &CorruptError{Path: path, Offset: int64(off), Err: err})
	}
	if hid, err := decodePackHeader(data); err != nil || hid != id {
		if err == nil {
			err = corruptf("pack header names pack %d", hid)
		}
		damage(0, err)
	}
	var buf, scratch []byte
	end := packHeaderSize // end of the last sound frame
	for off := packHeaderSize; off+frameHeaderSize <= len(data); {
		if err := ctx.Err(); err != nil {
			return end, err
		}
		n, err := frameSizeFromHeader(data[off:])
		var fr frame
		var plain []byte
		if err == nil && off+n > len(data) {
			err = corruptf("frame of %d bytes runs past the end of the pack", n)
		}
		if err == nil {
			fr, err = decodeFrame(data[off : off+n])
		}
		if err == nil {
			// plain may alias data (a raw frame): never append to it.
			plain, err = rb.codec.plain(fr, buf[:0], &scratch)
			if err == nil && fr.codec != codecRaw {
				buf = plain
			}
		}
		if err != nil {
			// Resynchronise at the next frame magic.
			rep.Skipped++
			damage(off, err)
			next := bytes.Index(data[off+1:], frameMagic[:])
			if next < 0 {
				break
			}
			off += 1 + next
			continue
		}
		rep.Frames++
		var po uint32
		for slot, e := range fr.entries {
			body := plain[po : po+e.len]
			loc := location{pack: id, offset: uint64(off), recLen: uint32(n), slot: uint16(slot), plainOff: po, plainLen: e.len}
			po += e.len
			switch fr.kind {
			case kindPoint:
				p, err := decodePoint(body)
				if err != nil || rb.h.pointFrameID(p.ID) != e.id {
					damage(off, corruptf("point record copy does not decode to its point"))
					continue
				}
			default:
				if got := rb.h.sum(body); got != e.id {
					damage(off, fmt.Errorf("%w: block %s hashes to %s", errCorrupt, e.id.Short(), got.Short()))
					continue
				}
				if fr.kind == kindPage {
					rep.Pages++
				} else {
					rep.Blocks++
				}
			}
			emit(fr.kind, e.id, loc, body)
		}
		off += n
		end = off
	}
	return end, nil
}

// oldLocks reads the retention locks of the store's current index, opened
// read-only; its other keys are not trusted or needed.
func (rb *rebuilder) oldLocks(ctx context.Context) (map[string]time.Time, error) {
	path := filepath.Join(rb.dir, indexDir)
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("the old index is gone: %w", err)
	}
	old := &index{dir: rb.dir, seal: rb.idx.seal, log: rb.idx.log}
	o := rb.o
	o.CacheSize = 8 << 20
	if err := old.open(path, o, true, true); err != nil {
		return nil, fmt.Errorf("the old index does not open: %s", shortPebbleErr(err))
	}
	defer old.db.Close()
	return old.locks(ctx)
}
