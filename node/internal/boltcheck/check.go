package boltcheck

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// ErrDamaged is wrapped by every error Check returns for a damaged file
// (as opposed to an error reading it).
var ErrDamaged = errors.New("damaged bbolt file")

const (
	pageHeaderSize = 16
	elementSize    = 16 // branch and leaf elements are both 16 bytes
	bucketHeader   = 16 // root page number, sequence
	metaSize       = 64

	flagBranch   = 0x01
	flagLeaf     = 0x02
	flagMeta     = 0x04
	flagFreelist = 0x10

	bucketLeafFlag = 0x01

	magic         = 0xED0CDAED
	version       = 2
	noFreelist    = ^uint64(0)
	maxDepth      = 64
	minPageSize   = 1024
	maxPageSize   = 1 << 24
	freeCountFull = 0xFFFF
)

var le = binary.LittleEndian

func damaged(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrDamaged, fmt.Sprintf(format, a...))
}

// meta is the part of a meta page Check uses.
type meta struct {
	pageSize uint32
	root     uint64
	freelist uint64
	pgid     uint64 // high-water mark: pages 0..pgid-1 are in use or free
	txid     uint64
}

// decodeMeta decodes and validates the meta page body in b (the page
// without its header), as bbolt's Meta.Validate does.
func decodeMeta(b []byte) (meta, error) {
	if len(b) < metaSize {
		return meta{}, errors.New("short meta page")
	}
	switch {
	case le.Uint32(b[0:]) != magic:
		return meta{}, errors.New("bad magic")
	case le.Uint32(b[4:]) != version:
		return meta{}, fmt.Errorf("version %d, want %d", le.Uint32(b[4:]), version)
	}
	h := fnv.New64a()
	h.Write(b[:56])
	if h.Sum64() != le.Uint64(b[56:]) {
		return meta{}, errors.New("checksum mismatch")
	}
	return meta{pageSize: le.Uint32(b[8:]), root: le.Uint64(b[16:]), freelist: le.Uint64(b[32:]),
		pgid: le.Uint64(b[40:]), txid: le.Uint64(b[48:])}, nil
}

// checker walks one file.
type checker struct {
	r    io.ReaderAt
	size int64
	ps   uint64
	hwm  uint64
	seen []bool // pages referenced so far, below hwm
}

// Check verifies the structure of the bbolt database at path (see the
// package comment). A damaged file gives an error wrapping ErrDamaged that
// says which page is wrong and how; other errors are I/O errors.
func Check(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	return CheckReader(f, fi.Size())
}

// CheckReader is Check on the size bytes of r.
func CheckReader(r io.ReaderAt, size int64) error {
	c := &checker{r: r, size: size}
	m, err := c.meta()
	if err != nil {
		return err
	}
	c.ps, c.hwm = uint64(m.pageSize), m.pgid
	if c.hwm < 4 {
		return damaged("high-water mark %d: a database has at least 4 pages", c.hwm)
	}
	if c.hwm > uint64(size)/c.ps {
		return damaged("truncated: %d bytes hold %d pages of %d bytes, the meta page says %d are in use",
			size, uint64(size)/c.ps, c.ps, c.hwm)
	}
	c.seen = make([]bool, c.hwm) // at most size/1024 entries
	c.seen[0], c.seen[1] = true, true
	if m.freelist == noFreelist {
		// bbolt rebuilds a missing freelist by walking the tree in a
		// goroutine that panics on any inconsistency: never let it.
		return damaged("the meta page records no freelist; this database was written without one")
	}
	if err := c.freelist(m.freelist); err != nil {
		return err
	}
	if m.root < 2 || m.root >= c.hwm {
		return damaged("root bucket page %d outside 2..%d", m.root, c.hwm-1)
	}
	return c.page(m.root, 0, 0)
}

// meta finds the page size and the meta page bbolt would use: the valid
// one with the higher transaction ID.
func (c *checker) meta() (meta, error) {
	if c.size == 0 {
		return meta{}, damaged("empty file")
	}
	read := func(off int64) (meta, error) {
		b := make([]byte, pageHeaderSize+metaSize)
		if n, err := c.r.ReadAt(b, off); n < len(b) {
			if err == nil || err == io.EOF {
				return meta{}, errors.New("short meta page")
			}
			return meta{}, err
		}
		if b[8] != flagMeta || b[9] != 0 {
			return meta{}, fmt.Errorf("page type %#x, want meta", le.Uint16(b[8:]))
		}
		return decodeMeta(b[pageHeaderSize:])
	}
	// Like bbolt: the page size from the first meta page, else from a
	// second one found at 1 KiB, 2 KiB, ... 16 MiB.
	m0, err0 := read(0)
	ps := uint64(m0.pageSize)
	if err0 != nil {
		ps = 0
		for i := range 15 {
			pos := int64(1024) << i
			if pos >= c.size-1024 {
				break
			}
			if m, err := read(pos); err == nil && uint64(m.pageSize) == uint64(pos) {
				ps = uint64(pos)
				break
			}
		}
		if ps == 0 {
			return meta{}, damaged("meta page 0: %v, and no valid meta page 1 found", err0)
		}
	}
	if ps < minPageSize || ps > maxPageSize || ps&(ps-1) != 0 {
		return meta{}, damaged("page size %d: want a power of two from %d to %d", ps, minPageSize, maxPageSize)
	}
	if uint64(c.size) < 2*ps {
		return meta{}, damaged("file of %d bytes is shorter than its two meta pages of %d bytes", c.size, ps)
	}
	m1, err1 := read(int64(ps))
	var m meta
	switch {
	case err0 == nil && (err1 != nil || m0.txid >= m1.txid):
		m = m0
	case err1 == nil:
		m = m1
	default:
		return meta{}, damaged("both meta pages are invalid: page 0: %v; page 1: %v", err0, err1)
	}
	if uint64(m.pageSize) != ps {
		return meta{}, damaged("meta page says the page size is %d, the file has %d", m.pageSize, ps)
	}
	// bbolt tolerates a torn meta page (bad checksum), whose header a torn
	// write leaves alone, but its Tx.Check asserts both headers.
	for id := range uint64(2) {
		hdr := make([]byte, pageHeaderSize)
		if _, err := c.r.ReadAt(hdr, int64(id*ps)); err != nil {
			return meta{}, fmt.Errorf("read meta page %d: %w", id, err)
		}
		if got, flags := le.Uint64(hdr), le.Uint16(hdr[8:]); got != id || flags != flagMeta {
			return meta{}, damaged("meta page %d: header says page %d of type %#x", id, got, flags)
		}
	}
	return m, nil
}

// claim marks pages id..id+overflow as referenced, by from.
func (c *checker) claim(id, overflow, from uint64) error {
	if id < 2 || id >= c.hwm || overflow >= c.hwm-id {
		return damaged("page %d (+%d overflow, referenced from page %d) is outside 2..%d", id, overflow, from, c.hwm-1)
	}
	for p := id; p <= id+overflow; p++ {
		if c.seen[p] {
			return damaged("page %d (referenced from page %d) is referenced twice", p, from)
		}
		c.seen[p] = true
	}
	return nil
}

// read returns page id with its overflow pages, after checking its header.
func (c *checker) read(id, from uint64, want ...uint16) ([]byte, error) {
	if id < 2 || id >= c.hwm {
		return nil, damaged("page %d (referenced from page %d) is outside 2..%d", id, from, c.hwm-1)
	}
	hdr := make([]byte, c.ps) // inside the file: id < hwm <= size/ps
	if _, err := c.r.ReadAt(hdr, int64(id*c.ps)); err != nil {
		return nil, fmt.Errorf("read page %d: %w", id, err)
	}
	if got := le.Uint64(hdr); got != id {
		return nil, damaged("page %d (referenced from page %d) says it is page %d", id, from, got)
	}
	flags := le.Uint16(hdr[8:])
	ok := false
	for _, w := range want {
		ok = ok || flags == w
	}
	if !ok {
		return nil, damaged("page %d (referenced from page %d) has type %#x, want one of %#x", id, from, flags, want)
	}
	overflow := uint64(le.Uint32(hdr[12:]))
	if err := c.claim(id, overflow, from); err != nil {
		return nil, err
	}
	if overflow == 0 {
		return hdr, nil
	}
	b := make([]byte, (overflow+1)*c.ps) // inside the file: id+overflow < hwm <= size/ps
	copy(b, hdr)
	if _, err := c.r.ReadAt(b[c.ps:], int64((id+1)*c.ps)); err != nil {
		return nil, fmt.Errorf("read page %d: %w", id, err)
	}
	return b, nil
}

// freelist checks the freelist page and the page numbers it lists.
func (c *checker) freelist(id uint64) error {
	b, err := c.read(id, 0, flagFreelist)
	if err != nil {
		return err
	}
	n, start := uint64(le.Uint16(b[10:])), uint64(pageHeaderSize)
	if n == freeCountFull {
		n, start = le.Uint64(b[pageHeaderSize:]), pageHeaderSize+8
	}
	if room := (uint64(len(b)) - start) / 8; n > room {
		return damaged("freelist page %d lists %d pages, it has room for %d", id, n, room)
	}
	for i := range n {
		if p := le.Uint64(b[start+8*i:]); p < 2 || p >= c.hwm {
			return damaged("freelist page %d: free page %d outside 2..%d", id, p, c.hwm-1)
		}
	}
	return nil
}

// page checks a branch or leaf page and everything below it.
func (c *checker) page(id, from uint64, depth int) error {
	if depth > maxDepth {
		return damaged("page %d: more than %d levels of pages and buckets", id, maxDepth)
	}
	b, err := c.read(id, from, flagBranch, flagLeaf)
	if err != nil {
		return err
	}
	return c.elements(b, func() string { return fmt.Sprintf("page %d", id) }, id, depth)
}

// elements checks the elements of page p (a mapped page or an inline
// bucket's page, id the page that holds it; where names it for errors) and
// recurses into the pages and buckets they name.
func (c *checker) elements(p []byte, where func() string, id uint64, depth int) error {
	if len(p) < pageHeaderSize {
		return damaged("%s: %d bytes, shorter than a page header", where(), len(p))
	}
	flags, count := le.Uint16(p[8:]), uint64(le.Uint16(p[10:]))
	if flags != flagBranch && flags != flagLeaf {
		return damaged("%s: type %#x, want branch or leaf", where(), flags)
	}
	if flags == flagBranch && count == 0 {
		return damaged("%s: branch page without elements", where())
	}
	size := uint64(len(p))
	if pageHeaderSize+count*elementSize > size {
		return damaged("%s: %d elements do not fit in %d bytes", where(), count, size)
	}
	for i := range count {
		off := pageHeaderSize + i*elementSize
		e := p[off : off+elementSize]
		if flags == flagBranch {
			pos, ksize, child := uint64(le.Uint32(e)), uint64(le.Uint32(e[4:])), le.Uint64(e[8:])
			if off+pos+ksize > size {
				return damaged("%s: element %d: key (offset %d, %d bytes) runs past the page end", where(), i, pos, ksize)
			}
			if err := c.page(child, id, depth+1); err != nil {
				return err
			}
			continue
		}
		lflags, pos, ksize, vsize := le.Uint32(e), uint64(le.Uint32(e[4:])), uint64(le.Uint32(e[8:])), uint64(le.Uint32(e[12:]))
		if off+pos+ksize+vsize > size {
			return damaged("%s: element %d: key and value (offset %d, %d+%d bytes) run past the page end", where(), i, pos, ksize, vsize)
		}
		if lflags&bucketLeafFlag == 0 {
			continue
		}
		v := p[off+pos+ksize : off+pos+ksize+vsize]
		if len(v) < bucketHeader {
			return damaged("%s: element %d: bucket value of %d bytes, want at least %d", where(), i, len(v), bucketHeader)
		}
		if root := le.Uint64(v); root != 0 {
			if err := c.page(root, id, depth+1); err != nil {
				return err
			}
			continue
		}
		if depth+1 > maxDepth {
			return damaged("%s: more than %d levels of pages and buckets", where(), maxDepth)
		}
		inline := v[bucketHeader:]
		if len(inline) >= pageHeaderSize && le.Uint16(inline[8:]) != flagLeaf {
			return damaged("%s: element %d: inline bucket page of type %#x, want leaf", where(), i, le.Uint16(inline[8:]))
		}
		in := func() string { return fmt.Sprintf("%s: element %d: inline bucket", where(), i) }
		if err := c.elements(inline, in, id, depth+1); err != nil {
			return err
		}
	}
	return nil
}
