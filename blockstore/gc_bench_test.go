package blockstore

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkGC collects a synthetic store of LIFEBOAT_GC_BLOCKS tiny unique
// blocks (default 200k), half of them dead: two points share nothing, one
// is deleted. A writer loop (Put of new and deduplicated blocks, a map
// page, CommitPoint under a Lease) runs during the GC. It reports the GC's
// peak RSS (VmHWM, reset before the GC), blocks/s and the longest writer
// iteration (pause-ms). Run it once: -benchtime=1x (GC.md).
func BenchmarkGC(b *testing.B) {
	n := int64(200_000)
	if v, err := strconv.ParseInt(os.Getenv("LIFEBOAT_GC_BLOCKS"), 10, 64); err == nil && v > 0 {
		n = v
	}
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s, drop := buildGCStore(b, n)
		if _, err := s.Maintenance().DeletePoints(b.Context(), []string{drop}); err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		debug.FreeOSMemory()
		resetPeakRSS(b)
		b.StartTimer()

		// The writer alone first: its longest iteration without a GC.
		bctx, bcancel := context.WithTimeout(b.Context(), 500*time.Millisecond)
		base, _ := gcBenchWriter(bctx, b, s)
		bcancel()

		ctx, cancel := context.WithCancel(b.Context())
		var wg sync.WaitGroup
		var worst time.Duration
		var iters int
		wg.Go(func() { worst, iters = gcBenchWriter(ctx, b, s) })
		start := time.Now()
		rep, err := s.Maintenance().GC(b.Context(), GCOptions{})
		wall := time.Since(start)
		cancel()
		wg.Wait()
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		b.ReportMetric(float64(peakRSS(b))/(1<<20), "peak-MiB")
		b.ReportMetric(float64(rep.Scanned)/wall.Seconds(), "blocks/s")
		b.ReportMetric(float64(worst.Microseconds())/1000, "pause-ms")
		b.ReportMetric(float64(base.Microseconds())/1000, "base-pause-ms")
		b.ReportMetric(float64(rep.MaxHold.Microseconds())/1000, "hold-ms")
		b.ReportMetric(float64(rep.FilterBytes)/(1<<20), "filter-MiB")
		b.Logf("%d blocks: %+v; writer: %d iterations, longest %v", n, rep, iters, worst)
		if rep.Dead < n*4/10 {
			b.Errorf("GC found %d dead of %d, want about half", rep.Dead, n)
		}
		s.Close()
	}
}

// buildGCStore makes a store of n tiny unique blocks and two points, of
// the even and of the odd blocks; it returns the ID of the odd one.
func buildGCStore(b *testing.B, n int64) (*Store, string) {
	dir := filepath.Join(b.TempDir(), "store")
	if err := Init(dir, InitOptions{}); err != nil {
		b.Fatal(err)
	}
	s, err := Open(dir, Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	half := (n + 1) / 2
	g := Geometry{Size: half * 4096, BlockSize: 4096}
	even, odd := s.maps.newWriter(g), s.maps.newWriter(Geometry{Size: (n / 2) * 4096, BlockSize: 4096})
	const batch = 1024
	blocks := make([][]byte, 0, batch)
	buf := make([]byte, 16*batch)
	for first := int64(0); first < n; first += batch {
		blocks = blocks[:0]
		for j := int64(0); j < batch && first+j < n; j++ {
			blk := buf[16*j : 16*j+16]
			binary.LittleEndian.PutUint64(blk, uint64(first+j)+1)
			binary.LittleEndian.PutUint64(blk[8:], 0x6c696665626f6174)
			blocks = append(blocks, blk)
		}
		ids, err := s.Put(ctx, blocks)
		if err != nil {
			b.Fatal(err)
		}
		for j, id := range ids {
			w := even
			if (first+int64(j))%2 == 1 {
				w = odd
			}
			if err := w.add(id); err != nil {
				b.Fatal(err)
			}
		}
	}
	var pts []Point
	for i, w := range []*mapWriter{even, odd} {
		root, err := w.finish()
		if err != nil {
			b.Fatal(err)
		}
		p, err := s.CommitPoint(ctx, Point{Group: "bench", Name: strconv.Itoa(i), Volumes: []VolumeState{{Name: "v", Root: root, Size: w.geom.Size, BlockSize: 4096, Used: w.geom.Blocks()}}})
		if err != nil {
			b.Fatal(err)
		}
		pts = append(pts, p)
	}
	return s, pts[1].ID
}

// gcBenchWriter puts new and deduplicated blocks and commits a point in a
// loop until ctx ends, and returns its longest iteration.
func gcBenchWriter(ctx context.Context, b *testing.B, s *Store) (time.Duration, int) {
	var worst time.Duration
	iters := 0
	for ctx.Err() == nil {
		t0 := time.Now()
		release := s.Holds().Lease()
		blocks := make([][]byte, 8)
		for j := range blocks {
			blk := make([]byte, 16)
			binary.LittleEndian.PutUint64(blk, uint64(1<<40+iters*8+j))
			if j == 0 {
				binary.LittleEndian.PutUint64(blk, uint64(iters)+1) // an old block
				binary.LittleEndian.PutUint64(blk[8:], 0x6c696665626f6174)
			}
			blocks[j] = blk
		}
		ids, err := s.Put(ctx, blocks)
		if err == nil {
			w := s.maps.newWriter(Geometry{Size: 8 * 4096, BlockSize: 4096})
			for _, id := range ids {
				if err = w.add(id); err != nil {
					break
				}
			}
			var root ID
			if err == nil {
				root, err = w.finish()
			}
			if err == nil {
				_, err = s.CommitPoint(ctx, Point{Group: "writer", Volumes: []VolumeState{{Name: "w", Root: root, Size: 8 * 4096, BlockSize: 4096, Used: 8}}})
			}
		}
		release()
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) {
				b.Error(err)
			}
			break
		}
		worst = max(worst, time.Since(t0))
		iters++
	}
	return worst, iters
}

// resetPeakRSS resets VmHWM (Linux: 5 to clear_refs).
func resetPeakRSS(b *testing.B) {
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Logf("reset peak RSS: %v (peak-MiB includes the build)", err)
	}
}

// peakRSS reads VmHWM from /proc/self/status, in bytes.
func peakRSS(b *testing.B) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
