package nbd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// overlayBlock is the overlay's granularity: a block is either wholly in
// the overlay file or wholly read from the point.
const overlayBlock = 4096

// overlay holds a writable export's changes: a sparse file as large as the
// export and a bitmap of the blocks the file holds.
//
// Invariant: a block whose bit is set has its complete content in the
// file. A write fills the rest of a partially written block from the point
// before setting the bit (read-modify-write), all under mu, so two writes
// to different bytes of one block cannot lose each other. Readers take no
// lock but the bitmap's: a block read before its bit is set comes from the
// point, which is what it held before the write was acknowledged.
type overlay struct {
	f    *os.File
	path string // the file's name if it could not be unlinked at creation
	size int64
	mu   sync.Mutex // serializes writers
	bits bitmap
}

// newOverlay creates the overlay file in dir (os.TempDir() if "") and
// unlinks it at once, so it cannot outlive the process.
func newOverlay(dir string, size int64) (*overlay, error) {
	dir = overlayDir(dir)
	f, err := os.CreateTemp(dir, "lifeboat-nbd-*.overlay")
	if err != nil {
		return nil, fmt.Errorf("create nbd overlay in %s: %w", dir, err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("size nbd overlay %s to %d bytes: %w", f.Name(), size, err)
	}
	o := &overlay{f: f, size: size}
	if err := os.Remove(f.Name()); err != nil {
		o.path = f.Name() // removed by close instead
	}
	return o, nil
}

// close closes the overlay file, releasing its space.
func (o *overlay) close() error {
	err := o.f.Close()
	if o.path != "" {
		if rerr := os.Remove(o.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
	}
	if err != nil {
		return fmt.Errorf("close nbd overlay: %w", err)
	}
	return nil
}

// readAt fills p from offset off, taking each run of blocks from the
// overlay file or from data as the bitmap says.
func (o *overlay) readAt(data io.ReaderAt, p []byte, off int64) error {
	for len(p) > 0 {
		b := off / overlayBlock
		inFile := o.bits.get(b)
		end := (b + 1) * overlayBlock
		limit := off + int64(len(p))
		for end < limit && o.bits.get(end/overlayBlock) == inFile {
			end += overlayBlock
		}
		n := min(end, limit) - off
		var src io.ReaderAt = data
		if inFile {
			src = o.f
		}
		if err := readFull(src, p[:n], off); err != nil {
			if inFile {
				return fmt.Errorf("overlay: %w", err)
			}
			return err
		}
		p, off = p[n:], off+n
	}
	return nil
}

// writeAt stores p at offset off. The caller has checked the range.
func (o *overlay) writeAt(data io.ReaderAt, p []byte, off int64) error {
	if len(p) == 0 {
		return nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	end := off + int64(len(p))
	if _, err := o.f.WriteAt(p, off); err != nil {
		return fmt.Errorf("write overlay at offset %d: %w", off, err)
	}
	first, last := off/overlayBlock, (end-1)/overlayBlock
	if head := first * overlayBlock; head < off && !o.bits.get(first) {
		if err := o.fill(data, head, off); err != nil {
			return err
		}
	}
	if tail := min((last+1)*overlayBlock, o.size); end < tail && !o.bits.get(last) {
		if err := o.fill(data, end, tail); err != nil {
			return err
		}
	}
	o.bits.set(first, last)
	return nil
}

// fill copies the point's bytes [from, to) into the overlay file; to-from
// is less than one block. The caller holds mu.
func (o *overlay) fill(data io.ReaderAt, from, to int64) error {
	var buf [overlayBlock]byte
	p := buf[:to-from]
	if err := readFull(data, p, from); err != nil {
		return err
	}
	if _, err := o.f.WriteAt(p, from); err != nil {
		return fmt.Errorf("write overlay at offset %d: %w", from, err)
	}
	return nil
}

// zero makes [off, off+n) read as zeroes. Unless noHole, the whole blocks
// in the range become holes in the overlay file where the platform can
// punch them; everything else is written with zeroes in bounded chunks.
func (o *overlay) zero(data io.ReaderAt, off, n int64, noHole bool) error {
	end := off + n
	if !noHole {
		a := (off + overlayBlock - 1) / overlayBlock * overlayBlock
		z := end / overlayBlock * overlayBlock
		if end == o.size {
			z = end // the last block may be short
		}
		if z > a {
			o.mu.Lock()
			err := punchHole(o.f, a, z-a)
			if err == nil {
				o.bits.set(a/overlayBlock, (z-1)/overlayBlock)
			}
			o.mu.Unlock()
			if err == nil {
				if err := o.writeZeroes(data, off, a); err != nil {
					return err
				}
				return o.writeZeroes(data, z, end)
			}
		}
	}
	return o.writeZeroes(data, off, end)
}

// zeroes is a source of zero bytes for writeZeroes.
var zeroes [1 << 20]byte

// writeZeroes writes zeroes over [from, to) one chunk at a time, so a long
// range neither allocates nor holds mu for long.
func (o *overlay) writeZeroes(data io.ReaderAt, from, to int64) error {
	for from < to {
		n := min(to-from, int64(len(zeroes)))
		if err := o.writeAt(data, zeroes[:n], from); err != nil {
			return err
		}
		from += n
	}
	return nil
}

// readFull reads len(p) bytes at off from r: a short read is an error even
// at the end of r.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read %d bytes at offset %d: got %d: %w", len(p), off, n, err)
}

// bitmap is a sparse bitmap of overlay blocks, allocated a page (32768
// blocks, 128 MiB of export) at a time as blocks are written. Safe for
// concurrent use.
type bitmap struct {
	mu    sync.RWMutex
	pages map[int64]*bitPage
}

const pageBlocks = 1 << 15

type bitPage [pageBlocks / 64]uint64

// get reports whether block b is set.
func (m *bitmap) get(b int64) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	pg := m.pages[b/pageBlocks]
	if pg == nil {
		return false
	}
	i := b % pageBlocks
	return pg[i/64]&(1<<(i%64)) != 0
}

// set sets blocks first through last.
func (m *bitmap) set(first, last int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pages == nil {
		m.pages = make(map[int64]*bitPage)
	}
	for b := first; b <= last; {
		pi := b / pageBlocks
		pg := m.pages[pi]
		if pg == nil {
			pg = new(bitPage)
			m.pages[pi] = pg
		}
		i := b % pageBlocks
		// Whole words at a time where the range allows.
		if i%64 == 0 && last-b >= 63 {
			pg[i/64] = ^uint64(0)
			b += 64
			continue
		}
		pg[i/64] |= 1 << (i % 64)
		b++
	}
}
