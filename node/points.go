package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/lifeboat-dr/lifeboat/blockstore"
)

// errNoStore reports a request for data on a witness.
var errNoStore = errors.New("this node is a witness and holds no data")

// Points lists the points this node holds, oldest first: of one service
// when service is set, holding one volume (SERVICE/VOLUME) when volume is.
func (n *Node) Points(ctx context.Context, service, volume string) ([]blockstore.Point, error) {
	if n.store == nil {
		return nil, errNoStore
	}
	pts, err := n.store.Points(ctx, volume)
	if err != nil {
		return nil, err
	}
	out := []blockstore.Point{}
	for _, p := range pts {
		if service == "" || p.Group == service {
			out = append(out, p)
		}
	}
	return out, nil
}

// serveImage streams a volume's raw image at a point.
func (n *Node) serveImage(w http.ResponseWriter, r *http.Request) {
	if n.store == nil {
		n.writeAPIError(w, errNoStore)
		return
	}
	volume, at := r.URL.Query().Get("volume"), r.URL.Query().Get("at")
	if !strings.Contains(volume, "/") {
		writeErr(w, http.StatusBadRequest, apiBadRequest, fmt.Sprintf("volume %q: want SERVICE/VOLUME", volume))
		return
	}
	ctx := r.Context()
	p, v, err := n.store.Resolve(ctx, volume, at)
	if err != nil {
		n.writeAPIError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(v.Size, 10))
	w.Header().Set("X-Lifeboat-Point", p.ID)
	w.Header().Set("X-Lifeboat-Point-Time", p.Time.Format("2006-01-02T15:04:05.000000000Z07:00"))
	w.WriteHeader(http.StatusOK)
	zero := make([]byte, v.BlockSize)
	var written int64
	err = n.store.WalkLeaves(ctx, v, func(first int64, ids []blockstore.ID) error {
		for i, id := range ids {
			off := (first + int64(i)) * int64(v.BlockSize)
			if off >= v.Size {
				return nil
			}
			b := zero
			if !id.IsZero() {
				var err error
				if b, err = n.store.Get(ctx, id); err != nil {
					return err
				}
			}
			b = b[:min(int64(len(b)), v.Size-off)]
			if _, err := w.Write(b); err != nil {
				return err
			}
			written += int64(len(b))
		}
		return nil
	})
	if err != nil {
		// The status is sent: cut the stream short so the client sees
		// fewer bytes than Content-Length.
		n.log.Error("stream image", "volume", volume, "point", p.ID, "err", err)
		panic(http.ErrAbortHandler)
	}
}
