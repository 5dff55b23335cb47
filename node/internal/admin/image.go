package admin

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/node/api"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/blockstore/imgfmt"
)

// serveImage streams a volume's image at a point: raw (with HTTP range
// requests, which serve-nbd --admin reads through), qcow2 or vhdx.
func (s *Server) serveImage(w http.ResponseWriter, r *http.Request) {
	if s.o.Store == nil {
		s.writeAPIError(w, api.ErrNoStore)
		return
	}
	q := r.URL.Query()
	volume, at := q.Get("volume"), q.Get("at")
	if !strings.Contains(volume, "/") {
		writeErr(w, http.StatusBadRequest, api.CodeBadRequest, fmt.Sprintf("volume %q: want SERVICE/VOLUME", volume))
		return
	}
	format := imgfmt.Raw
	if f := q.Get("format"); f != "" {
		var err error
		if format, err = imgfmt.ParseFormat(f); err != nil {
			writeErr(w, http.StatusBadRequest, api.CodeBadRequest, err.Error())
			return
		}
	}
	ctx := r.Context()
	release := s.o.Store.Holds().Lease()
	defer release()
	p, im, err := s.images.open(ctx, s.o.Store, volume, at)
	if err != nil {
		s.writeAPIError(w, err)
		return
	}
	Note(ctx, "", "point "+p.ID)
	w.Header().Set("X-Lifeboat-Point", p.ID)
	w.Header().Set("X-Lifeboat-Point-Time", p.Time.Format("2006-01-02T15:04:05.000000000Z07:00"))
	if format == imgfmt.Raw {
		w.Header().Set("Content-Type", "application/octet-stream")
		http.ServeContent(w, r, "", p.Time, io.NewSectionReader(im, 0, im.Size()))
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	if err := imgfmt.Write(ctx, w, format, imgfmt.FromStore(im), nil); err != nil {
		// The status is sent: cut the stream short.
		s.log.Error("stream image", "volume", volume, "point", p.ID, "format", format, "err", err)
		panic(http.ErrAbortHandler)
	}
}

// imageCache keeps the block maps of recently read images, so that range
// requests do not load them again.
type imageCache struct {
	mu sync.Mutex
	m  map[string]*cachedImage
}

type cachedImage struct {
	p    blockstore.Point
	im   *blockstore.Image
	used time.Time
}

const (
	imageCacheLen = 8
	imageCacheTTL = 2 * time.Minute
)

func (c *imageCache) open(ctx context.Context, s *blockstore.Store, volume, at string) (blockstore.Point, *blockstore.Image, error) {
	p, v, err := s.Resolve(ctx, volume, at)
	if err != nil {
		return p, nil, err
	}
	key := volume + "@" + p.ID
	now := time.Now()
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]*cachedImage{}
	}
	for k, e := range c.m {
		if now.Sub(e.used) > imageCacheTTL {
			delete(c.m, k)
		}
	}
	if e := c.m[key]; e != nil {
		e.used = now
		c.mu.Unlock()
		return p, e.im, nil
	}
	c.mu.Unlock()
	im, err := s.OpenImage(ctx, v)
	if err != nil {
		return p, nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= imageCacheLen {
		var oldest string
		for k, e := range c.m {
			if oldest == "" || e.used.Before(c.m[oldest].used) {
				oldest = k
			}
		}
		delete(c.m, oldest)
	}
	c.m[key] = &cachedImage{p: p, im: im, used: now}
	return p, im, nil
}
