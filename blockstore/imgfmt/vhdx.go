package imgfmt

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"strings"
	"unicode/utf16"
)

// VHDX constants; doc.go describes the layout. Section numbers refer to
// the MS-VHDX specification.
const (
	mib = 1 << 20

	vhdxBlockSize      = 2 * mib // payload block (2.6.2.1: 1 MiB to 256 MiB)
	vhdxLogicalSector  = 512
	vhdxPhysicalSector = 4096
	// vhdxChunkRatio is the number of payload blocks per sector bitmap
	// block (2.4.2): 2^23 sectors * 512 bytes / 2 MiB = 2048.
	vhdxChunkRatio = (1 << 23) * vhdxLogicalSector / vhdxBlockSize
	vhdxMaxSize    = 64 << 40 // 2.6.2.2

	vhdxHeader1Off = 64 << 10
	vhdxHeader2Off = 128 << 10
	vhdxRegion1Off = 192 << 10
	vhdxRegion2Off = 256 << 10
	vhdxHeaderSize = 4 << 10  // checksummed part of a header
	vhdxRegionSize = 64 << 10 // a region table, all checksummed
	vhdxLogOff     = 1 * mib
	vhdxLogLen     = 1 * mib
	vhdxMetaOff    = 2 * mib
	vhdxMetaLen    = 1 * mib
	vhdxBATOff     = 3 * mib
	vhdxMetaItems  = 64 << 10 // metadata items start here in the region

	// BAT entry states (2.5.1.1).
	vhdxBlockZero         = 2
	vhdxBlockFullyPresent = 6

	// Metadata entry flags (2.6.1.2).
	vhdxMetaVirtualDisk = 1 << 1
	vhdxMetaRequired    = 1 << 2

	vhdxCreator = "lifeboat"
)

// guid is a GUID as VHDX stores it: the first three fields little endian.
type guid [16]byte

// mustGUID parses a GUID constant written the usual way.
func mustGUID(s string) guid {
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != 16 {
		panic("imgfmt: bad GUID constant " + s)
	}
	var g guid
	copy(g[:], b)
	g[0], g[1], g[2], g[3] = b[3], b[2], b[1], b[0]
	g[4], g[5] = b[5], b[4]
	g[6], g[7] = b[7], b[6]
	return g
}

// newGUID returns a random (version 4) GUID.
func newGUID() guid {
	var g guid
	rand.Read(g[:])
	g[7] = g[7]&0x0f | 0x40 // version, the high bits of the third field
	g[8] = g[8]&0x3f | 0x80 // variant
	return g
}

// Region and metadata item GUIDs (2.2.3.1, 2.6.2).
var (
	vhdxBATGUID         = mustGUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
	vhdxMetadataGUID    = mustGUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
	vhdxFileParamsGUID  = mustGUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
	vhdxDiskSizeGUID    = mustGUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
	vhdxPage83GUID      = mustGUID("BECA12AB-B2E6-4523-93EF-C309E000C746")
	vhdxLogicalSecGUID  = mustGUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
	vhdxPhysicalSecGUID = mustGUID("CDA348C7-445D-4471-9CC9-E9885251C556")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// vhdxLayout is where everything goes in a VHDX file.
type vhdxLayout struct {
	size     int64 // virtual size
	runs     []run // allocated payload blocks, in order
	blocks   int64 // payload blocks (allocated or not)
	data     int64 // allocated payload blocks
	batLen   int64 // BAT region length
	dataOff  int64
	fileSize int64
}

func planVHDX(size int64, exts []Extent) (*vhdxLayout, error) {
	switch {
	case size <= 0 || size%vhdxLogicalSector != 0:
		return nil, fmt.Errorf("virtual size %d: want a positive multiple of the %d-byte logical sector", size, vhdxLogicalSector)
	case size > vhdxMaxSize:
		return nil, fmt.Errorf("virtual size %d is over the VHDX limit of %d (64 TiB)", size, int64(vhdxMaxSize))
	}
	l := &vhdxLayout{size: size}
	l.runs, l.data = units(exts, vhdxBlockSize)
	l.blocks = ceilDiv(size, vhdxBlockSize)
	l.batLen = ceilDiv(l.batEntries()*8, mib) * mib
	l.dataOff = vhdxBATOff + l.batLen
	l.fileSize = l.dataOff + l.data*vhdxBlockSize
	return l, nil
}

// batEntries is the number of BAT entries of a disk without a parent
// (2.5): a sector bitmap entry follows every chunk-ratio payload entries,
// except after the last.
func (l *vhdxLayout) batEntries() int64 {
	return l.blocks + (l.blocks-1)/vhdxChunkRatio
}

// writeVHDX writes the header section (file identifier, two headers, two
// region tables), an empty log, the metadata region and the BAT, then
// the allocated payload blocks in guest order.
func writeVHDX(ctx context.Context, o *out, c *copier) error {
	l, err := planVHDX(c.size, c.exts)
	if err != nil {
		return fmt.Errorf("vhdx: %w", err)
	}
	fileWrite, dataWrite, diskID := newGUID(), newGUID(), newGUID()
	steps := []struct {
		what  string
		off   int64
		write func() error
	}{
		{"file identifier", 0, func() error { return o.write(vhdxIdentifier()) }},
		{"header 1", vhdxHeader1Off, func() error { return o.write(vhdxHeader(0, fileWrite, dataWrite)) }},
		{"header 2", vhdxHeader2Off, func() error { return o.write(vhdxHeader(1, fileWrite, dataWrite)) }},
		{"region table 1", vhdxRegion1Off, func() error { return o.write(l.regionTable()) }},
		{"region table 2", vhdxRegion2Off, func() error { return o.write(l.regionTable()) }},
		{"log", vhdxLogOff, func() error { return o.padTo(vhdxLogOff + vhdxLogLen) }},
		{"metadata", vhdxMetaOff, func() error { return o.write(l.metadata(diskID)) }},
		{"BAT", vhdxBATOff, func() error { return l.writeBAT(ctx, o) }},
	}
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("vhdx: write %s: %w", s.what, err)
		}
		err := o.padTo(s.off)
		if err == nil {
			err = s.write()
		}
		if err != nil {
			return fmt.Errorf("vhdx: write %s: %w", s.what, err)
		}
	}
	if err := o.expect("data", l.dataOff); err != nil {
		return fmt.Errorf("vhdx: write data: %w", err)
	}
	for _, r := range l.runs {
		if err := c.copyRange(ctx, o, r.first*vhdxBlockSize, r.end*vhdxBlockSize); err != nil {
			return fmt.Errorf("vhdx: write data at guest offset %d: %w", r.first*vhdxBlockSize, err)
		}
	}
	if err := o.expect("end", l.fileSize); err != nil {
		return fmt.Errorf("vhdx: %w", err)
	}
	return nil
}

// vhdxIdentifier returns the file type identifier (2.2.1): the signature
// and the creator as UTF-16LE, in a 64 KiB structure.
func vhdxIdentifier() []byte {
	b := make([]byte, 64<<10)
	copy(b, "vhdxfile")
	for i, u := range utf16.Encode([]rune(vhdxCreator)) {
		binary.LittleEndian.PutUint16(b[8+2*i:], u)
	}
	return b
}

// vhdxHeader returns a header (2.2.2) with an empty log.
func vhdxHeader(seq uint64, fileWrite, dataWrite guid) []byte {
	h := make([]byte, vhdxHeaderSize)
	le := binary.LittleEndian
	copy(h[0:], "head")
	le.PutUint64(h[8:], seq)
	copy(h[16:], fileWrite[:])
	copy(h[32:], dataWrite[:])
	// 48: log GUID zero: there is nothing to replay. 64: log version 0.
	le.PutUint16(h[66:], 1) // version
	le.PutUint32(h[68:], vhdxLogLen)
	le.PutUint64(h[72:], vhdxLogOff)
	le.PutUint32(h[4:], crc32.Checksum(h, castagnoli))
	return h
}

// regionTable returns a region table (2.2.3) naming the BAT and the
// metadata region, both required.
func (l *vhdxLayout) regionTable() []byte {
	t := make([]byte, vhdxRegionSize)
	le := binary.LittleEndian
	copy(t[0:], "regi")
	le.PutUint32(t[8:], 2)
	entry := func(e []byte, id guid, off, n int64) {
		copy(e, id[:])
		le.PutUint64(e[16:], uint64(off))
		le.PutUint32(e[24:], uint32(n))
		le.PutUint32(e[28:], 1) // required
	}
	entry(t[16:], vhdxBATGUID, vhdxBATOff, l.batLen)
	entry(t[48:], vhdxMetadataGUID, vhdxMetaOff, vhdxMetaLen)
	le.PutUint32(t[4:], crc32.Checksum(t, castagnoli))
	return t
}

// metadata returns the metadata region (2.6): the table and the five
// required items of a disk without a parent.
func (l *vhdxLayout) metadata(diskID guid) []byte {
	m := make([]byte, vhdxMetaLen)
	le := binary.LittleEndian
	copy(m[0:], "metadata")
	items := []struct {
		id    guid
		flags uint32
		value []byte
	}{
		{vhdxFileParamsGUID, vhdxMetaRequired, le.AppendUint32(le.AppendUint32(nil, vhdxBlockSize), 0)},
		{vhdxDiskSizeGUID, vhdxMetaVirtualDisk | vhdxMetaRequired, le.AppendUint64(nil, uint64(l.size))},
		{vhdxPage83GUID, vhdxMetaVirtualDisk | vhdxMetaRequired, diskID[:]},
		{vhdxLogicalSecGUID, vhdxMetaVirtualDisk | vhdxMetaRequired, le.AppendUint32(nil, vhdxLogicalSector)},
		{vhdxPhysicalSecGUID, vhdxMetaVirtualDisk | vhdxMetaRequired, le.AppendUint32(nil, vhdxPhysicalSector)},
	}
	le.PutUint16(m[10:], uint16(len(items)))
	off := vhdxMetaItems
	for i, it := range items {
		e := m[32+32*i:]
		copy(e, it.id[:])
		le.PutUint32(e[16:], uint32(off))
		le.PutUint32(e[20:], uint32(len(it.value)))
		le.PutUint32(e[24:], it.flags)
		off += copy(m[off:], it.value)
	}
	return m
}

// writeBAT writes the block allocation table (2.5): allocated payload
// blocks are fully present at the next data offset, the others read as
// zero; sector bitmap entries are all not present.
func (l *vhdxLayout) writeBAT(ctx context.Context, o *out) error {
	t := make([]byte, 0, chunkSize)
	put := func(e uint64) error {
		t = binary.LittleEndian.AppendUint64(t, e)
		if len(t) == cap(t) {
			err := o.writeCtx(ctx, t)
			t = t[:0]
			return err
		}
		return nil
	}
	var ri int  // run holding or after block b
	var k int64 // allocated blocks before block b
	for b := range l.blocks {
		for ri < len(l.runs) && l.runs[ri].end <= b {
			ri++
		}
		// PAYLOAD_BLOCK_ZERO rather than NOT_PRESENT: the spec leaves
		// not-present blocks of a dynamic disk undefined (2.5.1.1).
		e := uint64(vhdxBlockZero)
		if ri < len(l.runs) && l.runs[ri].first <= b {
			e = uint64(l.dataOff+k*vhdxBlockSize) | vhdxBlockFullyPresent
			k++
		}
		if err := put(e); err != nil {
			return err
		}
		if (b+1)%vhdxChunkRatio == 0 && b+1 < l.blocks {
			if err := put(0); err != nil { // SB_BLOCK_NOT_PRESENT
				return err
			}
		}
	}
	if err := o.write(t); err != nil {
		return err
	}
	return o.padTo(vhdxBATOff + l.batLen)
}
