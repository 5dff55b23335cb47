package blockstore

import (
	"encoding/binary"
)

// Key prefixes in the index database (see doc.go).
const (
	prefixBlock      = 'b' // 'b' ID -> location
	prefixPage       = 'm' // 'm' ID -> map page location
	prefixPoint      = 'p' // 'p' time(8, big endian ns) pointID(8) -> point record
	prefixPointFrame = 'P' // 'P' ID -> location of the point record's copy in a pack
	prefixPack       = 'k' // 'k' pack(4, big endian) -> committed length
	keyMeta          = "s/meta"
)

// location says where a block lives: which record of which pack, and where
// its plaintext sits inside the record's frame.
type location struct {
	pack     uint32
	offset   uint64 // start of the frame record in the pack
	recLen   uint32 // length of the whole frame record
	slot     uint16 // index of the block's entry in the frame
	plainOff uint32 // offset of the block in the frame's plaintext
	plainLen uint32 // length of the block
}

// locationVersion is the first byte of an index entry; the fields follow as
// minimal unsigned varints: pack, record offset, record length, slot,
// plaintext offset, block length.
const (
	locationVersion = 1
	maxLocationSize = 1 + 5 + 10 + 5 + 3 + 5 + 5
)

// key returns the index key of r.
func (r ref) key() []byte {
	k := make([]byte, 1+IDSize)
	switch r.kind {
	case kindBlock:
		k[0] = prefixBlock
	case kindPage:
		k[0] = prefixPage
	case kindPoint:
		k[0] = prefixPointFrame
	}
	copy(k[1:], r.id[:])
	return k
}

func packKey(pack uint32) []byte {
	k := []byte{prefixPack, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(k[1:], pack)
	return k
}

func encodeLocation(l location) []byte {
	b := make([]byte, 0, maxLocationSize)
	b = append(b, locationVersion)
	for _, v := range []uint64{uint64(l.pack), l.offset, uint64(l.recLen), uint64(l.slot), uint64(l.plainOff), uint64(l.plainLen)} {
		b = binary.AppendUvarint(b, v)
	}
	return b
}

func decodeLocation(b []byte) (location, error) {
	if len(b) == 0 || len(b) > maxLocationSize {
		return location{}, corruptf("index entry: %d bytes", len(b))
	}
	if b[0] != locationVersion {
		return location{}, corruptf("index entry version %d, want %d", b[0], locationVersion)
	}
	var f [6]uint64
	p := b[1:]
	for i := range f {
		v, n := binary.Uvarint(p)
		if n <= 0 || n != len(binary.AppendUvarint(nil, v)) {
			return location{}, corruptf("index entry field %d: bad varint", i)
		}
		f[i], p = v, p[n:]
	}
	if len(p) != 0 {
		return location{}, corruptf("index entry: %d bytes after the fields", len(p))
	}
	if f[0] > 1<<32-1 || f[2] > 1<<32-1 || f[3] > 1<<16-1 || f[4] > 1<<32-1 || f[5] > 1<<32-1 {
		return location{}, corruptf("index entry field out of range")
	}
	l := location{pack: uint32(f[0]), offset: f[1], recLen: uint32(f[2]), slot: uint16(f[3]), plainOff: uint32(f[4]), plainLen: uint32(f[5])}
	switch {
	case l.offset < packHeaderSize || l.offset > 1<<40:
		return location{}, corruptf("index entry offset %d", l.offset)
	case l.recLen < frameHeaderSize+frameEntrySize+1+frameTrailerSize || l.recLen > frameHeaderSize+maxFrameBlocks*frameEntrySize+maxFramePlain+maxFramePlain/8+frameTrailerSize:
		return location{}, corruptf("index entry record length %d", l.recLen)
	case l.slot >= maxFrameBlocks:
		return location{}, corruptf("index entry slot %d", l.slot)
	case l.plainLen == 0 || l.plainLen > MaxBlockSize:
		return location{}, corruptf("index entry block length %d", l.plainLen)
	case uint64(l.plainOff)+uint64(l.plainLen) > maxFramePlain:
		return location{}, corruptf("index entry plaintext range %d+%d", l.plainOff, l.plainLen)
	}
	return l, nil
}
