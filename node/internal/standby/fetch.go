package standby

import (
	"context"
	"runtime"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"golang.org/x/sync/errgroup"
)

// fetch reads the non-zero blocks id(0..n-1) from src on several
// goroutines and hands each to got, in no particular order; got for
// different i may run concurrently.
func fetch(ctx context.Context, src Source, n int, id func(int) blockstore.ID, got func(int, []byte) error) error {
	eg, ctx := errgroup.WithContext(ctx)
	eg.SetLimit(runtime.GOMAXPROCS(0) + 1)
	for i := range n {
		bid := id(i)
		if bid.IsZero() {
			continue
		}
		eg.Go(func() error {
			b, err := src.Get(ctx, bid)
			if err != nil {
				return err
			}
			return got(i, b)
		})
	}
	return eg.Wait()
}
