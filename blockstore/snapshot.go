package blockstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"

	"golang.org/x/sync/errgroup"
)

// DefaultBlockSize is the block size of a new volume when none is given.
const DefaultBlockSize = 64 << 10

// Source is a volume to ingest: an image file or a block device.
type Source interface {
	io.ReaderAt
	// Size returns the current size in bytes; it is checked again after the
	// last read, so that a source that changes size is refused.
	Size() (int64, error)
}

// DataSeeker is an optional interface of a Source that knows its holes (a
// sparse file): SeekData returns the offset of the first data at or after
// off, or io.EOF when only holes follow (lseek SEEK_DATA). Snapshot reads no
// hole it is told of.
type DataSeeker interface {
	SeekData(off int64) (int64, error)
}

// holeFinder answers whether a range of the source is all hole. It is safe
// for concurrent use and asks the source again only past its last answer.
type holeFinder struct {
	src  Source
	size int64
	mu   sync.Mutex
	from int64 // the answer below is valid for queries at or after from
	data int64 // first data at or after from (size when none)
}

func (h *holeFinder) isHole(off, length int64) (bool, error) {
	ds, ok := h.src.(DataSeeker)
	if !ok {
		return false, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if off < h.from || off > h.data || h.data == 0 && h.from == 0 {
		d, err := ds.SeekData(off)
		if errors.Is(err, io.EOF) {
			d = h.size
		} else if err != nil {
			return false, err
		}
		h.from, h.data = off, d
	}
	return h.data >= off+length, nil
}

// SnapshotOptions control Snapshot.
type SnapshotOptions struct {
	// Volume names the volume; it is also the point's group.
	Volume string
	// BlockSize of a new volume; 0 means the volume's existing block size or
	// DefaultBlockSize. A different block size than the volume has is an error.
	BlockSize int
	// Name optionally names the point.
	Name string
	// Progress, if set, is called with bytes read so far and the total.
	Progress func(done, total int64)
}

// SnapshotStats describe the work a snapshot did.
type SnapshotStats struct {
	Blocks, Zero, Unchanged, Changed int64
}

// Snapshot reads src completely and commits it as a new point of the volume.
// Blocks whose ID equals the volume's previous point are neither looked up nor
// written; new blocks are hashed and compressed on all cores. Memory is
// bounded by the number of cores, not by the volume size.
func (s *Store) Snapshot(ctx context.Context, src Source, o SnapshotOptions) (Point, SnapshotStats, error) {
	var st SnapshotStats
	defer s.Holds().Lease()()
	if err := ValidName("volume", o.Volume); err != nil {
		return Point{}, st, err
	}
	size, err := src.Size()
	if err != nil {
		return Point{}, st, fmt.Errorf("snapshot: source size: %w", err)
	}
	// The previous point is pinned: blocks equal to its are not looked up,
	// so GC must not lose them while the snapshot runs.
	var base *VolumeState
	if bp, v, err := s.Resolve(ctx, o.Volume, ""); err == nil {
		if release, err := s.Holds().Pin(bp.ID); err == nil {
			defer release()
			base = &v
		} else if !errors.Is(err, ErrNotFound) {
			return Point{}, st, err
		}
	} else if !errors.Is(err, ErrNotFound) {
		return Point{}, st, err
	}
	bs := o.BlockSize
	switch {
	case base != nil && bs != 0 && bs != base.BlockSize:
		return Point{}, st, fmt.Errorf("snapshot: volume %q has block size %d; --block-size %d would start a new volume under another name", o.Volume, base.BlockSize, bs)
	case base != nil:
		bs = base.BlockSize
	case bs == 0:
		bs = DefaultBlockSize
	}
	g := Geometry{Size: size, BlockSize: bs}
	if err := g.Validate(); err != nil {
		return Point{}, st, fmt.Errorf("snapshot: %w", err)
	}
	var baseIDs func(first int64, n int) ([]ID, error)
	if base != nil && base.Size == size {
		it := newLeafIter(ctx, s.maps, *base)
		baseIDs = it.next
	}
	w := s.maps.newWriter(g)
	holes := &holeFinder{src: src, size: size}
	segBlocks := max(1, min(fanout, (4<<20)/bs))
	type job struct {
		seq   int64
		first int64
		buf   []byte
		n     int
		base  []ID
		ids   []ID
		stats SnapshotStats
	}
	workers := runtime.GOMAXPROCS(0)
	jobs := make(chan *job, workers)
	done := make(chan *job, workers)
	free := make(chan *job, 2*workers+2)
	for range cap(free) {
		free <- &job{buf: make([]byte, segBlocks*bs), ids: make([]ID, segBlocks)}
	}
	g2, gctx := errgroup.WithContext(ctx)
	// Dispatcher: segments in order, with the previous point's IDs; the
	// workers read them.
	g2.Go(func() error {
		defer close(jobs)
		var seq int64
		for first := int64(0); first < g.Blocks(); first += int64(segBlocks) {
			var j *job
			select {
			case j = <-free:
			case <-gctx.Done():
				return gctx.Err()
			}
			j.seq, j.first = seq, first
			seq++
			j.n = int(min(int64(segBlocks), g.Blocks()-first))
			j.base = nil
			if baseIDs != nil {
				ids, err := baseIDs(first, j.n)
				if err != nil {
					return fmt.Errorf("snapshot: read previous map: %w", err)
				}
				j.base = ids
			}
			select {
			case jobs <- j:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	// Workers: hash, compare with the previous point, store what is new.
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		g2.Go(func() error {
			defer wg.Done()
			var blocks [][]byte
			var ids []ID
			for j := range jobs {
				off := j.first * int64(bs)
				length := min(int64(j.n*bs), size-off)
				hole, err := holes.isHole(off, length)
				if err != nil {
					return fmt.Errorf("snapshot: find holes in source: %w", err)
				}
				if hole {
					clear(j.buf[:length])
				} else if _, err := src.ReadAt(j.buf[:length], off); err != nil {
					if errors.Is(err, io.EOF) {
						return fmt.Errorf("snapshot: source ended before %d bytes, was %d when the snapshot began: it changed size", off+length, size)
					}
					return fmt.Errorf("snapshot: read source at offset %d: %w", off, err)
				}
				j.stats = SnapshotStats{Blocks: int64(j.n)}
				blocks, ids = blocks[:0], ids[:0]
				for i := 0; i < j.n; i++ {
					b := j.buf[i*bs : i*bs+g.BlockLen(j.first+int64(i))]
					var id ID
					if !isZero(b) {
						id = s.h.sum(b)
					}
					j.ids[i] = id
					switch {
					case id.IsZero():
						j.stats.Zero++
					case j.base != nil && j.base[i] == id:
						j.stats.Unchanged++
					default:
						j.stats.Changed++
						blocks, ids = append(blocks, b), append(ids, id)
					}
				}
				if err := s.w.putMissing(gctx, blocks, ids); err != nil {
					return err
				}
				select {
				case done <- j:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			return nil
		})
	}
	go func() { wg.Wait(); close(done) }()
	// Collector: blocks into the map, in order.
	var root ID
	g2.Go(func() error {
		waiting := map[int64]*job{}
		var next int64
		for j := range done {
			waiting[j.seq] = j
			for {
				j, ok := waiting[next]
				if !ok {
					break
				}
				delete(waiting, next)
				next++
				for _, id := range j.ids[:j.n] {
					if err := w.add(id); err != nil {
						return err
					}
				}
				st.Blocks += j.stats.Blocks
				st.Zero += j.stats.Zero
				st.Unchanged += j.stats.Unchanged
				st.Changed += j.stats.Changed
				if o.Progress != nil {
					o.Progress(min(size, (j.first+int64(j.n))*int64(bs)), size)
				}
				free <- j
			}
		}
		if gctx.Err() != nil {
			return gctx.Err()
		}
		var err error
		root, err = w.finish()
		return err
	})
	if err := g2.Wait(); err != nil {
		return Point{}, st, err
	}
	if now, err := src.Size(); err != nil || now != size {
		return Point{}, st, fmt.Errorf("snapshot: source is now %d bytes, was %d when the snapshot began: it changed size; nothing was committed", now, size)
	}
	v := VolumeState{Name: o.Volume, Root: root, Size: size, BlockSize: bs, Used: st.Blocks - st.Zero}
	p, err := s.CommitPoint(ctx, Point{Name: o.Name, Group: o.Volume, Volumes: []VolumeState{v}})
	return p, st, err
}

// leafIter yields the block IDs of a volume sequentially.
type leafIter struct {
	m     *mapPages
	ctx   context.Context
	v     VolumeState
	leaf  int64 // index of the cached leaf, -1 none
	ids   []ID
	level [][]ID // cached interior pages by level
	index []int64
}

func newLeafIter(ctx context.Context, m *mapPages, v VolumeState) *leafIter {
	r := v.Geometry().rootLevel()
	it := &leafIter{m: m, ctx: ctx, v: v, leaf: -1, level: make([][]ID, r+1), index: make([]int64, r+1)}
	for i := range it.index {
		it.index[i] = -1
	}
	return it
}

// next returns the IDs of blocks first to first+n-1.
func (it *leafIter) next(first int64, n int) ([]ID, error) {
	out := make([]ID, 0, n)
	for b := first; b < first+int64(n); {
		leaf := b / fanout
		if leaf != it.leaf {
			ids, err := it.page(0, leaf)
			if err != nil {
				return nil, err
			}
			it.leaf, it.ids = leaf, ids
		}
		take := min(first+int64(n), (leaf+1)*fanout) - b
		start := b - leaf*fanout
		out = append(out, it.ids[start:start+take]...)
		b += take
	}
	return out, nil
}

// page returns the IDs of the page at level and index, descending from the
// root through cached interior pages.
func (it *leafIter) page(level int, index int64) ([]ID, error) {
	g := it.v.Geometry()
	root := g.rootLevel()
	if level == root {
		return it.m.load(it.v.Root, root, childCount(g.Blocks(), root, 0))
	}
	parentIdx := index / fanout
	if it.index[level+1] != parentIdx {
		ids, err := it.page(level+1, parentIdx)
		if err != nil {
			return nil, err
		}
		it.level[level+1], it.index[level+1] = ids, parentIdx
	}
	id := it.level[level+1][index%fanout]
	return it.m.load(id, level, childCount(g.Blocks(), level, index))
}
