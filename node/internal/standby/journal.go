package standby

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"

	"github.com/lifeboat-dr/lifeboat/blockstore"
)

// Journal file name and record layout (see doc.go).
const (
	journalName   = "journal"
	recHeaderSize = 24
	commitLen     = 8 + sha256.Size
	commitRecSize = recHeaderSize + commitLen
	journalVer    = 1

	maxBeginBytes = maxStateBytes + 1<<20
	maxZeroLen    = 1 << 31
	maxOffset     = 1 << 50
	maxFiles      = 2 * maxVolumes
)

var recMagic = [4]byte{'L', 'B', 'S', 'J'}

// Record types.
const (
	recBegin    = 1
	recTruncate = 2
	recWrite    = 3
	recZero     = 4
	recReplace  = 5
	recRemove   = 6
	recCommit   = 7
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// record is one journal record. For write, begin and commit records
// payload holds n bytes; a zero record has n as its range length and no
// payload.
type record struct {
	typ     byte
	file    uint16
	off     int64
	n       uint32
	payload []byte
}

// payloadLen returns how many payload bytes follow a header of type typ
// with length field n.
func payloadLen(typ byte, n uint32) int {
	switch typ {
	case recBegin, recWrite, recCommit:
		return int(n)
	}
	return 0
}

// appendRecord appends the encoding of r to dst.
func appendRecord(dst []byte, r record) []byte {
	start := len(dst)
	dst = append(dst, recMagic[:]...)
	dst = append(dst, r.typ, 0)
	dst = binary.LittleEndian.AppendUint16(dst, r.file)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(r.off))
	dst = binary.LittleEndian.AppendUint32(dst, r.n)
	c := crc32.Update(0, castagnoli, dst[start:start+20])
	c = crc32.Update(c, castagnoli, r.payload)
	dst = binary.LittleEndian.AppendUint32(dst, c)
	return append(dst, r.payload...)
}

// decodeHeader checks a record header's fields against their limits and
// returns the record without its payload and the payload length.
func decodeHeader(h []byte) (record, int, error) {
	var r record
	if len(h) < recHeaderSize {
		return r, 0, fmt.Errorf("record header: %d bytes", len(h))
	}
	if [4]byte(h[:4]) != recMagic {
		return r, 0, fmt.Errorf("record magic %q", h[:4])
	}
	r.typ = h[4]
	if h[5] != 0 {
		return r, 0, fmt.Errorf("record reserved byte %d", h[5])
	}
	r.file = binary.LittleEndian.Uint16(h[6:])
	off := binary.LittleEndian.Uint64(h[8:])
	r.n = binary.LittleEndian.Uint32(h[16:])
	if off > maxOffset {
		return r, 0, fmt.Errorf("record offset %d beyond %d", off, uint64(maxOffset))
	}
	r.off = int64(off)
	bad := func(format string, args ...any) (record, int, error) {
		return r, 0, fmt.Errorf("record type %d: "+format, append([]any{r.typ}, args...)...)
	}
	switch r.typ {
	case recBegin:
		if r.file != 0 || r.off != 0 || r.n == 0 || r.n > maxBeginBytes {
			return bad("file %d, offset %d, length %d", r.file, r.off, r.n)
		}
	case recCommit:
		if r.file != 0 || r.off != 0 || r.n != commitLen {
			return bad("file %d, offset %d, length %d", r.file, r.off, r.n)
		}
	case recWrite:
		if r.n == 0 || r.n > blockstore.MaxBlockSize || r.off+int64(r.n) > maxOffset {
			return bad("length %d at offset %d", r.n, r.off)
		}
	case recZero:
		if r.n == 0 || r.n > maxZeroLen || r.off+int64(r.n) > maxOffset {
			return bad("length %d at offset %d", r.n, r.off)
		}
	case recTruncate:
		if r.n != 0 {
			return bad("length %d", r.n)
		}
	case recReplace, recRemove:
		if r.off != 0 || r.n != 0 {
			return bad("offset %d, length %d", r.off, r.n)
		}
	default:
		return r, 0, fmt.Errorf("record type %d unknown", r.typ)
	}
	return r, payloadLen(r.typ, r.n), nil
}

func recordCRC(h, payload []byte) uint32 {
	return crc32.Update(crc32.Update(0, castagnoli, h[:20]), castagnoli, payload)
}

// decodeRecord decodes the record at the start of b and returns it and its
// encoded length. The payload aliases b.
func decodeRecord(b []byte) (record, int, error) {
	r, n, err := decodeHeader(b)
	if err != nil {
		return r, 0, err
	}
	if len(b)-recHeaderSize < n {
		return r, 0, fmt.Errorf("record type %d: %d payload bytes, %d present", r.typ, n, len(b)-recHeaderSize)
	}
	r.payload = b[recHeaderSize : recHeaderSize+n]
	if got, want := recordCRC(b, r.payload), binary.LittleEndian.Uint32(b[20:]); got != want {
		return r, 0, fmt.Errorf("record type %d: CRC32C %08x, header says %08x", r.typ, got, want)
	}
	return r, recHeaderSize + n, nil
}

// begin is the payload of the first record: what the journal changes and
// the state it leads to.
type begin struct {
	Version int             `json:"version"`
	Base    string          `json:"base"`
	Files   []string        `json:"files"`
	State   json.RawMessage `json:"state"`
}

func encodeBegin(base string, files []string, p blockstore.Point) []byte {
	st, _ := json.Marshal(state{Format: stateFormat, Version: stateVersion, Point: p})
	b, _ := json.Marshal(begin{Version: journalVer, Base: base, Files: files, State: st})
	return b
}

// decodeBegin checks and decodes a begin payload.
func decodeBegin(b []byte) (begin, blockstore.Point, error) {
	var bg begin
	if len(b) > maxBeginBytes {
		return bg, blockstore.Point{}, fmt.Errorf("begin record: %d bytes", len(b))
	}
	if err := strictJSON(b, &bg); err != nil {
		return bg, blockstore.Point{}, fmt.Errorf("begin record: %v", err)
	}
	if bg.Version != journalVer {
		return bg, blockstore.Point{}, fmt.Errorf("begin record: journal version %d, this lifeboat reads version %d", bg.Version, journalVer)
	}
	if bg.Base != "" {
		if _, err := hex.DecodeString(bg.Base); err != nil || len(bg.Base) != pointIDLen {
			return bg, blockstore.Point{}, fmt.Errorf("begin record: base point %q", bg.Base)
		}
	}
	if len(bg.Files) > maxFiles {
		return bg, blockstore.Point{}, fmt.Errorf("begin record: %d files, limit %d", len(bg.Files), maxFiles)
	}
	seen := make(map[string]bool, len(bg.Files))
	for _, f := range bg.Files {
		if !validFile(f) || seen[f] {
			return bg, blockstore.Point{}, fmt.Errorf("begin record: file name %q not valid or repeated", f)
		}
		seen[f] = true
	}
	p, err := decodeStateBody(bg.State)
	if err != nil {
		return bg, blockstore.Point{}, fmt.Errorf("begin record: %w", err)
	}
	if p.ID == bg.Base {
		return bg, blockstore.Point{}, fmt.Errorf("begin record: base and target are both point %s", p.ID)
	}
	return bg, p, nil
}

// journalWriter appends records to a new journal file and keeps a sticky
// error; the SHA-256 of everything written goes into the commit record.
type journalWriter struct {
	f      *os.File
	bw     *bufio.Writer
	h      hash.Hash
	buf    []byte
	count  int64
	size   int64
	err    error
	closed bool
}

func createJournal(path string) (*journalWriter, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create journal: %w", err)
	}
	return &journalWriter{f: f, bw: bufio.NewWriterSize(f, 1<<20), h: sha256.New()}, nil
}

func (w *journalWriter) add(r record) error {
	if w.err != nil {
		return w.err
	}
	w.buf = appendRecord(w.buf[:0], r)
	w.h.Write(w.buf)
	if _, err := w.bw.Write(w.buf); err != nil {
		w.err = fmt.Errorf("write journal %s: %w", w.f.Name(), err)
		return w.err
	}
	w.count++
	w.size += int64(len(w.buf))
	return nil
}

// sync makes every record so far durable.
func (w *journalWriter) sync() error {
	if w.err != nil {
		return w.err
	}
	if err := w.bw.Flush(); err != nil {
		w.err = fmt.Errorf("write journal %s: %w", w.f.Name(), err)
	} else if err := w.f.Sync(); err != nil {
		w.err = fmt.Errorf("sync journal %s: %w", w.f.Name(), err)
	}
	return w.err
}

// commit appends the commit record and syncs it. The records before it
// must be durable already (sync), so that a durable commit record implies
// a complete journal.
func (w *journalWriter) commit() error {
	if w.err != nil {
		return w.err
	}
	p := binary.LittleEndian.AppendUint64(make([]byte, 0, commitLen), uint64(w.count))
	p = w.h.Sum(p)
	w.buf = appendRecord(w.buf[:0], record{typ: recCommit, n: commitLen, payload: p})
	if _, err := w.bw.Write(w.buf); err != nil {
		w.err = fmt.Errorf("write journal %s: %w", w.f.Name(), err)
		return w.err
	}
	w.size += int64(len(w.buf))
	return w.sync()
}

func (w *journalWriter) close() error {
	if w.closed {
		return w.err
	}
	w.closed = true
	if err := w.f.Close(); err != nil && w.err == nil {
		w.err = fmt.Errorf("close journal %s: %w", w.f.Name(), err)
	}
	return w.err
}

// journalReader reads records in order, checking each, and hashes every
// byte before the commit record.
type journalReader struct {
	path  string
	r     *bufio.Reader
	h     hash.Hash
	off   int64 // of the next record
	count int64 // records read before the commit
	hdr   [recHeaderSize]byte
	buf   []byte
}

func newJournalReader(path string, r io.Reader) *journalReader {
	return &journalReader{path: path, r: bufio.NewReaderSize(r, 1<<20), h: sha256.New()}
}

// next returns the next record; its payload is valid until the next call.
func (jr *journalReader) next() (record, error) {
	fail := func(err error) (record, error) {
		return record{}, &CorruptError{Path: jr.path, Offset: jr.off, Err: fmt.Errorf("%w: %v", ErrCorrupt, err), Hint: journalHint}
	}
	if _, err := io.ReadFull(jr.r, jr.hdr[:]); err != nil {
		return fail(fmt.Errorf("record header: %v", err))
	}
	r, n, err := decodeHeader(jr.hdr[:])
	if err != nil {
		return fail(err)
	}
	if cap(jr.buf) < n {
		jr.buf = make([]byte, n)
	}
	r.payload = jr.buf[:n]
	if _, err := io.ReadFull(jr.r, r.payload); err != nil {
		return fail(fmt.Errorf("record type %d: payload: %v", r.typ, err))
	}
	if got, want := recordCRC(jr.hdr[:], r.payload), binary.LittleEndian.Uint32(jr.hdr[20:]); got != want {
		return fail(fmt.Errorf("record type %d: CRC32C %08x, header says %08x", r.typ, got, want))
	}
	if r.typ != recCommit {
		jr.h.Write(jr.hdr[:])
		jr.h.Write(r.payload)
		jr.count++
	}
	jr.off += int64(recHeaderSize + n)
	return r, nil
}

const journalHint = "the journal of a committed point is damaged, so the images may be half way between two points: move the standby directory aside; the hot tier then rebuilds the images from the store"

// journal is a committed journal, checked end to end.
type journal struct {
	path   string
	base   string
	files  []string
	target blockstore.Point
}

// errUncommitted means a journal has no valid commit record at its end: it
// was interrupted before the point was committed and nothing was applied.
var errUncommitted = errors.New("journal has no commit record")

// loadJournal reads and checks the journal at path. It returns
// errUncommitted when the journal does not end in a valid commit record,
// and a *CorruptError when it does but anything before it is wrong.
func loadJournal(path string) (*journal, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read journal: %w", err)
	}
	size := fi.Size()
	if size < recHeaderSize+commitRecSize {
		return nil, errUncommitted
	}
	tail := make([]byte, commitRecSize)
	if _, err := f.ReadAt(tail, size-commitRecSize); err != nil {
		return nil, fmt.Errorf("read journal %s: %w", path, err)
	}
	if r, n, err := decodeRecord(tail); err != nil || r.typ != recCommit || n != commitRecSize {
		return nil, errUncommitted
	}
	// Committed: every byte before the commit record must check out.
	jr := newJournalReader(path, f)
	r, err := jr.next()
	if err != nil {
		return nil, err
	}
	corrupt := func(off int64, format string, args ...any) error {
		return &CorruptError{Path: path, Offset: off, Err: fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...), Hint: journalHint}
	}
	if r.typ != recBegin {
		return nil, corrupt(0, "first record has type %d, want begin", r.typ)
	}
	bg, target, err := decodeBegin(r.payload)
	if err != nil {
		return nil, corrupt(0, "%v", err)
	}
	j := &journal{path: path, base: bg.Base, files: bg.Files, target: target}
	for {
		at := jr.off
		r, err := jr.next()
		if err != nil {
			return nil, err
		}
		switch {
		case r.typ == recBegin:
			return nil, corrupt(at, "second begin record")
		case r.typ == recCommit:
			count := int64(binary.LittleEndian.Uint64(r.payload))
			if count != jr.count {
				return nil, corrupt(at, "commit record counts %d records, the journal has %d", count, jr.count)
			}
			if sum := jr.h.Sum(nil); string(sum) != string(r.payload[8:]) {
				return nil, corrupt(at, "commit record's SHA-256 does not match the records")
			}
			if jr.off != size {
				return nil, corrupt(jr.off, "%d bytes after the commit record", size-jr.off)
			}
			return j, nil
		case int(r.file) >= len(j.files):
			return nil, corrupt(at, "record names file %d of %d", r.file, len(j.files))
		}
	}
}
