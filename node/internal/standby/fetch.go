package standby

import (
	"context"
	"runtime"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"golang.org/x/sync/errgroup"
)

// readerSource is a Source that also hands out sequential readers, which
// decompress each stored frame once for all its blocks (*blockstore.Store).
type readerSource interface {
	NewReader() *blockstore.Reader
}

// fetchRun is how many consecutive blocks one goroutine reads: blocks next
// to each other in a volume were mostly stored together.
const fetchRun = 64

// fetch reads the non-zero blocks id(0..n-1) from src on several
// goroutines and hands each to got, in no particular order; got for
// different i may run concurrently, and owns the slice it is given.
func fetch(ctx context.Context, src Source, n int, id func(int) blockstore.ID, got func(int, []byte) error) error {
	eg, ctx := errgroup.WithContext(ctx)
	eg.SetLimit(runtime.GOMAXPROCS(0) + 1)
	rs, sequential := src.(readerSource)
	for start := 0; start < n; start += fetchRun {
		end := min(start+fetchRun, n)
		eg.Go(func() error {
			var rd *blockstore.Reader
			if sequential {
				rd = rs.NewReader()
			}
			for i := start; i < end; i++ {
				bid := id(i)
				if bid.IsZero() {
					continue
				}
				if err := ctx.Err(); err != nil {
					return err
				}
				var b []byte
				var err error
				if rd != nil {
					if b, err = rd.Get(bid); err == nil {
						b = append([]byte(nil), b...) // valid until the next Get
					}
				} else {
					b, err = src.Get(ctx, bid)
				}
				if err != nil {
					return err
				}
				if err := got(i, b); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return eg.Wait()
}
