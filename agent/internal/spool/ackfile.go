package spool

// The acknowledgement file and the durable writes of small files.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
)

// The acknowledgement file: magic, version, seq, CRC32C (see doc.go).
var ackMagic = [8]byte{'L', 'B', 'S', 'P', 'A', 'C', 'K', 0}

const ackSize = 32

func readAcked(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read spool acknowledgement: %w", err)
	}
	bad := func(why string) error { return &CorruptError{Path: path, Err: errors.New(why)} }
	switch {
	case len(b) != ackSize:
		return 0, bad(fmt.Sprintf("size %d, want %d", len(b), ackSize))
	case [8]byte(b[:8]) != ackMagic:
		return 0, bad("bad magic")
	case crc32.Checksum(b[:24], castag) != binary.LittleEndian.Uint32(b[24:]):
		return 0, bad("checksum mismatch")
	case binary.LittleEndian.Uint32(b[8:]) != formatVersion:
		return 0, bad(fmt.Sprintf("version %d, want %d", binary.LittleEndian.Uint32(b[8:]), formatVersion))
	}
	return binary.LittleEndian.Uint64(b[16:]), nil
}

func writeAcked(dir string, seq uint64) error {
	b := make([]byte, ackSize)
	copy(b, ackMagic[:])
	binary.LittleEndian.PutUint32(b[8:], formatVersion)
	binary.LittleEndian.PutUint64(b[16:], seq)
	binary.LittleEndian.PutUint32(b[24:], crc32.Checksum(b[:24], castag))
	return writeFileAtomic(dir, ackedName, b)
}

// writeFileAtomic writes name in dir durably: temp file, write, fsync,
// close, rename, fsync dir; the temp file is removed on any error.
func writeFileAtomic(dir, name string, b []byte) (err error) {
	path := filepath.Join(dir, name)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(b); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
