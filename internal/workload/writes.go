package workload

import (
	"fmt"
	"io"
	"math"
)

// Writes.

// planner produces a fixed sequence of writes from a seed and an image
// size; it never looks at content.
type planner struct {
	r       *rng
	nblocks int64
	regions [hotRegions][2]int64 // first block, number of blocks
}

// op is one planned write; offsets and lengths are in blocks.
type op struct {
	off, n int64
	kind   kind
	src    int64 // for copies: the block copied from
}

// newPlanner places hotRegions regions of span blocks each (at least 64 KiB,
// at most the image), 64 KiB-aligned.
func newPlanner(seed int64, tag uint64, nblocks, span int64) *planner {
	p := &planner{r: newRNG(seed, tag, 0), nblocks: nblocks}
	span = min(max(span, maxWriteBlocks), nblocks)
	hr := newRNG(seed, tag, 1)
	for i := range p.regions {
		first := hr.int63n(nblocks-span+1) &^ (maxWriteBlocks - 1)
		p.regions[i] = [2]int64{first, span}
	}
	return p
}

// length returns a write length in blocks: half are 4 KiB, 30% 8-16 KiB and
// 20% 20-64 KiB.
func (p *planner) length() int64 {
	switch c := p.r.intn(10); {
	case c < 5:
		return 1
	case c < 8:
		return 2 + p.r.int63n(3)
	default:
		return 5 + p.r.int63n(maxWriteBlocks-4)
	}
}

func (p *planner) next() op {
	var o op
	n := p.length()
	first, count := int64(0), p.nblocks
	if p.r.intn(100) < hotPct {
		reg := p.regions[p.r.intn(hotRegions)]
		first, count = reg[0], reg[1]
	}
	o.n = min(n, count)
	o.off = first + p.r.int63n(count-o.n+1)
	o.kind = p.r.pick(&writeMix)
	o.src = p.r.int63n(p.nblocks - o.n + 1)
	return o
}

// fillWrite writes new content of kind k (zero, text or random) for write
// number seq to p.
func fillWrite(p []byte, k kind, seed int64, textTag, randomTag, seq uint64, epoch int64) {
	switch k {
	case kindZero:
		clear(p)
	case kindText:
		newTextGen(seed, textTag, seq, epoch+int64(seq)*1000).fill(p)
	default:
		fillRandom(p, seed, randomTag, seq)
	}
}

// Mutate applies a deterministic sequence of writes to the image f of size
// bytes (a positive multiple of 4 KiB), as a day of changes: in total pct
// percent of size, rounded to whole 4 KiB blocks and counting rewrites. The
// writes are 4 KiB-aligned and 4-64 KiB long (the last may be cut shorter),
// 80% of them in 4 hot regions that together span about half the hot volume,
// so hot blocks are written about twice. Of the writes, 20% write zeros, 35%
// new text, 25% new random bytes and 20% copy a 4 KiB-aligned range read from
// elsewhere in f as it is at that moment, so the result depends on the
// starting image as well as on seed, size and pct. It returns the number of
// bytes written.
func Mutate(f interface {
	io.ReaderAt
	io.WriterAt
}, size int64, seed int64, pct float64) (int64, error) {
	if err := checkSize(size); err != nil {
		return 0, err
	}
	if math.IsNaN(pct) || pct < 0 {
		return 0, fmt.Errorf("workload: bad percentage %v", pct)
	}
	nblocks := size / blockSize
	budget := int64(math.Round(min(pct, 1e6) / 100 * float64(nblocks)))
	p := newPlanner(seed, tagMutatePlan, nblocks, budget*hotPct/100/2/hotRegions)
	buf := make([]byte, maxWriteBlocks*blockSize)
	var written int64
	for seq := uint64(0); budget > 0; seq++ {
		o := p.next()
		n := min(o.n, budget)
		data := buf[:n*blockSize]
		if o.kind == kindCopy {
			m, err := f.ReadAt(data, o.src*blockSize)
			if m < len(data) {
				if err == nil {
					err = io.ErrUnexpectedEOF
				}
				return written, fmt.Errorf("workload: reading at %d: %w", o.src*blockSize, err)
			}
		} else {
			fillWrite(data, o.kind, seed, tagMutateText, tagMutateRandom, seq, mutateEpoch)
		}
		if _, err := f.WriteAt(data, o.off*blockSize); err != nil {
			return written, fmt.Errorf("workload: writing at %d: %w", o.off*blockSize, err)
		}
		written += int64(len(data))
		budget -= n
	}
	return written, nil
}

// Write is one write of a Writer: Data goes at offset Off.
type Write struct {
	Off  int64
	Data []byte
}

// Writer produces an endless deterministic sequence of writes to an image,
// for tests that write steadily while something else runs. The writes are
// like Mutate's (4 KiB-aligned, 4-64 KiB, 80% in 4 hot regions that together
// span about 1/32 of the image, the same content mix) except that a copy
// writes content that Image(size, seed) has at another 4 KiB-aligned offset:
// on a disk that started as that image, it duplicates blocks of the original.
// A Writer is not safe for concurrent use.
type Writer struct {
	size int64
	seed int64
	p    *planner
	base *gen // content of Image(size, seed), made on first use
	seq  uint64
}

// NewWriter returns a Writer for an image of size bytes. It panics if size is
// not a positive multiple of 4 KiB.
func NewWriter(size int64, seed int64) *Writer {
	if err := checkSize(size); err != nil {
		panic(err)
	}
	nblocks := size / blockSize
	return &Writer{size: size, seed: seed, p: newPlanner(seed, tagWriterPlan, nblocks, nblocks/(32*hotRegions))}
}

// Next returns the next write. Its Data is newly allocated; the caller may
// keep it.
func (w *Writer) Next() Write {
	o := w.p.next()
	data := make([]byte, o.n*blockSize)
	if o.kind == kindCopy {
		if w.base == nil {
			w.base = newGen(newLayout(w.size, w.seed))
		}
		w.base.readAt(data, o.src*blockSize)
	} else {
		fillWrite(data, o.kind, w.seed, tagWriterText, tagWriterRandom, w.seq, writerEpoch)
	}
	w.seq++
	return Write{Off: o.off * blockSize, Data: data}
}
