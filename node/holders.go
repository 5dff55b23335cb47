package node

import (
	"context"
	"fmt"
	"time"

	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/placement"
)

// reconcileHolders applies the holder changes placement wants; leader only.
func (n *Node) reconcileHolders(ctx context.Context, members []mesh.Member, now time.Time) error {
	cat := n.Catalog()
	gone := n.trackGone(cat.SortedNodes(), members, now)
	changes := placement.Holders(placement.HolderView{
		Cat: cat, Timeout: n.opts.HolderTimeout,
		Present: func(id mesh.NodeID) bool { _, g := gone[id]; return !g },
		GoneFor: func(id mesh.NodeID) time.Duration {
			if t, ok := gone[id]; ok {
				return now.Sub(t)
			}
			return 0
		},
	})
	if len(changes) == 0 {
		return nil
	}
	for _, h := range changes {
		old := cat.Holder(h.Service, h.Site)
		n.log.Info("holder placement", "service", h.Service, "site", h.Site, "holder", h.Node, "was", old)
	}
	if err := n.applyLocal(&Command{Op: catalog.OpHolders, Holders: changes}); err != nil {
		return fmt.Errorf("place holders: %w", err)
	}
	return nil
}
