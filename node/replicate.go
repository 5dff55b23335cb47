package node

import (
	"context"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/internal/logpolicy"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/internal/replicate"
)

// The node's side of replication between sites (package replicate does
// the work): it hands the engine the replication streams it accepts and
// the services' newest points.

// repeats returns the node's log of failures that repeat (issue 14 item
// 6): replication, fetches, refusals of peers, watermarks and the tier
// engine log a failure once at WARN with the hint, then a count. Keys
// start with what failed ("replicate/SERVICE/SITE", "tier/SERVICE", ...).
func (n *Node) repeats() *logpolicy.Repeats { return n.logs }

// serveBlocks accepts replication streams from other nodes.
func (n *Node) serveBlocks(ctx context.Context) error {
	return n.serveStreams(ctx, mesh.KindBlocks, "replication", n.repl.Receive)
}

// fetching reports whether agents of service should wait for a fetch.
func (n *Node) fetching(service string) (since time.Time, ok bool) { return n.repl.Fetching(service) }

// heldPoints gives the replication engine the services' newest points.
type heldPoints struct{ svcs *services }

var _ replicate.Held = heldPoints{}

func (h heldPoints) Newest(service string) (*blockstore.Point, <-chan struct{}) {
	return h.svcs.get(service).newest()
}

func (h heldPoints) Hold(service string, p *blockstore.Point) {
	st := h.svcs.get(service)
	st.mu.Lock()
	st.hold(p)
	st.mu.Unlock()
}
