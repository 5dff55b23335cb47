package blockstore

import (
	"encoding/binary"
)

// Key prefixes in the index database (see doc.go).
const (
	prefixBlock = 'b' // 'b' ID -> location
	prefixPage  = 'm' // 'm' ID -> map page location
	prefixPoint = 'p' // 'p' time(8, big endian ns) pointID(8) -> point record
	prefixPack  = 'k' // 'k' pack(4, big endian) -> committed length
	keyMeta     = "s/meta"
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

const (
	locationVersion = 1
	locationSize    = 1 + 4 + 8 + 4 + 2 + 4 + 4
)

// key returns the index key of r.
func (r ref) key() []byte {
	k := make([]byte, 1+IDSize)
	k[0] = prefixBlock
	if r.kind == kindPage {
		k[0] = prefixPage
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
	b := make([]byte, locationSize)
	b[0] = locationVersion
	binary.LittleEndian.PutUint32(b[1:], l.pack)
	binary.LittleEndian.PutUint64(b[5:], l.offset)
	binary.LittleEndian.PutUint32(b[13:], l.recLen)
	binary.LittleEndian.PutUint16(b[17:], l.slot)
	binary.LittleEndian.PutUint32(b[19:], l.plainOff)
	binary.LittleEndian.PutUint32(b[23:], l.plainLen)
	return b
}

func decodeLocation(b []byte) (location, error) {
	if len(b) != locationSize {
		return location{}, corruptf("index entry: %d bytes, want %d", len(b), locationSize)
	}
	if b[0] != locationVersion {
		return location{}, corruptf("index entry version %d, want %d", b[0], locationVersion)
	}
	l := location{
		pack:     binary.LittleEndian.Uint32(b[1:]),
		offset:   binary.LittleEndian.Uint64(b[5:]),
		recLen:   binary.LittleEndian.Uint32(b[13:]),
		slot:     binary.LittleEndian.Uint16(b[17:]),
		plainOff: binary.LittleEndian.Uint32(b[19:]),
		plainLen: binary.LittleEndian.Uint32(b[23:]),
	}
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
