package blockstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/time/rate"
)

// GC's mark walk and its copy of live objects (steps 4 and 6 of gc.go).

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
