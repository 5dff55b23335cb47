package archive

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// writeFileSynced creates path with data and fsyncs it; the caller syncs
// the directory.
func writeFileSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}

// mkdirAllDurable creates dir and any missing parents, syncing the parent
// of each directory it creates.
func mkdirAllDurable(dir string) error {
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s: not a directory", dir)
		}
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := mkdirAllDurable(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return syncDir(parent)
}

func readFileLimit(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("%s: %d bytes, limit %d", path, fi.Size(), limit)
	}
	b := make([]byte, fi.Size())
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return b, nil
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
