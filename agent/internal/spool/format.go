package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

// Format constants; doc.go describes every byte.
const (
	formatVersion = 1

	segHeaderSize = 32
	recHeaderSize = 28

	// MaxBlockSize and MinBlockSize bound the size of one block record's
	// data; the size must be a power of two.
	MaxBlockSize = 1 << 20
	MinBlockSize = 512
	// MaxVolumeName bounds a volume name in bytes.
	MaxVolumeName = 1024

	markPayload = 8
	maxPayload  = 2 + MaxVolumeName + 8 + MaxBlockSize
	maxRecord   = recHeaderSize + maxPayload
	maxBlockNum = 1 << 62
)

var (
	segMagic = [8]byte{'L', 'B', 'S', 'P', 'O', 'O', 'L', 0}
	castag   = crc32.MakeTable(crc32.Castagnoli)
)

// Kind is the type of a record.
type Kind uint8

// Record kinds.
const (
	KindBlock Kind = 1 // the full content of one block after a write
	KindMark  Kind = 2 // a consistency point
)

func (k Kind) String() string {
	switch k {
	case KindBlock:
		return "block"
	case KindMark:
		return "mark"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Record is one entry of the spool.
type Record struct {
	Seq    uint64
	Kind   Kind
	Volume string    // KindBlock
	Block  int64     // KindBlock: block number (offset / len(Data))
	Data   []byte    // KindBlock: the block's content; len is the block size
	Time   time.Time // KindMark: wall-clock time of the consistency point
}

// errors a decoder reports; each names the bad field.
var (
	errShort    = errors.New("record header truncated")
	errLength   = errors.New("record length out of range")
	errKind     = errors.New("record kind unknown")
	errReserved = errors.New("record reserved bytes not zero")
	errCRC      = errors.New("record checksum mismatch")
	errPayload  = errors.New("record payload malformed")
)

// encodeSegHeader returns the header of a segment whose first record has
// sequence number first.
func encodeSegHeader(first uint64) []byte {
	b := make([]byte, segHeaderSize)
	copy(b, segMagic[:])
	binary.LittleEndian.PutUint32(b[8:], formatVersion)
	binary.LittleEndian.PutUint64(b[16:], first)
	binary.LittleEndian.PutUint32(b[24:], crc32.Checksum(b[:24], castag))
	return b
}

// decodeSegHeader checks a segment header and returns its first sequence
// number.
func decodeSegHeader(b []byte) (uint64, error) {
	if len(b) < segHeaderSize {
		return 0, fmt.Errorf("segment header truncated: %d of %d bytes", len(b), segHeaderSize)
	}
	if [8]byte(b[:8]) != segMagic {
		return 0, fmt.Errorf("segment magic %q: not a spool segment", b[:8])
	}
	if got := crc32.Checksum(b[:24], castag); got != binary.LittleEndian.Uint32(b[24:]) {
		return 0, errors.New("segment header checksum mismatch")
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != formatVersion {
		return 0, fmt.Errorf("segment version %d: this build reads version %d", v, formatVersion)
	}
	if binary.LittleEndian.Uint32(b[12:]) != 0 || binary.LittleEndian.Uint32(b[28:]) != 0 {
		return 0, errors.New("segment header reserved bytes not zero")
	}
	first := binary.LittleEndian.Uint64(b[16:])
	if first == 0 {
		return 0, errors.New("segment first sequence number 0")
	}
	return first, nil
}

// blockRecordSize is the encoded size of a block record.
func blockRecordSize(volume string, size int) int {
	return recHeaderSize + 2 + len(volume) + 8 + size
}

// checkBlockSize reports whether size is a valid block size.
func checkBlockSize(size int) error {
	if size < MinBlockSize || size > MaxBlockSize || size&(size-1) != 0 {
		return fmt.Errorf("block size %d: want a power of two from %d to %d", size, MinBlockSize, MaxBlockSize)
	}
	return nil
}

// appendRecordHeader appends a record header with a zero checksum.
func appendRecordHeader(b []byte, kind Kind, seq, durable uint64, payload int) []byte {
	var h [recHeaderSize]byte
	binary.LittleEndian.PutUint32(h[4:], uint32(payload))
	h[8] = byte(kind)
	binary.LittleEndian.PutUint64(h[12:], seq)
	binary.LittleEndian.PutUint64(h[20:], durable)
	return append(b, h[:]...)
}

// sealRecord fills in the checksum of the record that starts at b[start:].
func sealRecord(b []byte, start int) {
	r := b[start:]
	binary.LittleEndian.PutUint32(r, crc32.Checksum(r[4:], castag))
}

// appendBlockRecord appends an encoded block record to b.
func appendBlockRecord(b []byte, seq, durable uint64, volume string, block int64, data []byte) []byte {
	start := len(b)
	b = appendRecordHeader(b, KindBlock, seq, durable, 2+len(volume)+8+len(data))
	b = binary.LittleEndian.AppendUint16(b, uint16(len(volume)))
	b = append(b, volume...)
	b = binary.LittleEndian.AppendUint64(b, uint64(block))
	b = append(b, data...)
	sealRecord(b, start)
	return b
}

// appendMarkRecord appends an encoded mark record to b.
func appendMarkRecord(b []byte, seq, durable uint64, t time.Time) []byte {
	start := len(b)
	b = appendRecordHeader(b, KindMark, seq, durable, markPayload)
	b = binary.LittleEndian.AppendUint64(b, uint64(t.UnixNano()))
	sealRecord(b, start)
	return b
}

// recHeader is a decoded record header.
type recHeader struct {
	crc     uint32
	length  int // payload bytes
	kind    Kind
	seq     uint64
	durable uint64
}

// decodeRecHeader checks the fields of a record header that can be checked
// without the payload. The length is checked against maxPayload before
// anyone allocates for it.
func decodeRecHeader(b []byte) (recHeader, error) {
	if len(b) < recHeaderSize {
		return recHeader{}, errShort
	}
	h := recHeader{
		crc:     binary.LittleEndian.Uint32(b),
		kind:    Kind(b[8]),
		seq:     binary.LittleEndian.Uint64(b[12:]),
		durable: binary.LittleEndian.Uint64(b[20:]),
	}
	n := binary.LittleEndian.Uint32(b[4:])
	if b[9] != 0 || b[10] != 0 || b[11] != 0 {
		return h, errReserved
	}
	switch h.kind {
	case KindBlock:
		if n < 2+1+8+MinBlockSize || n > maxPayload {
			return h, fmt.Errorf("%w: block payload %d bytes", errLength, n)
		}
	case KindMark:
		if n != markPayload {
			return h, fmt.Errorf("%w: mark payload %d bytes, want %d", errLength, n, markPayload)
		}
	default:
		return h, fmt.Errorf("%w: %d", errKind, h.kind)
	}
	h.length = int(n)
	return h, nil
}

// decodeRecord decodes the record at the start of b, which must hold the
// whole record (recHeaderSize + payload). Data aliases b.
func decodeRecord(b []byte) (Record, recHeader, error) {
	h, err := decodeRecHeader(b)
	if err != nil {
		return Record{}, h, err
	}
	if len(b) < recHeaderSize+h.length {
		return Record{}, h, fmt.Errorf("%w: payload needs %d bytes, have %d", errShort, h.length, len(b)-recHeaderSize)
	}
	whole := b[:recHeaderSize+h.length]
	if crc32.Checksum(whole[4:], castag) != h.crc {
		return Record{}, h, errCRC
	}
	p := whole[recHeaderSize:]
	r := Record{Seq: h.seq, Kind: h.kind}
	switch h.kind {
	case KindMark:
		r.Time = time.Unix(0, int64(binary.LittleEndian.Uint64(p)))
	case KindBlock:
		nl := int(binary.LittleEndian.Uint16(p))
		if nl == 0 || nl > MaxVolumeName || 2+nl+8 > len(p) {
			return Record{}, h, fmt.Errorf("%w: volume name length %d", errPayload, nl)
		}
		r.Volume = string(p[2 : 2+nl])
		blk := binary.LittleEndian.Uint64(p[2+nl:])
		if blk >= maxBlockNum {
			return Record{}, h, fmt.Errorf("%w: block number %d", errPayload, blk)
		}
		r.Block = int64(blk)
		r.Data = p[2+nl+8:]
		if err := checkBlockSize(len(r.Data)); err != nil {
			return Record{}, h, fmt.Errorf("%w: %v", errPayload, err)
		}
	}
	if h.seq == 0 {
		return Record{}, h, fmt.Errorf("%w: sequence number 0", errPayload)
	}
	return r, h, nil
}
