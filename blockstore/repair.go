package blockstore

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
)

// Repair and transparent repair (doc.go, "Damage and repair").

// errGone is wrapped by the errors of a record whose pack file, or whose
// bytes in it, are gone: the block is missing, not merely damaged.
var errGone = errors.New("gone")

// BadBlock is a block the store cannot serve: its record is damaged (bad
// CRC, wrong hash, cut short) or it is missing (a point map names it, the
// index does not have it, or the index names a pack/record that is gone).
type BadBlock struct {
	ID ID
	// Path and Offset say where: the pack file and the record's offset in
	// it, or the index directory and -1 when the index lacks the block.
	Path    string
	Offset  int64
	Missing bool
	// Page is set when the object is a map page, not a volume block (it
	// repairs the same way; Users knows nothing of it).
	Page bool
	Err  error
}

func (b BadBlock) String() string {
	what := "block"
	if b.Page {
		what = "map page"
	}
	state := "damaged"
	if b.Missing {
		state = "missing"
	}
	return fmt.Sprintf("%s %s %s (%s@%d): %v", what, b.ID, state, b.Path, b.Offset, b.Err)
}

// healer is the read path's repair: Options.Fetch and OnDamage, and the
// counts Stats reports.
type healer struct {
	s        *Store
	fetch    func(ctx context.Context, id ID) ([]byte, error)
	onDamage func(b BadBlock, repaired bool)

	repaired, unrepaired atomic.Int64
}

// badBlock classifies a read error of block id: damage (or a missing
// block), or not (closed store, I/O trouble, cancellation).
func (h *healer) badBlock(id ID, err error) (BadBlock, bool) {
	var ce *CorruptError
	switch {
	case errors.As(err, &ce) && !errors.Is(err, ErrClosed):
		if ce.Block.IsZero() {
			ce.Block = id
		}
		return BadBlock{ID: id, Path: ce.Path, Offset: ce.Offset, Missing: errors.Is(err, errGone), Err: err}, true
	case errors.Is(err, ErrNotFound):
		return BadBlock{ID: id, Path: filepath.Join(h.s.dir, indexDir), Offset: -1, Missing: true, Err: err}, true
	}
	return BadBlock{}, false
}

// readFailed is called when a read of block id failed with err: if that is
// damage, it fetches the block (Options.Fetch), repairs it and returns the
// data; otherwise, or when that fails, it returns err.
func (h *healer) readFailed(ctx context.Context, id ID, err error) ([]byte, error) {
	b, ok := h.badBlock(id, err)
	if !ok {
		return nil, err
	}
	if ctx == nil {
		ctx = context.Background()
	}
	if h.fetch == nil {
		h.report(b, false)
		return nil, err
	}
	data, ferr := h.fetch(ctx, id)
	if ferr == nil {
		ferr = h.s.Repair(ctx, id, data)
	}
	if ferr != nil {
		h.s.log.Warn("repair of a damaged block failed", "block", id, "err", ferr, "damage", err)
		h.report(b, false)
		return nil, err
	}
	h.s.log.Warn("damaged block repaired from another copy", "block", id, "damage", err)
	h.report(b, true)
	return data, nil
}

func (h *healer) report(b BadBlock, repaired bool) {
	if !repaired {
		h.unrepaired.Add(1)
	}
	if h.onDamage != nil {
		h.onDamage(b, repaired)
	}
}

// Repair stores data as block id although the index may already name a
// (damaged) record for it: it checks that the keyed hash of data is id,
// writes a fresh record to the current pack, re-points the index entry and
// is durable when it returns. The damaged record becomes garbage for GC. A
// map page (an id the index knows only as a page) is repaired as a page.
func (s *Store) Repair(ctx context.Context, id ID, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if id.IsZero() {
		return fmt.Errorf("repair: the zero block is never stored")
	}
	if len(data) == 0 || len(data) > MaxBlockSize {
		return fmt.Errorf("repair block %s: %d bytes, want 1..%d", id, len(data), MaxBlockSize)
	}
	if got := s.h.sum(data); got != id {
		return fmt.Errorf("repair block %s: refused: the data hashes to %s", id, got)
	}
	k := kindBlock
	if page, err := s.idx.has(ref{kindPage, id}); err != nil {
		return err
	} else if page {
		if blk, err := s.idx.has(ref{kindBlock, id}); err != nil {
			return err
		} else if !blk {
			k = kindPage
		}
	}
	// The lookup notes id in a running GC's filter first: its sweep then
	// cannot delete the entry this repair writes.
	if _, err := s.w.has(ref{k, id}); err != nil {
		return err
	}
	if err := s.w.writeFrames(k, [][]byte{data}, []ID{id}, []int{0}, true); err != nil {
		return fmt.Errorf("repair block %s: %w", id, err)
	}
	if err := s.w.flush(); err != nil {
		return fmt.Errorf("repair block %s: %w", id, err)
	}
	s.heal.repaired.Add(1)
	return nil
}

// BlockUse is where a point references a block: for the clear "lost"
// error (the service is the caller's; this gives point, volume and the
// byte range in the volume).
type BlockUse struct {
	ID             ID
	Point          string
	Volume         string
	Offset, Length int64
}

// Users says which points reference the ids and where, oldest point first,
// in volume order. It walks every point's map once per distinct page. Map
// pages it cannot read are skipped; the error then names them, and the
// uses found are returned all the same.
func (s *Store) Users(ctx context.Context, ids []ID) ([]BlockUse, error) {
	want := make(map[ID]bool, len(ids))
	for _, id := range ids {
		if !id.IsZero() {
			want[id] = true
		}
	}
	if len(want) == 0 {
		return nil, nil
	}
	pts, err := s.Points(ctx, "")
	if err != nil {
		return nil, err
	}
	type hit struct {
		rel int64 // block number relative to the page's first block
		id  ID
	}
	// memo holds, per page (at its level), the hits below it.
	type pageAt struct {
		id    ID
		level int
	}
	memo := map[pageAt][]hit{}
	var errs []error
	var walk func(g Geometry, id ID, level int, index int64) ([]hit, error)
	walk = func(g Geometry, id ID, level int, index int64) ([]hit, error) {
		if id.IsZero() {
			return nil, nil
		}
		if h, ok := memo[pageAt{id, level}]; ok {
			return h, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		kids, err := s.maps.load(id, level, childCount(g.Blocks(), level, index))
		if err != nil {
			errs = append(errs, err)
			return nil, nil // not memoized: another volume may hold it whole
		}
		var out []hit
		for i, c := range kids {
			if level == 0 {
				if want[c] {
					out = append(out, hit{int64(i), c})
				}
				continue
			}
			sub, err := walk(g, c, level-1, index*fanout+int64(i))
			if err != nil {
				return nil, err
			}
			base := int64(i) * coverage(level-1)
			for _, h := range sub {
				out = append(out, hit{base + h.rel, h.id})
			}
		}
		memo[pageAt{id, level}] = out
		return out, nil
	}
	var uses []BlockUse
	for _, p := range pts {
		for _, v := range p.Volumes {
			g := v.Geometry()
			if g.Blocks() == 0 {
				continue
			}
			hits, err := walk(g, v.Root, g.rootLevel(), 0)
			if err != nil {
				return uses, err
			}
			for _, h := range hits {
				uses = append(uses, BlockUse{ID: h.id, Point: p.ID, Volume: v.Name,
					Offset: h.rel * int64(g.BlockSize), Length: int64(g.BlockLen(h.rel))})
			}
		}
	}
	if len(errs) > 0 {
		return uses, fmt.Errorf("users: %d map pages could not be read: %w", len(errs), errors.Join(errs...))
	}
	return uses, nil
}
