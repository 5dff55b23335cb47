package agent

import (
	"context"
	"fmt"
	"os"
	"time"

	"golang.org/x/time/rate"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/mesh"
)

// Scan mode: every Interval, read each volume whole (rate-limited), hash
// every block with the cluster's dedup key, ship the blocks whose ID
// differs from the last committed scan, and commit a point. The point is
// as consistent as the volume was while being read (a "fuzzy" copy of a
// running server); intercept mode gives crash-consistent points.

// scanBatch bounds the changes held in memory before they are shipped.
const scanBatch = 4 << 20

func (a *Agent) runScan(ctx context.Context) error {
	lim := scanLimiter(a.opts.ReadRate)
	b := a.backoff()
	var (
		c    *conn
		seq  uint64
		last map[string][]blockstore.ID // IDs as of the last committed point; nil = unknown
	)
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for {
		if c == nil {
			var err error
			c, err = a.connect(ctx)
			if ctx.Err() != nil {
				return nil
			}
			if err != nil {
				// Refused: wait a full interval, the policy may change.
				if !sleepCtx(ctx, a.opts.Interval) {
					return nil
				}
				continue
			}
			switch {
			case c.welcome.Seq == 0 && c.welcome.Point == "":
				last = map[string][]blockstore.ID{} // the node holds nothing: all zeros
				for _, v := range a.opts.Volumes {
					bs, _ := c.blockSize(v.Name)
					size, _ := volumeSize(v.Path)
					last[v.Name] = make([]blockstore.ID, (size+int64(bs)-1)/int64(bs))
				}
			case c.welcome.Seq != seq:
				last = nil // the node's newest point is not ours: compare everything
			}
			seq = c.welcome.Seq
		}
		a.runHook(ctx, "pre", a.opts.PreHook)
		start := a.opts.Now()
		a.setState("shipping", fmt.Sprintf("scan %d", seq+1), nil)
		next, err := a.scanOnce(ctx, c, lim, last)
		a.runHook(ctx, "post", a.opts.PostHook)
		if err == nil {
			var done *mesh.Committed
			done, err = c.commit(seq+1, start)
			if err == nil {
				seq, last = done.Seq, next
				b.Reset()
				a.board.committed(done)
				a.setState("idle", fmt.Sprintf("point %d in %s", seq, a.opts.Now().Sub(start).Round(time.Millisecond)), nil)
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			c.Close()
			c = nil
			if !a.afterFailure(ctx, b, "scan not committed; reconnecting", err) {
				return nil
			}
			continue
		}
		if !sleepCtx(ctx, time.Until(start.Add(a.opts.Interval))) {
			return nil
		}
	}
}

// scanOnce reads every volume and ships what differs from last; it returns
// the IDs of every block as read.
func (a *Agent) scanOnce(ctx context.Context, c *conn, lim *rate.Limiter, last map[string][]blockstore.ID) (map[string][]blockstore.ID, error) {
	next := map[string][]blockstore.ID{}
	for _, v := range a.opts.Volumes {
		ids, err := a.scanVolume(ctx, c, lim, v, last[v.Name])
		if err != nil {
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		next[v.Name] = ids
	}
	return next, nil
}

func (a *Agent) scanVolume(ctx context.Context, c *conn, lim *rate.Limiter, v Volume, prev []blockstore.ID) ([]blockstore.ID, error) {
	bs, ok := c.blockSize(v.Name)
	if !ok {
		return nil, fmt.Errorf("the node did not accept volume %s", v.Name)
	}
	f, err := os.Open(v.Path)
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	defer f.Close()
	size, err := volumeSize(v.Path)
	if err != nil {
		return nil, err
	}
	nblocks := (size + int64(bs) - 1) / int64(bs)
	if prev != nil && int64(len(prev)) != nblocks {
		prev = nil
	}
	ids := make([]blockstore.ID, nblocks)
	chunk := max(bs, 1<<20)
	buf := make([]byte, chunk)
	var batch []change
	batchBytes := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := c.send(v.Name, batch)
		batch, batchBytes = batch[:0], 0
		return err
	}
	for off := int64(0); off < size; off += int64(chunk) {
		n := int(min(int64(chunk), size-off))
		for w := n; w > 0; {
			step := min(w, lim.Burst())
			if err := lim.WaitN(ctx, step); err != nil {
				return nil, err
			}
			w -= step
		}
		if _, err := f.ReadAt(buf[:n], off); err != nil {
			return nil, fmt.Errorf("read at %d: %w", off, err)
		}
		a.stats.readBytes.Add(int64(n))
		for p := 0; p < n; p += bs {
			blk := buf[p:min(p+bs, n)]
			i := (off + int64(p)) / int64(bs)
			id := a.hasher.ID(blk)
			ids[i] = id
			if prev != nil && prev[i] == id {
				continue
			}
			ch := change{Block: i, ID: id}
			if !id.IsZero() {
				ch.Data = append([]byte(nil), blk...)
				batchBytes += len(blk)
			}
			batch = append(batch, ch)
			if batchBytes >= scanBatch || len(batch) >= 65536 {
				if err := flush(); err != nil {
					return nil, err
				}
			}
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return ids, nil
}

// sleepCtx waits d or until ctx ends; it reports whether ctx is still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
