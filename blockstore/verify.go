package blockstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
)

// VerifyOptions control Verify.
type VerifyOptions struct {
	// Sample is the fraction of frames whose blocks are decompressed and
	// re-hashed; 0 or 1 means all. Every frame's checksum is checked anyway.
	Sample float64
	// Progress, if set, is called with pack bytes checked and the total.
	Progress func(done, total int64)
}

// VerifyReport says what Verify checked and what it found.
type VerifyReport struct {
	Packs  int64 `json:"packs"`
	Frames int64 `json:"frames"`
	Blocks int64 `json:"blocks"`
	Hashed int64 `json:"blocks_hashed"`
	Pages  int64 `json:"pages"`
	Points int64 `json:"points"`
	// Superseded counts damaged records no index entry names any more
	// (their blocks were repaired elsewhere): garbage, not damage.
	Superseded int64   `json:"damaged_superseded,omitempty"`
	Damage     []error `json:"-"`
}

// Verify checks the whole store: every pack record's checksum (and, for the
// sampled share, every block's hash), that every index entry names a sound
// record holding its block, and that every point's map is complete, hashes
// right and references only stored blocks. Damage is reported in the report;
// the error is for failures to run at all.
func (m Maintenance) Verify(ctx context.Context, o VerifyOptions) (VerifyReport, error) {
	s := m.s
	var rep VerifyReport
	// Not while a GC removes packs: one at a time.
	select {
	case s.gcSem <- struct{}{}:
	case <-ctx.Done():
		return rep, ctx.Err()
	case <-s.stop:
		return rep, ErrClosed
	}
	defer func() { <-s.gcSem }()
	if err := s.Flush(ctx); err != nil {
		return rep, err
	}
	rep.Damage = append(rep.Damage, s.damage...)
	sample := o.Sample
	if sample <= 0 || sample > 1 {
		sample = 1
	}
	packs, err := s.idx.packs()
	if err != nil {
		return rep, err
	}
	sort.Slice(packs, func(i, j int) bool { return packs[i] < packs[j] })
	lengths := map[uint32]int64{}
	var total int64
	for _, p := range packs {
		fi, err := os.Stat(filepath.Join(s.dir, packsDir, packName(p)))
		if err == nil {
			lengths[p] = fi.Size()
			total += fi.Size()
		}
	}
	v := &verifier{s: s, sample: sample, rep: &rep, pages: map[ID]struct{}{}}
	var done int64
	for _, p := range packs {
		size, ok := lengths[p]
		if !ok {
			continue // reported on open
		}
		rep.Packs++
		n, err := v.pack(ctx, p, size)
		if err != nil {
			return rep, err
		}
		done += n
		if o.Progress != nil {
			o.Progress(done, total)
		}
	}
	var indexed int64
	for _, k := range objectKinds {
		var n int64
		if err := s.idx.scan(ctx, k, func(ID, location) error { n++; return nil }); err != nil {
			rep.Damage = append(rep.Damage, err)
		}
		if k == kindBlock {
			rep.Blocks = n
		}
		indexed += n
	}
	if err := v.referencedBadFrames(ctx); err != nil {
		return rep, err
	}
	for _, k := range objectKinds {
		if v.confirmed == indexed {
			break
		}
		// Some entries point at nothing sound: find them.
		r := blockReader{s: s, noRepair: true}
		err := s.idx.scan(ctx, k, func(id ID, loc location) error {
			if _, err := r.get(ref{k, id}); err != nil {
				var ce *CorruptError
				if !errors.As(err, &ce) {
					err = &CorruptError{Path: filepath.Join(s.dir, packsDir, packName(loc.pack)), Offset: int64(loc.offset), Block: id, Err: err}
				}
				if ce != nil && ce.Block.IsZero() {
					ce.Block = id
				}
				rep.Damage = append(rep.Damage, err)
			}
			return nil
		})
		if err != nil {
			return rep, err
		}
	}
	// Points: maps complete and every block present.
	pts, err := s.Points(ctx, "")
	if err != nil {
		rep.Damage = append(rep.Damage, err)
		return rep, nil
	}
	for _, p := range pts {
		rep.Points++
		for _, vol := range p.Volumes {
			v.volume(ctx, p, vol)
			if err := ctx.Err(); err != nil {
				return rep, err
			}
		}
	}
	rep.Pages = int64(len(v.pages))
	return rep, nil
}

// verifier is one run of Verify: what it found and what it has checked.
type verifier struct {
	s      *Store
	sample float64
	rep    *VerifyReport
	// confirmed counts index entries that point at a sound record holding
	// their block.
	confirmed int64
	// pages of volume maps already checked. Memory stays bounded by the
	// pages (about 1/256 of the blocks): the blocks of a page are checked
	// each time one of its pages is first seen, not remembered.
	pages map[ID]struct{}
	// badFrames are the records whose checksum failed, reported as
	// damage only when an index entry still names them.
	badFrames []badFrame
}

type badFrame struct {
	pack uint32
	off  uint64
	err  error
}

// referencedBadFrames reports the damaged records an index entry still
// names, and counts the others as superseded (their blocks were repaired
// or rewritten elsewhere; GC drops them).
func (v *verifier) referencedBadFrames(ctx context.Context) error {
	if len(v.badFrames) == 0 {
		return nil
	}
	type key struct {
		pack uint32
		off  uint64
	}
	named := map[key]bool{}
	for _, b := range v.badFrames {
		named[key{b.pack, b.off}] = false
	}
	for _, k := range objectKinds {
		err := v.s.idx.scan(ctx, k, func(_ ID, loc location) error {
			if _, ok := named[key{loc.pack, loc.offset}]; ok {
				named[key{loc.pack, loc.offset}] = true
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	for _, b := range v.badFrames {
		if named[key{b.pack, b.off}] {
			v.rep.Damage = append(v.rep.Damage, b.err)
		} else {
			v.rep.Superseded++
		}
	}
	return nil
}

// pack reads pack p record by record up to size.
func (v *verifier) pack(ctx context.Context, p uint32, size int64) (int64, error) {
	s, rep := v.s, v.rep
	path := filepath.Join(s.dir, packsDir, packName(p))
	f, err := os.Open(path)
	if err != nil {
		rep.Damage = append(rep.Damage, &CorruptError{Path: path, Offset: -1, Err: err})
		return 0, nil
	}
	defer f.Close()
	damage := func(off int64, id ID, err error, hint string) {
		rep.Damage = append(rep.Damage, &CorruptError{Path: path, Offset: off, Block: id, Err: err, Hint: hint})
	}
	hdr := make([]byte, packHeaderSize)
	if _, err := io.ReadFull(f, hdr); err != nil {
		damage(0, ZeroID, fmt.Errorf("%w: pack header: %v", errCorrupt, err), "")
		return size, nil
	}
	if id, err := decodePackHeader(hdr); err != nil || id != p {
		if err == nil {
			err = corruptf("pack header names pack %d", id)
		}
		damage(0, ZeroID, err, "")
	}
	rng := rand.New(rand.NewPCG(uint64(p), 1))
	var rec, plainBuf, sealBuf []byte
	off := int64(packHeaderSize)
	for off < size {
		if err := ctx.Err(); err != nil {
			return off, err
		}
		h := make([]byte, frameHeaderSize)
		if _, err := f.ReadAt(h, off); err != nil {
			damage(off, ZeroID, fmt.Errorf("%w: frame header: %v", errCorrupt, err), "the rest of this pack cannot be read; blocks in it are reported below")
			return size, nil
		}
		n, err := frameSizeFromHeader(h)
		if err != nil || off+int64(n) > size {
			if err == nil {
				err = corruptf("frame of %d bytes runs past the end of the pack", n)
			}
			damage(off, ZeroID, err, "the rest of this pack cannot be read; blocks in it are reported below")
			return size, nil
		}
		if cap(rec) < n {
			rec = make([]byte, n)
		}
		rec = rec[:n]
		if _, err := f.ReadAt(rec, off); err != nil {
			damage(off, ZeroID, err, "")
			return size, nil
		}
		rep.Frames++
		fr, err := decodeFrame(rec)
		if err != nil {
			// Damage only if an index entry still points here: a record
			// whose blocks were repaired elsewhere is garbage (for GC).
			v.badFrames = append(v.badFrames, badFrame{pack: p, off: uint64(off),
				err: &CorruptError{Path: path, Offset: off, Err: err, Hint: "blocks in this frame are damaged; another site may hold them"}})
			off += int64(n)
			continue
		}
		var plain []byte
		if rng.Float64() < v.sample {
			plain, err = s.codec.plain(fr, plainBuf[:0], &sealBuf)
			if err != nil {
				damage(off, ZeroID, err, "blocks in this frame are damaged; another site may hold them")
				off += int64(n)
				continue
			}
			if fr.codec != codecRaw {
				plainBuf = plain
			}
		}
		var po uint32
		for slot, e := range fr.entries {
			loc, lerr := s.w.locate(ref{fr.kind, e.id})
			current := lerr == nil && loc.pack == p && loc.offset == uint64(off) && int(loc.slot) == slot
			if !current {
				if plain != nil && fr.kind != kindPoint && s.h.sum(plain[po:po+e.len]) != e.id {
					rep.Superseded++ // a damaged copy nothing names any more
				}
				po += e.len
				continue
			}
			if plain != nil && fr.kind == kindPoint {
				if p, err := decodePoint(plain[po : po+e.len]); err != nil || s.h.pointFrameID(p.ID) != e.id {
					damage(off, e.id, corruptf("point record copy does not decode to its point"), "")
				}
			} else if plain != nil {
				rep.Hashed++
				if got := s.h.sum(plain[po : po+e.len]); got != e.id {
					damage(off, e.id, fmt.Errorf("%w: block hashes to %s", errCorrupt, got.Short()), "")
				}
			}
			if loc.recLen != uint32(n) || loc.plainOff != po || loc.plainLen != e.len {
				damage(off, e.id, corruptf("index entry disagrees with the frame"), "")
			} else {
				v.confirmed++
			}
			po += e.len
		}
		off += int64(n)
	}
	return size, nil
}

// volume walks a volume's map, checking pages and block presence.
func (v *verifier) volume(ctx context.Context, p Point, vol VolumeState) {
	s, rep, pages := v.s, v.rep, v.pages
	g := vol.Geometry()
	if g.Blocks() == 0 {
		return
	}
	var walk func(id ID, level int, index int64)
	walk = func(id ID, level int, index int64) {
		if id.IsZero() || ctx.Err() != nil {
			return
		}
		if _, ok := pages[id]; ok {
			return
		}
		ids, err := s.maps.load(id, level, childCount(g.Blocks(), level, index))
		if err != nil {
			rep.Damage = append(rep.Damage, fmt.Errorf("point %s volume %s: map page at level %d index %d: %w", p.ID, vol.Name, level, index, err))
			return
		}
		pages[id] = struct{}{}
		for i, c := range ids {
			child := index*fanout + int64(i)
			if level > 0 {
				walk(c, level-1, child)
				continue
			}
			if c.IsZero() {
				continue
			}
			if ok, err := s.w.has(ref{kindBlock, c}); err != nil || !ok {
				rep.Damage = append(rep.Damage, &CorruptError{Path: filepath.Join(s.dir, indexDir), Offset: -1, Block: c,
					Err:  fmt.Errorf("%w: point %s volume %s block %d is not in the store", errCorrupt, p.ID, vol.Name, child),
					Hint: "restore the block from another site, or prune the points that need it"})
			}
		}
	}
	walk(vol.Root, g.rootLevel(), 0)
}
