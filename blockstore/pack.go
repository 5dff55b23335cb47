package blockstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Limits that every decoder checks before allocating.
const (
	MinBlockSize = 4 << 10
	MaxBlockSize = 1 << 20

	packHeaderSize   = 16
	frameHeaderSize  = 16
	frameEntrySize   = IDSize + 4
	frameTrailerSize = 4
	maxFrameBlocks   = 1024
	maxFramePlain    = 16 << 20
	// frameTarget is how much plaintext the writer groups into one
	// compressed frame: hash small, compress big (PLATFORM.md).
	frameTarget = 256 << 10
	// maxPackSize is the size at which a pack is sealed and a new one begun.
	maxPackSize = 128 << 20
	// sealAt is the size from which a flush starts a new pack.
	sealAt = 16 << 20
)

var (
	packMagic  = [8]byte{'L', 'B', 'P', 'A', 'C', 'K', 0, 1}
	frameMagic = [4]byte{'L', 'B', 'F', '1'}
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
)

// Frame codecs. codecSealed is a flag: the payload is nonce || AES-256-GCM
// of the raw or compressed bytes, with the frame header and entries as
// additional data (crypt.go).
const (
	codecRaw    = 0
	codecZstd   = 1
	codecSealed = 0x80
)

// errCorrupt is wrapped by every decoding error of on-disk data.
var errCorrupt = errors.New("corrupt")

func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errCorrupt}, args...)...)
}

// frameEntry describes one block inside a frame.
type frameEntry struct {
	id  ID
	len uint32
}

// kind says what a frame holds and which index keyspace names it.
type kind byte

const (
	kindBlock kind = 0 // volume blocks, indexed under 'b'
	kindPage  kind = 1 // block-map pages, indexed under 'm'
	// kindPoint frames hold a copy of one point record (its JSON), so that
	// the index can be rebuilt from the packs alone. Indexed under 'P' by
	// pointFrameID, kept by prune while the point is.
	kindPoint kind = 2
)

// objectKinds are the kinds of frames, in the order prune and verify scan them.
var objectKinds = []kind{kindBlock, kindPage, kindPoint}

// ref names a stored object: a block or a map page.
type ref struct {
	kind kind
	id   ID
}

// frame is a decoded frame record (without its plaintext).
type frame struct {
	kind    kind
	codec   byte
	plain   uint32 // total plaintext length
	entries []frameEntry
	head    []byte // header and entries (a sealed payload's additional data), aliases the record
	payload []byte // stored bytes (compressed or raw, maybe sealed), aliases the record
}

// encodeFrame appends a frame record to dst.
func encodeFrame(dst []byte, k kind, codec byte, entries []frameEntry, plain uint32, payload []byte) []byte {
	start := len(dst)
	dst = appendFrameHead(dst, k, codec, entries, plain, len(payload))
	dst = append(dst, payload...)
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// encodeSealedFrame appends a frame record whose payload c seals.
func encodeSealedFrame(dst []byte, c *sealer, k kind, codec byte, entries []frameEntry, plain uint32, payload []byte) []byte {
	start := len(dst)
	dst = appendFrameHead(dst, k, codec|codecSealed, entries, plain, len(payload)+sealOver)
	head := dst[start:]
	dst = c.sealFrame(dst, payload, head)
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// appendFrameHead appends a frame header and its entries.
func appendFrameHead(dst []byte, k kind, codec byte, entries []frameEntry, plain uint32, stored int) []byte {
	var h [frameHeaderSize]byte
	copy(h[0:4], frameMagic[:])
	h[4] = codec
	h[5] = byte(k)
	binary.LittleEndian.PutUint16(h[6:8], uint16(len(entries)))
	binary.LittleEndian.PutUint32(h[8:12], plain)
	binary.LittleEndian.PutUint32(h[12:16], uint32(stored))
	dst = append(dst, h[:]...)
	for _, e := range entries {
		dst = append(dst, e.id[:]...)
		dst = binary.LittleEndian.AppendUint32(dst, e.len)
	}
	return dst
}

// frameSizeFromHeader returns the total record length announced by a frame
// header, after checking its fields against the limits.
func frameSizeFromHeader(h []byte) (int, error) {
	if len(h) < frameHeaderSize {
		return 0, corruptf("frame header: %d bytes, want %d", len(h), frameHeaderSize)
	}
	if [4]byte(h[0:4]) != frameMagic {
		return 0, corruptf("frame magic %q", h[0:4])
	}
	if c := h[4] &^ codecSealed; c != codecRaw && c != codecZstd {
		return 0, corruptf("frame codec %d", h[4])
	}
	if kind(h[5]) > kindPoint {
		return 0, corruptf("frame kind %d", h[5])
	}
	n := int(binary.LittleEndian.Uint16(h[6:8]))
	if n == 0 || n > maxFrameBlocks {
		return 0, corruptf("frame block count %d, want 1..%d", n, maxFrameBlocks)
	}
	plain := int(binary.LittleEndian.Uint32(h[8:12]))
	if plain == 0 || plain > maxFramePlain {
		return 0, corruptf("frame plaintext length %d, want 1..%d", plain, maxFramePlain)
	}
	stored := int(binary.LittleEndian.Uint32(h[12:16]))
	if stored == 0 || stored > maxFramePlain+maxFramePlain/8 {
		return 0, corruptf("frame payload length %d", stored)
	}
	switch h[4] {
	case codecRaw:
		if stored != plain {
			return 0, corruptf("raw frame payload %d != plaintext %d", stored, plain)
		}
	case codecRaw | codecSealed:
		if stored != plain+sealOver {
			return 0, corruptf("sealed raw frame payload %d != plaintext %d + %d", stored, plain, sealOver)
		}
	case codecZstd | codecSealed:
		if stored <= sealOver {
			return 0, corruptf("sealed frame payload %d bytes", stored)
		}
	}
	return frameHeaderSize + n*frameEntrySize + stored + frameTrailerSize, nil
}

// decodeFrame checks and decodes one whole frame record.
func decodeFrame(rec []byte) (frame, error) {
	size, err := frameSizeFromHeader(rec)
	if err != nil {
		return frame{}, err
	}
	if len(rec) != size {
		return frame{}, corruptf("frame record %d bytes, header says %d", len(rec), size)
	}
	body := rec[:size-frameTrailerSize]
	if got, want := crc32.Checksum(body, castagnoli), binary.LittleEndian.Uint32(rec[size-frameTrailerSize:]); got != want {
		return frame{}, corruptf("frame checksum %08x, want %08x", got, want)
	}
	f := frame{kind: kind(rec[5]), codec: rec[4], plain: binary.LittleEndian.Uint32(rec[8:12])}
	n := int(binary.LittleEndian.Uint16(rec[6:8]))
	f.entries = make([]frameEntry, n)
	var sum uint64
	p := rec[frameHeaderSize:]
	for i := range f.entries {
		copy(f.entries[i].id[:], p[:IDSize])
		f.entries[i].len = binary.LittleEndian.Uint32(p[IDSize:])
		if l := f.entries[i].len; l == 0 || l > MaxBlockSize {
			return frame{}, corruptf("frame entry %d length %d", i, l)
		}
		sum += uint64(f.entries[i].len)
		p = p[frameEntrySize:]
	}
	if sum != uint64(f.plain) {
		return frame{}, corruptf("frame entries sum to %d, header says %d", sum, f.plain)
	}
	f.head = rec[:frameHeaderSize+n*frameEntrySize]
	f.payload = p[:len(p)-frameTrailerSize]
	return f, nil
}

// encodePackHeader returns the header of pack number id.
func encodePackHeader(id uint32) []byte {
	h := make([]byte, packHeaderSize)
	copy(h, packMagic[:])
	binary.LittleEndian.PutUint32(h[8:12], id)
	binary.LittleEndian.PutUint32(h[12:16], crc32.Checksum(h[:12], castagnoli))
	return h
}

// decodePackHeader checks a pack header and returns the pack number.
func decodePackHeader(h []byte) (uint32, error) {
	if len(h) < packHeaderSize {
		return 0, corruptf("pack header: %d bytes, want %d", len(h), packHeaderSize)
	}
	if [8]byte(h[:8]) != packMagic {
		return 0, corruptf("pack magic %q", h[:8])
	}
	if got, want := crc32.Checksum(h[:12], castagnoli), binary.LittleEndian.Uint32(h[12:16]); got != want {
		return 0, corruptf("pack header checksum %08x, want %08x", got, want)
	}
	return binary.LittleEndian.Uint32(h[8:12]), nil
}

func packName(id uint32) string { return fmt.Sprintf("%08x.pack", id) }

func parsePackName(name string) (uint32, bool) {
	s, ok := strings.CutSuffix(name, ".pack")
	if !ok || len(s) != 8 {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 16, 32)
	return uint32(n), err == nil
}

// packFile is an open pack being appended to. Its methods are called with the
// store's write lock held.
type packFile struct {
	id     uint32
	f      *os.File
	size   int64 // bytes written
	kicked int64 // bytes handed to writeback
	err    error // sticky: once a write fails the pack takes no more
}

// writebackEvery is how many appended bytes start asynchronous writeback, so
// that the sync at flush finds little left to write (Pebble's BytesPerSync).
const writebackEvery = 8 << 20

func createPack(dir string, id uint32) (*packFile, error) {
	path := filepath.Join(dir, packName(id))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create pack: %w", err)
	}
	p := &packFile{id: id, f: f}
	if err := p.append(encodePackHeader(id)); err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	return p, nil
}

// append writes rec at the end of the pack.
func (p *packFile) append(rec []byte) error {
	if p.err != nil {
		return p.err
	}
	n, err := p.f.WriteAt(rec, p.size)
	if err != nil {
		// Forget the partial record: the next open truncates it away.
		p.err = fmt.Errorf("write pack %s at offset %d: %w", packName(p.id), p.size, err)
		return p.err
	}
	p.size += int64(n)
	if p.size-p.kicked >= writebackEvery {
		// Only a hint: errors surface at the sync.
		unix.SyncFileRange(int(p.f.Fd()), p.kicked, p.size-p.kicked, unix.SYNC_FILE_RANGE_WRITE)
		p.kicked = p.size
	}
	return nil
}
