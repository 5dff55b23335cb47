package workload

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/bits"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"
)

const (
	blockSize  = 4 << 10 // unit of writes, copies and holes
	extentSize = 1 << 20 // unit of the image layout

	// Writes (Mutate and Writer).
	hotRegions     = 4  // number of hot regions
	hotPct         = 80 // percent of writes landing in a hot region
	maxWriteBlocks = 16 // longest write, in blocks (64 KiB)
)

// kind is the content of an extent or a write.
type kind uint8

const (
	kindZero kind = iota
	kindText
	kindRandom
	kindCopy
	numKinds
)

var (
	// imageMix is the percentage of extents of each kind in an image.
	imageMix = [numKinds]int{30, 30, 30, 10}
	// maxRun is the longest run of extents of each kind.
	maxRun = [numKinds]int{32, 8, 16, 8}
	// writeMix is the percentage of writes of each kind.
	writeMix = [numKinds]int{20, 35, 25, 20}
)

// Timestamps of the first text line of an image, a Mutate and a Writer.
var (
	imageEpoch  = time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC).UnixMilli()
	mutateEpoch = imageEpoch + 90*24*3600*1000
	writerEpoch = imageEpoch + 180*24*3600*1000
)

// Tags that keep the random streams of different purposes apart.
const (
	tagLayout uint64 = iota + 1
	tagCopySource
	tagText
	tagRandom
	tagMutatePlan
	tagMutateText
	tagMutateRandom
	tagWriterPlan
	tagWriterText
	tagWriterRandom
	tagPID
)

// ---------------------------------------------------------------------------
// Random numbers.

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// streamKey derives the key of an independent stream for a seed, a purpose
// and an index (an extent or write number), so that every extent and write
// can be generated on its own.
func streamKey(seed int64, tag, idx uint64) uint64 {
	return splitmix(splitmix(splitmix(uint64(seed))^tag) ^ idx)
}

// rng is a PCG stream with its own bounding, so the numbers it gives depend
// only on the specified PCG output.
type rng struct{ pcg rand.PCG }

func newRNG(seed int64, tag, idx uint64) *rng {
	r := new(rng)
	r.seed(seed, tag, idx)
	return r
}

func (r *rng) seed(seed int64, tag, idx uint64) {
	k := streamKey(seed, tag, idx)
	r.pcg.Seed(k, splitmix(k))
}

func (r *rng) next() uint64 { return r.pcg.Uint64() }

// intn returns a number in [0, n), n > 0 (multiply-high; the bias is tiny).
func (r *rng) intn(n int) int {
	hi, _ := bits.Mul64(r.next(), uint64(n))
	return int(hi)
}

// int63n is intn for int64 bounds.
func (r *rng) int63n(n int64) int64 {
	hi, _ := bits.Mul64(r.next(), uint64(n))
	return int64(hi)
}

// pick returns k with probability w[k]/sum(w).
func (r *rng) pick(w *[numKinds]int) kind {
	sum := 0
	for _, x := range w {
		sum += x
	}
	v := r.intn(sum)
	for k, x := range w {
		if v < x {
			return kind(k)
		}
		v -= x
	}
	return numKinds - 1
}

// fillRandom fills p with incompressible bytes from a PCG stream.
func fillRandom(p []byte, seed int64, tag, idx uint64) {
	var r rng
	r.seed(seed, tag, idx)
	for len(p) >= 32 {
		binary.LittleEndian.PutUint64(p, r.pcg.Uint64())
		binary.LittleEndian.PutUint64(p[8:], r.pcg.Uint64())
		binary.LittleEndian.PutUint64(p[16:], r.pcg.Uint64())
		binary.LittleEndian.PutUint64(p[24:], r.pcg.Uint64())
		p = p[32:]
	}
	for len(p) > 0 {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], r.pcg.Uint64())
		p = p[copy(p, b[:]):]
	}
}

// ---------------------------------------------------------------------------
// Text.

var (
	hostNames = []string{"web-01", "web-02", "web-03", "api-01", "api-02", "db-01", "db-02", "cache-01", "worker-01", "worker-02", "edge-01", "mq-01"}
	verbs     = []string{"GET", "GET", "GET", "GET", "GET", "POST", "POST", "PUT", "DELETE", "PATCH"}
	urls      = []string{"/api/v1/accounts/", "/api/v1/orders/", "/api/v2/invoices/", "/api/v2/shipments/", "/assets/app.", "/images/catalog/", "/api/v1/basket/", "/health?check=", "/api/v2/find?term=", "/signin?return=/profile/", "/api/v1/tokens/", "/feeds/rss/"}
	codes     = []int{200, 200, 200, 200, 200, 200, 200, 201, 202, 204, 301, 302, 304, 304, 400, 401, 403, 404, 404, 409, 429, 500, 502, 503}
	clients   = []string{
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
		"Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
		"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
		"curl/8.11.0", "Go-http-client/1.1", "okhttp/4.12.0", "kube-probe/1.31", "Wget/1.24.5",
	}
	apps      = []string{"ledger", "identity", "stock", "finder", "notifier", "cron", "checkout", "products", "reports", "gateway"}
	severity  = []string{"INFO", "INFO", "INFO", "INFO", "INFO", "DEBUG", "DEBUG", "WARN", "ERROR"}
	lowerSev  = []string{"info", "info", "info", "info", "info", "debug", "debug", "warn", "error"}
	actions   = []string{"order.placed", "order.shipped", "basket.changed", "session.opened", "session.renewed", "cache.evicted", "task.finished", "charge.settled", "mail.queued", "query.slow", "stock.reserved", "refund.issued"}
	summaries = []string{"request served", "retry scheduled after timeout", "peer closed the connection", "entry expired from cache", "throttled by rate limiter", "backend answered slowly", "lease acquired", "snapshot written", "no such account", "input rejected by schema", "batch committed", "replica caught up"}
	words     = []string{
		"the", "a", "of", "to", "and", "in", "for", "on", "with", "from", "after", "before", "while", "during",
		"request", "response", "client", "server", "session", "account", "order", "payment", "invoice", "item",
		"queue", "worker", "job", "task", "batch", "record", "row", "table", "index", "cache", "disk", "volume",
		"snapshot", "backup", "replica", "node", "cluster", "network", "socket", "stream", "file", "block",
		"started", "finished", "failed", "retried", "skipped", "queued", "written", "read", "flushed", "synced",
		"expired", "rotated", "loaded", "saved", "deleted", "updated", "created", "checked", "timed", "out",
	}
	kernelMsgs = [][]string{ // a number goes between the parts
		{"EXT4-fs (sda2): mounted filesystem with ordered data mode. Quota mode: none."},
		{"TCP: request_sock_TCP: Possible SYN flooding on port ", ". Sending cookies."},
		{"nf_conntrack: nf_conntrack: table full, dropping packet"},
		{"systemd[1]: Started session ", " of user backup."},
		{"CRON[", "]: (root) CMD (run-parts /etc/cron.hourly)"},
		{"sshd[", "]: Accepted publickey for ops from 10.20.", ".", " port ", " ssh2"},
		{"Out of memory: Killed process ", " (java) total-vm:", "kB, anon-rss:", "kB"},
		{"audit: type=1400 apparmor=\"DENIED\" operation=\"open\" pid=", " comm=\"nginx\""},
	}
)

const hexDigits = "0123456789abcdef"
const b64Digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// textGen writes log text. Most of a line is repeated structure and about a
// quarter is hard to predict (ids, addresses, numbers), which makes it
// compress about as well as real logs.
type textGen struct {
	r      rng
	ms     int64  // timestamp of the current line, Unix milliseconds
	minute int64  // minute that prefix holds
	prefix []byte // "2006-01-02T15:04:" of minute
	pid    int
	line   []byte
}

func newTextGen(seed int64, tag, idx uint64, startMs int64) *textGen {
	g := new(textGen)
	g.reset(seed, tag, idx, startMs)
	return g
}

// reset starts g on a new stream, keeping its buffers.
func (g *textGen) reset(seed int64, tag, idx uint64, startMs int64) {
	g.r.seed(seed, tag, idx)
	g.ms = startMs
	g.minute = -1
	g.pid = 200 + int(streamKey(seed, tagPID, idx)%30000)
}

// fill fills p with lines, the last one cut at the end of p.
func (g *textGen) fill(p []byte) {
	for off := 0; off < len(p); {
		g.line = g.appendLine(g.line[:0])
		off += copy(p[off:], g.line)
	}
}

func (g *textGen) stamp(b []byte) []byte {
	if m := g.ms / 60000; m != g.minute {
		g.minute = m
		g.prefix = time.UnixMilli(m*60000).UTC().AppendFormat(g.prefix[:0], "2006-01-02T15:04:")
	}
	b = append(b, g.prefix...)
	in := g.ms % 60000
	s, ms := in/1000, in%1000
	return append(b, byte('0'+s/10), byte('0'+s%10), '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10), 'Z')
}

func (g *textGen) num(b []byte, n int) []byte {
	return strconv.AppendUint(b, uint64(g.r.intn(n)), 10)
}

func (g *textGen) hex(b []byte, n int) []byte {
	for n > 0 {
		v := g.r.next()
		for i := 0; i < 16 && n > 0; i, n = i+1, n-1 {
			b = append(b, hexDigits[v&15])
			v >>= 4
		}
	}
	return b
}

func (g *textGen) b64(b []byte, n int) []byte {
	for n > 0 {
		v := g.r.next()
		for i := 0; i < 10 && n > 0; i, n = i+1, n-1 {
			b = append(b, b64Digits[v&63])
			v >>= 6
		}
	}
	return b
}

func (g *textGen) addr(b []byte) []byte {
	b = append(b, "10."...)
	b = g.num(b, 8)
	b = append(b, '.')
	b = g.num(b, 256)
	b = append(b, '.')
	return g.num(b, 256)
}

func (g *textGen) word(b []byte, list []string) []byte {
	return append(b, list[g.r.intn(len(list))]...)
}

// appendLine appends one log line, ending in '\n'.
func (g *textGen) appendLine(b []byte) []byte {
	g.ms += int64(g.r.intn(30))
	b = g.stamp(b)
	b = append(b, ' ')
	b = g.word(b, hostNames)
	switch c := g.r.intn(100); {
	case c < 40: // web server access log
		b = append(b, " httpd["...)
		b = strconv.AppendInt(b, int64(g.pid), 10)
		b = append(b, "]: "...)
		b = g.addr(b)
		b = append(b, " \""...)
		b = g.word(b, verbs)
		b = append(b, ' ')
		b = g.word(b, urls)
		b = g.num(b, 200000)
		b = append(b, " HTTP/1.1\" "...)
		b = strconv.AppendInt(b, int64(codes[g.r.intn(len(codes))]), 10)
		b = append(b, " bytes="...)
		b = g.num(b, 80000)
		b = append(b, " time=0."...)
		b = g.num(b, 1000)
		b = append(b, " agent=\""...)
		b = g.word(b, clients)
		b = append(b, "\" id="...)
		b = g.hex(b, 24)
		b = append(b, " s="...)
		b = g.b64(b, 16)
	case c < 65: // application key=value log
		b = append(b, ' ')
		b = g.word(b, apps)
		b = append(b, '[')
		b = strconv.AppendInt(b, int64(g.pid+g.r.intn(6)), 10)
		b = append(b, "]: "...)
		b = g.word(b, severity)
		b = append(b, ' ')
		b = g.word(b, actions)
		b = append(b, " account="...)
		b = g.num(b, 5000000)
		b = append(b, " total="...)
		b = g.num(b, 50000)
		b = append(b, '.')
		b = g.num(b, 100)
		b = append(b, " currency=EUR elapsed_ms="...)
		b = g.num(b, 3000)
		b = append(b, " span="...)
		b = g.hex(b, 24)
	case c < 80: // JSON log
		b = append(b, " {\"level\":\""...)
		b = g.word(b, lowerSev)
		b = append(b, "\",\"app\":\""...)
		b = g.word(b, apps)
		b = append(b, "\",\"msg\":\""...)
		b = g.word(b, summaries)
		b = append(b, "\",\"account\":"...)
		b = g.num(b, 5000000)
		b = append(b, ",\"peer\":\""...)
		b = g.addr(b)
		b = append(b, "\",\"elapsed_ms\":"...)
		b = g.num(b, 8000)
		b = append(b, ",\"trace\":\""...)
		b = g.hex(b, 16)
		b = append(b, "\"}"...)
	case c < 92: // prose from the word list
		b = append(b, ' ')
		b = g.word(b, apps)
		b = append(b, ": "...)
		b = g.word(b, severity)
		for n := 4 + g.r.intn(12); n > 0; n-- {
			b = append(b, ' ')
			b = g.word(b, words)
		}
		b = append(b, " ("...)
		b = g.num(b, 100000)
		b = append(b, " items, attempt "...)
		b = g.num(b, 5)
		b = append(b, ')')
	default: // kernel log
		b = append(b, " kernel: ["...)
		b = strconv.AppendInt(b, g.ms/1000%1000000, 10)
		b = append(b, '.')
		b = g.num(b, 1000000)
		b = append(b, "] "...)
		for i, part := range kernelMsgs[g.r.intn(len(kernelMsgs))] {
			if i > 0 {
				b = g.num(b, 65536)
			}
			b = append(b, part...)
		}
	}
	return append(b, '\n')
}

// ---------------------------------------------------------------------------
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

// ---------------------------------------------------------------------------
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
