package archive

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/lifeboat-dr/lifeboat/internal/durable"
)

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// zeros is a read-only buffer for hashing holes.
var zeros = make([]byte, 1<<20)

// hashFile returns the SHA-256 of the first size bytes of f in one
// streaming pass with a 1 MiB buffer. Holes (SEEK_HOLE) are hashed as
// zeros without being read.
func hashFile(f *os.File, size int64) (string, error) {
	h := sha256.New()
	buf := make([]byte, 1<<20)
	hashZeros := func(n int64) {
		for n > 0 {
			k := min(n, int64(len(zeros)))
			h.Write(zeros[:k])
			n -= k
		}
	}
	off := int64(0)
	for off < size {
		data, hole, err := nextData(f, off, size)
		if err != nil {
			return "", err
		}
		hashZeros(data - off)
		for data < hole {
			k := min(hole-data, int64(len(buf)))
			n, err := f.ReadAt(buf[:k], data)
			if n < int(k) {
				if err == nil || errors.Is(err, io.EOF) {
					err = fmt.Errorf("file ends at %d, want %d bytes", data+int64(n), size)
				}
				return "", fmt.Errorf("read %s at offset %d: %w", f.Name(), data, err)
			}
			h.Write(buf[:k])
			data += k
		}
		off = hole
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// nextData returns the next data range [data, hole) at or after off, both
// at most size. Without SEEK_DATA support everything is data.
func nextData(f *os.File, off, size int64) (data, hole int64, err error) {
	fd := int(f.Fd())
	data, err = unix.Seek(fd, off, unix.SEEK_DATA)
	switch {
	case errors.Is(err, syscall.ENXIO):
		return size, size, nil
	case errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.EOPNOTSUPP):
		return off, size, nil
	case err != nil:
		return 0, 0, fmt.Errorf("seek data in %s: %w", f.Name(), err)
	}
	if data >= size {
		return size, size, nil
	}
	hole, err = unix.Seek(fd, data, unix.SEEK_HOLE)
	if err != nil {
		return 0, 0, fmt.Errorf("seek hole in %s: %w", f.Name(), err)
	}
	return data, min(hole, size), nil
}

// writeFileSynced creates path with data and fsyncs it; the caller syncs
// the directory.
func writeFileSynced(path string, data []byte) error { return durable.Create(path, data, 0o644) }
