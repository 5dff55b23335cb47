package imgfmt

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/lifeboat-dr/lifeboat/blockstore"
)

// Format names a disk image format Write can produce.
type Format string

// The formats Write supports.
const (
	Raw   Format = "raw"
	QCOW2 Format = "qcow2"
	VHDX  Format = "vhdx"
)

// ParseFormat returns the Format named by s (case-insensitive), or an
// error that lists the valid names.
func ParseFormat(s string) (Format, error) {
	switch f := Format(strings.ToLower(strings.TrimSpace(s))); f {
	case Raw, QCOW2, VHDX:
		return f, nil
	}
	return "", fmt.Errorf("image format %q: want raw, qcow2 or vhdx", s)
}

// Extent is the byte range [Off, Off+Len) of a virtual disk.
type Extent struct{ Off, Len int64 }

// Image is a virtual disk of Size bytes. Bytes outside Extents read as
// zero. Extents are sorted by Off and do not overlap; they need not be
// aligned to anything and may hold zeros too. Write calls ReadAt only for
// ranges inside one extent, never for holes, and never concurrently.
type Image interface {
	Size() int64
	Extents() []Extent
	io.ReaderAt
}

// chunkSize is how much of the virtual disk Write reads and writes at a
// time; ctx is checked between chunks.
const chunkSize = 1 << 20

// Write streams img to w in format f: sequential writes only, no seeking,
// no temporary copy, memory in proportion to the number of extents (the
// layout is computed from them before the first byte is written). Data
// clusters or blocks are allocated for every one that overlaps an extent.
// progress, if not nil, is called with bytes of the virtual disk done so
// far and Size. A qcow2 image's virtual size is Size rounded up to a
// multiple of 512 bytes (QEMU drops a partial last sector); a VHDX
// image's Size must be a multiple of 512. Write returns ctx's error,
// wrapped, when ctx ends first; w then holds a partial image. Write does
// not close w.
func Write(ctx context.Context, w io.Writer, f Format, img Image, progress func(done, total int64)) error {
	var write func(context.Context, *out, *copier) error
	switch f {
	case Raw:
		write = writeRaw
	case QCOW2:
		write = writeQCOW2
	case VHDX:
		write = writeVHDX
	default:
		return fmt.Errorf("write image: format %q: want raw, qcow2 or vhdx", f)
	}
	size := img.Size()
	exts, err := checkExtents(size, img.Extents())
	if err != nil {
		return fmt.Errorf("%s: %w", f, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", f, err)
	}
	c := &copier{
		img:      img,
		exts:     exts,
		size:     size,
		buf:      make([]byte, chunkSize),
		zero:     make([]byte, chunkSize),
		progress: progress,
	}
	o := newOut(w, c.zero)
	if err := write(ctx, o, c); err != nil {
		return err
	}
	if err := o.flush(); err != nil {
		return fmt.Errorf("%s: flush: %w", f, err)
	}
	if progress != nil {
		progress(size, size)
	}
	return nil
}

// checkExtents validates exts against size and returns them without the
// empty ones.
func checkExtents(size int64, exts []Extent) ([]Extent, error) {
	if size < 0 {
		return nil, fmt.Errorf("image size %d is negative", size)
	}
	out := make([]Extent, 0, len(exts))
	var end int64
	for i, e := range exts {
		switch {
		case e.Off < 0 || e.Len < 0:
			return nil, fmt.Errorf("extent %d (offset %d, length %d): negative", i, e.Off, e.Len)
		case e.Off > size-e.Len:
			return nil, fmt.Errorf("extent %d (offset %d, length %d): ends past the image size %d", i, e.Off, e.Len, size)
		case e.Off < end:
			return nil, fmt.Errorf("extent %d (offset %d, length %d): starts before the end %d of the one before (want sorted, non-overlapping)", i, e.Off, e.Len, end)
		case e.Len == 0:
			continue
		}
		out = append(out, e)
		end = e.Off + e.Len
	}
	return out, nil
}

// run is the range [first, end) of allocation units (clusters, blocks).
type run struct{ first, end int64 }

// units returns the runs of unit-sized, unit-aligned pieces of the disk
// that overlap exts, merged and in order, and how many units they hold.
func units(exts []Extent, unit int64) (runs []run, n int64) {
	for _, e := range exts {
		r := run{e.Off / unit, (e.Off + e.Len + unit - 1) / unit}
		if k := len(runs); k > 0 && r.first <= runs[k-1].end {
			n += max(0, r.end-runs[k-1].end)
			runs[k-1].end = max(runs[k-1].end, r.end)
			continue
		}
		runs = append(runs, r)
		n += r.end - r.first
	}
	return runs, n
}

// copier reads the virtual disk in order, chunk by chunk, and reports
// progress.
type copier struct {
	img      Image
	exts     []Extent
	next     int // first extent that may overlap the next read
	size     int64
	buf      []byte
	zero     []byte // never written to
	progress func(done, total int64)
}

// copyRange writes the virtual disk bytes [from, to) to o; bytes past the
// disk's end are zero. Calls must come in ascending order of from.
func (c *copier) copyRange(ctx context.Context, o *out, from, to int64) error {
	for p := from; p < to; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(to-p, chunkSize)
		b, err := c.fill(p, n)
		if err != nil {
			return err
		}
		if err := o.write(b); err != nil {
			return err
		}
		p += n
		if c.progress != nil {
			c.progress(min(p, c.size), c.size)
		}
	}
	return nil
}

// fill returns the n bytes of the disk at off: the zero buffer for a
// hole, else buf with the extents' bytes read in and the rest cleared.
func (c *copier) fill(off, n int64) ([]byte, error) {
	for c.next < len(c.exts) && c.exts[c.next].Off+c.exts[c.next].Len <= off {
		c.next++
	}
	end := off + n
	if c.next == len(c.exts) || c.exts[c.next].Off >= end {
		return c.zero[:n], nil
	}
	b := c.buf[:n]
	pos := off // b holds the disk's bytes [off, pos)
	for _, e := range c.exts[c.next:] {
		if e.Off >= end {
			break
		}
		lo, hi := max(e.Off, off), min(e.Off+e.Len, end)
		clear(b[pos-off : lo-off])
		if err := readFull(c.img, b[lo-off:hi-off], lo); err != nil {
			return nil, err
		}
		pos = hi
	}
	clear(b[pos-off:])
	return b, nil
}

// readFull reads len(p) bytes at off; io.EOF with a full read is success.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read image at offset %d: %w", off, err)
}

// out is the sequential output: a buffered writer that counts bytes, so
// the writers can pad to the offsets their layout planned and check that
// they ended where it said.
type out struct {
	w    io.Writer
	buf  []byte
	n    int64 // bytes written so far
	zero []byte
	err  error // sticky
}

func newOut(w io.Writer, zero []byte) *out {
	return &out{w: w, buf: make([]byte, 0, chunkSize), zero: zero}
}

// write appends p to the output. Chunk-sized writes go straight to w,
// after what is buffered.
func (o *out) write(p []byte) error {
	if o.err != nil {
		return o.err
	}
	if len(p) >= cap(o.buf) {
		if err := o.flush(); err != nil {
			return err
		}
		o.n += int64(len(p))
		return o.send(p)
	}
	for len(p) > 0 {
		k := copy(o.buf[len(o.buf):cap(o.buf)], p)
		o.buf = o.buf[:len(o.buf)+k]
		o.n += int64(k)
		p = p[k:]
		if len(o.buf) == cap(o.buf) {
			if err := o.flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeCtx is write after checking ctx, for the table writers.
func (o *out) writeCtx(ctx context.Context, p []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return o.write(p)
}

// padTo writes zeros up to the output offset off.
func (o *out) padTo(off int64) error {
	if off < o.n {
		return fmt.Errorf("internal error: pad to offset %d, already at %d", off, o.n)
	}
	for off > o.n {
		if err := o.write(o.zero[:min(off-o.n, int64(len(o.zero)))]); err != nil {
			return err
		}
	}
	return nil
}

// expect reports an internal error unless the output is at offset off.
func (o *out) expect(what string, off int64) error {
	if o.n != off {
		return fmt.Errorf("internal error: %s at offset %d, layout says %d", what, o.n, off)
	}
	return nil
}

func (o *out) flush() error {
	if o.err != nil || len(o.buf) == 0 {
		return o.err
	}
	err := o.send(o.buf)
	o.buf = o.buf[:0]
	return err
}

func (o *out) send(p []byte) error {
	n, err := o.w.Write(p)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	o.err = err
	return err
}

// writeRaw writes the disk's bytes, holes as zeros.
func writeRaw(ctx context.Context, o *out, c *copier) error {
	if err := c.copyRange(ctx, o, 0, c.size); err != nil {
		return fmt.Errorf("raw: write data: %w", err)
	}
	return nil
}

// ceilDiv returns a/b rounded up, for a >= 0 and b > 0.
func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

// storeImage adapts a blockstore image.
type storeImage struct{ *blockstore.Image }

func (s storeImage) Extents() []Extent {
	es := s.Image.Extents()
	out := make([]Extent, len(es))
	for i, e := range es {
		out[i] = Extent{Off: e.Off, Len: e.Len}
	}
	return out
}

// FromStore returns a blockstore image as an Image.
func FromStore(im *blockstore.Image) Image { return storeImage{im} }
