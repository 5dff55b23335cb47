package node

import (
	"context"

	"github.com/lifeboat-dr/lifeboat/blockstore"
)

// tiers runs the recovery-site tier engines: hot standby images and cold
// exports, fed by the points replication commits.
type tiers struct {
	n *Node
}

func newTiers(n *Node) *tiers { return &tiers{n: n} }

// arrived tells the engines that a point of service was committed here.
func (t *tiers) arrived(service string, p blockstore.Point) {}

func (t *tiers) run(ctx context.Context) {}
