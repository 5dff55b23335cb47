package node

import (
	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/node/internal/replicate"
)

// The node's side of replication between sites (package replicate does
// the work): it hands the engine the replication streams it accepts and
// the services' newest points.

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
