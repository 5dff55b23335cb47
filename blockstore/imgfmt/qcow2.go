package imgfmt

import (
	"context"
	"encoding/binary"
	"fmt"
	"iter"
)

// qcow2 constants; doc.go describes the layout.
const (
	qcowMagic          = 0x514649fb // "QFI\xfb"
	qcowVersion        = 3
	qcowClusterBits    = 16
	qcowClusterSize    = 1 << qcowClusterBits
	qcowHeaderLen      = 104 // the version 3 header without optional fields
	qcowSectorSize     = 512
	qcowRefcountOrder  = 4 // 16-bit refcounts
	qcowL2Entries      = qcowClusterSize / 8
	qcowRefcountsBlock = qcowClusterSize / 2
	// qcowCopied is OFLAG_COPIED: the cluster's refcount is exactly 1.
	// qemu-img check reports an error for a missing flag.
	qcowCopied = 1 << 63
	// qcowMaxL1Bytes is QEMU's QCOW_MAX_L1_SIZE; with 64 KiB clusters it
	// allows virtual disks up to 2 PiB.
	qcowMaxL1Bytes = 32 << 20
)

// qcowLayout is where everything goes in a qcow2 file. Offsets are in
// bytes; counts in clusters unless named otherwise.
type qcowLayout struct {
	size   int64 // virtual size
	runs   []run // allocated guest clusters, in order
	l1Size int64 // L1 entries
	l2     int64 // L2 tables

	l1Off, rtOff, rbOff, l2Off, dataOff int64
	l1Clusters, rtClusters, rbClusters  int64
	data                                int64 // data clusters
	total                               int64 // clusters in the file
}

func planQCOW2(size int64, exts []Extent) (*qcowLayout, error) {
	const l2Span = qcowL2Entries * qcowClusterSize // guest bytes per L2 table
	if size > qcowMaxL1Bytes/8*l2Span {
		return nil, fmt.Errorf("virtual size %d is over the qcow2 limit of %d", size, int64(qcowMaxL1Bytes/8*l2Span))
	}
	// QEMU reads the header's size in whole 512-byte sectors and would
	// hide a partial last one, so round up as qemu-img create does.
	size = ceilDiv(size, qcowSectorSize) * qcowSectorSize
	l := &qcowLayout{size: size}
	l.runs, l.data = units(exts, qcowClusterSize)
	for range l.l2Tables() {
		l.l2++
	}
	l.l1Size = ceilDiv(size, l2Span)
	l.l1Clusters = ceilDiv(l.l1Size*8, qcowClusterSize)
	// The refcount blocks count themselves and the refcount table: grow
	// both from zero until they cover the whole file (the least fixed
	// point, reached in a few steps).
	fixed := 1 + l.l1Clusters + l.l2 + l.data
	for {
		total := fixed + l.rbClusters + l.rtClusters
		rb := ceilDiv(total, qcowRefcountsBlock)
		rt := ceilDiv(rb*8, qcowClusterSize)
		if rb == l.rbClusters && rt == l.rtClusters {
			l.total = total
			break
		}
		l.rbClusters, l.rtClusters = rb, rt
	}
	const cs = qcowClusterSize
	l.l1Off = cs
	l.rtOff = l.l1Off + l.l1Clusters*cs
	l.rbOff = l.rtOff + l.rtClusters*cs
	l.l2Off = l.rbOff + l.rbClusters*cs
	l.dataOff = l.l2Off + l.l2*cs
	if l.dataOff+l.data*cs != l.total*cs {
		return nil, fmt.Errorf("internal error: layout ends at %d, refcounts cover %d", l.dataOff+l.data*cs, l.total*cs)
	}
	if l.l1Size == 0 {
		l.l1Off = 0 // as qemu-img create writes an empty disk
	}
	return l, nil
}

// writeQCOW2 writes the header, L1 table, refcount table, refcount blocks
// and L2 tables, then the data clusters in guest order.
func writeQCOW2(ctx context.Context, o *out, c *copier) error {
	l, err := planQCOW2(c.size, c.exts)
	if err != nil {
		return fmt.Errorf("qcow2: %w", err)
	}
	steps := []struct {
		what  string
		off   int64
		write func(*qcowLayout, context.Context, *out) error
	}{
		{"header", 0, (*qcowLayout).writeHeader},
		{"L1 table", l.l1Off, (*qcowLayout).writeL1},
		{"refcount table", l.rtOff, (*qcowLayout).writeRefcountTable},
		{"refcount blocks", l.rbOff, (*qcowLayout).writeRefcountBlocks},
		{"L2 table", l.l2Off, (*qcowLayout).writeL2},
	}
	for _, s := range steps {
		if s.what == "L1 table" && l.l1Size == 0 {
			continue
		}
		if err := o.expect(s.what, s.off); err != nil {
			return fmt.Errorf("qcow2: write %s: %w", s.what, err)
		}
		if err := s.write(l, ctx, o); err != nil {
			return fmt.Errorf("qcow2: write %s: %w", s.what, err)
		}
	}
	if err := o.expect("data", l.dataOff); err != nil {
		return fmt.Errorf("qcow2: write data: %w", err)
	}
	for _, r := range l.runs {
		if err := c.copyRange(ctx, o, r.first*qcowClusterSize, r.end*qcowClusterSize); err != nil {
			return fmt.Errorf("qcow2: write data at guest offset %d: %w", r.first*qcowClusterSize, err)
		}
	}
	if err := o.expect("end", l.total*qcowClusterSize); err != nil {
		return fmt.Errorf("qcow2: %w", err)
	}
	return nil
}

func (l *qcowLayout) writeHeader(ctx context.Context, o *out) error {
	h := make([]byte, qcowClusterSize)
	be := binary.BigEndian
	be.PutUint32(h[0:], qcowMagic)
	be.PutUint32(h[4:], qcowVersion)
	// 8: backing file offset, 16: backing file name length: none.
	be.PutUint32(h[20:], qcowClusterBits)
	be.PutUint64(h[24:], uint64(l.size))
	// 32: encryption method: none.
	be.PutUint32(h[36:], uint32(l.l1Size))
	be.PutUint64(h[40:], uint64(l.l1Off))
	be.PutUint64(h[48:], uint64(l.rtOff))
	be.PutUint32(h[56:], uint32(l.rtClusters))
	// 60: snapshots, 64: snapshot table offset, 72, 80, 88: incompatible,
	// compatible and autoclear features: none.
	be.PutUint32(h[96:], qcowRefcountOrder)
	be.PutUint32(h[100:], qcowHeaderLen)
	// 104: header extensions: only the end marker (type 0, length 0).
	return o.writeCtx(ctx, h)
}

// l2Tables yields the L1 indices that have an L2 table, ascending: those
// of the 512 MiB pieces of guest space that overlap a run.
func (l *qcowLayout) l2Tables() iter.Seq[int64] {
	return func(yield func(int64) bool) {
		next := int64(0) // lowest index not yet yielded
		for _, r := range l.runs {
			for j := max(r.first/qcowL2Entries, next); j <= (r.end-1)/qcowL2Entries; j++ {
				if !yield(j) {
					return
				}
				next = j + 1
			}
		}
	}
}

// writeL1 writes the L1 table: one entry per 512 MiB of guest space,
// naming its L2 table or 0 for none.
func (l *qcowLayout) writeL1(ctx context.Context, o *out) error {
	t := make([]byte, qcowClusterSize)
	nextTable, stop := iter.Pull(l.l2Tables())
	defer stop()
	want, ok := nextTable() // L1 index of the next L2 table
	var k int64             // L2 tables so far
	for j := range l.l1Clusters * qcowL2Entries {
		var e uint64
		if ok && want == j {
			e = uint64(l.l2Off+k*qcowClusterSize) | qcowCopied
			k++
			want, ok = nextTable()
		}
		i := j % qcowL2Entries
		binary.BigEndian.PutUint64(t[i*8:], e)
		if i == qcowL2Entries-1 {
			if err := o.writeCtx(ctx, t); err != nil {
				return err
			}
		}
	}
	return nil
}

func (l *qcowLayout) writeRefcountTable(ctx context.Context, o *out) error {
	t := make([]byte, qcowClusterSize)
	for b := range l.rtClusters * qcowL2Entries {
		var e uint64
		if b < l.rbClusters {
			e = uint64(l.rbOff + b*qcowClusterSize)
		}
		i := b % qcowL2Entries
		binary.BigEndian.PutUint64(t[i*8:], e)
		if i == qcowL2Entries-1 {
			if err := o.writeCtx(ctx, t); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeRefcountBlocks writes refcount 1 for each of the file's clusters
// and 0 past its end.
func (l *qcowLayout) writeRefcountBlocks(ctx context.Context, o *out) error {
	t := make([]byte, qcowClusterSize)
	for b := range l.rbClusters {
		for i := range int64(qcowRefcountsBlock) {
			var rc uint16
			if b*qcowRefcountsBlock+i < l.total {
				rc = 1
			}
			binary.BigEndian.PutUint16(t[i*2:], rc)
		}
		if err := o.writeCtx(ctx, t); err != nil {
			return err
		}
	}
	return nil
}

// writeL2 writes the L2 tables: each allocated guest cluster maps to the
// next data cluster, in guest order.
func (l *qcowLayout) writeL2(ctx context.Context, o *out) error {
	t := make([]byte, qcowClusterSize)
	var ri int       // first run that may overlap the next table
	var before int64 // data clusters of the runs before runs[ri]
	for j := range l.l2Tables() {
		lo, hi := j*qcowL2Entries, (j+1)*qcowL2Entries
		for ri < len(l.runs) && l.runs[ri].end <= lo {
			before += l.runs[ri].end - l.runs[ri].first
			ri++
		}
		clear(t)
		rank := before
		for _, r := range l.runs[ri:] {
			if r.first >= hi {
				break
			}
			for g := max(r.first, lo); g < min(r.end, hi); g++ {
				off := l.dataOff + (rank+g-r.first)*qcowClusterSize
				binary.BigEndian.PutUint64(t[(g-lo)*8:], uint64(off)|qcowCopied)
			}
			rank += r.end - r.first
		}
		if err := o.writeCtx(ctx, t); err != nil {
			return err
		}
	}
	return nil
}
