package workload

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
)

// Image layout and content.

// layout is the plan of an image: the kind of each extent and, for copies,
// where their content comes from.
type layout struct {
	seed  int64
	size  int64
	kinds []kind
	// src[i] is, for a copy extent i, the image offset its first byte is
	// copied from; the source window lies before the extent and covers no
	// zero extent.
	src []int64
}

func checkSize(size int64) error {
	if size <= 0 || size%blockSize != 0 {
		return fmt.Errorf("workload: size %d is not a positive multiple of %d", size, blockSize)
	}
	return nil
}

func newLayout(size, seed int64) *layout {
	n := int((size + extentSize - 1) / extentSize)
	var counts [numKinds]int
	left := n
	for k := kindText; k < numKinds; k++ {
		counts[k] = min((n*imageMix[k]+50)/100, left)
		left -= counts[k]
	}
	counts[kindZero] = left

	// Runs of one kind, in shuffled order.
	r := newRNG(seed, tagLayout, 0)
	type run struct {
		k kind
		n int
	}
	var runs []run
	for k, c := range counts {
		for c > 0 {
			l := min(1+r.intn(maxRun[k]), c)
			runs = append(runs, run{kind(k), l})
			c -= l
		}
	}
	for i := len(runs) - 1; i > 0; i-- {
		j := r.intn(i + 1)
		runs[i], runs[j] = runs[j], runs[i]
	}

	l := &layout{seed: seed, size: size, kinds: make([]kind, 0, n), src: make([]int64, n)}
	for _, ru := range runs {
		start := len(l.kinds)
		for range ru.n {
			l.kinds = append(l.kinds, ru.k)
		}
		if ru.k != kindCopy {
			continue
		}
		// Copy the run as a whole if an earlier window fits, else each
		// extent from its own window, else make it random.
		if src := l.copySource(start, ru.n); src >= 0 {
			for i := start; i < start+ru.n; i++ {
				l.src[i] = src + int64(i-start)*extentSize
			}
			continue
		}
		for i := start; i < start+ru.n; i++ {
			if l.src[i] = l.copySource(i, 1); l.src[i] < 0 {
				l.kinds[i] = kindRandom
			}
		}
	}
	return l
}

// copySource picks the 4 KiB-aligned start of a window of earlier non-zero
// extents for the n copy extents from extent start on, or returns -1 if it
// finds none. The window may hold copies too: they copy from still earlier
// offsets, so producing one ends.
func (l *layout) copySource(start, n int) int64 {
	begin := int64(start) * extentSize
	window := min(begin+int64(n)*extentSize, l.size) - begin
	if window > begin {
		return -1
	}
	r := newRNG(l.seed, tagCopySource, uint64(start)<<8|uint64(n))
	for range 64 {
		src := r.int63n((begin-window)/blockSize+1) * blockSize
		ok := true
		for e := src / extentSize; e <= (src+window-1)/extentSize; e++ {
			if l.kinds[e] == kindZero {
				ok = false
				break
			}
		}
		if ok {
			return src
		}
	}
	return -1
}

func (l *layout) extentLen(i int) int {
	return int(min(extentSize, l.size-int64(i)*extentSize))
}

// gen produces image content from a layout. Text and random extents are
// made of 64 KiB chunks that are generated independently, so that a small
// range (a copy) costs little to produce. A gen is not safe for concurrent
// use; use one per goroutine.
type gen struct {
	l       *layout
	text    textGen
	scratch []byte // one chunk, for partial reads
	cached  int64  // chunk held in scratch, or -1
}

const chunkSize = 64 << 10

func newGen(l *layout) *gen { return &gen{l: l, cached: -1} }

// chunk writes chunk c of a text or random extent to p, which has its
// length.
func (g *gen) chunk(c int64, p []byte) {
	if g.l.kinds[c*chunkSize/extentSize] == kindText {
		// A chunk's lines take about 4.5 s.
		g.text.reset(g.l.seed, tagText, uint64(c), imageEpoch+c*5000)
		g.text.fill(p)
	} else {
		fillRandom(p, g.l.seed, tagRandom, uint64(c))
	}
}

// extent writes the content of extent i to p, which has its length.
func (g *gen) extent(i int, p []byte) { g.readAt(p, int64(i)*extentSize) }

// readAt writes the image content at off to p.
func (g *gen) readAt(p []byte, off int64) {
	for len(p) > 0 {
		i := int(off / extentSize)
		eoff := off % extentSize
		c := off / chunkSize
		coff := int(off % chunkSize)
		clen := int(min(chunkSize, g.l.size-c*chunkSize))
		switch g.l.kinds[i] {
		case kindZero:
			n := min(len(p), g.l.extentLen(i)-int(eoff))
			clear(p[:n])
			p, off = p[n:], off+int64(n)
			continue
		case kindCopy: // its source lies earlier: the recursion ends
			n := min(len(p), g.l.extentLen(i)-int(eoff))
			g.readAt(p[:n], g.l.src[i]+eoff)
			p, off = p[n:], off+int64(n)
			continue
		}
		n := min(len(p), clen-coff)
		if n == clen {
			g.chunk(c, p[:n])
		} else {
			if g.cached != c {
				if g.scratch == nil {
					g.scratch = make([]byte, chunkSize)
				}
				g.chunk(c, g.scratch[:clen])
				g.cached = c
			}
			copy(p[:n], g.scratch[coff:])
		}
		p, off = p[n:], off+int64(n)
	}
}

// extentPool holds extent buffers for Image.
var extentPool = sync.Pool{New: func() any { return new([extentSize]byte) }}

// Image writes a deterministic disk image of size bytes (a positive multiple
// of 4 KiB) to w: 1 MiB extents of which 30% are zero, 30% log text, 30%
// random and 10% copies of earlier data at 4 KiB-aligned offsets (see the
// package documentation). The same seed and size give the same bytes on every
// platform.
//
// Zero extents are holes: Image does not write them, so w must read as zeros
// where nothing was written. A regular *os.File is first truncated to empty
// and extended to size, which replaces an existing file and leaves the zero
// extents unallocated; another w with a Truncate(int64) error method is
// extended to size; any other w gets its last 4 KiB written if it falls in a
// zero extent, so that it holds size bytes.
//
// Image generates extents on several goroutines but calls w.WriteAt from one
// goroutine at a time, in increasing offset order.
func Image(w io.WriterAt, size int64, seed int64) error {
	if err := checkSize(size); err != nil {
		return err
	}
	l := newLayout(size, seed)
	n := len(l.kinds)
	lastZero := l.kinds[n-1] == kindZero
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			if err := f.Truncate(0); err != nil {
				return fmt.Errorf("workload: %w", err)
			}
			if err := f.Truncate(size); err != nil {
				return fmt.Errorf("workload: %w", err)
			}
			lastZero = false
		}
	} else if t, ok := w.(interface{ Truncate(int64) error }); ok {
		if err := t.Truncate(size); err != nil {
			return fmt.Errorf("workload: %w", err)
		}
		lastZero = false
	}

	// Workers generate extents; this goroutine writes them in order.
	data := 0 // extents to write
	for _, k := range l.kinds {
		if k != kindZero {
			data++
		}
	}
	workers := max(1, min(runtime.GOMAXPROCS(0), 16, data))
	type job struct {
		i    int
		buf  []byte
		done chan struct{}
	}
	nbuf := max(1, min(2*workers, data))
	free := make(chan []byte, nbuf)
	for range nbuf {
		free <- extentPool.Get().(*[extentSize]byte)[:]
	}
	defer func() {
		for range nbuf {
			extentPool.Put((*[extentSize]byte)(<-free))
		}
	}()
	jobs := make(chan *job, nbuf)
	order := make(chan *job, nbuf)
	quit := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := newGen(l)
			for j := range jobs {
				g.extent(j.i, j.buf)
				close(j.done)
			}
		}()
	}
	go func() {
		defer close(order)
		defer close(jobs)
		for i, k := range l.kinds {
			if k == kindZero {
				continue
			}
			var buf []byte
			select {
			case buf = <-free:
			case <-quit:
				return
			}
			j := &job{i: i, buf: buf[:l.extentLen(i)], done: make(chan struct{})}
			jobs <- j
			order <- j
		}
	}()
	var err error
	for j := range order {
		<-j.done
		if err == nil {
			if _, werr := w.WriteAt(j.buf, int64(j.i)*extentSize); werr != nil {
				err = fmt.Errorf("workload: writing extent %d: %w", j.i, werr)
				close(quit)
			}
		}
		free <- j.buf[:cap(j.buf)]
	}
	wg.Wait()
	if err == nil && lastZero {
		if _, werr := w.WriteAt(make([]byte, blockSize), size-blockSize); werr != nil {
			err = fmt.Errorf("workload: writing the last block: %w", werr)
		}
	}
	return err
}
