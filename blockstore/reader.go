package blockstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// packReaders keeps one read handle per pack file, opened on first use.
// Safe for concurrent use.
type packReaders struct {
	dir   string // the packs directory
	mu    sync.RWMutex
	files map[uint32]*os.File // nil: closed

	// rm is held shared from an index lookup to the end of the read of
	// the record it names, and exclusively by GC while it removes a pack
	// file: a reader never finds the file of a location it was given
	// gone (gc.go).
	rm sync.RWMutex
}

func newPackReaders(dir string) *packReaders {
	return &packReaders{dir: dir, files: map[uint32]*os.File{}}
}

// get returns a read handle for pack id.
func (p *packReaders) get(id uint32) (*os.File, error) {
	p.mu.RLock()
	f, ok := p.files[id]
	p.mu.RUnlock()
	if ok {
		return f, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.files == nil {
		return nil, ErrClosed
	}
	if f, ok := p.files[id]; ok {
		return f, nil
	}
	f, err := os.Open(filepath.Join(p.dir, packName(id)))
	if err != nil {
		return nil, fmt.Errorf("open pack: %w", err)
	}
	p.files[id] = f
	return f, nil
}

// drop forgets the read handle of a pack that is being deleted.
func (p *packReaders) drop(id uint32) {
	p.mu.Lock()
	if f, ok := p.files[id]; ok {
		f.Close()
		delete(p.files, id)
	}
	p.mu.Unlock()
}

// close closes every handle; later gets fail with ErrClosed.
func (p *packReaders) close() {
	p.mu.Lock()
	for _, f := range p.files {
		f.Close()
	}
	p.files = nil
	p.mu.Unlock()
}

// blockReader reads blocks and keeps the last decoded frames, so that
// sequential reads of blocks stored together decompress each frame once and
// find the frame's other blocks without an index lookup. Not safe for
// concurrent use.
type blockReader struct {
	s *Store
	// ctx is the context of the read, for a transparent repair's Fetch
	// (nil: context.Background()); noRepair turns that repair off (Verify,
	// Scrub and GC read what is on disk).
	ctx      context.Context
	noRepair bool
	frames   [4]*cachedFrame // most recent first
	recBuf   []byte
	sealBuf  []byte // an opened payload before decompression
}

type cachedFrame struct {
	kind  kind
	loc   location // of the block that loaded it; pack, offset, recLen matter
	slots map[ID]int
	offs  []uint32 // plaintext offset per slot
	fr    frame
	plain []byte
}

// get returns the plaintext of block or page x; the slice is valid until
// the next call. A block that is damaged or missing is fetched and
// repaired when the store has Options.Fetch (repair.go).
func (r *blockReader) get(x ref) ([]byte, error) {
	b, err := r.read(x)
	if err == nil || r.noRepair || x.kind != kindBlock || x.id.IsZero() {
		return b, err
	}
	return r.s.heal.readFailed(r.ctx, x.id, err)
}

// read is get without the repair.
func (r *blockReader) read(x ref) ([]byte, error) {
	id := x.id
	if id.IsZero() {
		return nil, fmt.Errorf("get block: zero block has no stored data")
	}
	for i, c := range r.frames {
		if c == nil {
			break
		}
		if slot, ok := c.slots[id]; ok && c.kind == x.kind {
			if i > 0 {
				copy(r.frames[1:i+1], r.frames[:i])
				r.frames[0] = c
			}
			return c.plain[c.offs[slot] : c.offs[slot]+c.fr.entries[slot].len], nil
		}
	}
	r.s.packs.rm.RLock()
	loc, err := r.s.w.locate(x)
	var c *cachedFrame
	if err == nil {
		c, err = r.load(loc)
	}
	r.s.packs.rm.RUnlock()
	if err != nil {
		var ce *CorruptError
		if errors.As(err, &ce) && ce.Block.IsZero() {
			ce.Block = id
		}
		return nil, err
	}
	path := filepath.Join(r.s.dir, packsDir, packName(loc.pack))
	if int(loc.slot) >= len(c.fr.entries) || c.fr.entries[loc.slot].id != id || c.kind != x.kind {
		return nil, &CorruptError{Path: path, Offset: int64(loc.offset), Block: id, Err: fmt.Errorf("%w: frame does not hold the block at slot %d", errCorrupt, loc.slot), Hint: "run `lifeboat verify`"}
	}
	if c.offs[loc.slot] != loc.plainOff || c.fr.entries[loc.slot].len != loc.plainLen {
		return nil, &CorruptError{Path: path, Offset: int64(loc.offset), Block: id, Err: fmt.Errorf("%w: index entry disagrees with the frame", errCorrupt), Hint: "run `lifeboat verify`"}
	}
	return c.plain[loc.plainOff : loc.plainOff+loc.plainLen], nil
}

func (r *blockReader) load(loc location) (*cachedFrame, error) {
	path := filepath.Join(r.s.dir, packsDir, packName(loc.pack))
	f, err := r.s.packs.get(loc.pack)
	if errors.Is(err, fs.ErrNotExist) {
		// Under packs.rm GC removes no pack the index names: it is lost.
		return nil, &CorruptError{Path: path, Offset: int64(loc.offset), Err: fmt.Errorf("%w: %w: the pack file is missing", errCorrupt, errGone), Hint: "restore the block from another site"}
	}
	if err != nil {
		return nil, err
	}
	if cap(r.recBuf) < int(loc.recLen) {
		r.recBuf = make([]byte, loc.recLen)
	}
	rec := r.recBuf[:loc.recLen]
	if _, err := f.ReadAt(rec, int64(loc.offset)); err != nil {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("%w: %w: record past the end of the pack", errCorrupt, errGone)
		}
		return nil, &CorruptError{Path: path, Offset: int64(loc.offset), Err: err, Hint: "run `lifeboat verify`"}
	}
	fr, err := decodeFrame(rec)
	if err != nil {
		return nil, &CorruptError{Path: path, Offset: int64(loc.offset), Err: err, Hint: "run `lifeboat verify`; the block may be restored from another site"}
	}
	// Reuse the least recent slot's buffers.
	c := r.frames[len(r.frames)-1]
	if c == nil {
		c = &cachedFrame{slots: map[ID]int{}}
	}
	copy(r.frames[1:], r.frames[:len(r.frames)-1])
	r.frames[0] = c
	clear(c.slots)
	c.loc, c.fr, c.kind = loc, fr, fr.kind
	plain, err := r.s.codec.plain(fr, c.plain[:0], &r.sealBuf)
	if err != nil {
		r.frames[0] = nil
		copy(r.frames[:], r.frames[1:])
		r.frames[len(r.frames)-1] = nil
		return nil, &CorruptError{Path: path, Offset: int64(loc.offset), Err: err, Hint: "run `lifeboat verify`; the block may be restored from another site"}
	}
	if len(plain) > 0 && len(fr.payload) > 0 && &plain[0] == &fr.payload[0] {
		plain = append(c.plain[:0], plain...) // raw: do not keep the record buffer
	}
	c.plain = plain
	// The frame aliases recBuf; keep our own copy of the entries only.
	c.fr.payload, c.fr.head = nil, nil
	c.offs = c.offs[:0]
	var off uint32
	for i, e := range fr.entries {
		c.slots[e.id] = i
		c.offs = append(c.offs, off)
		off += e.len
	}
	return c, nil
}

// Reader reads many blocks in a row, decompressing each stored frame once
// for all the blocks it holds: blocks stored together (one volume's
// snapshot, one agent's batch) are read together by a diff. Not safe for
// concurrent use.
type Reader struct{ r blockReader }

// NewReader returns a Reader of s.
func (s *Store) NewReader() *Reader { return &Reader{r: blockReader{s: s}} }

// Get returns the plaintext of block id, valid until the next call.
func (r *Reader) Get(id ID) ([]byte, error) { return r.r.get(ref{kindBlock, id}) }
