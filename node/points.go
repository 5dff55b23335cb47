package node

import (
	"context"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/node/api"
)

// Points lists the points this node holds, oldest first: of one service
// when service is set, holding one volume (SERVICE/VOLUME) when volume is.
func (n *Node) Points(ctx context.Context, service, volume string) ([]blockstore.Point, error) {
	if n.store == nil {
		return nil, api.ErrNoStore
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
