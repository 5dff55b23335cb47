package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// RemoteImage reads a volume's image at a point from a node's admin API
// with HTTP range requests (serve-nbd --admin). It is pinned to the point
// it resolved when opened, and safe for concurrent use.
type RemoteImage struct {
	c      *Client
	ctx    context.Context
	volume string
	Point  string
	Time   time.Time
	size   int64
}

// OpenImage resolves volume at a point on the node and returns a reader
// of its raw image.
func (c *Client) OpenImage(ctx context.Context, volume, at string) (*RemoteImage, error) {
	r := &RemoteImage{c: c, ctx: ctx, volume: volume}
	resp, err := r.get(at, 0, 0)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	cr := resp.Header.Get("Content-Range") // bytes 0-0/SIZE
	i := strings.LastIndexByte(cr, '/')
	size, perr := strconv.ParseInt(cr[i+1:], 10, 64)
	if i < 0 || perr != nil {
		return nil, fmt.Errorf("image %s: the node answered without a size (Content-Range %q)", volume, cr)
	}
	r.size, r.Point = size, resp.Header.Get("X-Lifeboat-Point")
	r.Time, _ = time.Parse(time.RFC3339Nano, resp.Header.Get("X-Lifeboat-Point-Time"))
	return r, nil
}

// Size returns the image's size.
func (r *RemoteImage) Size() int64 { return r.size }

func (r *RemoteImage) get(at string, off, n int64) (*http.Response, error) {
	q := url.Values{"volume": {r.volume}, "at": {at}}
	req, err := http.NewRequestWithContext(r.ctx, http.MethodGet, r.c.base+"/v1/image?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	last := off + n - 1
	if n == 0 {
		last = off
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, last))
	resp, err := r.c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	if resp.StatusCode != http.StatusPartialContent {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var ae apiError
		if json.Unmarshal(b, &ae) == nil && ae.Error != "" {
			return nil, &APIError{Status: resp.StatusCode, Code: ae.Code, Msg: ae.Error}
		}
		return nil, &APIError{Status: resp.StatusCode, Code: apiInternal, Msg: fmt.Sprintf("admin API: image range: %s", resp.Status)}
	}
	return resp, nil
}

// ReadAt reads len(p) bytes at off.
func (r *RemoteImage) ReadAt(p []byte, off int64) (int, error) {
	if off >= r.size {
		return 0, io.EOF
	}
	want := len(p)
	if rest := r.size - off; int64(len(p)) > rest {
		p = p[:rest]
	}
	resp, err := r.get(r.Point, off, int64(len(p)))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.ReadFull(resp.Body, p)
	if err != nil {
		return n, fmt.Errorf("image %s at %d: %w", r.volume, off, err)
	}
	if n < want {
		return n, io.EOF
	}
	return n, nil
}
