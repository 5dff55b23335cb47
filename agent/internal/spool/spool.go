package spool

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lifeboat-dr/lifeboat/internal/flock"
)

// Sentinel errors.
var (
	// ErrFull means the append would take the spool past Options.MaxBytes
	// (or the disk is full); nothing was appended. The caller records the
	// blocks with MarkDirty instead.
	ErrFull = errors.New("spool full")
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("spool closed")
	// ErrAcked means Read asked for records that were acknowledged and
	// deleted; read from Acked() instead.
	ErrAcked = errors.New("records acknowledged and deleted")
)

// CorruptError reports a damaged spool file that Open refuses to repair: a
// bad record that a later record proves was durable, a missing segment or a
// bad acknowledgement file.
type CorruptError struct {
	Path   string
	Offset int64
	Err    error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("spool file %s at offset %d: %v (the spool cannot be repaired automatically; move the directory aside to start a new spool, then resync the volumes)", e.Path, e.Offset, e.Err)
}

func (e *CorruptError) Unwrap() error { return e.Err }

// Options configure a Spool. The zero value gives the defaults.
type Options struct {
	// MaxBytes bounds the size of the segment files; 0 means 1 GiB.
	MaxBytes int64
	// SegmentSize is the size at which a new segment file is started; 0
	// means 64 MiB. A segment exceeds it by at most one AppendBlocks call.
	SegmentSize int64
	// Logger receives repairs and errors; nil means slog.Default().
	Logger *slog.Logger
}

// segment is one segment file.
type segment struct {
	path     string
	f        *os.File
	first    uint64  // seq of the first record (from the header)
	offs     []int64 // offset of record first+i
	size     int64
	unsynced bool // written since the last fdatasync
}

func (g *segment) next() uint64 { return g.first + uint64(len(g.offs)) }

// Spool is a durable, ordered journal of block and mark records. All methods
// are safe for concurrent use; appends are serialized.
type Spool struct {
	dir  string
	opts Options
	log  *slog.Logger
	lock *flock.Lock // held while open

	// syncMu serializes Sync, Ack and Close, which fsync or close files.
	syncMu sync.Mutex
	// filesMu keeps segment files open while Read reads them: Read holds
	// it shared, closers exclusively. Order: mu before filesMu.
	filesMu sync.RWMutex

	mu      sync.Mutex
	segs    []*segment // ascending; the last one is appended to
	last    uint64     // seq of the newest record (or the acked seq)
	acked   uint64
	durable uint64 // every record up to here is fdatasynced
	bytes   int64
	dirDirt bool          // a segment was created since the last directory fsync
	wake    chan struct{} // closed and replaced at every append
	err     error         // sticky: a failed fsync or rollback
	closed  bool
	buf     []byte

	dmu   sync.Mutex
	dirty map[string]*Bitmap
}

const (
	segSuffix = ".seg"
	ackedName = "acked"
	lockName  = "lock"
)

func segName(first uint64) string { return fmt.Sprintf("%020d%s", first, segSuffix) }

// Open opens the spool in dir, creating it if needed, and recovers it: a torn
// tail (a crash during an append) is truncated and logged; a damaged record
// that was durable is a *CorruptError naming the file and offset. Only one
// Spool may have dir open at a time (an flock enforces it).
func Open(dir string, o Options) (*Spool, error) {
	if o.MaxBytes == 0 {
		o.MaxBytes = 1 << 30
	}
	if o.SegmentSize == 0 {
		o.SegmentSize = 64 << 20
	}
	if o.MaxBytes < 0 || o.SegmentSize < 0 {
		return nil, fmt.Errorf("open spool %s: negative MaxBytes %d or SegmentSize %d", dir, o.MaxBytes, o.SegmentSize)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open spool: %w", err)
	}
	lk, err := flock.TryLock(filepath.Join(dir, lockName))
	if err != nil {
		return nil, fmt.Errorf("open spool %s: in use by another process or Spool: %w", dir, err)
	}
	s := &Spool{
		dir:   dir,
		opts:  o,
		log:   o.Logger.With("spool", dir),
		lock:  lk,
		wake:  make(chan struct{}),
		dirty: map[string]*Bitmap{},
	}
	if err := s.recover(); err != nil {
		s.closeFiles()
		lk.Unlock()
		return nil, err
	}
	if err := s.loadDirty(); err != nil {
		s.closeFiles()
		lk.Unlock()
		return nil, err
	}
	return s, nil
}

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

// newSegment starts a segment for record s.last+1. Caller holds mu (or is
// Open).
func (s *Spool) newSegment() error {
	first := s.last + 1
	path := filepath.Join(s.dir, segName(first))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create spool segment: %w", err)
	}
	if _, err := f.WriteAt(encodeSegHeader(first), 0); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("write spool segment header %s: %w", path, err)
	}
	s.segs = append(s.segs, &segment{path: path, f: f, first: first, size: segHeaderSize, unsynced: true})
	s.bytes += segHeaderSize
	s.dirDirt = true
	return nil
}

// AppendBlocks appends one block record per block (blocks[i] is block
// first+i of volume, all of one size) and returns the sequence number of
// the last. The records are not durable until Sync returns. When they would
// take the spool past MaxBytes (or the disk is full) it returns an error
// matching ErrFull and appends nothing.
func (s *Spool) AppendBlocks(volume string, first int64, blocks [][]byte) (uint64, error) {
	if len(volume) == 0 || len(volume) > MaxVolumeName {
		return 0, fmt.Errorf("append to spool: volume name of %d bytes: want 1 to %d", len(volume), MaxVolumeName)
	}
	if len(blocks) == 0 {
		return 0, errors.New("append to spool: no blocks")
	}
	if first < 0 || first+int64(len(blocks)) > maxBlockNum {
		return 0, fmt.Errorf("append to spool: block %d out of range", first)
	}
	size := len(blocks[0])
	if err := checkBlockSize(size); err != nil {
		return 0, fmt.Errorf("append to spool: %w", err)
	}
	for i, b := range blocks {
		if len(b) != size {
			return 0, fmt.Errorf("append to spool: block %d has %d bytes, block %d has %d", first+int64(i), len(b), first, size)
		}
	}
	total := int64(len(blocks)) * int64(blockRecordSize(volume, size))
	return s.append(total, func(b []byte, seq, durable uint64) []byte {
		for i, d := range blocks {
			b = appendBlockRecord(b, seq+uint64(i), durable, volume, first+int64(i), d)
		}
		return b
	}, len(blocks))
}

// Mark appends a consistency point with wall-clock time t and returns its
// sequence number. Marks are small and are never refused with ErrFull
// unless the disk itself is full.
func (s *Spool) Mark(t time.Time) (uint64, error) {
	return s.append(recHeaderSize+markPayload, func(b []byte, seq, durable uint64) []byte {
		return appendMarkRecord(b, seq, durable, t)
	}, 1)
}

// append writes n records of total bytes produced by enc.
func (s *Spool) append(total int64, enc func(b []byte, seq, durable uint64) []byte, n int) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	if s.err != nil {
		return 0, s.err
	}
	g := s.segs[len(s.segs)-1]
	rotate := len(g.offs) > 0 && g.size+total > s.opts.SegmentSize
	need := total
	if rotate {
		need += segHeaderSize
	}
	// Marks (n == 1, tiny) may use the room of a full spool so that a
	// consistency point is never lost to the bound.
	if s.bytes+need > s.opts.MaxBytes && total > recHeaderSize+markPayload {
		return 0, fmt.Errorf("append %d bytes to spool %s holding %d of %d: %w", total, s.dir, s.bytes, s.opts.MaxBytes, ErrFull)
	}
	if rotate {
		if err := s.newSegment(); err != nil {
			return 0, s.mapFull(err)
		}
		g = s.segs[len(s.segs)-1]
	}
	seq := s.last + 1
	b := enc(s.buf[:0], seq, s.durable)
	if cap(b) <= 8<<20 {
		s.buf = b
	}
	if _, err := g.f.WriteAt(b, g.size); err != nil {
		// Roll back so that the file holds whole records only.
		if terr := g.f.Truncate(g.size); terr != nil {
			s.err = fmt.Errorf("spool segment %s: write failed (%v) and truncating it back failed: %w", g.path, err, terr)
			s.log.Error("spool_broken", "file", g.path, "err", s.err)
			return 0, s.err
		}
		return 0, s.mapFull(fmt.Errorf("write spool segment %s at offset %d: %w", g.path, g.size, err))
	}
	per := total / int64(n) // the records of one call have one size
	for i := range int64(n) {
		g.offs = append(g.offs, g.size+i*per)
	}
	g.size += int64(len(b))
	s.bytes += int64(len(b))
	g.unsynced = true
	s.last = seq + uint64(n) - 1
	close(s.wake)
	s.wake = make(chan struct{})
	return s.last, nil
}

// mapFull makes a full disk match ErrFull too.
func (s *Spool) mapFull(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %w", ErrFull, err)
	}
	return err
}

// Sync makes every record appended before the call durable (fdatasync).
// Concurrent callers share one fsync (group commit). A failed fsync makes
// the spool unusable: every later append and sync returns the error.
func (s *Spool) Sync() error {
	s.mu.Lock()
	target := s.last
	s.mu.Unlock()
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.mu.Lock()
	if s.err != nil {
		defer s.mu.Unlock()
		return s.err
	}
	if s.closed {
		defer s.mu.Unlock()
		return ErrClosed
	}
	if s.durable >= target && !s.dirDirt {
		s.mu.Unlock()
		return nil
	}
	upto := s.last
	var files []*segment
	for _, g := range s.segs {
		if g.unsynced {
			files = append(files, g)
			g.unsynced = false
		}
	}
	dir := s.dirDirt
	s.dirDirt = false
	s.mu.Unlock()
	// Files are closed only under syncMu, which we hold.
	var err error
	for _, g := range files {
		if e := unix.Fdatasync(int(g.f.Fd())); e != nil {
			err = fmt.Errorf("sync spool segment %s: %w", g.path, e)
			break
		}
	}
	if err == nil && dir {
		err = syncDir(s.dir)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		// After a failed fsync the page cache may have dropped the data
		// (Linux marks the pages clean): never claim it durable.
		s.err = err
		s.log.Error("spool_broken", "err", err)
		return err
	}
	s.durable = max(s.durable, upto)
	return nil
}

// Read returns records with Seq > after, oldest first, at most max of them.
// It blocks until at least one exists or ctx ends. Records may not yet be
// durable: after a crash, sequence numbers above the last synced record and
// the acknowledgement may be given to new records, so a consumer drops what
// it did not commit when the agent restarts. Data of the returned records
// is owned by the caller.
func (s *Spool) Read(ctx context.Context, after uint64, max int) ([]Record, error) {
	if max <= 0 {
		return nil, fmt.Errorf("read spool: max %d: want at least 1", max)
	}
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, ErrClosed
		}
		if s.last > after {
			break
		}
		wake := s.wake
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-wake:
		}
	}
	if after+1 < s.segs[0].first {
		first := s.segs[0].first
		s.mu.Unlock()
		return nil, fmt.Errorf("read spool after %d: oldest record is %d: %w", after, first, ErrAcked)
	}
	// Collect byte ranges under mu, read them under filesMu.
	type span struct {
		g        *segment
		from, to int64
		n        int
	}
	var spans []span
	next, end := after+1, min(s.last, after+uint64(max))
	for _, g := range s.segs {
		if next > end {
			break
		}
		if g.next() <= next {
			continue
		}
		i := int(next - g.first)
		j := int(min(end+1, g.next()) - g.first)
		to := g.size
		if j < len(g.offs) {
			to = g.offs[j]
		}
		spans = append(spans, span{g, g.offs[i], to, j - i})
		next = g.first + uint64(j)
	}
	s.filesMu.RLock()
	s.mu.Unlock()
	defer s.filesMu.RUnlock()
	var out []Record
	for _, sp := range spans {
		buf := make([]byte, sp.to-sp.from)
		if _, err := sp.g.f.ReadAt(buf, sp.from); err != nil {
			return nil, fmt.Errorf("read spool segment %s at offset %d: %w", sp.g.path, sp.from, err)
		}
		for range sp.n {
			r, h, err := decodeRecord(buf)
			if err != nil {
				return nil, &CorruptError{Path: sp.g.path, Offset: sp.to - int64(len(buf)), Err: err}
			}
			out = append(out, r)
			buf = buf[recHeaderSize+h.length:]
		}
	}
	return out, nil
}

// Ack records that the node committed everything up to seq. Whole segments
// below it are deleted. The acknowledgement is durable when Ack returns: a
// reopened spool resumes after it.
func (s *Spool) Ack(seq uint64) error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if seq > s.last {
		last := s.last
		s.mu.Unlock()
		return fmt.Errorf("ack spool %s up to %d: newest record is %d", s.dir, seq, last)
	}
	if seq <= s.acked {
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	if err := writeAcked(s.dir, seq); err != nil {
		return err
	}
	s.mu.Lock()
	s.acked = seq
	var rotateErr error
	if g := s.segs[len(s.segs)-1]; s.acked == s.last && len(g.offs) > 0 {
		// Everything is acknowledged: start afresh so the space returns.
		rotateErr = s.newSegment()
	}
	var gone []*segment
	for len(s.segs) > 1 && s.segs[1].first <= s.acked+1 {
		gone = append(gone, s.segs[0])
		s.bytes -= s.segs[0].size
		s.segs = s.segs[1:]
	}
	s.mu.Unlock()
	s.filesMu.Lock()
	for _, g := range gone {
		g.f.Close()
	}
	s.filesMu.Unlock()
	for _, g := range gone {
		if err := os.Remove(g.path); err != nil {
			return fmt.Errorf("remove acknowledged spool segment: %w", err)
		}
	}
	if rotateErr != nil {
		return rotateErr
	}
	if len(gone) > 0 {
		// Not needed for safety (Open deletes them again), but it frees
		// the space for certain.
		return syncDir(s.dir)
	}
	return nil
}

// Acked returns the highest acknowledged sequence number.
func (s *Spool) Acked() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acked
}

// Last returns the sequence number of the newest record (at least Acked).
func (s *Spool) Last() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// Durable returns the sequence number up to which records are synced.
func (s *Spool) Durable() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.durable
}

// Bytes returns the size of the segment files on disk.
func (s *Spool) Bytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes
}

// Close syncs and closes the spool. Blocked Reads return ErrClosed.
func (s *Spool) Close() error {
	err := s.Sync()
	if errors.Is(err, ErrClosed) {
		return nil
	}
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.mu.Lock()
	s.closed = true
	close(s.wake)
	s.mu.Unlock()
	s.filesMu.Lock()
	s.closeFiles()
	s.filesMu.Unlock()
	s.dmu.Lock()
	for _, b := range s.dirty {
		b.close()
	}
	s.dmu.Unlock()
	s.lock.Unlock()
	return err
}

func (s *Spool) closeFiles() {
	for _, g := range s.segs {
		g.f.Close()
	}
}

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
