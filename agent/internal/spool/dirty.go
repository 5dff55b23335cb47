package spool

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math/bits"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Dirty bitmap file format constants; doc.go describes every byte.
const (
	dirtyPrefix    = "dirty-"
	dirtySuffix    = ".bm"
	dirtyFixedHdr  = 24 // magic, version, name length, reserved, blocks
	dirtyRecHdr    = 12
	opSet          = 1
	opClear        = 2
	opSnapshot     = 3
	rangePayload   = 16
	maxDirtyBlocks = 1 << 36 // 8 GiB of bitmap: 4 EiB at 64 KiB blocks
)

var dirtyMagic = [8]byte{'L', 'B', 'D', 'I', 'R', 'T', 'Y', 0}

// Bitmap is the persistent set of blocks of one volume that changed while
// the spool was full and must be resynced. Its methods are safe for
// concurrent use with each other and with Spool.MarkDirty.
//
// A resync reads a block from the volume and ships it; a write that marks
// the block again between that read and the Clear must not be lost, so the
// resyncer takes a Token before reading and calls ClearIfUnchanged with it.
type Bitmap struct {
	mu     sync.Mutex
	volume string
	path   string
	f      *os.File // nil for a volume that was never dirty
	log    *slog.Logger
	blocks int64
	bits   []uint64
	gens   []uint64 // per word: the generation of its newest mark
	gen    uint64
	count  int64
	size   int64 // file size
	err    error // sticky
	closed bool
}

// Token identifies a moment in the marking history of a bitmap.
type Token uint64

func dirtyFileName(volume string) string {
	h := sha256.Sum256([]byte(volume))
	return dirtyPrefix + hex.EncodeToString(h[:16]) + dirtySuffix
}

func words(blocks int64) int64 { return (blocks + 63) / 64 }

// MarkDirty records that blocks first..first+n-1 of volume (which has
// blocks blocks in all) must be resynced. The bitmap is durable when it
// returns; marking blocks already marked costs no I/O. A changed block
// count resizes the bitmap.
func (s *Spool) MarkDirty(volume string, blocks, first, n int64) error {
	if len(volume) == 0 || len(volume) > MaxVolumeName {
		return fmt.Errorf("mark dirty: volume name of %d bytes: want 1 to %d", len(volume), MaxVolumeName)
	}
	if blocks <= 0 || blocks > maxDirtyBlocks {
		return fmt.Errorf("mark dirty blocks of %s: volume of %d blocks: want 1 to %d", volume, blocks, int64(maxDirtyBlocks))
	}
	if first < 0 || n <= 0 || first+n > blocks {
		return fmt.Errorf("mark dirty blocks %d+%d of %s: outside the volume's %d blocks", first, n, volume, blocks)
	}
	s.dmu.Lock()
	bm, ok := s.dirty[volume]
	if !ok {
		s.mu.Lock()
		closed := s.closed
		s.mu.Unlock()
		if closed {
			s.dmu.Unlock()
			return ErrClosed
		}
		var err error
		bm, err = createBitmap(s.dir, volume, blocks, s.log)
		if err != nil {
			s.dmu.Unlock()
			return err
		}
		s.dirty[volume] = bm
	}
	s.dmu.Unlock()
	return bm.mark(blocks, first, n)
}

// Dirty returns the dirty bitmap of volume; a volume never marked gets an
// empty bitmap.
func (s *Spool) Dirty(volume string) (*Bitmap, error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	s.dmu.Lock()
	defer s.dmu.Unlock()
	if bm, ok := s.dirty[volume]; ok {
		return bm, nil
	}
	return &Bitmap{volume: volume, log: s.log}, nil
}

// DirtyVolumes returns the volumes that have a dirty bitmap with at least
// one block set, sorted.
func (s *Spool) DirtyVolumes() []string {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	var out []string
	for v, bm := range s.dirty {
		if bm.Count() > 0 {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return out
}

// loadDirty loads every bitmap file in the spool directory.
func (s *Spool) loadDirty() error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("open spool: %w", err)
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), dirtyPrefix) || !strings.HasSuffix(e.Name(), dirtySuffix) {
			continue
		}
		bm, err := loadBitmap(filepath.Join(s.dir, e.Name()), s.log)
		if err != nil {
			return err
		}
		if want := dirtyFileName(bm.volume); want != e.Name() {
			bm.close()
			return &CorruptError{Path: bm.path, Err: fmt.Errorf("holds volume %q, whose file would be %s", bm.volume, want)}
		}
		s.dirty[bm.volume] = bm
	}
	return nil
}

func encodeDirtyHeader(volume string, blocks int64) []byte {
	b := make([]byte, 0, dirtyFixedHdr+len(volume)+4)
	b = append(b, dirtyMagic[:]...)
	b = binary.LittleEndian.AppendUint32(b, formatVersion)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(volume)))
	b = binary.LittleEndian.AppendUint16(b, 0)
	b = binary.LittleEndian.AppendUint64(b, uint64(blocks))
	b = append(b, volume...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castag))
}

// appendDirtyRecord appends a record with op and payload.
func appendDirtyRecord(b []byte, op byte, payload []byte) []byte {
	start := len(b)
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(payload)))
	b = append(b, op, 0, 0, 0)
	b = append(b, payload...)
	binary.LittleEndian.PutUint32(b[start:], crc32.Checksum(b[start+4:], castag))
	return b
}

func rangePayloadOf(first, n int64) []byte {
	p := binary.LittleEndian.AppendUint64(nil, uint64(first))
	return binary.LittleEndian.AppendUint64(p, uint64(n))
}

// snapshotFile returns a whole bitmap file for the current content.
func (b *Bitmap) snapshotFile() []byte {
	out := encodeDirtyHeader(b.volume, b.blocks)
	p := make([]byte, 8*len(b.bits))
	for i, w := range b.bits {
		binary.LittleEndian.PutUint64(p[8*i:], w)
	}
	return appendDirtyRecord(out, opSnapshot, p)
}

func createBitmap(dir, volume string, blocks int64, log *slog.Logger) (*Bitmap, error) {
	b := &Bitmap{
		volume: volume,
		path:   filepath.Join(dir, dirtyFileName(volume)),
		log:    log,
		blocks: blocks,
		bits:   make([]uint64, words(blocks)),
		gens:   make([]uint64, words(blocks)),
	}
	if err := b.rewrite(); err != nil {
		return nil, err
	}
	return b, nil
}

// rewrite replaces the file with a snapshot (atomically) and reopens it.
func (b *Bitmap) rewrite() error {
	data := b.snapshotFile()
	if err := writeFileAtomic(filepath.Dir(b.path), filepath.Base(b.path), data); err != nil {
		return err
	}
	f, err := os.OpenFile(b.path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open dirty bitmap: %w", err)
	}
	if b.f != nil {
		b.f.Close()
	}
	b.f, b.size = f, int64(len(data))
	return nil
}

// decodeDirty decodes a whole bitmap file. It returns the bitmap (without
// file) and, when the file ends in a torn record, the offset to truncate
// at (else -1). Lengths are checked against the data before allocating.
func decodeDirty(path string, data []byte) (*Bitmap, int64, error) {
	bad := func(off int, format string, args ...any) error {
		return &CorruptError{Path: path, Offset: int64(off), Err: fmt.Errorf(format, args...)}
	}
	if len(data) < dirtyFixedHdr+4 {
		return nil, 0, bad(0, "dirty bitmap header truncated: %d bytes", len(data))
	}
	if [8]byte(data[:8]) != dirtyMagic {
		return nil, 0, bad(0, "dirty bitmap magic %q", data[:8])
	}
	if v := binary.LittleEndian.Uint32(data[8:]); v != formatVersion {
		return nil, 0, bad(8, "dirty bitmap version %d, want %d", v, formatVersion)
	}
	nl := int(binary.LittleEndian.Uint16(data[12:]))
	if nl == 0 || nl > MaxVolumeName || dirtyFixedHdr+nl+4 > len(data) {
		return nil, 0, bad(12, "dirty bitmap volume name length %d", nl)
	}
	hdr := dirtyFixedHdr + nl + 4
	if crc32.Checksum(data[:hdr-4], castag) != binary.LittleEndian.Uint32(data[hdr-4:]) {
		return nil, 0, bad(0, "dirty bitmap header checksum mismatch")
	}
	if binary.LittleEndian.Uint16(data[14:]) != 0 {
		return nil, 0, bad(14, "dirty bitmap reserved bytes not zero")
	}
	blocks := binary.LittleEndian.Uint64(data[16:])
	if blocks == 0 || blocks > maxDirtyBlocks {
		return nil, 0, bad(16, "dirty bitmap block count %d: want 1 to %d", blocks, int64(maxDirtyBlocks))
	}
	nw := words(int64(blocks))
	b := &Bitmap{path: path, volume: string(data[dirtyFixedHdr : dirtyFixedHdr+nl]), blocks: int64(blocks)}
	off := hdr
	for off < len(data) {
		rest := data[off:]
		torn := func(format string, args ...any) (*Bitmap, int64, error) {
			// Every record is synced before the next is written, so only
			// the last one can be torn: one that reaches the end of the
			// file, or one followed by nothing but zeros.
			n := 0
			if len(rest) >= dirtyRecHdr {
				n = dirtyRecHdr + int(binary.LittleEndian.Uint32(rest[4:]))
			}
			if len(rest) < dirtyRecHdr || n < 0 || n >= len(rest) || allZero(rest[dirtyRecHdr:]) {
				if b.bits == nil {
					return nil, 0, bad(off, "dirty bitmap has no snapshot record")
				}
				return b, int64(off), nil
			}
			return nil, 0, bad(off, format, args...)
		}
		if len(rest) < dirtyRecHdr {
			return torn("dirty bitmap record header truncated")
		}
		length := int64(binary.LittleEndian.Uint32(rest[4:]))
		op := rest[8]
		if rest[9]|rest[10]|rest[11] != 0 {
			return torn("dirty bitmap record reserved bytes not zero")
		}
		switch op {
		case opSet, opClear:
			if length != rangePayload {
				return torn("dirty bitmap range record length %d, want %d", length, rangePayload)
			}
		case opSnapshot:
			if length != 8*nw {
				return torn("dirty bitmap snapshot length %d, want %d", length, 8*nw)
			}
		default:
			return torn("dirty bitmap record op %d unknown", op)
		}
		if int64(len(rest)) < dirtyRecHdr+length {
			return torn("dirty bitmap record truncated")
		}
		rec := rest[:dirtyRecHdr+length]
		if crc32.Checksum(rec[4:], castag) != binary.LittleEndian.Uint32(rec) {
			return torn("dirty bitmap record checksum mismatch")
		}
		p := rec[dirtyRecHdr:]
		if op == opSnapshot {
			b.bits = make([]uint64, nw) // length was checked against the data
			for i := range b.bits {
				b.bits[i] = binary.LittleEndian.Uint64(p[8*i:])
			}
			if r := b.blocks % 64; r != 0 {
				b.bits[nw-1] &= 1<<r - 1
			}
		} else {
			if b.bits == nil {
				return nil, 0, bad(off, "dirty bitmap range record before a snapshot")
			}
			first, n := binary.LittleEndian.Uint64(p), binary.LittleEndian.Uint64(p[8:])
			if first >= blocks || n == 0 || n > blocks-first {
				return nil, 0, bad(off, "dirty bitmap range %d+%d outside %d blocks", first, n, blocks)
			}
			b.setRange(int64(first), int64(n), op == opSet)
		}
		off += len(rec)
	}
	if b.bits == nil {
		return nil, 0, bad(off, "dirty bitmap has no snapshot record")
	}
	return b, -1, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func loadBitmap(path string, log *slog.Logger) (*Bitmap, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open dirty bitmap: %w", err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("read dirty bitmap %s: %w", path, err)
	}
	b, cut, err := decodeDirty(path, data)
	if err != nil {
		f.Close()
		return nil, err
	}
	b.f, b.log, b.size = f, log, int64(len(data))
	b.gens = make([]uint64, len(b.bits))
	// Count from the bits: decodeDirty's setRange already moved count by
	// each range record, relative to an empty snapshot.
	b.count = 0
	for _, w := range b.bits {
		b.count += int64(bits.OnesCount64(w))
	}
	if cut >= 0 {
		if err := f.Truncate(cut); err != nil {
			f.Close()
			return nil, fmt.Errorf("truncate torn dirty bitmap record: %w", err)
		}
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			f.Close()
			return nil, fmt.Errorf("sync dirty bitmap %s: %w", path, err)
		}
		log.Warn("spool_dirty_torn_tail_truncated", "file", path, "offset", cut, "bytes_dropped", b.size-cut, "volume", b.volume)
		b.size = cut
	}
	return b, nil
}

// setRange sets or clears bits first..first+n-1 and keeps count.
func (b *Bitmap) setRange(first, n int64, set bool) {
	for i := first; i < first+n; {
		w, bit := i/64, uint(i%64)
		span := min(64-int64(bit), first+n-i)
		var mask uint64
		if span == 64 {
			mask = ^uint64(0)
		} else {
			mask = (uint64(1)<<uint(span) - 1) << bit
		}
		old := b.bits[w]
		if set {
			b.bits[w] |= mask
		} else {
			b.bits[w] &^= mask
		}
		b.count += int64(bits.OnesCount64(b.bits[w])) - int64(bits.OnesCount64(old))
		i += span
	}
}

// allSet reports whether bits first..first+n-1 are all set.
func (b *Bitmap) allSet(first, n int64) bool {
	for i := first; i < first+n; i++ {
		if b.bits[i/64]&(1<<uint(i%64)) == 0 {
			return false
		}
	}
	return true
}

func (b *Bitmap) usable() error {
	if b.closed {
		return ErrClosed
	}
	return b.err
}

// resize changes the block count and rewrites the file.
func (b *Bitmap) resize(blocks int64) error {
	nw := words(blocks)
	bitsNew := make([]uint64, nw)
	gensNew := make([]uint64, nw)
	copy(bitsNew, b.bits)
	copy(gensNew, b.gens)
	if r := blocks % 64; r != 0 {
		bitsNew[nw-1] &= 1<<r - 1
	}
	b.bits, b.gens, b.blocks, b.count = bitsNew, gensNew, blocks, 0
	for _, w := range b.bits {
		b.count += int64(bits.OnesCount64(w))
	}
	if err := b.rewrite(); err != nil {
		b.err = err
		return err
	}
	return nil
}

func (b *Bitmap) mark(blocks, first, n int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.usable(); err != nil {
		return err
	}
	if blocks != b.blocks {
		b.log.Info("spool_dirty_resized", "volume", b.volume, "blocks_before", b.blocks, "blocks", blocks)
		if err := b.resize(blocks); err != nil {
			return err
		}
	}
	b.gen++
	for w := first / 64; w <= (first+n-1)/64; w++ {
		b.gens[w] = b.gen
	}
	if b.allSet(first, n) {
		return nil
	}
	if err := b.appendRecords(appendDirtyRecord(nil, opSet, rangePayloadOf(first, n))); err != nil {
		return err
	}
	b.setRange(first, n, true)
	return b.maybeCompact()
}

// appendRecords appends encoded records and fdatasyncs them; on failure the
// file is cut back, and if that fails the bitmap is unusable.
func (b *Bitmap) appendRecords(rec []byte) error {
	if _, err := b.f.WriteAt(rec, b.size); err != nil {
		if terr := b.f.Truncate(b.size); terr != nil {
			b.err = fmt.Errorf("dirty bitmap %s: write failed (%v) and truncating it back failed: %w", b.path, err, terr)
			return b.err
		}
		return fmt.Errorf("write dirty bitmap %s: %w", b.path, err)
	}
	if err := unix.Fdatasync(int(b.f.Fd())); err != nil {
		b.err = fmt.Errorf("sync dirty bitmap %s: %w", b.path, err)
		return b.err
	}
	b.size += int64(len(rec))
	return nil
}

// maybeCompact rewrites the file as one snapshot when the log of ranges
// outgrows it.
func (b *Bitmap) maybeCompact() error {
	snap := int64(dirtyFixedHdr + len(b.volume) + 4 + dirtyRecHdr + 8*len(b.bits))
	if b.size <= 2*snap+64<<10 {
		return nil
	}
	if err := b.rewrite(); err != nil {
		b.err = err
		return err
	}
	return nil
}

// Volume returns the volume the bitmap belongs to.
func (b *Bitmap) Volume() string { return b.volume }

// Blocks returns the volume's block count as last given to MarkDirty (0
// for a volume never marked).
func (b *Bitmap) Blocks() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.blocks
}

// Count returns the number of dirty blocks.
func (b *Bitmap) Count() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.count
}

// Next returns the first dirty block at or after from, and false when
// there is none.
func (b *Bitmap) Next(from int64) (int64, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if from < 0 {
		from = 0
	}
	for w := from / 64; w < int64(len(b.bits)); w++ {
		word := b.bits[w]
		if w == from/64 {
			word &= ^uint64(0) << uint(from%64)
		}
		if word != 0 {
			return w*64 + int64(bits.TrailingZeros64(word)), true
		}
	}
	return 0, false
}

// Token returns the current marking generation, to be passed to
// ClearIfUnchanged.
func (b *Bitmap) Token() Token {
	b.mu.Lock()
	defer b.mu.Unlock()
	return Token(b.gen)
}

// Clear clears blocks first..first+n-1; it is durable when it returns.
func (b *Bitmap) Clear(first, n int64) error {
	return b.clear(first, n, nil)
}

// ClearIfUnchanged clears blocks first..first+n-1 except those marked (or
// sharing a 64-block word with a block marked) after tok was taken: they
// stay dirty for the next resync pass. It is durable when it returns.
func (b *Bitmap) ClearIfUnchanged(tok Token, first, n int64) error {
	return b.clear(first, n, &tok)
}

func (b *Bitmap) clear(first, n int64, tok *Token) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.usable(); err != nil {
		return err
	}
	if first < 0 || n < 0 {
		return fmt.Errorf("clear dirty blocks %d+%d of %s: negative range", first, n, b.volume)
	}
	end := min(first+n, b.blocks)
	// Runs of blocks to clear: skip words marked since tok, and stretches
	// with nothing set.
	var recs []byte
	type run struct{ first, n int64 }
	var runs []run
	for i := first; i < end; {
		w := i / 64
		wend := min((w+1)*64, end)
		if (tok != nil && b.gens[w] > uint64(*tok)) || b.bits[w] == 0 {
			i = wend
			continue
		}
		if k := len(runs) - 1; k >= 0 && runs[k].first+runs[k].n == i {
			runs[k].n += wend - i
		} else {
			runs = append(runs, run{i, wend - i})
		}
		i = wend
	}
	if len(runs) == 0 {
		return nil
	}
	for _, r := range runs {
		recs = appendDirtyRecord(recs, opClear, rangePayloadOf(r.first, r.n))
	}
	if err := b.appendRecords(recs); err != nil {
		return err
	}
	for _, r := range runs {
		b.setRange(r.first, r.n, false)
	}
	return b.maybeCompact()
}

func (b *Bitmap) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	if b.f != nil {
		b.f.Close()
	}
}
