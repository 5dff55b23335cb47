package node

import (
	"context"
	"fmt"
	"strconv"

	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/status"
)

// Apply writes cmd to the catalog through the leader, wherever it is, and
// returns once it is committed, applied there and applied on this node. It
// retries while the leadership moves and gives up with ErrNoQuorum after
// the write timeout (package forward).
func (n *Node) Apply(ctx context.Context, cmd *Command) error { return n.fwd.Apply(ctx, cmd) }

// Catalog returns this node's catalog as last applied: an immutable
// snapshot, shared, that the caller must not change. On a node cut off
// from the leader it may be stale; Status says how old the last contact
// is.
func (n *Node) Catalog() *Catalog { return n.fsm.Catalog() }

// RecoverRaft is the operator-forced recovery for a majority of voters lost
// for good (a whole site gone): this node rebuilds the Raft configuration
// with itself as the only voter, becomes leader, and adds the surviving
// nodes back as they are seen. It refuses without force, and while a leader
// is reachable. by names the operator; the record goes into the catalog.
func (n *Node) RecoverRaft(ctx context.Context, by string, force bool) (*RecoveryRecord, error) {
	rec, err := n.rn.Recover(by, force)
	if err != nil {
		return nil, err
	}
	if err := n.Apply(ctx, &Command{Op: catalog.OpRecovery, Recovery: rec}); err != nil {
		return nil, fmt.Errorf("record the recovery: %w", err)
	}
	n.log.Warn("forced raft recovery done; the cluster accepts writes again", "by", by)
	return rec, nil
}

// Status returns this node's view of the cluster; it works without a quorum.
func (n *Node) Status() Status {
	r := n.rn.Current()
	rs := status.Raft{State: r.State().String(), AppliedIndex: r.AppliedIndex()}
	_, leader := r.LeaderWithID()
	rs.Leader = mesh.NodeID(leader)
	stats := r.Stats()
	rs.Term, _ = strconv.ParseUint(stats["term"], 10, 64)
	rs.CommitIndex, _ = strconv.ParseUint(stats["commit_index"], 10, 64)
	rs.LastContact = stats["last_contact"]
	if cf := r.GetConfiguration(); cf.Error() == nil {
		rs.Servers = cf.Configuration().Servers
	}
	st := status.Build(n.opts.Name, n.opts.Site, rs, n.Catalog(), n.gossip.Members(), n.opts.Clock.Now())
	if n.space != nil {
		st.Space = n.space.Status()
		st.Scrub = n.scrub.Status()
	}
	return st
}
