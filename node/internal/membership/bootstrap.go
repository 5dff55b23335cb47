package membership

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-dr/lifeboat/internal/retry"
	"github.com/lifeboat-dr/lifeboat/mesh"
)

// bootstrapLoop forms a new cluster when none exists. A node without Raft
// state waits until it has joined the gossip (when it has peers to join)
// and sees BootstrapExpect alive nodes, none of which already belong to a
// cluster, for two checks in a row; then the one with the smallest name
// bootstraps alone and adds the others as they are seen. A node that sees a
// member with Raft state waits for the leader to add it instead.
func (e *Engine) bootstrapLoop(ctx context.Context) {
	t := e.o.Clock.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	ready := 0
	for {
		if e.refreshHasState() {
			return
		}
		members := e.o.Gossip.Members()
		var alive []mesh.NodeID
		clustered := false
		for _, m := range members {
			if m.State != mesh.StateAlive {
				continue
			}
			alive = append(alive, m.Name)
			if m.Meta.Raft && m.Name != e.o.Name {
				clustered = true
			}
		}
		if e.joined.Load() && !clustered && len(alive) >= e.o.BootstrapExpect && slices.Min(alive) == e.o.Name {
			ready++
		} else {
			ready = 0
		}
		if ready >= 2 {
			cfg := raft.Configuration{Servers: []raft.Server{{
				Suffrage: raft.Voter, ID: raft.ServerID(e.o.Name), Address: raft.ServerAddress(e.o.QUIC),
			}}}
			if err := e.o.Raft().BootstrapCluster(cfg).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
				e.log.Error("bootstrap the cluster", "err", err)
			} else {
				e.log.Info("bootstrapped a new cluster", "members_seen", len(alive))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
	}
}

// refreshHasState notes when this node's Raft has state and tells the
// others through the gossip metadata.
func (e *Engine) refreshHasState() bool {
	if e.o.State.has.Load() && e.o.State.announced.Load() {
		return true
	}
	if !e.o.State.has.Load() && e.o.Raft().LastIndex() == 0 {
		return false
	}
	e.o.State.has.Store(true)
	// The leader promotes this node once the others see the flag: an
	// update whose broadcast timed out is sent again at the next call.
	if err := e.o.Gossip.UpdateMeta(e.o.Meta()); err != nil {
		e.log.Warn("update gossip metadata; will retry", "err", err)
	} else {
		e.o.State.announced.Store(true)
	}
	return true
}

// reconnectLoop re-joins peers the gossip declared dead: after a partition
// heals, memberlist by itself never talks to them again. The addresses come
// from the catalog (every node ever registered) and the join list.
func (e *Engine) reconnectLoop(ctx context.Context) {
	t := e.o.Clock.NewTicker(e.o.ReconnectInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		state := map[mesh.NodeID]mesh.MemberState{}
		for _, m := range e.o.Gossip.Members() {
			state[m.Name] = m.State
		}
		var addrs []string
		for _, ni := range e.o.Catalog.Catalog().Nodes {
			if s, ok := state[ni.Name]; ni.Name != e.o.Name && ni.Gossip != "" && (!ok || s == mesh.StateDead) {
				addrs = append(addrs, ni.Gossip)
			}
		}
		if len(state) <= 1 {
			addrs = append(addrs, e.o.Join...)
		}
		if len(addrs) == 0 {
			continue
		}
		if k, err := e.o.Gossip.Join(addrs); k > 0 {
			e.log.Info("re-joined peers", "contacted", k, "tried", len(addrs))
		} else {
			e.log.Debug("re-join dead peers", "tried", len(addrs), "err", err)
		}
	}
}

// eventLoop wakes the reconciler on membership events.
func (e *Engine) eventLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-e.o.Events:
			e.log.Info("membership", "peer", ev.Member.Name, "peer_site", ev.Member.Meta.Site, "state", ev.Member.State)
			select {
			case e.kick <- struct{}{}:
			default:
			}
		}
	}
}

// joinLoop joins the gossip cluster, retrying in the background until at
// least one peer answers.
func (e *Engine) joinLoop(ctx context.Context) {
	b := retry.New(retry.Options{Initial: 200 * time.Millisecond, Max: 10 * time.Second, After: e.o.Clock.After})
	for {
		k, err := e.o.Gossip.Join(e.o.Join)
		if k > 0 {
			e.joined.Store(true)
			e.o.Logs.OK("gossip join")
			e.log.Info("joined the cluster", "contacted", k)
			return
		}
		e.o.Logs.Fail("gossip join", "cannot join the cluster yet; retrying", err,
			"check that the join addresses are right and that a node listens there (lifeboat status on it)", "join", e.o.Join)
		if b.Wait(ctx) != nil {
			return
		}
	}
}
