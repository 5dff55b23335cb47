// Package blockstoretest holds test support for code that uses the block
// store: an in-memory volume image that is a blockstore.Source, an
// io.WriterAt for Restore, and a file for workload.Mutate.
package blockstoretest

import (
	"fmt"
	"io"
)

// Image is a volume image in memory. Reads past the end return io.EOF;
// writes must stay inside the image.
type Image []byte

// ReadAt reads from the image at off.
func (m Image) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read at negative offset %d", off)
	}
	if off >= int64(len(m)) {
		return 0, io.EOF
	}
	n := copy(p, m[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt writes p at off, which must lie inside the image.
func (m Image) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m)) {
		return 0, fmt.Errorf("write of %d bytes at %d outside the %d-byte image", len(p), off, len(m))
	}
	return copy(m[off:], p), nil
}

// Size returns the image's length.
func (m Image) Size() (int64, error) { return int64(len(m)), nil }
