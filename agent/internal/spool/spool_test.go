package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingHandler counts log records by message and writes them to the
// test output.
type countingHandler struct {
	slog.Handler
	mu   *sync.Mutex
	seen map[string]int
}

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	h.seen[r.Message]++
	h.mu.Unlock()
	return h.Handler.Handle(ctx, r)
}

func (h countingHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return countingHandler{h.Handler.WithAttrs(a), h.mu, h.seen}
}

func (h countingHandler) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seen[msg]
}

func testLogger(t testing.TB) (*slog.Logger, countingHandler) {
	h := countingHandler{slog.NewTextHandler(t.Output(), nil), &sync.Mutex{}, map[string]int{}}
	return slog.New(h), h
}

func open(t testing.TB, dir string, o Options) *Spool {
	t.Helper()
	if o.Logger == nil {
		o.Logger, _ = testLogger(t)
	}
	s, err := Open(dir, o)
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	return s
}

// content returns deterministic block content for a key.
func content(key uint64, size int) []byte {
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(key, 0x5eed))
	for i := 0; i < size; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < size; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func readAll(t testing.TB, s *Spool, after uint64) []Record {
	t.Helper()
	var out []Record
	for after < s.Last() {
		recs, err := s.Read(t.Context(), after, 7)
		if err != nil {
			t.Fatalf("read after %d: %v", after, err)
		}
		out = append(out, recs...)
		after = recs[len(recs)-1].Seq
	}
	return out
}

func sameRecord(a, b Record) bool {
	return a.Seq == b.Seq && a.Kind == b.Kind && a.Volume == b.Volume && a.Block == b.Block &&
		bytes.Equal(a.Data, b.Data) && a.Time.Equal(b.Time)
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentSize: 20 << 10})
	var want []Record
	now := time.Unix(1_700_000_000, 123456789)
	for i := range 30 {
		vol := []string{"root", "data/db", strings.Repeat("v", MaxVolumeName)}[i%3]
		size := []int{4096, 512, 64 << 10}[i%3]
		n := 1 + i%4
		blocks := make([][]byte, n)
		for j := range blocks {
			blocks[j] = content(uint64(i*10+j), size)
		}
		seq, err := s.AppendBlocks(vol, int64(i*3), blocks)
		if err != nil {
			t.Fatal(err)
		}
		if got, wantSeq := seq, uint64(len(want)+n); got != wantSeq {
			t.Fatalf("append %d: seq %d, want %d", i, got, wantSeq)
		}
		for j, b := range blocks {
			want = append(want, Record{Seq: uint64(len(want) + 1), Kind: KindBlock, Volume: vol, Block: int64(i*3 + j), Data: b})
		}
		if i%5 == 4 {
			at := now.Add(time.Duration(i) * time.Second)
			seq, err := s.Mark(at)
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, Record{Seq: seq, Kind: KindMark, Time: at})
		}
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	check := func(s *Spool) {
		t.Helper()
		got := readAll(t, s, 0)
		if len(got) != len(want) {
			t.Fatalf("read %d records, want %d", len(got), len(want))
		}
		for i := range got {
			if !sameRecord(got[i], want[i]) {
				t.Fatalf("record %d: got seq %d %v %q block %d, want seq %d %v %q block %d",
					i, got[i].Seq, got[i].Kind, got[i].Volume, got[i].Block, want[i].Seq, want[i].Kind, want[i].Volume, want[i].Block)
			}
		}
		if got, w := s.Last(), uint64(len(want)); got != w {
			t.Errorf("Last = %d, want %d", got, w)
		}
		// A read from the middle starts at the right record.
		mid, err := s.Read(t.Context(), 17, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(mid) != 3 || mid[0].Seq != 18 || !sameRecord(mid[2], want[19]) {
			t.Errorf("read after 17: got %d records starting at %d", len(mid), mid[0].Seq)
		}
	}
	check(s)
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) < 3 {
		t.Errorf("%d segment files with SegmentSize 20 KiB, want several", len(segs))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, Options{SegmentSize: 20 << 10})
	defer s.Close()
	check(s)
	seq, err := s.Mark(now)
	if err != nil {
		t.Fatal(err)
	}
	if seq != uint64(len(want)+1) {
		t.Errorf("first append after reopen got seq %d, want %d", seq, len(want)+1)
	}
}

func TestAppendRejectsBadInput(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	blk := make([]byte, 4096)
	cases := []struct {
		name   string
		volume string
		first  int64
		blocks [][]byte
	}{
		{"empty volume", "", 0, [][]byte{blk}},
		{"long volume", strings.Repeat("x", MaxVolumeName+1), 0, [][]byte{blk}},
		{"no blocks", "v", 0, nil},
		{"negative block", "v", -1, [][]byte{blk}},
		{"huge block number", "v", maxBlockNum, [][]byte{blk}},
		{"not a power of two", "v", 0, [][]byte{make([]byte, 3000)}},
		{"too big", "v", 0, [][]byte{make([]byte, 2<<20)}},
		{"too small", "v", 0, [][]byte{make([]byte, 256)}},
		{"mixed sizes", "v", 0, [][]byte{blk, make([]byte, 8192)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := s.AppendBlocks(c.volume, c.first, c.blocks); err == nil {
				t.Errorf("AppendBlocks accepted it")
			}
			if got := s.Last(); got != 0 {
				t.Errorf("Last = %d after a refused append, want 0", got)
			}
		})
	}
}

func TestConcurrentAppendKeepsOrder(t *testing.T) {
	s := open(t, t.TempDir(), Options{SegmentSize: 256 << 10})
	defer s.Close()
	const writers, perWriter = 8, 200
	type sent struct {
		seq uint64
		key uint64
		n   int
	}
	got := make([][]sent, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				key := uint64(w*1_000_000 + i)
				n := 1 + i%3
				blocks := make([][]byte, n)
				for j := range blocks {
					blocks[j] = content(key*4+uint64(j), 4096)
				}
				seq, err := s.AppendBlocks(fmt.Sprintf("w%d", w), int64(i), blocks)
				if err != nil {
					t.Error(err)
					return
				}
				if i%10 == 0 {
					if err := s.Sync(); err != nil {
						t.Error(err)
						return
					}
				}
				got[w] = append(got[w], sent{seq, key, n})
			}
		})
	}
	wg.Wait()
	recs := readAll(t, s, 0)
	want := 0
	for i := range perWriter {
		want += writers * (1 + i%3)
	}
	if len(recs) != want {
		t.Fatalf("%d records, want %d", len(recs), want)
	}
	for i, r := range recs {
		if r.Seq != uint64(i+1) {
			t.Fatalf("record %d has seq %d", i, r.Seq)
		}
	}
	for w, list := range got {
		for i, x := range list {
			if i > 0 && x.seq <= list[i-1].seq {
				t.Errorf("writer %d: seq %d after %d", w, x.seq, list[i-1].seq)
			}
			// The records of one call are contiguous and end at seq.
			for j := range x.n {
				r := recs[x.seq-uint64(x.n)+uint64(j)] // seq x.seq-n+1+j
				if r.Volume != fmt.Sprintf("w%d", w) || r.Block != int64(i+j) || !bytes.Equal(r.Data, content(x.key*4+uint64(j), 4096)) {
					t.Fatalf("writer %d call %d block %d: record %d is %s/%d", w, i, j, r.Seq, r.Volume, r.Block)
				}
			}
		}
	}
}

func TestGroupCommit(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	var wg sync.WaitGroup
	var synced atomic.Int64
	for w := range 16 {
		wg.Go(func() {
			for i := range 20 {
				seq, err := s.AppendBlocks("v", int64(w*100+i), [][]byte{content(uint64(i), 4096)})
				if err != nil {
					t.Error(err)
					return
				}
				if err := s.Sync(); err != nil {
					t.Error(err)
					return
				}
				if d := s.Durable(); d < seq {
					t.Errorf("Sync returned with durable %d below own record %d", d, seq)
				}
				synced.Add(1)
			}
		})
	}
	wg.Wait()
	if synced.Load() != 320 {
		t.Fatalf("%d syncs", synced.Load())
	}
}

func TestFullThenAckReturnsSpace(t *testing.T) {
	dir := t.TempDir()
	o := Options{MaxBytes: 200 << 10, SegmentSize: 40 << 10}
	s := open(t, dir, o)
	defer s.Close()
	blk := [][]byte{content(1, 4096), content(2, 4096)}
	var last uint64
	for {
		seq, err := s.AppendBlocks("v", 0, blk)
		if errors.Is(err, ErrFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		last = seq
	}
	if got := s.Last(); got != last {
		t.Errorf("Last = %d after ErrFull, want %d (nothing appended)", got, last)
	}
	if b := s.Bytes(); b > o.MaxBytes || b < o.MaxBytes-2*int64(blockRecordSize("v", 4096))-segHeaderSize {
		t.Errorf("Bytes = %d at ErrFull, want just under %d", b, o.MaxBytes)
	}
	// A mark still fits: a consistency point is never lost to the bound.
	mark, err := s.Mark(time.Now())
	if err != nil {
		t.Fatalf("mark in a full spool: %v", err)
	}
	before := s.Bytes()
	if err := s.Ack(mark); err != nil {
		t.Fatal(err)
	}
	if b := s.Bytes(); b >= before/4 {
		t.Errorf("Bytes = %d after acknowledging everything, was %d", b, before)
	}
	if _, err := s.AppendBlocks("v", 0, blk); err != nil {
		t.Errorf("append after Ack: %v", err)
	}
	if _, err := s.Read(t.Context(), 0, 1); !errors.Is(err, ErrAcked) {
		t.Errorf("read of deleted records: got %v, want ErrAcked", err)
	}
	if err := s.Ack(s.Last() + 1); err == nil {
		t.Error("Ack past Last succeeded")
	}
}

func TestAckSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	o := Options{SegmentSize: 16 << 10}
	s := open(t, dir, o)
	for i := range 40 {
		if _, err := s.AppendBlocks("v", int64(i), [][]byte{content(uint64(i), 4096)}); err != nil {
			t.Fatal(err)
		}
	}
	m, err := s.Mark(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := s.AppendBlocks("v", int64(i), [][]byte{content(uint64(100+i), 4096)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(m); err != nil {
		t.Fatal(err)
	}
	last := s.Last()
	s.Close()

	s = open(t, dir, o)
	if got := s.Acked(); got != m {
		t.Errorf("Acked after reopen = %d, want %d", got, m)
	}
	recs := readAll(t, s, m)
	if len(recs) != 5 || recs[0].Seq != m+1 || !bytes.Equal(recs[4].Data, content(104, 4096)) {
		t.Errorf("after reopen read %d records after the ack", len(recs))
	}
	// Acknowledging everything, then reopening, continues the sequence.
	if err := s.Ack(last); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dir, o)
	defer s.Close()
	if got := s.Last(); got != last {
		t.Errorf("Last after acknowledging all and reopening = %d, want %d", got, last)
	}
	seq, err := s.Mark(time.Now())
	if err != nil || seq != last+1 {
		t.Errorf("next mark: seq %d, %v; want %d", seq, err, last+1)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) != 1 {
		t.Errorf("%d segment files after acknowledging all, want 1", len(segs))
	}
}

func TestReadWaits(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, err := s.Read(ctx, 0, 10); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("read of an empty spool: %v, want deadline exceeded", err)
	}
	done := make(chan []Record)
	go func() {
		recs, err := s.Read(t.Context(), 0, 10)
		if err != nil {
			t.Error(err)
		}
		done <- recs
	}()
	if _, err := s.Mark(time.Unix(5, 0)); err != nil {
		t.Fatal(err)
	}
	if recs := <-done; len(recs) != 1 || recs[0].Kind != KindMark || !recs[0].Time.Equal(time.Unix(5, 0)) {
		t.Errorf("woken read got %+v", recs)
	}
	go func() {
		_, err := s.Read(t.Context(), 1, 10)
		done <- nil
		if !errors.Is(err, ErrClosed) {
			t.Errorf("read during Close: %v, want ErrClosed", err)
		}
	}()
	s.Close()
	<-done
}

func TestSecondOpenRefused(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	defer s.Close()
	if _, err := Open(dir, Options{}); err == nil {
		t.Fatal("second Open of one directory succeeded")
	}
}

// fill writes n single-block records and syncs; it returns the segment
// files.
func fill(t *testing.T, dir string, o Options, n int) []string {
	t.Helper()
	s := open(t, dir, o)
	for i := range n {
		if _, err := s.AppendBlocks("v", int64(i), [][]byte{content(uint64(i), 4096)}); err != nil {
			t.Fatal(err)
		}
		if i%4 == 3 {
			if err := s.Sync(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	slices.Sort(segs)
	return segs
}

func TestTornTailRepaired(t *testing.T) {
	rec := int64(blockRecordSize("v", 4096))
	cases := []struct {
		name string
		// damage changes the last segment (size size); returns how many
		// records of the 10 in it must survive.
		damage func(t *testing.T, path string, size int64) int
	}{
		{"cut in a record header", func(t *testing.T, p string, size int64) int {
			truncate(t, p, size-rec+10)
			return 9
		}},
		{"cut in a payload", func(t *testing.T, p string, size int64) int {
			truncate(t, p, size-100)
			return 9
		}},
		{"cut three records back", func(t *testing.T, p string, size int64) int {
			truncate(t, p, size-2*rec-1)
			return 7
		}},
		{"zeros appended", func(t *testing.T, p string, size int64) int {
			appendBytes(t, p, make([]byte, 9000))
			return 10
		}},
		{"garbage appended", func(t *testing.T, p string, size int64) int {
			appendBytes(t, p, content(99, 5000))
			return 10
		}},
		{"last record flipped", func(t *testing.T, p string, size int64) int {
			flip(t, p, size-5)
			return 9
		}},
		{"header only", func(t *testing.T, p string, size int64) int {
			truncate(t, p, segHeaderSize)
			return 0
		}},
		{"torn header", func(t *testing.T, p string, size int64) int {
			truncate(t, p, 11)
			return 0
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			o := Options{SegmentSize: segHeaderSize + 10*rec}
			segs := fill(t, dir, o, 40)
			if len(segs) != 4 {
				t.Fatalf("%d segments, want 4", len(segs))
			}
			lastSeg := segs[3]
			fi, _ := os.Stat(lastSeg)
			keep := c.damage(t, lastSeg, fi.Size())
			log, h := testLogger(t)
			s := open(t, dir, Options{SegmentSize: o.SegmentSize, Logger: log})
			defer s.Close()
			want := uint64(30 + keep)
			if got := s.Last(); got != want {
				t.Errorf("Last = %d after repair, want %d", got, want)
			}
			recs := readAll(t, s, 0)
			for i, r := range recs {
				if !bytes.Equal(r.Data, content(uint64(i), 4096)) {
					t.Fatalf("record %d changed", r.Seq)
				}
			}
			// Every case but a clean, empty segment is a repair.
			if got, want := h.count("spool_torn_tail_truncated"), c.name != "header only"; (got == 1) != want {
				t.Errorf("%d repairs logged, want one: %v", got, want)
			}
			// Appends continue the sequence.
			seq, err := s.Mark(time.Now())
			if err != nil || seq != want+1 {
				t.Errorf("mark after repair: seq %d, %v; want %d", seq, err, want+1)
			}
		})
	}
}

func TestDurableCorruptionRefused(t *testing.T) {
	rec := int64(blockRecordSize("v", 4096))
	cases := []struct {
		name string
		seg  int   // which segment file
		off  int64 // byte to flip, from the segment start
	}{
		{"middle of last segment", 3, segHeaderSize + 2*rec + 50},
		{"earlier segment", 1, segHeaderSize + 5*rec + 3},
		{"earlier segment header", 1, 17},
		{"last record of an earlier segment", 0, segHeaderSize + 9*rec + 40},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			segs := fill(t, dir, Options{SegmentSize: segHeaderSize + 10*rec}, 40)
			flip(t, segs[c.seg], c.off)
			_, err := Open(dir, Options{Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
			var ce *CorruptError
			if !errors.As(err, &ce) {
				t.Fatalf("open: %v, want a CorruptError", err)
			}
			if ce.Path != segs[c.seg] {
				t.Errorf("error names %s, want %s", ce.Path, segs[c.seg])
			}
			if !strings.Contains(err.Error(), filepath.Base(segs[c.seg])) {
				t.Errorf("error %q does not name the file", err)
			}
			t.Log(err)
		})
	}
}

func TestMissingSegmentRefused(t *testing.T) {
	dir := t.TempDir()
	rec := int64(blockRecordSize("v", 4096))
	segs := fill(t, dir, Options{SegmentSize: segHeaderSize + 10*rec}, 40)
	if err := os.Remove(segs[1]); err != nil {
		t.Fatal(err)
	}
	var ce *CorruptError
	if _, err := Open(dir, Options{}); !errors.As(err, &ce) {
		t.Fatalf("open with a segment missing: %v, want a CorruptError", err)
	}
}

func TestBadAckFileRefused(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	if _, err := s.Mark(time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	flip(t, filepath.Join(dir, ackedName), 17)
	var ce *CorruptError
	if _, err := Open(dir, Options{}); !errors.As(err, &ce) {
		t.Fatalf("open with a bad ack file: %v, want a CorruptError", err)
	}
}

func truncate(t *testing.T, path string, size int64) {
	t.Helper()
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

func appendBytes(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

func flip(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}
