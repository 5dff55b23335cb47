package membership

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/placement"
)

// reconcileLoop runs on every node; only the leader acts. It keeps the Raft
// configuration and the catalog's node list in line with the membership.
func (e *Engine) reconcileLoop(ctx context.Context) {
	t := e.o.Clock.NewTicker(e.o.ReconcileInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		case <-e.kick:
		}
		e.refreshHasState()
		if e.o.Raft().State() != raft.Leader {
			continue
		}
		if err := e.reconcile(ctx); err != nil && ctx.Err() == nil {
			e.log.Warn("reconcile membership", "err", err)
		}
		if err := e.reconcileHolders(ctx, e.o.Gossip.Members(), e.o.Clock.Now()); err != nil && ctx.Err() == nil {
			e.log.Warn("reconcile holders", "err", err)
		}
	}
}

// reconcile makes at most a few changes per call, one at a time.
func (e *Engine) reconcile(ctx context.Context) error {
	r := e.o.Raft()
	members := e.o.Gossip.Members()
	now := e.o.Clock.Now()
	// Register alive nodes in the catalog.
	known := e.o.Catalog.Catalog().Nodes
	for _, m := range members {
		if m.State != mesh.StateAlive || m.Meta.QUIC == "" {
			continue
		}
		info := catalog.NodeInfo{Name: m.Name, Site: m.Meta.Site, Role: m.Meta.Role, QUIC: m.Meta.QUIC, Gossip: m.Addr, Admin: m.Meta.Admin, Added: now}
		if old, ok := known[m.Name]; ok {
			info.Added = old.Added
			if old == info {
				continue
			}
		}
		if err := e.applyLocal(&catalog.Command{Op: catalog.OpNodeUpsert, Node: &info}); err != nil {
			return fmt.Errorf("register node %s: %w", m.Name, err)
		}
	}
	for i := 0; i < 4; i++ {
		cf := r.GetConfiguration()
		if err := cf.Error(); err != nil {
			return fmt.Errorf("read raft configuration: %w", err)
		}
		cfg := cf.Configuration()
		members = e.confirmRaftState(ctx, cfg.Servers, members)
		v := placement.View{
			Self: e.o.Name, Servers: cfg.Servers, Members: members,
			GoneSince: e.trackGone(serverIDs(cfg.Servers), members, now), Now: now, DeadTimeout: e.o.DeadNodeTimeout,
		}
		c, ok := placement.Plan(v)
		if !ok {
			return nil
		}
		if c.Kind == placement.AddNonvoter {
			if err := e.o.VerifyPeer(ctx, c.ID, c.Address); err != nil {
				return fmt.Errorf("refusing to add %s to raft: %w", c.ID, err)
			}
		}
		if c.Kind == placement.Demote && c.Why == placement.WhyNoRaftState {
			// Gossip metadata can lag: a voter that just received its
			// first entries may still be seen without state. Ask it; a
			// voter that has entries has heard from a leader of the current
			// term and can no longer vote twice in an old one.
			if last, err := e.o.LastIndex(ctx, AddrOf(members, c.ID)); err != nil || last > 0 {
				e.log.Debug("voter's metadata says no raft state, but it has some or does not answer; not demoting", "peer", c.ID, "last_index", last, "err", err)
				return nil
			}
		}
		e.log.Info("raft membership change", "change", c.Kind.String(), "peer", c.ID, "why", c.Why)
		id, addr, prev := raft.ServerID(c.ID), raft.ServerAddress(c.Address), cf.Index()
		var f raft.IndexFuture
		switch c.Kind {
		case placement.AddNonvoter:
			f = r.AddNonvoter(id, addr, prev, 5*time.Second)
		case placement.Promote:
			f = r.AddVoter(id, addr, prev, 5*time.Second)
		case placement.Demote:
			f = r.DemoteVoter(id, prev, 5*time.Second)
		case placement.Remove:
			f = r.RemoveServer(id, prev, 5*time.Second)
		}
		if err := f.Error(); err != nil {
			return fmt.Errorf("%s %s: %w", c.Kind, c.ID, err)
		}
		if c.Kind == placement.Remove {
			if _, ok := known[c.ID]; ok {
				if err := e.applyLocal(&catalog.Command{Op: catalog.OpNodeRemove, Name: c.ID}); err != nil {
					return fmt.Errorf("unregister node %s: %w", c.ID, err)
				}
			}
		}
		if ctx.Err() != nil {
			return nil
		}
	}
	return nil
}

// confirmRaftState asks each alive non-voter whose gossip metadata says it
// has no Raft state for its last log index, and marks those that have
// some. The metadata update can be lost (its broadcast times out) and
// would then arrive only with the next full gossip sync, up to a minute
// later, while the placement waits to promote the node.
func (e *Engine) confirmRaftState(ctx context.Context, servers []raft.Server, members []mesh.Member) []mesh.Member {
	nonvoter := map[mesh.NodeID]bool{}
	for _, s := range servers {
		if s.Suffrage != raft.Voter {
			nonvoter[mesh.NodeID(s.ID)] = true
		}
	}
	var out []mesh.Member
	for i, m := range members {
		if !nonvoter[m.Name] || m.Meta.Raft || m.State != mesh.StateAlive || m.Meta.QUIC == "" {
			continue
		}
		if last, err := e.o.LastIndex(ctx, m.Meta.QUIC); err == nil && last > 0 {
			if out == nil {
				out = slices.Clone(members)
			}
			out[i].Meta.Raft = true
			e.log.Debug("non-voter has raft state before its gossip metadata says so", "peer", m.Name, "last_index", last)
		}
	}
	if out == nil {
		return members
	}
	return out
}

// trackGone returns since when each of ids has been gone (not alive or
// suspect in the gossip), for those that are; a node seen again is
// forgotten. Raft membership and holder placement both ask.
func (e *Engine) trackGone(ids []mesh.NodeID, members []mesh.Member, now time.Time) map[mesh.NodeID]time.Time {
	e.goneMu.Lock()
	defer e.goneMu.Unlock()
	state := map[mesh.NodeID]mesh.Member{}
	for _, m := range members {
		state[m.Name] = m
	}
	out := map[mesh.NodeID]time.Time{}
	for _, id := range ids {
		m, ok := state[id]
		if ok && (m.State == mesh.StateAlive || m.State == mesh.StateSuspect) {
			delete(e.goneSince, id)
			continue
		}
		since, seen := e.goneSince[id]
		if !seen {
			since = now
			if ok && !m.Since.IsZero() && m.Since.Before(now) {
				since = m.Since
			}
			e.goneSince[id] = since
		}
		out[id] = since
	}
	return out
}

// applyLocal applies cmd on this node, which must be the leader.
func (e *Engine) applyLocal(cmd *catalog.Command) error {
	data, err := catalog.EncodeCommand(cmd)
	if err != nil {
		return err
	}
	f := e.o.Raft().Apply(data, 5*time.Second)
	if err := f.Error(); err != nil {
		return err
	}
	if res, ok := f.Response().(catalog.ApplyResult); ok && res.Err != nil {
		return res.Err
	}
	return nil
}

// AddrOf returns the QUIC address a member advertises, or "".
func AddrOf(members []mesh.Member, id mesh.NodeID) string {
	for _, m := range members {
		if m.Name == id {
			return m.Meta.QUIC
		}
	}
	return ""
}

func serverIDs(servers []raft.Server) []mesh.NodeID {
	ids := make([]mesh.NodeID, len(servers))
	for i, s := range servers {
		ids[i] = mesh.NodeID(s.ID)
	}
	return ids
}

// reconcileHolders applies the holder changes placement wants; leader only.
func (e *Engine) reconcileHolders(ctx context.Context, members []mesh.Member, now time.Time) error {
	cat := e.o.Catalog.Catalog()
	gone := e.trackGone(cat.SortedNodes(), members, now)
	left := map[mesh.NodeID]bool{}
	for _, m := range members {
		if m.State == mesh.StateLeft {
			left[m.Name] = true
		}
	}
	changes := placement.Holders(placement.HolderView{
		Cat: cat, Timeout: e.o.HolderTimeout,
		Left:    func(id mesh.NodeID) bool { return left[id] },
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
		e.log.Info("holder placement", "service", h.Service, "site", h.Site, "holder", h.Node, "was", old)
	}
	if err := e.applyLocal(&catalog.Command{Op: catalog.OpHolders, Holders: changes}); err != nil {
		return fmt.Errorf("place holders: %w", err)
	}
	return nil
}
