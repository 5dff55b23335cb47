package spool

// Opening a spool after a crash: loading the segments, finding the durable
// prefix and repairing a torn tail.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// recover loads the acknowledgement and the segments, repairs a torn tail,
// makes what it kept durable and opens a segment to append to.
func (s *Spool) recover() error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("open spool: %w", err)
	}
	var firsts []uint64
	for _, e := range entries {
		name := e.Name()
		if strings.HasSuffix(name, ".tmp") {
			// An interrupted atomic write; the file it replaces is intact.
			if err := os.Remove(filepath.Join(s.dir, name)); err != nil {
				return fmt.Errorf("remove temporary file: %w", err)
			}
			continue
		}
		num, ok := strings.CutSuffix(name, segSuffix)
		if !ok {
			continue
		}
		first, err := strconv.ParseUint(num, 10, 64)
		if err != nil || len(num) != 20 || first == 0 {
			return &CorruptError{Path: filepath.Join(s.dir, name), Offset: 0, Err: errors.New("segment file name is not a sequence number")}
		}
		firsts = append(firsts, first)
	}
	slices.Sort(firsts)
	if s.acked, err = readAcked(filepath.Join(s.dir, ackedName)); err != nil {
		return err
	}
	// Segments wholly below the acknowledgement may survive an interrupted
	// Ack: delete them again.
	for len(firsts) > 1 && firsts[1] <= s.acked+1 {
		p := filepath.Join(s.dir, segName(firsts[0]))
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("remove acknowledged segment: %w", err)
		}
		s.log.Info("spool_acked_segment_removed", "file", p)
		firsts = firsts[1:]
	}
	for i, first := range firsts {
		g, bad, err := s.scanSegment(filepath.Join(s.dir, segName(first)))
		if g != nil {
			s.segs = append(s.segs, g)
		}
		if err != nil {
			return err
		}
		if g != nil && g.first != first {
			return &CorruptError{Path: g.path, Err: fmt.Errorf("header says first sequence %d, name says %d", g.first, first)}
		}
		if g != nil && i == 0 && g.first > s.acked+1 {
			return &CorruptError{Path: g.path, Err: fmt.Errorf("records %d to %d are missing (acknowledged up to %d)", s.acked+1, g.first-1, s.acked)}
		}
		if g != nil && i > 0 {
			if prev := s.segs[len(s.segs)-2]; prev.next() != g.first {
				return &CorruptError{Path: g.path, Err: fmt.Errorf("segment starts at sequence %d, the one before ends at %d", g.first, prev.next()-1)}
			}
		}
		if bad < 0 {
			continue
		}
		// A bad record (or header) at bad: torn unless a later record
		// says it was durable.
		expect := first
		if g != nil {
			expect = g.next()
		}
		if err := s.repairTail(i, firsts, bad, expect); err != nil {
			return err
		}
		break
	}
	s.last = s.acked
	if n := len(s.segs); n > 0 {
		s.last = max(s.last, s.segs[n-1].next()-1)
	}
	for _, g := range s.segs {
		s.bytes += g.size
		// What survived a kill may still be only in the page cache.
		if err := unix.Fdatasync(int(g.f.Fd())); err != nil {
			return fmt.Errorf("sync spool segment %s: %w", g.path, err)
		}
	}
	if n := len(s.segs); n == 0 || s.segs[n-1].next() != s.last+1 {
		if err := s.newSegment(); err != nil {
			return err
		}
	}
	if err := syncDir(s.dir); err != nil {
		return err
	}
	s.dirDirt = false
	for _, g := range s.segs {
		g.unsynced = false
	}
	s.durable = s.last
	return nil
}

// repairTail handles a bad record at offset bad of segment firsts[i]
// (expect is the sequence number it should have had): if any later record
// claims that expect was durable, the spool is corrupt; otherwise the bad
// record and everything after it are a torn tail and are removed.
func (s *Spool) repairTail(i int, firsts []uint64, bad int64, expect uint64) error {
	path := filepath.Join(s.dir, segName(firsts[i]))
	paths := []string{path}
	froms := []int64{bad + 1}
	for _, f := range firsts[i+1:] {
		paths = append(paths, filepath.Join(s.dir, segName(f)))
		froms = append(froms, 0)
	}
	var dropped int64
	for k, p := range paths {
		at, size, err := findDurable(p, froms[k], expect)
		if err != nil {
			return err
		}
		if at >= 0 {
			return &CorruptError{Path: path, Offset: bad, Err: fmt.Errorf("bad record %d, which %s at offset %d says was durable", expect, p, at)}
		}
		dropped += size - froms[k]
	}
	dropped++
	// Torn: cut it off.
	if bad <= segHeaderSize {
		if n := len(s.segs); n > 0 && s.segs[n-1].path == path {
			s.segs[n-1].f.Close()
			s.segs = s.segs[:n-1]
		}
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("remove torn segment: %w", err)
		}
	} else if err := os.Truncate(path, bad); err != nil {
		return fmt.Errorf("truncate torn spool tail: %w", err)
	} else if n := len(s.segs); n > 0 {
		s.segs[n-1].size = bad
	}
	for _, p := range paths[1:] {
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("remove segment after torn tail: %w", err)
		}
	}
	s.log.Warn("spool_torn_tail_truncated", "file", path, "offset", bad, "seq", expect,
		"bytes_dropped", dropped, "files_removed", len(paths)-1)
	return nil
}

// scanSegment opens a segment and checks every record. It returns the
// segment holding the good records and the offset of the first bad byte
// (header or record), or -1 when the whole file is good. A bad header gives
// a nil segment.
func (s *Spool) scanSegment(path string) (*segment, int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("open spool segment: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("stat spool segment: %w", err)
	}
	size := fi.Size()
	r := bufio.NewReaderSize(io.NewSectionReader(f, 0, size), 1<<20)
	hdr := make([]byte, segHeaderSize)
	if _, err := io.ReadFull(r, hdr); err != nil {
		f.Close()
		return nil, 0, nil
	}
	first, err := decodeSegHeader(hdr)
	if err != nil {
		f.Close()
		return nil, 0, nil
	}
	g := &segment{path: path, f: f, first: first, size: segHeaderSize}
	buf := make([]byte, recHeaderSize, 64<<10)
	off := int64(segHeaderSize)
	for off < size {
		if _, err := io.ReadFull(r, buf[:recHeaderSize]); err != nil {
			return g, off, nil
		}
		h, err := decodeRecHeader(buf)
		if err != nil || h.seq != g.next() || off+recHeaderSize+int64(h.length) > size {
			return g, off, nil
		}
		n := recHeaderSize + h.length // checked against maxPayload
		if cap(buf) < n {
			buf = slices.Grow(buf[:recHeaderSize], n-recHeaderSize)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(r, buf[recHeaderSize:]); err != nil {
			return g, off, nil
		}
		if _, _, err := decodeRecord(buf); err != nil {
			return g, off, nil
		}
		g.offs = append(g.offs, off)
		off += int64(n)
		g.size = off
	}
	return g, -1, nil
}

// findDurable scans path from offset from for a valid record whose durable
// field is at least seq and returns its offset (or -1) and the file size.
func findDurable(path string, from int64, seq uint64) (int64, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, fmt.Errorf("scan spool segment: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, fmt.Errorf("scan spool segment: %w", err)
	}
	size := fi.Size()
	const step = 4 << 20
	win := make([]byte, step+maxRecord)
	for base := from; base < size; base += step {
		n, err := f.ReadAt(win, base)
		if err != nil && err != io.EOF {
			return 0, 0, fmt.Errorf("scan spool segment %s: %w", path, err)
		}
		w := win[:n]
		for p := 0; p < step && p+recHeaderSize <= len(w); p++ {
			if k := w[p+8]; (k != byte(KindBlock) && k != byte(KindMark)) || w[p+9]|w[p+10]|w[p+11] != 0 {
				continue
			}
			if binary.LittleEndian.Uint64(w[p+20:]) < seq {
				continue
			}
			if _, _, err := decodeRecord(w[p:]); err == nil {
				return base + int64(p), size, nil
			}
		}
	}
	return -1, size, nil
}
