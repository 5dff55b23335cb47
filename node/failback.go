package node

import (
	"context"
	"fmt"

	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// Failback makes the site the service last failed over from a warm copy
// of it: it receives the blocks that differ from what it holds, and a
// planned failover then brings the service home.
func (n *Node) Failback(ctx context.Context, service, by string) (*ServiceState, error) {
	st := n.Catalog().Services[service]
	last := st.LastFailover()
	if st == nil || st.Active == "" || last == nil {
		return nil, fmt.Errorf("%w: service %s has not failed over: nothing to fail back", ErrBadCommand, service)
	}
	if err := n.Apply(ctx, &Command{Op: catalog.OpReprotect, Service: service, On: true}); err != nil {
		return nil, err
	}
	n.log.Warn("failback: the old primary site becomes a warm copy", "service", service, "site", last.From, "by", by)
	return n.Catalog().Services[service], nil
}
