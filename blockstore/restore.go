package blockstore

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync/atomic"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

// Restore's concurrency: workers in flight, and the most bytes each
// collects before it writes.
const (
	restoreWorkers  = 16
	restoreRunBytes = 1 << 20
)

// RestoreOptions control Restore.
type RestoreOptions struct {
	// WriteZeros writes holes as zeros. Leave it false for a new or
	// truncated regular file (holes stay sparse); set it for devices and
	// for files that held other data.
	WriteZeros bool
	// Progress, if set, is called with bytes done so far and the total.
	Progress func(done, total int64)
}

// Restore writes volume state v to w, block by block, on all cores. The
// caller sizes w beforehand (truncate) and syncs it afterwards.
func (s *Store) Restore(ctx context.Context, v VolumeState, w io.WriterAt, o RestoreOptions) error {
	g := v.Geometry()
	if err := g.Validate(); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	type job struct {
		first int64
		ids   []ID
	}
	// Restore waits on the disk more than on the CPU (pread of packs that
	// are not cached, pwrite of the image): restoreWorkers keep enough
	// reads and writes in flight, each with a buffer of at most
	// restoreRunBytes.
	workers := max(runtime.GOMAXPROCS(0)+1, restoreWorkers)
	jobs := make(chan job, 2*workers)
	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error {
		defer close(jobs)
		return s.WalkLeaves(ctx, v, func(first int64, ids []ID) error {
			select {
			case jobs <- job{first, ids}:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	})
	var done atomic.Int64
	bs := int64(g.BlockSize)
	for range workers {
		eg.Go(func() error {
			r := blockReader{s: s, ctx: ctx}
			maxRun := max(1, int(restoreRunBytes/bs))
			buf := make([]byte, int64(min(maxRun, fanout))*bs)
			for j := range jobs {
				// Write each run of consecutive blocks (up to maxRun)
				// with one call.
				runStart := -1
				flush := func(end int) error {
					if runStart < 0 {
						return nil
					}
					off := (j.first + int64(runStart)) * bs
					n := min(int64(end-runStart)*bs, g.Size-off)
					if _, err := w.WriteAt(buf[:n], off); err != nil {
						return fmt.Errorf("restore: write at offset %d: %w", off, err)
					}
					runStart = -1
					return nil
				}
				for i, id := range j.ids {
					if id.IsZero() && !o.WriteZeros {
						if err := flush(i); err != nil {
							return err
						}
						continue
					}
					if runStart >= 0 && i-runStart == maxRun {
						if err := flush(i); err != nil {
							return err
						}
					}
					if runStart < 0 {
						runStart = i
					}
					blk := j.first + int64(i)
					at := int64(i-runStart) * bs
					dst := buf[at : at+int64(g.BlockLen(blk))]
					if id.IsZero() {
						clear(dst)
					} else {
						b, err := r.get(ref{kindBlock, id})
						if err != nil {
							return fmt.Errorf("restore block %d: %w", blk, err)
						}
						if len(b) != len(dst) {
							return fmt.Errorf("restore block %d: stored block is %d bytes, volume wants %d", blk, len(b), len(dst))
						}
						copy(dst, b)
					}
				}
				if err := flush(len(j.ids)); err != nil {
					return err
				}
				n := done.Add(int64(len(j.ids)) * bs)
				if o.Progress != nil {
					o.Progress(min(n, g.Size), g.Size)
				}
			}
			return nil
		})
	}
	return eg.Wait()
}

// Writeback wraps a file that a restore writes and starts asynchronous
// writeback of everything written so far every 32 MiB, so that the disk
// works while blocks are still being decompressed and the final fsync
// finds little left (and dirty pages do not pile up in memory).
type Writeback struct {
	f       *os.File
	written atomic.Int64
	kicked  atomic.Int64
}

// NewWriteback returns a Writeback for f.
func NewWriteback(f *os.File) *Writeback { return &Writeback{f: f} }

const restoreWritebackEvery = 32 << 20

// WriteAt writes to the file and now and then starts its writeback.
func (w *Writeback) WriteAt(p []byte, off int64) (int, error) {
	n, err := w.f.WriteAt(p, off)
	total := w.written.Add(int64(n))
	if k := w.kicked.Load(); total-k >= restoreWritebackEvery && w.kicked.CompareAndSwap(k, total) {
		// Only a hint: errors surface at the sync.
		unix.SyncFileRange(int(w.f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
	}
	return n, err
}
