package scrub

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/lifeboat-dr/lifeboat/blockstore"
)

// BenchmarkIngestUnderScrub measures what the scrub costs ingest: Put and
// Flush of 64 KiB blocks (half random, half text-like) into a real store
// holding 256 MiB, alone and while a scrub reads the store back at the
// default rate cap (16 MiB/s: what the default 7-day pace asks of a store
// of 9.7 TB or more; smaller stores are read slower). It reports ingest
// MB/s; compare the two sub-benchmarks (test/bench/scrub.sh).
func BenchmarkIngestUnderScrub(b *testing.B) {
	for _, mode := range []string{"alone", "scrubbing"} {
		b.Run(mode, func(b *testing.B) {
			dir := b.TempDir()
			if err := blockstore.Init(dir, blockstore.InitOptions{}); err != nil {
				b.Fatal(err)
			}
			s, err := blockstore.Open(dir, blockstore.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			rng := rand.New(rand.NewPCG(1, 2))
			batch := func() [][]byte {
				out := make([][]byte, 64) // 4 MiB
				for i := range out {
					blk := make([]byte, 64<<10)
					if i%2 == 0 {
						for j := 0; j < len(blk); j += 8 {
							binary.LittleEndian.PutUint64(blk[j:], rng.Uint64())
						}
					} else {
						for j := range blk {
							blk[j] = "lifeboat keeps copies "[(j+int(rng.Uint32()%7))%22]
						}
					}
					out[i] = blk
				}
				return out
			}
			for range 64 { // 256 MiB for the scrub to read
				if _, err := s.Put(ctx, batch()); err != nil {
					b.Fatal(err)
				}
			}
			if err := s.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			sctx, stop := context.WithCancel(ctx)
			done := make(chan struct{})
			if mode == "scrubbing" {
				lim := rate.NewLimiter(rate.Limit(DefaultRate), 8<<20)
				go func() {
					defer close(done)
					var from blockstore.ScrubCursor
					for sctx.Err() == nil {
						rep, err := s.Scrub(sctx, blockstore.ScrubOptions{From: from, Bytes: 4 << 20,
							Wait: func(ctx context.Context, n int) error { return lim.WaitN(ctx, min(n, lim.Burst())) }})
						if err != nil {
							return
						}
						from = rep.Next
					}
				}()
			} else {
				close(done)
			}
			batches := make([][][]byte, b.N)
			for i := range batches {
				batches[i] = batch()
			}
			b.SetBytes(64 << 16)
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				if _, err := s.Put(ctx, batches[i]); err != nil {
					b.Fatal(err)
				}
				if err := s.Flush(ctx); err != nil {
					b.Fatal(err)
				}
			}
			el := time.Since(start)
			b.StopTimer()
			stop()
			<-done
			b.ReportMetric(float64(b.N)*4/el.Seconds(), "ingest_MiB/s")
		})
	}
}
