package node

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-dr/lifeboat/internal/retry"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/status"
)

// verifyPeer checks, before a node gets a place in Raft, that the QUIC
// endpoint it advertises holds a certificate from the cluster CA for that
// very node: a gossip member alone (someone with the gossip key) is not
// enough to receive the catalog.
func (n *Node) verifyPeer(ctx context.Context, id mesh.NodeID, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	s, err := n.ep.Dial(ctx, addr, mesh.KindAdmin)
	if err != nil {
		return fmt.Errorf("verify %s at %s: %w", id, addr, err)
	}
	defer s.Close()
	if p := s.Peer(); p.Agent || p.Name != id {
		return fmt.Errorf("verify %s at %s: the certificate there is for %s", id, addr, describeIdentity(p))
	}
	return nil
}

// Apply writes cmd to the catalog through the leader, wherever it is, and
// returns once it is committed, applied there and applied on this node. It retries while the
// leadership moves and gives up with ErrNoQuorum after the write timeout.
func (n *Node) Apply(ctx context.Context, cmd *Command) error {
	data, err := catalog.EncodeCommand(cmd)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, n.opts.WriteTimeout)
	defer cancel()
	var idx uint64 // the entry's index once committed
	var last error // the last failure, for ErrNoQuorum
	err = retry.Do(ctx, retry.Options{Initial: 50 * time.Millisecond, Max: time.Second}, func(ctx context.Context) error {
		r := n.rn.get()
		if r.State() == raft.Leader {
			f := r.Apply(data, raftTimeout(ctx))
			err := f.Error()
			if err == nil {
				if res, ok := f.Response().(catalog.ApplyResult); ok && res.Err != nil {
					return retry.Permanent(res.Err)
				}
				idx = f.Index()
				return nil
			}
			if !errors.Is(err, raft.ErrNotLeader) && !errors.Is(err, raft.ErrLeadershipLost) && !errors.Is(err, raft.ErrEnqueueTimeout) {
				return retry.Permanent(fmt.Errorf("raft apply: %w", err))
			}
			last = err
			return err
		}
		if _, id := r.LeaderWithID(); id != "" {
			// forward marks what the leader refuses for good permanent.
			i, err := n.forward(ctx, mesh.NodeID(id), data)
			idx, last = i, err
			return err
		}
		last = errors.New("no leader known")
		return last
	}, nil)
	switch {
	case err == nil:
		// Read your writes: wait until this node has applied it too.
		return n.fsm.WaitIndex(ctx, idx)
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil:
		return fmt.Errorf("%w (waited %s; last: %v)", ErrNoQuorum, n.opts.WriteTimeout, last)
	}
	return err
}

// raftTimeout turns a context deadline into Raft's enqueue timeout.
func raftTimeout(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		return max(time.Until(d), time.Millisecond)
	}
	return 0
}

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
	if !force {
		return nil, fmt.Errorf("%w: it makes this node the only voter and forgets the others; run it only when a majority of voters is gone for good", ErrNeedForce)
	}
	n.rn.mu.Lock()
	r := n.rn.raft
	if _, leader := r.LeaderWithID(); leader != "" && (r.State() == raft.Leader || time.Since(r.LastContact()) < 5*time.Second) {
		n.rn.mu.Unlock()
		return nil, fmt.Errorf("%w (leader %s)", ErrHasLeader, leader)
	}
	rec := &RecoveryRecord{By: by, At: n.opts.Clock.Now().UTC(), Node: n.opts.Name, After: []mesh.NodeID{n.opts.Name}}
	if cf := r.GetConfiguration(); cf.Error() == nil {
		for _, s := range cf.Configuration().Servers {
			if s.Suffrage == raft.Voter {
				rec.Before = append(rec.Before, mesh.NodeID(s.ID))
			}
		}
	}
	n.log.Warn("forced raft recovery: this node becomes the only voter", "by", by, "voters_before", rec.Before)
	if err := r.Shutdown().Error(); err != nil {
		n.rn.mu.Unlock()
		return nil, fmt.Errorf("stop raft: %w", err)
	}
	cfg := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(n.opts.Name), Address: raft.ServerAddress(n.quicAddr)}}}
	trans := n.rn.transport()
	err := raft.RecoverCluster(n.rn.config(), catalog.NewFSM(), n.stores.Bolt, n.stores.Bolt, n.stores.Snaps, trans, cfg)
	trans.Close()
	n.rn.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("recover raft: %w", err)
	}
	if err := n.rn.start(); err != nil {
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
	r := n.rn.get()
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
