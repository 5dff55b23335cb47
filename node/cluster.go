package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/internal/retry"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/placement"
)

// bootstrapLoop forms a new cluster when none exists. A node without Raft
// state waits until it has joined the gossip (when it has peers to join)
// and sees BootstrapExpect alive nodes, none of which already belong to a
// cluster, for two checks in a row; then the one with the smallest name
// bootstraps alone and adds the others as they are seen. A node that sees a
// member with Raft state waits for the leader to add it instead.
func (n *Node) bootstrapLoop(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	ready := 0
	for {
		if n.refreshHasState() {
			return
		}
		members := n.gossip.Members()
		var alive []mesh.NodeID
		clustered := false
		for _, m := range members {
			if m.State != mesh.StateAlive {
				continue
			}
			alive = append(alive, m.Name)
			if m.Meta.Raft && m.Name != n.opts.Name {
				clustered = true
			}
		}
		if n.joined.Load() && !clustered && len(alive) >= n.opts.BootstrapExpect && slices.Min(alive) == n.opts.Name {
			ready++
		} else {
			ready = 0
		}
		if ready >= 2 {
			cfg := raft.Configuration{Servers: []raft.Server{{
				Suffrage: raft.Voter, ID: raft.ServerID(n.opts.Name), Address: raft.ServerAddress(n.quicAddr),
			}}}
			if err := n.r().BootstrapCluster(cfg).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
				n.log.Error("bootstrap the cluster", "err", err)
			} else {
				n.log.Info("bootstrapped a new cluster", "members_seen", len(alive))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// refreshHasState notes when this node's Raft has state and tells the
// others through the gossip metadata.
func (n *Node) refreshHasState() bool {
	if n.hasState.Load() && n.metaHasState.Load() {
		return true
	}
	if !n.hasState.Load() && n.r().LastIndex() == 0 {
		return false
	}
	n.hasState.Store(true)
	// The leader promotes this node once the others see the flag: an
	// update whose broadcast timed out is sent again at the next call.
	if err := n.gossip.UpdateMeta(n.meta(n.quicAddr)); err != nil {
		n.log.Warn("update gossip metadata; will retry", "err", err)
	} else {
		n.metaHasState.Store(true)
	}
	return true
}

// reconnectLoop re-joins peers the gossip declared dead: after a partition
// heals, memberlist by itself never talks to them again. The addresses come
// from the catalog (every node ever registered) and the join list.
func (n *Node) reconnectLoop(ctx context.Context) {
	t := time.NewTicker(n.opts.ReconnectInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		state := map[mesh.NodeID]mesh.MemberState{}
		for _, m := range n.gossip.Members() {
			state[m.Name] = m.State
		}
		var addrs []string
		for _, ni := range n.Catalog().Nodes {
			if s, ok := state[ni.Name]; ni.Name != n.opts.Name && ni.Gossip != "" && (!ok || s == mesh.StateDead) {
				addrs = append(addrs, ni.Gossip)
			}
		}
		if len(state) <= 1 {
			addrs = append(addrs, n.opts.Join...)
		}
		if len(addrs) == 0 {
			continue
		}
		if k, err := n.gossip.Join(addrs); k > 0 {
			n.log.Info("re-joined peers", "contacted", k, "tried", len(addrs))
		} else {
			n.log.Debug("re-join dead peers", "tried", len(addrs), "err", err)
		}
	}
}

// eventLoop wakes the reconciler on membership events.
func (n *Node) eventLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-n.events:
			n.log.Info("membership", "peer", ev.Member.Name, "peer_site", ev.Member.Meta.Site, "state", ev.Member.State)
			select {
			case n.kick <- struct{}{}:
			default:
			}
		}
	}
}

// reconcileLoop runs on every node; only the leader acts. It keeps the Raft
// configuration and the catalog's node list in line with the membership.
func (n *Node) reconcileLoop(ctx context.Context) {
	t := time.NewTicker(n.opts.ReconcileInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.kick:
		}
		n.refreshHasState()
		if n.r().State() != raft.Leader {
			continue
		}
		if err := n.reconcile(ctx); err != nil && ctx.Err() == nil {
			n.log.Warn("reconcile membership", "err", err)
		}
		if err := n.reconcileHolders(ctx, n.gossip.Members(), n.opts.Now()); err != nil && ctx.Err() == nil {
			n.log.Warn("reconcile holders", "err", err)
		}
	}
}

// reconcile makes at most a few changes per call, one at a time.
func (n *Node) reconcile(ctx context.Context) error {
	r := n.r()
	members := n.gossip.Members()
	now := n.opts.Now()
	// Register alive nodes in the catalog.
	known := n.Catalog().Nodes
	for _, m := range members {
		if m.State != mesh.StateAlive || m.Meta.QUIC == "" {
			continue
		}
		info := NodeInfo{Name: m.Name, Site: m.Meta.Site, Role: m.Meta.Role, QUIC: m.Meta.QUIC, Gossip: m.Addr, Admin: m.Meta.Admin, Added: now}
		if old, ok := known[m.Name]; ok {
			info.Added = old.Added
			if old == info {
				continue
			}
		}
		if err := n.applyLocal(&Command{Op: catalog.OpNodeUpsert, Node: &info}); err != nil {
			return fmt.Errorf("register node %s: %w", m.Name, err)
		}
	}
	for i := 0; i < 4; i++ {
		cf := r.GetConfiguration()
		if err := cf.Error(); err != nil {
			return fmt.Errorf("read raft configuration: %w", err)
		}
		cfg := cf.Configuration()
		members = n.confirmRaftState(ctx, cfg.Servers, members)
		v := placement.View{
			Self: n.opts.Name, Servers: cfg.Servers, Members: members,
			GoneSince: n.trackGone(serverIDs(cfg.Servers), members, now), Now: now, DeadTimeout: n.opts.DeadNodeTimeout,
		}
		c, ok := placement.Plan(v)
		if !ok {
			return nil
		}
		if c.Kind == placement.AddNonvoter {
			if err := n.verifyPeer(ctx, c.ID, c.Address); err != nil {
				return fmt.Errorf("refusing to add %s to raft: %w", c.ID, err)
			}
		}
		if c.Kind == placement.Demote && c.Why == placement.WhyNoRaftState {
			// Gossip metadata can lag: a voter that just received its
			// first entries may still be seen without state. Ask it; a
			// voter that has entries has heard from a leader of the current
			// term and can no longer vote twice in an old one.
			if last, err := n.peerLastIndex(ctx, addrOf(members, c.ID)); err != nil || last > 0 {
				n.log.Debug("voter's metadata says no raft state, but it has some or does not answer; not demoting", "peer", c.ID, "last_index", last, "err", err)
				return nil
			}
		}
		n.log.Info("raft membership change", "change", c.Kind.String(), "peer", c.ID, "why", c.Why)
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
				if err := n.applyLocal(&Command{Op: catalog.OpNodeRemove, Name: c.ID}); err != nil {
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
func (n *Node) confirmRaftState(ctx context.Context, servers []raft.Server, members []mesh.Member) []mesh.Member {
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
		if last, err := n.peerLastIndex(ctx, m.Meta.QUIC); err == nil && last > 0 {
			if out == nil {
				out = slices.Clone(members)
			}
			out[i].Meta.Raft = true
			n.log.Debug("non-voter has raft state before its gossip metadata says so", "peer", m.Name, "last_index", last)
		}
	}
	if out == nil {
		return members
	}
	return out
}

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

// trackGone returns since when each of ids has been gone (not alive or
// suspect in the gossip), for those that are; a node seen again is
// forgotten. Raft membership and holder placement both ask.
func (n *Node) trackGone(ids []mesh.NodeID, members []mesh.Member, now time.Time) map[mesh.NodeID]time.Time {
	n.goneMu.Lock()
	defer n.goneMu.Unlock()
	state := map[mesh.NodeID]mesh.Member{}
	for _, m := range members {
		state[m.Name] = m
	}
	out := map[mesh.NodeID]time.Time{}
	for _, id := range ids {
		m, ok := state[id]
		if ok && (m.State == mesh.StateAlive || m.State == mesh.StateSuspect) {
			delete(n.goneSince, id)
			continue
		}
		since, seen := n.goneSince[id]
		if !seen {
			since = now
			if ok && !m.Since.IsZero() && m.Since.Before(now) {
				since = m.Since
			}
			n.goneSince[id] = since
		}
		out[id] = since
	}
	return out
}

// applyLocal applies cmd on this node, which must be the leader.
func (n *Node) applyLocal(cmd *Command) error {
	data, err := catalog.EncodeCommand(cmd)
	if err != nil {
		return err
	}
	f := n.r().Apply(data, 5*time.Second)
	if err := f.Error(); err != nil {
		return err
	}
	if res, ok := f.Response().(catalog.ApplyResult); ok && res.Err != nil {
		return res.Err
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
		r := n.r()
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

// Status returns this node's view of the cluster; it works without a quorum.
func (n *Node) Status() Status {
	r := n.r()
	st := Status{Node: n.opts.Name, Site: n.opts.Site, RaftState: r.State().String(), Voters: []mesh.NodeID{}}
	_, leader := r.LeaderWithID()
	st.Leader = mesh.NodeID(leader)
	stats := r.Stats()
	st.Term, _ = strconv.ParseUint(stats["term"], 10, 64)
	st.CommitIndex, _ = strconv.ParseUint(stats["commit_index"], 10, 64)
	st.AppliedIndex = r.AppliedIndex()
	st.LastContact = stats["last_contact"]
	nodes := map[mesh.NodeID]*NodeStatus{}
	get := func(id mesh.NodeID) *NodeStatus {
		if s, ok := nodes[id]; ok {
			return s
		}
		s := &NodeStatus{Name: id, State: "dead", Raft: "none"}
		nodes[id] = s
		return s
	}
	cat := n.Catalog()
	if cat.Policy != nil {
		st.PolicyVersion = cat.Policy.Version
	}
	for _, ni := range cat.Nodes {
		s := get(ni.Name)
		s.Site, s.Role, s.QUIC = ni.Site, ni.Role, ni.QUIC
	}
	for _, m := range n.gossip.Members() {
		s := get(m.Name)
		s.State = string(m.State)
		if m.Meta.Site != "" {
			s.Site, s.Role, s.QUIC = m.Meta.Site, m.Meta.Role, m.Meta.QUIC
		}
	}
	if cf := r.GetConfiguration(); cf.Error() == nil {
		for _, srv := range cf.Configuration().Servers {
			s := get(mesh.NodeID(srv.ID))
			if srv.Suffrage == raft.Voter {
				s.Voter, s.Raft = true, "voter"
				st.Voters = append(st.Voters, s.Name)
			} else {
				s.Raft = "nonvoter"
			}
		}
	}
	slices.Sort(st.Voters)
	sites := map[mesh.Site]*SiteStatus{}
	for _, s := range cat.Sites {
		sites[s.Name] = &SiteStatus{Name: s.Name}
	}
	for _, s := range nodes {
		st.Nodes = append(st.Nodes, *s)
		ss := sites[s.Site]
		if ss == nil {
			ss = &SiteStatus{Name: s.Site}
			sites[s.Site] = ss
		}
		ss.Nodes++
		if s.State == "alive" || s.State == "suspect" {
			ss.Alive++
		}
	}
	slices.SortFunc(st.Nodes, func(a, b NodeStatus) int { return compareStrings(string(a.Name), string(b.Name)) })
	for _, s := range sites {
		st.Sites = append(st.Sites, *s)
	}
	slices.SortFunc(st.Sites, func(a, b SiteStatus) int { return compareStrings(string(a.Name), string(b.Name)) })
	st.Services = []ServiceStatus{}
	now := n.opts.Now()
	for name, svc := range cat.Services {
		ss := ServiceStatus{Name: name, Epoch: svc.Epoch, Watermarks: []Watermark{}, Failover: svc.LastFailover(), Branches: svc.Branches}
		if len(svc.Drills) > 0 {
			ss.Drill = &svc.Drills[len(svc.Drills)-1]
		}
		for _, w := range svc.Watermarks {
			ss.Watermarks = append(ss.Watermarks, w)
		}
		slices.SortFunc(ss.Watermarks, func(a, b Watermark) int { return compareStrings(a.Site, b.Site) })
		if len(svc.Holders) > 0 {
			ss.Holders = map[string]string{}
			for site, h := range svc.Holders {
				ss.Holders[site] = string(h)
			}
		}
		if cat.Policy != nil && cat.Policy.Cluster != nil {
			if p := cat.Service(name); p != nil {
				ss.Primary, ss.RPOTarget = p.Primary, time.Duration(p.RPO).Seconds()
				for _, c := range p.Copies {
					ss.Copies = append(ss.Copies, copyStatus(cat, p, c, svc, now))
				}
			}
		}
		st.Services = append(st.Services, ss)
	}
	slices.SortFunc(st.Services, func(a, b ServiceStatus) int { return compareStrings(a.Name, b.Name) })
	return st
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// RecoverRaft is the operator-forced recovery for a majority of voters lost
// for good (a whole site gone): this node rebuilds the Raft configuration
// with itself as the only voter, becomes leader, and adds the surviving
// nodes back as they are seen. It refuses without force, and while a leader
// is reachable. by names the operator; the record goes into the catalog.
func (n *Node) RecoverRaft(ctx context.Context, by string, force bool) (*RecoveryRecord, error) {
	if !force {
		return nil, fmt.Errorf("%w: it makes this node the only voter and forgets the others; run it only when a majority of voters is gone for good", ErrNeedForce)
	}
	n.raftMu.Lock()
	r := n.raft
	if _, leader := r.LeaderWithID(); leader != "" && (r.State() == raft.Leader || time.Since(r.LastContact()) < 5*time.Second) {
		n.raftMu.Unlock()
		return nil, fmt.Errorf("%w (leader %s)", ErrHasLeader, leader)
	}
	rec := &RecoveryRecord{By: by, At: n.opts.Now().UTC(), Node: n.opts.Name, After: []mesh.NodeID{n.opts.Name}}
	if cf := r.GetConfiguration(); cf.Error() == nil {
		for _, s := range cf.Configuration().Servers {
			if s.Suffrage == raft.Voter {
				rec.Before = append(rec.Before, mesh.NodeID(s.ID))
			}
		}
	}
	n.log.Warn("forced raft recovery: this node becomes the only voter", "by", by, "voters_before", rec.Before)
	if err := r.Shutdown().Error(); err != nil {
		n.raftMu.Unlock()
		return nil, fmt.Errorf("stop raft: %w", err)
	}
	cfg := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(n.opts.Name), Address: raft.ServerAddress(n.quicAddr)}}}
	trans := n.newTransport()
	err := raft.RecoverCluster(n.raftConfig(), catalog.NewFSM(), n.stores.Bolt, n.stores.Bolt, n.stores.Snaps, trans, cfg)
	trans.Close()
	n.raftMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("recover raft: %w", err)
	}
	if err := n.startRaft(); err != nil {
		return nil, err
	}
	if err := n.Apply(ctx, &Command{Op: catalog.OpRecovery, Recovery: rec}); err != nil {
		return nil, fmt.Errorf("record the recovery: %w", err)
	}
	n.log.Warn("forced raft recovery done; the cluster accepts writes again", "by", by)
	return rec, nil
}

// addrOf returns the QUIC address a member advertises, or "".
func addrOf(members []mesh.Member, id mesh.NodeID) string {
	for _, m := range members {
		if m.Name == id {
			return m.Meta.QUIC
		}
	}
	return ""
}

func copyStatus(cat *Catalog, svc *config.Service, c config.Copy, st *ServiceState, now time.Time) CopyStatus {
	cs := CopyStatus{Site: c.Site, Tier: string(c.Tier), Holder: string(st.Holders[c.Site]), RPO: -1}
	if w, ok := st.Watermarks[c.Site]; ok {
		cs.Point, cs.PointTime, cs.Standby, cs.Export = w.Point, w.Time, w.Standby, w.Export
		cs.RPO = now.Sub(w.Time).Seconds()
		cs.RPOMet = svc.RPO == 0 || now.Sub(w.Time) <= time.Duration(svc.RPO)
	}
	if p, ok := st.Progress[c.Site]; ok {
		cs.Backlog, cs.Sending, cs.Error = p.Backlog, p.Sending, p.Error
	}
	cs.LinkPolicy = "no link policy: unlimited"
	if l := cat.Policy.Cluster.Link(svc.Primary, c.Site); l != nil {
		cs.LinkRate = float64(l.RateAt(now))
		cs.LinkPolicy = describeLink(l)
	}
	return cs
}

// describeLink sums up a link's policy in one line.
func describeLink(l *config.Link) string {
	parts := []string{l.Rate.String()}
	for _, s := range l.Schedule {
		parts = append(parts, fmt.Sprintf("%s %s %s", s.Days, s.Hours, s.Rate))
	}
	if l.Coalesce > 0 {
		parts = append(parts, "coalesce "+l.Coalesce.String())
	}
	return strings.Join(parts, "; ")
}

func serverIDs(servers []raft.Server) []mesh.NodeID {
	ids := make([]mesh.NodeID, len(servers))
	for i, s := range servers {
		ids[i] = mesh.NodeID(s.ID)
	}
	return ids
}
