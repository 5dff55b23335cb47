package throttle

import (
	"context"
	"io"
)

// Writer returns a writer that waits for the link before passing bytes on
// to w: each Write waits for a chunk of its bytes (at most the limiter's
// burst), writes that chunk, and goes on with the next. A Write blocks until
// the link grants, ctx ends (it fails with ctx's error) or the link closes
// (ErrClosed). The returned writer is as safe for concurrent use as w is.
func (l *Link) Writer(ctx context.Context, w io.Writer, tier Tier) io.Writer {
	return &writer{ctx: ctx, l: l, w: w, tier: tier}
}

type writer struct {
	ctx  context.Context
	l    *Link
	w    io.Writer
	tier Tier
}

func (w *writer) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return w.w.Write(p)
	}
	n := 0
	for len(p) > 0 {
		k := min(len(p), w.l.chunkSize())
		if err := w.l.Wait(w.ctx, w.tier, k); err != nil {
			return n, err
		}
		m, err := w.w.Write(p[:k])
		n += m
		if err != nil {
			return n, err
		}
		if m < k {
			return n, io.ErrShortWrite
		}
		p = p[k:]
	}
	return n, nil
}
