package spool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
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
