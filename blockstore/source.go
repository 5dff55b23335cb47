package blockstore

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// FileSource is a Source reading an image file or a block device. For a
// regular file it reports holes (DataSeeker), so that Snapshot skips them.
type FileSource struct {
	f      *os.File
	device bool
}

// OpenSource opens path, which must be a regular file or a block device.
func OpenSource(path string) (*FileSource, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open source: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open source: %w", err)
	}
	m := fi.Mode()
	switch {
	case m.IsRegular():
		return &FileSource{f: f}, nil
	case m&os.ModeDevice != 0 && m&os.ModeCharDevice == 0:
		return &FileSource{f: f, device: true}, nil
	default:
		f.Close()
		return nil, fmt.Errorf("source %s: not a regular file or a block device (%s)", path, m.Type())
	}
}

// ReadAt reads from the source at off.
func (s *FileSource) ReadAt(p []byte, off int64) (int, error) { return s.f.ReadAt(p, off) }

// Size returns the file size, or a block device's size found by seeking to
// its end (reads use pread, so the offset does not matter).
func (s *FileSource) Size() (int64, error) {
	if s.device {
		return s.f.Seek(0, io.SeekEnd)
	}
	fi, err := s.f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// seekData is lseek's SEEK_DATA whence.
const seekData = 3

// SeekData returns the first data offset at or after off (lseek SEEK_DATA),
// io.EOF when only holes follow. A block device has no holes.
func (s *FileSource) SeekData(off int64) (int64, error) {
	if s.device {
		return off, nil
	}
	n, err := s.f.Seek(off, seekData)
	switch {
	case errors.Is(err, syscall.ENXIO):
		return 0, io.EOF
	case errors.Is(err, syscall.EINVAL), errors.Is(err, syscall.EOPNOTSUPP):
		return off, nil // the file system does not know holes: all data
	case err != nil:
		return 0, fmt.Errorf("seek data: %w", err)
	}
	return n, nil
}

// Close closes the source.
func (s *FileSource) Close() error { return s.f.Close() }
