package blockstore

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"sync"
)

// fanout is the number of IDs in a full map page, leaf or interior.
const fanout = 256

const (
	pageHeaderSize = 8
	pageLeaf       = 0
	pageInterior   = 1
	maxPageLevel   = 8 // 256^9 blocks is more than any volume
)

var pageMagic = [4]byte{'L', 'B', 'M', '1'}

// Geometry is the shape of a volume: its size in bytes and its block size.
type Geometry struct {
	Size      int64
	BlockSize int
}

// Blocks returns the number of blocks, the last one possibly short.
func (g Geometry) Blocks() int64 {
	return (g.Size + int64(g.BlockSize) - 1) / int64(g.BlockSize)
}

// BlockLen returns the length of block n.
func (g Geometry) BlockLen(n int64) int {
	if rest := g.Size - n*int64(g.BlockSize); rest < int64(g.BlockSize) {
		return int(rest)
	}
	return g.BlockSize
}

// rootLevel returns the level of the root page: 0 when one leaf covers the
// volume.
func (g Geometry) rootLevel() int {
	l, cover := 0, int64(fanout)
	for cover < g.Blocks() {
		l++
		cover *= fanout
	}
	return l
}

// Validate checks the geometry against the limits.
func (g Geometry) Validate() error {
	if g.BlockSize < MinBlockSize || g.BlockSize > MaxBlockSize || g.BlockSize&(g.BlockSize-1) != 0 {
		return fmt.Errorf("block size %d: want a power of two from %d to %d", g.BlockSize, MinBlockSize, MaxBlockSize)
	}
	if g.Size < 0 || g.Size > 1<<50 {
		return fmt.Errorf("volume size %d: want 0 to 1 PiB", g.Size)
	}
	return nil
}

// coverage returns how many blocks one page at level covers.
func coverage(level int) int64 {
	c := int64(fanout)
	for ; level > 0; level-- {
		c *= fanout
	}
	return c
}

func encodePage(level int, ids []ID) []byte {
	p := make([]byte, pageHeaderSize, pageHeaderSize+len(ids)*IDSize)
	copy(p, pageMagic[:])
	if level > 0 {
		p[4] = pageInterior
	}
	p[5] = byte(level)
	binary.LittleEndian.PutUint16(p[6:], uint16(len(ids)))
	for _, id := range ids {
		p = append(p, id[:]...)
	}
	return p
}

// decodePage checks a page and returns its level and IDs.
func decodePage(p []byte) (level int, ids []ID, err error) {
	if len(p) < pageHeaderSize {
		return 0, nil, corruptf("map page: %d bytes", len(p))
	}
	if [4]byte(p[:4]) != pageMagic {
		return 0, nil, corruptf("map page magic %q", p[:4])
	}
	level = int(p[5])
	if level > maxPageLevel {
		return 0, nil, corruptf("map page level %d", level)
	}
	if kind := p[4]; (kind == pageLeaf) != (level == 0) || kind > pageInterior {
		return 0, nil, corruptf("map page kind %d at level %d", kind, level)
	}
	n := int(binary.LittleEndian.Uint16(p[6:]))
	if n == 0 || n > fanout {
		return 0, nil, corruptf("map page count %d, want 1..%d", n, fanout)
	}
	if len(p) != pageHeaderSize+n*IDSize {
		return 0, nil, corruptf("map page: %d bytes for %d IDs", len(p), n)
	}
	ids = make([]ID, n)
	for i := range ids {
		copy(ids[i][:], p[pageHeaderSize+i*IDSize:])
	}
	return level, ids, nil
}

// mapPages reads, walks and writes the pages of volume maps. Safe for
// concurrent use.
type mapPages struct {
	dir     string // the store directory
	h       *hasher
	w       *packWriter
	readers sync.Pool // *blockReader for page loads
}

func newMapPages(s *Store) *mapPages {
	m := &mapPages{dir: s.dir, h: s.h, w: s.w}
	m.readers.New = func() any { return &blockReader{s: s} }
	return m
}

// load reads page id, checks its hash and that it sits at level and holds
// count IDs, and returns the IDs. A zero page is count zero IDs.
func (m *mapPages) load(id ID, level, count int) ([]ID, error) {
	if id.IsZero() {
		return make([]ID, count), nil
	}
	r := m.readers.Get().(*blockReader)
	defer m.readers.Put(r)
	v, err := r.get(ref{kindPage, id})
	if err != nil {
		return nil, fmt.Errorf("map page %s: %w", id.Short(), err)
	}
	fail := func(err error) error {
		return &CorruptError{Path: filepath.Join(m.dir, packsDir), Offset: -1, Block: id, Err: err, Hint: "run `lifeboat verify`"}
	}
	if got := m.h.sum(v); got != id {
		return nil, fail(fmt.Errorf("%w: map page hashes to %s", errCorrupt, got.Short()))
	}
	l, ids, err := decodePage(v)
	if err != nil {
		return nil, fail(err)
	}
	if l != level || len(ids) != count {
		return nil, fail(fmt.Errorf("%w: map page at level %d with %d IDs, want level %d with %d", errCorrupt, l, len(ids), level, count))
	}
	return ids, nil
}

// childCount returns how many IDs the page at level and index holds in a
// volume of the given number of blocks.
func childCount(blocks int64, level int, index int64) int {
	below := coverage(level) / fanout // blocks per child
	first := index * coverage(level)
	rest := blocks - first
	n := (rest + below - 1) / below
	if n > fanout {
		n = fanout
	}
	return int(n)
}

// mapWriter builds a volume map from block IDs given in order. Pages that the
// store already holds are not written again; new pages are written to packs
// in frames like blocks.
type mapWriter struct {
	w      *packWriter
	h      *hasher
	geom   Geometry
	root   int
	levels [][]ID // pending IDs per level
	added  int64
	// pages not yet handed to the store, and their IDs
	pages   [][]byte
	pageIDs []ID
	size    int
	seen    map[ID]bool
}

func (m *mapPages) newWriter(g Geometry) *mapWriter {
	r := g.rootLevel()
	return &mapWriter{w: m.w, h: m.h, geom: g, root: r, levels: make([][]ID, r+1), seen: map[ID]bool{}}
}

// add appends the ID of the next block.
func (w *mapWriter) add(id ID) error {
	w.added++
	return w.push(0, id)
}

func (w *mapWriter) push(level int, id ID) error {
	w.levels[level] = append(w.levels[level], id)
	if len(w.levels[level]) == fanout && level < w.root {
		return w.emit(level)
	}
	return nil
}

// emit writes the pending page at level and pushes its ID one level up.
func (w *mapWriter) emit(level int) error {
	id, err := w.writePage(level, w.levels[level])
	if err != nil {
		return err
	}
	w.levels[level] = w.levels[level][:0]
	return w.push(level+1, id)
}

func (w *mapWriter) writePage(level int, ids []ID) (ID, error) {
	allZero := true
	for _, id := range ids {
		if !id.IsZero() {
			allZero = false
			break
		}
	}
	if allZero {
		return ZeroID, nil
	}
	p := encodePage(level, ids)
	id := w.h.sum(p)
	if w.seen[id] {
		return id, nil
	}
	has, err := w.w.has(ref{kindPage, id})
	if err != nil {
		return ZeroID, err
	}
	w.seen[id] = true
	if has {
		return id, nil
	}
	w.pages, w.pageIDs, w.size = append(w.pages, p), append(w.pageIDs, id), w.size+len(p)
	if w.size >= 4*frameTarget {
		return id, w.flushPages()
	}
	return id, nil
}

// flushPages hands the buffered pages to the store.
func (w *mapWriter) flushPages() error {
	if len(w.pages) == 0 {
		return nil
	}
	want := make([]int, len(w.pages))
	for i := range want {
		want[i] = i
	}
	if err := w.w.write(kindPage, w.pages, w.pageIDs, want); err != nil {
		return fmt.Errorf("write map pages: %w", err)
	}
	w.pages, w.pageIDs, w.size = w.pages[:0], w.pageIDs[:0], 0
	clear(w.seen)
	return nil
}

// finish writes the remaining pages and returns the root ID.
func (w *mapWriter) finish() (ID, error) {
	if w.added != w.geom.Blocks() {
		return ZeroID, fmt.Errorf("volume map: %d blocks added, geometry has %d", w.added, w.geom.Blocks())
	}
	if w.added == 0 {
		return ZeroID, nil
	}
	for l := 0; l < w.root; l++ {
		if len(w.levels[l]) > 0 {
			if err := w.emit(l); err != nil {
				return ZeroID, err
			}
		}
	}
	root, err := w.writePage(w.root, w.levels[w.root])
	if err != nil {
		return ZeroID, err
	}
	return root, w.flushPages()
}

// WalkLeaves calls fn for every leaf of the volume's map in order, with the
// number of the leaf's first block and its block IDs (holes are ZeroID). The
// slice is only valid during the call.
func (s *Store) WalkLeaves(ctx context.Context, v VolumeState, fn func(first int64, ids []ID) error) error {
	g := v.Geometry()
	if g.Blocks() == 0 {
		return nil
	}
	return s.maps.walk(ctx, g.Blocks(), v.Root, g.rootLevel(), 0, fn)
}

func (m *mapPages) walk(ctx context.Context, blocks int64, id ID, level int, index int64, fn func(int64, []ID) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	n := childCount(blocks, level, index)
	ids, err := m.load(id, level, n)
	if err != nil {
		return err
	}
	if level == 0 {
		return fn(index*fanout, ids)
	}
	for i, c := range ids {
		if err := m.walk(ctx, blocks, c, level-1, index*fanout+int64(i), fn); err != nil {
			return err
		}
	}
	return nil
}

// Change is one block that differs between two points of a volume.
type Change struct {
	Block    int64
	Old, New ID
}

// Diff calls fn for every block whose ID differs between volume states a and
// b, in block order. It descends only into subtrees whose IDs differ, so its
// cost follows the size of the change, not of the volume. Both must have the
// same block size; blocks past the end of the shorter volume count as holes.
func (s *Store) Diff(ctx context.Context, a, b VolumeState, fn func(Change) error) error {
	if a.BlockSize != b.BlockSize {
		return fmt.Errorf("diff: block sizes differ (%d and %d)", a.BlockSize, b.BlockSize)
	}
	ga, gb := a.Geometry(), b.Geometry()
	level := max(ga.rootLevel(), gb.rootLevel())
	na := node{id: a.Root, level: ga.rootLevel(), blocks: ga.Blocks()}
	nb := node{id: b.Root, level: gb.rootLevel(), blocks: gb.Blocks()}
	return s.maps.diff(ctx, na, nb, level, 0, fn)
}

// node is one side of a diff: a page of a volume with a number of blocks.
// When the diff walks at a level above the page's own (the other volume is
// bigger), the page stands for a virtual page whose first child it is.
type node struct {
	id     ID
	level  int
	blocks int64
}

// children returns the child nodes of n seen at level and index.
func (m *mapPages) children(n node, level int, index int64) ([]node, error) {
	if n.blocks == 0 || index*coverage(level) >= n.blocks {
		return nil, nil
	}
	count := childCount(n.blocks, level, index)
	out := make([]node, count)
	if n.level < level {
		for i := range out {
			out[i] = node{level: level - 1, blocks: n.blocks}
		}
		out[0] = n
		return out, nil
	}
	ids, err := m.load(n.id, level, count)
	if err != nil {
		return nil, err
	}
	for i, id := range ids {
		out[i] = node{id: id, level: level - 1, blocks: n.blocks}
	}
	return out, nil
}

func (m *mapPages) diff(ctx context.Context, a, b node, level int, index int64, fn func(Change) error) error {
	if a.id == b.id && a.level == b.level {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	ca, err := m.children(a, level, index)
	if err != nil {
		return err
	}
	cb, err := m.children(b, level, index)
	if err != nil {
		return err
	}
	for i := 0; i < max(len(ca), len(cb)); i++ {
		x := node{level: level - 1, blocks: a.blocks}
		y := node{level: level - 1, blocks: b.blocks}
		if i < len(ca) {
			x = ca[i]
		}
		if i < len(cb) {
			y = cb[i]
		}
		child := index*fanout + int64(i)
		if level == 0 {
			if x.id != y.id {
				if err := fn(Change{Block: child, Old: x.id, New: y.id}); err != nil {
					return err
				}
			}
			continue
		}
		if err := m.diff(ctx, x, y, level-1, child, fn); err != nil {
			return err
		}
	}
	return nil
}

// Update returns a new state of volume v in which the blocks named in changes
// (sorted by block, each Block below the volume's block count) have the IDs
// given in New. Only the pages on the paths to changed blocks are read and
// written, so a point that changes a few blocks of a huge volume costs a few
// pages. The blocks themselves must already be in the store. Used is
// recomputed from the changes. Unchanged subtrees are taken from v without
// a lookup: a caller whose v is a point's pins that point (Pin) until the
// new point is committed, so that GC keeps them.
func (s *Store) Update(ctx context.Context, v VolumeState, changes []Change) (VolumeState, error) {
	g := v.Geometry()
	for i, c := range changes {
		if c.Block < 0 || c.Block >= g.Blocks() {
			return v, fmt.Errorf("update volume %s: block %d outside 0..%d", v.Name, c.Block, g.Blocks()-1)
		}
		if i > 0 && changes[i-1].Block >= c.Block {
			return v, fmt.Errorf("update volume %s: changes not sorted by block at %d", v.Name, i)
		}
	}
	if len(changes) == 0 {
		return v, nil
	}
	u := &mapWriter{w: s.w, h: s.h, geom: g, seen: map[ID]bool{}}
	var used int64
	root, err := s.maps.update(ctx, u, v.Root, g.rootLevel(), 0, changes, &used)
	if err != nil {
		return v, fmt.Errorf("update volume %s: %w", v.Name, err)
	}
	if err := u.flushPages(); err != nil {
		return v, fmt.Errorf("update volume %s: %w", v.Name, err)
	}
	v.Root = root
	v.Used += used
	return v, nil
}

// update rewrites the page id at level and index with changes, all of which
// fall inside it, and returns the new page ID. used counts the change in
// non-zero blocks.
func (m *mapPages) update(ctx context.Context, u *mapWriter, id ID, level int, index int64, changes []Change, used *int64) (ID, error) {
	if err := ctx.Err(); err != nil {
		return ZeroID, err
	}
	blocks := u.geom.Blocks()
	ids, err := m.load(id, level, childCount(blocks, level, index))
	if err != nil {
		return ZeroID, err
	}
	if level == 0 {
		for _, c := range changes {
			slot := c.Block - index*fanout
			old := ids[slot]
			switch {
			case old.IsZero() && !c.New.IsZero():
				*used++
			case !old.IsZero() && c.New.IsZero():
				*used--
			}
			ids[slot] = c.New
		}
		return u.writePage(0, ids)
	}
	per := coverage(level - 1)
	for len(changes) > 0 {
		child := changes[0].Block / per
		n := 1
		for n < len(changes) && changes[n].Block/per == child {
			n++
		}
		slot := child - index*fanout
		nid, err := m.update(ctx, u, ids[slot], level-1, child, changes[:n], used)
		if err != nil {
			return ZeroID, err
		}
		ids[slot] = nid
		changes = changes[n:]
	}
	return u.writePage(level, ids)
}
