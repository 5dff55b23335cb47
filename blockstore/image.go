package blockstore

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"sync"
)

// Image is a volume at a point as a random-access disk image: ReadAt
// reads through the block map, blocks come from the packs, holes read as
// zeros. It holds the block map in memory (32 bytes per block) and is safe
// for concurrent use. The caller keeps the store open. Until Close, the
// image's volume is a GC root: its blocks stay even if its point is
// deleted meanwhile (a restore or an export of a point being thinned).
type Image struct {
	s     *Store
	v     VolumeState
	bs    int64
	ids   []ID
	pool  sync.Pool // *Reader: each caches the frame it read last
	root  uint64    // in s.roots
	once  sync.Once
	clean runtime.Cleanup
}

// Extent is a byte range of an image.
type Extent struct{ Off, Len int64 }

// OpenImage loads v's block map.
func (s *Store) OpenImage(ctx context.Context, v VolumeState) (*Image, error) {
	g := v.Geometry()
	if err := g.Validate(); err != nil {
		return nil, fmt.Errorf("open image: %w", err)
	}
	im := &Image{s: s, v: v, bs: int64(v.BlockSize), ids: make([]ID, g.Blocks())}
	// A root before the map is read: a GC that starts from now on marks it.
	im.root = s.roots.add(v)
	err := s.WalkLeaves(ctx, v, func(first int64, ids []ID) error {
		copy(im.ids[first:], ids)
		return nil
	})
	if err != nil {
		s.roots.remove(im.root)
		return nil, fmt.Errorf("open image of %s: %w", v.Name, err)
	}
	im.pool.New = func() any { return s.NewReader() }
	// An image dropped without Close stops being a root when collected.
	roots, id := &s.roots, im.root
	im.clean = runtime.AddCleanup(im, func(id uint64) { roots.remove(id) }, id)
	return im, nil
}

// Close ends the image's use: its volume is no GC root any more. Reads
// after Close may fail once a GC ran. Close may be called more than once.
func (im *Image) Close() error {
	im.once.Do(func() {
		im.clean.Stop()
		im.s.roots.remove(im.root)
	})
	return nil
}

// Size returns the image's size in bytes.
func (im *Image) Size() int64 { return im.v.Size }

// Volume returns the volume state the image shows.
func (im *Image) Volume() VolumeState { return im.v }

// Extents returns the ranges that hold non-zero blocks, merged, in order.
func (im *Image) Extents() []Extent {
	var out []Extent
	for i, id := range im.ids {
		if id.IsZero() {
			continue
		}
		off := int64(i) * im.bs
		n := min(im.bs, im.v.Size-off)
		if k := len(out); k > 0 && out[k-1].Off+out[k-1].Len == off {
			out[k-1].Len += n
			continue
		}
		out = append(out, Extent{off, n})
	}
	return out
}

// ReadAt reads len(p) bytes at off; past the end it returns io.EOF.
func (im *Image) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("image %s: negative offset %d", im.v.Name, off)
	}
	if off >= im.v.Size {
		return 0, io.EOF
	}
	want := len(p)
	if rest := im.v.Size - off; int64(want) > rest {
		p = p[:rest]
	}
	r := im.pool.Get().(*Reader)
	defer im.pool.Put(r)
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		blk := pos / im.bs
		in := pos % im.bs
		k := int(min(int64(len(p)-n), im.bs-in))
		id := im.ids[blk]
		if id.IsZero() {
			clear(p[n : n+k])
		} else {
			b, err := r.Get(id)
			if err != nil {
				return n, fmt.Errorf("image %s: block %d: %w", im.v.Name, blk, err)
			}
			if int64(len(b)) < in+int64(k) {
				// A block shorter than the block size ends in zeros
				// (the last block of a volume whose size is not a
				// multiple of it).
				c := copy(p[n:n+k], b[min(int64(len(b)), in):])
				clear(p[n+c : n+k])
			} else {
				copy(p[n:n+k], b[in:in+int64(k)])
			}
		}
		n += k
	}
	if n < want {
		return n, io.EOF
	}
	return n, nil
}
