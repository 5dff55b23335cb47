package blockstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/cockroachdb/pebble/v2"
)

// Scrub phases: a cycle reads the packs, then checks the index entries,
// then walks the point maps.
const (
	scrubPacks = iota
	scrubIndex
	scrubMaps
)

// Scrub costs charged against ScrubOptions.Bytes besides pack bytes: per
// index entry checked, per block presence checked, and per map page header.
const (
	scrubEntryCost = 32
	// maxScrubBad ends a slice early (resumable) once it found this many
	// bad blocks, so that a lost pack does not make one huge report.
	maxScrubBad = 4096
)

// ScrubCursor says where a scrub cycle stopped; JSON-able (the caller
// persists it). Phase 0 (packs): Pack and Offset name the next frame
// record. Phase 1 (index entries): Key is the next index key, hex. Phase 2
// (point maps): Key is the next point's record key, hex; Pack the volume
// index in it and Offset the first block number of it to check.
type ScrubCursor struct {
	Pack   uint32 `json:"pack"`
	Offset int64  `json:"offset"`
	Phase  int    `json:"phase"`
	Key    string `json:"key,omitempty"`
}

// ScrubOptions control one slice of a scrub cycle.
type ScrubOptions struct {
	From ScrubCursor // zero = start a new cycle
	// Bytes is how many pack bytes this call reads at most (0 = to the
	// end of the cycle). Index and map work is charged too: 32 bytes per
	// index entry or block checked, and a map page's length when read.
	// A call makes progress whatever the bound.
	Bytes int64
	// Wait is called before reading n bytes (the caller's rate limiter);
	// nil = none.
	Wait func(ctx context.Context, n int) error
}

// ScrubReport says what one slice did and found.
type ScrubReport struct {
	Next ScrubCursor `json:"next"`
	// Cycle says that this call finished a whole cycle (packs, then index
	// entries, then point maps); Next is then the zero cursor.
	Cycle  bool  `json:"cycle"`
	Bytes  int64 `json:"bytes"`
	Frames int64 `json:"frames"`
	Blocks int64 `json:"blocks"`
	// Bad are the blocks (and map pages) the store cannot serve, each
	// checked again just before it is reported.
	Bad []BadBlock `json:"-"`
}

// scrubState is what Scrub keeps between slices: the map pages whose
// subtree phase 2 of the current cycle checked, valid while the next call
// starts where the last one stopped.
type scrubState struct {
	mu      sync.Mutex // one Scrub at a time
	next    ScrubCursor
	visited map[ID]struct{}
}

// Scrub runs one bounded slice of a scrub cycle: it reads the packs record
// by record and re-hashes every block (keyed BLAKE3) of the records it
// reads, then checks that every index entry names a pack and a record that
// are there, then that every block a point map names is in the index. It
// reports the blocks the store cannot serve, each confirmed by a fresh
// lookup. It runs beside ingest, readers and GC, holding no lock of
// theirs but packs.rm (shared) for a confirmation; a pack that GC removes
// meanwhile is skipped, not damage. One Scrub runs at a time.
func (s *Store) Scrub(ctx context.Context, o ScrubOptions) (ScrubReport, error) {
	var rep ScrubReport
	cur := o.From
	if cur.Phase < scrubPacks || cur.Phase > scrubMaps || cur.Offset < 0 {
		return rep, fmt.Errorf("scrub: bad cursor %+v", cur)
	}
	if _, err := hex.DecodeString(cur.Key); err != nil {
		return rep, fmt.Errorf("scrub: bad cursor key %q", cur.Key)
	}
	if o.Bytes < 0 {
		return rep, fmt.Errorf("scrub: bytes %d, want 0 (no bound) or more", o.Bytes)
	}
	s.scrub.mu.Lock()
	defer s.scrub.mu.Unlock()
	if s.idx.shut.Load() {
		return rep, ErrClosed
	}
	sc := &scrubber{s: s, rep: &rep, limit: o.Bytes, wait: o.Wait, seen: map[ID]bool{}}
	if cur.Phase == scrubMaps && cur == s.scrub.next && s.scrub.visited != nil {
		sc.visited = s.scrub.visited
	} else {
		sc.visited = map[ID]struct{}{}
	}
	for {
		var done bool
		var err error
		switch cur.Phase {
		case scrubPacks:
			done, err = sc.packs(ctx, &cur)
		case scrubIndex:
			done, err = sc.index(ctx, &cur)
		case scrubMaps:
			done, err = sc.maps(ctx, &cur)
		}
		if err == nil {
			err = sc.flushWait(ctx)
		}
		if err != nil {
			return rep, err
		}
		if !done {
			break
		}
		if cur.Phase == scrubMaps {
			rep.Cycle = true
			cur = ScrubCursor{}
			sc.visited = nil
			break
		}
		cur = ScrubCursor{Phase: cur.Phase + 1}
		if cur.Phase == scrubMaps {
			sc.visited = map[ID]struct{}{}
		}
	}
	rep.Next = cur
	s.scrub.next, s.scrub.visited = cur, sc.visited
	return rep, nil
}

// scrubber is one call of Scrub.
type scrubber struct {
	s     *Store
	rep   *ScrubReport
	limit int64
	wait  func(ctx context.Context, n int) error
	owed  int // small charges not yet passed to wait
	units int // units of work done
	// seen are the IDs reported in this call; visited the pages whose
	// subtree phase 2 checked in this cycle.
	seen    map[ID]bool
	visited map[ID]struct{}
	r       blockReader // for confirmations; noRepair
}

// take charges n bytes for a unit of work that moves the cursor (a frame,
// an index entry, a leaf) or not (an interior map page): false when that
// would pass the bound (but a call always does one unit) or too many bad
// blocks are found.
func (sc *scrubber) take(ctx context.Context, n int, unit bool) (bool, error) {
	if len(sc.rep.Bad) >= maxScrubBad {
		return false, nil
	}
	if sc.limit > 0 && sc.units > 0 && sc.rep.Bytes+int64(n) > sc.limit {
		return false, nil
	}
	if unit {
		sc.units++
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	sc.rep.Bytes += int64(n)
	if sc.wait == nil {
		return true, nil
	}
	if n < 4096 {
		if sc.owed += n; sc.owed < 64<<10 {
			return true, nil
		}
		n, sc.owed = sc.owed, 0
	}
	return true, sc.wait(ctx, n)
}

func (sc *scrubber) flushWait(ctx context.Context) error {
	if sc.wait == nil || sc.owed == 0 {
		return nil
	}
	n := sc.owed
	sc.owed = 0
	return sc.wait(ctx, n)
}

func (sc *scrubber) bad(b BadBlock) {
	if sc.seen[b.ID] {
		return
	}
	sc.seen[b.ID] = true
	sc.rep.Bad = append(sc.rep.Bad, b)
}

// scrubRegion is a byte range of a pack that could not be checked record
// by record (a frame that fails its checksum, a header that does not
// parse, a record cut short): the index entries inside are checked one by
// one.
type scrubRegion struct {
	pack     uint32
	from, to uint64
}

// packs is phase 0 from cur; it returns true when every pack was read.
func (sc *scrubber) packs(ctx context.Context, cur *ScrubCursor) (bool, error) {
	s := sc.s
	committed, err := s.idx.packLengths()
	if err != nil {
		return false, err
	}
	ids := make([]uint32, 0, len(committed))
	for id := range committed {
		if id >= cur.Pack {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	var regions []scrubRegion
	done := true
	for _, id := range ids {
		from := int64(0)
		if id == cur.Pack {
			from = cur.Offset
		}
		next, fin, err := sc.pack(ctx, id, from, committed[id], &regions)
		if err != nil {
			return false, err
		}
		if !fin {
			*cur = ScrubCursor{Phase: scrubPacks, Pack: id, Offset: next}
			done = false
			break
		}
	}
	if done && len(ids) > 0 {
		*cur = ScrubCursor{Phase: scrubPacks, Pack: ids[len(ids)-1] + 1}
	}
	if err := sc.regions(ctx, regions); err != nil {
		return false, err
	}
	return done, nil
}

// pack reads pack id from offset from up to size; it returns where it
// stopped and whether it reached the end.
func (sc *scrubber) pack(ctx context.Context, id uint32, from, size int64, regions *[]scrubRegion) (int64, bool, error) {
	s := sc.s
	path := filepath.Join(s.dir, packsDir, packName(id))
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		// Removed by GC since the listing, or lost: the index phase
		// reports the entries that name it.
		return 0, true, nil
	}
	if err != nil {
		return from, false, fmt.Errorf("scrub: %w", err)
	}
	defer f.Close()
	if from < packHeaderSize {
		if ok, err := sc.take(ctx, packHeaderSize, false); !ok || err != nil {
			return from, false, err
		}
		hdr := make([]byte, packHeaderSize)
		if _, err := f.ReadAt(hdr, 0); err != nil {
			s.log.Warn("scrub: pack header unreadable", "pack", path, "err", err)
		} else if n, err := decodePackHeader(hdr); err != nil || n != id {
			s.log.Warn("scrub: pack header damaged (no block depends on it)", "pack", path, "err", err, "names", n)
		}
		from = packHeaderSize
	}
	var rec, plainBuf, sealBuf []byte
	h := make([]byte, frameHeaderSize)
	for off := from; off < size; {
		if _, err := f.ReadAt(h, off); err != nil {
			*regions = append(*regions, scrubRegion{id, uint64(off), uint64(size)})
			return size, true, nil
		}
		n, err := frameSizeFromHeader(h)
		if err != nil || off+int64(n) > size {
			*regions = append(*regions, scrubRegion{id, uint64(off), uint64(size)})
			return size, true, nil
		}
		if ok, err := sc.take(ctx, n, true); !ok || err != nil {
			return off, false, err
		}
		if cap(rec) < n {
			rec = make([]byte, n)
		}
		rec = rec[:n]
		if _, err := f.ReadAt(rec, off); err != nil {
			*regions = append(*regions, scrubRegion{id, uint64(off), uint64(size)})
			return size, true, nil
		}
		sc.rep.Frames++
		fr, err := decodeFrame(rec)
		if err != nil {
			*regions = append(*regions, scrubRegion{id, uint64(off), uint64(off) + uint64(n)})
			off += int64(n)
			continue
		}
		plain, perr := s.codec.plain(fr, plainBuf[:0], &sealBuf)
		if perr == nil && fr.codec != codecRaw {
			plainBuf = plain
		}
		var po uint32
		for slot, e := range fr.entries {
			eoff := po
			po += e.len
			if fr.kind == kindPoint {
				continue // RebuildIndex's copies: Verify checks them
			}
			berr := perr
			if berr == nil {
				if fr.kind == kindBlock {
					sc.rep.Blocks++
				}
				if got := s.h.sum(plain[eoff : eoff+e.len]); got != e.id {
					berr = fmt.Errorf("%w: block hashes to %s", errCorrupt, got.Short())
				}
			}
			if berr == nil {
				continue
			}
			// Damage matters only where the index names this record.
			loc, err := s.w.locate(ref{fr.kind, e.id})
			if err != nil || loc.pack != id || loc.offset != uint64(off) || int(loc.slot) != slot {
				continue
			}
			sc.bad(BadBlock{ID: e.id, Path: path, Offset: off, Page: fr.kind == kindPage, Err: &CorruptError{Path: path, Offset: off, Block: e.id, Err: berr}})
		}
		off += int64(n)
	}
	return size, true, nil
}

// regions checks the index entries inside damaged regions one by one,
// each by a fresh read of the record the index names now.
func (sc *scrubber) regions(ctx context.Context, regions []scrubRegion) error {
	if len(regions) == 0 {
		return nil
	}
	s := sc.s
	for _, k := range []kind{kindBlock, kindPage} {
		err := s.idx.scan(ctx, k, func(id ID, loc location) error {
			for _, r := range regions {
				if loc.pack == r.pack && loc.offset >= r.from && loc.offset < r.to {
					sc.confirm(k, id)
					break
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("scrub: %w", err)
		}
	}
	return nil
}

// confirm reads object id as the index names it now and reports it if it
// cannot be served.
func (sc *scrubber) confirm(k kind, id ID) {
	s := sc.s
	sc.r.s, sc.r.noRepair = s, true
	b, err := sc.r.get(ref{k, id})
	if err == nil {
		got := s.h.sum(b)
		if got == id {
			return
		}
		err = &CorruptError{Path: filepath.Join(s.dir, packsDir), Offset: -1, Block: id, Err: fmt.Errorf("%w: block hashes to %s", errCorrupt, got.Short())}
	}
	if errors.Is(err, ErrNotFound) {
		return // gone from the index meanwhile: phase 2 decides
	}
	bb, ok := s.heal.badBlock(id, err)
	if !ok {
		return // not damage (a closed store, say): the next cycle sees
	}
	var ce *CorruptError
	if errors.As(err, &ce) && ce.Offset < 0 {
		if loc, lerr := s.w.locate(ref{k, id}); lerr == nil {
			bb.Path, bb.Offset = filepath.Join(s.dir, packsDir, packName(loc.pack)), int64(loc.offset)
		}
	}
	bb.Page = k == kindPage
	sc.bad(bb)
}

// index is phase 1 from cur: every block and page entry names a committed
// pack that is there and a record inside its length.
func (sc *scrubber) index(ctx context.Context, cur *ScrubCursor) (bool, error) {
	s := sc.s
	start, _ := hex.DecodeString(cur.Key)
	committed, err := s.idx.packLengths()
	if err != nil {
		return false, err
	}
	sizes := map[uint32]int64{} // file sizes; -1: no file
	fileSize := func(p uint32) int64 {
		if n, ok := sizes[p]; ok {
			return n
		}
		n := int64(-1)
		if fi, err := os.Stat(filepath.Join(s.dir, packsDir, packName(p))); err == nil {
			n = fi.Size()
		}
		sizes[p] = n
		return n
	}
	for _, k := range []kind{kindBlock, kindPage} {
		prefix := ref{kind: k}.key()[0]
		lower := []byte{prefix}
		if len(start) > 0 {
			if start[0] > prefix {
				continue
			}
			if start[0] == prefix {
				lower = start
			}
		}
		it, err := s.idx.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: []byte{prefix + 1}})
		if err != nil {
			return false, s.idx.err("scrub index", err)
		}
		for it.First(); it.Valid(); it.Next() {
			key := it.Key()
			if ok, err := sc.take(ctx, scrubEntryCost, true); !ok || err != nil {
				*cur = ScrubCursor{Phase: scrubIndex, Key: hex.EncodeToString(key)}
				it.Close()
				return false, err
			}
			if len(key) != 1+IDSize {
				continue
			}
			id := ID(key[1:])
			v, err := s.idx.openValue(key, it.Value())
			var loc location
			if err == nil {
				loc, err = decodeLocation(v)
			}
			if err != nil || committed[loc.pack] == 0 || loc.offset+uint64(loc.recLen) > uint64(min(committed[loc.pack], fileSize(loc.pack))) {
				sc.confirmEntry(k, id)
			}
		}
		if err := it.Close(); err != nil {
			return false, s.idx.err("scrub index", err)
		}
	}
	return true, nil
}

// confirmEntry checks, under packs.rm (GC removes no pack the index names
// then), that the entry the index has now for id names a pack and a
// record that are there.
func (sc *scrubber) confirmEntry(k kind, id ID) {
	s := sc.s
	s.packs.rm.RLock()
	defer s.packs.rm.RUnlock()
	loc, err := s.w.locate(ref{k, id})
	if errors.Is(err, ErrNotFound) {
		return
	}
	if err != nil {
		if bb, ok := s.heal.badBlock(id, err); ok {
			bb.Page = k == kindPage
			sc.bad(bb)
		}
		return
	}
	path := filepath.Join(s.dir, packsDir, packName(loc.pack))
	var size int64 = -1
	if fi, err := os.Stat(path); err == nil {
		size = fi.Size()
	}
	var committed int64
	if v, closer, err := s.idx.db.Get(packKey(loc.pack)); err == nil {
		if len(v) == 8 {
			committed = int64(binary.LittleEndian.Uint64(v))
		}
		closer.Close()
	}
	var why string
	switch {
	case size < 0:
		why = "the pack file is missing"
	case committed == 0 && !sc.pending(loc.pack):
		why = "the pack is not committed"
	case int64(loc.offset)+int64(loc.recLen) > size:
		why = fmt.Sprintf("the record ends at %d, past the pack's %d bytes", int64(loc.offset)+int64(loc.recLen), size)
	default:
		return
	}
	sc.bad(BadBlock{ID: id, Path: path, Offset: int64(loc.offset), Missing: true, Page: k == kindPage,
		Err: &CorruptError{Path: path, Offset: int64(loc.offset), Block: id, Err: fmt.Errorf("%w: %w: %s", errCorrupt, errGone, why), Hint: "restore the block from another site"}})
}

// pending reports whether pack p is being written (not yet committed).
func (sc *scrubber) pending(p uint32) bool {
	w := sc.s.w
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, d := range w.dirty {
		if d.id == p {
			return true
		}
	}
	return w.pack != nil && w.pack.id == p
}

// maps is phase 2 from cur: every block a point map names is in the index,
// and every page of the maps can be read.
func (sc *scrubber) maps(ctx context.Context, cur *ScrubCursor) (bool, error) {
	s := sc.s
	start, _ := hex.DecodeString(cur.Key)
	pts, err := s.Points(ctx, "")
	if err != nil {
		return false, err
	}
	for _, p := range pts {
		key := pointKey(p.Time, p.ID)
		vol, block := 0, int64(0)
		switch c := bytes.Compare(key, start); {
		case c < 0:
			continue
		case c == 0:
			vol, block = int(cur.Pack), cur.Offset
		}
		release, err := s.Holds().Pin(p.ID)
		if errors.Is(err, ErrNotFound) {
			continue // deleted since the listing
		}
		if err != nil {
			return false, err
		}
		for vi := vol; vi < len(p.Volumes); vi++ {
			at, fin, err := sc.volume(ctx, p, p.Volumes[vi], block)
			if err != nil || !fin {
				release()
				*cur = ScrubCursor{Phase: scrubMaps, Key: hex.EncodeToString(key), Pack: uint32(vi), Offset: at}
				return false, err
			}
			block = 0
		}
		release()
	}
	return true, nil
}

// volume walks v's map from block from; it returns where it stopped and
// whether it reached the end.
func (sc *scrubber) volume(ctx context.Context, p Point, v VolumeState, from int64) (int64, bool, error) {
	s := sc.s
	g := v.Geometry()
	if g.Blocks() == 0 || from >= g.Blocks() {
		return 0, true, nil
	}
	stop := int64(-1) // the first block not checked, when the bound hit
	var walk func(id ID, level int, index int64) error
	walk = func(id ID, level int, index int64) error {
		first := index * coverage(level)
		if id.IsZero() || first+coverage(level) <= from {
			return nil
		}
		whole := first >= from
		if _, ok := sc.visited[id]; ok && whole {
			return nil
		}
		count := childCount(g.Blocks(), level, index)
		if whole {
			// A page partly done was charged by the slice that began
			// it: a resumed slice always gets past it.
			cost := pageHeaderSize + count*IDSize
			if level == 0 {
				cost += count * scrubEntryCost
			}
			ok, err := sc.take(ctx, cost, level == 0)
			if err != nil {
				return err
			}
			if !ok {
				stop = first
				return errScrubStop
			}
		}
		ids, err := s.maps.load(id, level, count)
		if err != nil {
			if bb, ok := s.heal.badBlock(id, err); ok {
				bb.Page = true
				bb.Err = fmt.Errorf("point %s volume %s: map page at level %d index %d: %w", p.ID, v.Name, level, index, err)
				sc.bad(bb)
				return nil
			}
			return err
		}
		for i, c := range ids {
			if level > 0 {
				if err := walk(c, level-1, index*fanout+int64(i)); err != nil {
					return err
				}
				continue
			}
			n := first + int64(i)
			if c.IsZero() || n < from {
				continue
			}
			if _, ok := s.w.buffered(ref{kindBlock, c}); ok {
				continue
			}
			has, err := s.idx.has(ref{kindBlock, c})
			if err != nil {
				return err
			}
			if !has {
				path := filepath.Join(s.dir, indexDir)
				sc.bad(BadBlock{ID: c, Path: path, Offset: -1, Missing: true,
					Err: &CorruptError{Path: path, Offset: -1, Block: c, Err: fmt.Errorf("%w: point %s volume %s block %d is not in the store", errCorrupt, p.ID, v.Name, n),
						Hint: "restore the block from another site, or prune the points that need it"}})
			}
		}
		if whole {
			sc.visited[id] = struct{}{}
		}
		return nil
	}
	err := walk(v.Root, g.rootLevel(), 0)
	if errors.Is(err, errScrubStop) {
		return stop, false, nil
	}
	if err != nil {
		return from, false, err
	}
	return 0, true, nil
}

// errScrubStop ends a map walk at the slice's bound.
var errScrubStop = errors.New("scrub: bound reached")
