package node

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-dr/lifeboat/internal/durable"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// Retiring a node (`lifeboat node leave`, issue 15 item 6). The checks
// run while the admin request waits; the leave itself runs in Run's
// group after the answer is sent:
//
//  1. DATA_DIR/LEFT is written: the node does not start again with this
//     state (--reset-raft makes it a new member);
//  2. a leader hands leadership to another voter first;
//  3. the gossip leave carries the leaving flag (announced before the
//     transfer, so that it has spread), so peers record the node as left,
//     not dead; placement never picks a node that left;
//  4. it asks the leader (admin stream type 7) to remove it from the
//     catalog and Raft at once (the leader also removes a member that
//     left by itself, but one that took the leave for a death would wait
//     for dead_node_timeout); with the node gone from the catalog its
//     holder assignments move to other nodes of its site;
//  5. the node waits (up to leaveWait) until its Raft configuration no
//     longer lists it, then stops.
//
// It refuses, unless forced, when no leader is reachable (nobody could
// remove it), when the remaining voters would not be a quorum, and when it
// is the holder at its site of services whose points it keeps: no other
// node of the site has them.

// leftFile marks a data dir whose node left the cluster.
const leftFile = "LEFT"

// leaveWait bounds how long a leaving node waits to see itself out of the
// Raft configuration before it stops anyway.
const leaveWait = 30 * time.Second

// checkLeft refuses to start a node that left, unless its Raft state is
// reset (it then joins as a new member).
func checkLeft(dataDir string, reset bool) error {
	path := filepath.Join(dataDir, leftFile)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("read %s: %w", path, err)
	case reset:
		return os.Remove(path)
	}
	return fmt.Errorf("%w (%s: %s): it does not start again with its old state; to rejoin as a new member, start it with --reset-raft",
		ErrLeft, path, strings.TrimSpace(string(b)))
}

// ErrLeft reports a node that left the cluster (node leave) started again
// on its old data dir.
var ErrLeft = errors.New("this node left the cluster")

// Leave checks whether the node may leave; unless the request is a dry
// run, start (called once the answer is sent) begins the leave.
func (b adminBackend) Leave(ctx context.Context, req api.LeaveRequest, by string) (*api.LeaveResult, func(), error) {
	n := b.Node
	if n.leaving.Load() {
		return nil, nil, fmt.Errorf("%w: node %s is leaving already", api.ErrUnsafe, n.opts.Name)
	}
	res, problems, err := n.planLeave(ctx)
	if err != nil {
		return nil, nil, err
	}
	res.DryRun = req.DryRun
	if len(problems) > 0 && !req.Force {
		return nil, nil, fmt.Errorf("%w: node %s does not leave: %s. Nothing changed; --force leaves anyway", api.ErrUnsafe, n.opts.Name, strings.Join(problems, "; "))
	}
	res.Warnings = problems
	if req.DryRun {
		return res, nil, nil
	}
	if !n.leaving.CompareAndSwap(false, true) {
		return nil, nil, fmt.Errorf("%w: node %s is leaving already", api.ErrUnsafe, n.opts.Name)
	}
	n.log.Warn("node leave asked", "by", by, "force", req.Force, "raft", res.Raft, "holds", res.Holds, "overridden", problems)
	return res, func() {
		select {
		case n.leaveReq <- by:
		default:
		}
	}, nil
}

// planLeave says what leaving means for this node and what speaks against
// it.
func (n *Node) planLeave(ctx context.Context) (*api.LeaveResult, []string, error) {
	res := &api.LeaveResult{Node: n.opts.Name, Site: n.opts.Site, Raft: "none"}
	r := n.rn.get()
	cf := r.GetConfiguration()
	if err := cf.Error(); err != nil {
		return nil, nil, fmt.Errorf("read the raft configuration: %w", err)
	}
	alive := map[mesh.NodeID]bool{}
	for _, m := range n.gossip.Members() {
		alive[m.Name] = m.State == mesh.StateAlive
	}
	var problems []string
	voters, aliveVoters := 0, 0
	var others []string
	for _, s := range cf.Configuration().Servers {
		id := mesh.NodeID(s.ID)
		if id == n.opts.Name {
			res.Raft = "nonvoter"
			if s.Suffrage == raft.Voter {
				res.Raft = "voter"
			}
			continue
		}
		if s.Suffrage == raft.Voter {
			voters++
			state := "gone"
			if alive[id] {
				aliveVoters++
				state = "alive"
			}
			others = append(others, string(id)+" "+state)
		}
	}
	res.Transferred = r.State() == raft.Leader && voters > 0
	switch {
	case !n.rn.hasQuorum():
		problems = append(problems, "no Raft leader is reachable, so nobody can remove it from the configuration (lifeboat status shows which voters are gone)")
	case res.Raft == "voter" && voters == 0:
		problems = append(problems, "it is the cluster's only Raft voter: the catalog would go with it")
	case res.Raft == "voter" && aliveVoters < voters/2+1:
		problems = append(problems, fmt.Sprintf("it would lose the Raft quorum: %d of the %d other voters are alive, %d are needed (%s)",
			aliveVoters, voters, voters/2+1, strings.Join(others, ", ")))
	}
	cat := n.fsm.Catalog()
	site := string(n.opts.Site)
	var only []string
	for name, st := range cat.Services {
		if st.Holders[site] != n.opts.Name {
			continue
		}
		res.Holds = append(res.Holds, name)
		if n.store == nil {
			continue
		}
		pts, err := n.recovery.Points(ctx, name, "")
		if err != nil {
			return nil, nil, err
		}
		if len(pts) > 0 {
			only = append(only, name)
		}
	}
	slices.Sort(res.Holds)
	slices.Sort(only)
	if len(only) > 0 {
		var takers []string
		for _, id := range cat.SortedNodes() {
			ni := cat.Nodes[id]
			if id != n.opts.Name && ni.Site == n.opts.Site && ni.Role != RoleWitness && alive[id] {
				takers = append(takers, string(id))
			}
		}
		next := "no other data node of " + site + " is alive to take them over: the site loses its copy"
		if len(takers) > 0 {
			next = strings.Join(takers, ", ") + " take the services over from the points replication brings"
		}
		problems = append(problems, fmt.Sprintf("it is the only holder of the points of %s at site %s: leaving loses them there (%s)",
			strings.Join(only, ", "), site, next))
	}
	return res, problems, nil
}

// leaveWhenAsked waits for a leave request and carries it out, then
// stops the node (stop ends Run).
func (n *Node) leaveWhenAsked(ctx context.Context, stop context.CancelFunc) {
	var by string
	select {
	case <-ctx.Done():
		return
	case by = <-n.leaveReq:
	}
	defer stop()
	log := n.log.With("by", by)
	at := n.opts.Clock.Now().UTC().Format(time.RFC3339)
	if err := durable.WriteFile(filepath.Join(n.opts.DataDir, leftFile), []byte("left at "+at+", by "+by+"\n"), 0o600); err != nil {
		log.Error("node leave: mark the data dir", "err", err)
	}
	// The leaving flag first, so that it has reached the members when the
	// leave message does (they record "left", not "dead").
	if err := n.gossip.AnnounceLeaving(2 * time.Second); err != nil {
		log.Warn("node leave: announce", "err", err)
	}
	r := n.rn.get()
	if r.State() == raft.Leader {
		if err := r.LeadershipTransfer().Error(); err != nil {
			log.Warn("node leave: leadership transfer", "err", err)
		} else {
			log.Info("node leave: leadership handed on")
		}
	}
	// Out of the gossip before out of Raft: the leader adds alive members
	// it does not have back as non-voters.
	if err := n.gossip.Leave(5 * time.Second); err != nil {
		log.Warn("node leave: gossip leave", "err", err)
	}
	log.Info("node leave: left the gossip; asking the leader to remove this node from raft")
	// The leader removes a member that left by itself too, but a member
	// that took the leave for a death would wait for dead_node_timeout:
	// ask (retried while the leadership moves).
	t := n.opts.Clock.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	deadline := n.opts.Clock.Now().Add(leaveWait)
	asked := false
	for {
		if !inConfiguration(r, n.opts.Name) {
			log.Warn("node left the cluster: removed from raft; stopping")
			return
		}
		if !asked {
			if err := n.askRemoval(ctx, r); err != nil {
				log.Debug("node leave: removal not confirmed yet", "err", err)
			} else {
				asked = true
			}
		}
		if n.opts.Clock.Now().After(deadline) {
			log.Warn("node leave: still in this node's raft configuration; stopping anyway (the leader removes a node that left when it can)",
				"waited", leaveWait, "removal_confirmed", asked)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
	}
}

// askRemoval has the leader remove this node from Raft and the catalog;
// a leader does it itself.
func (n *Node) askRemoval(ctx context.Context, r *raft.Raft) error {
	if r.State() == raft.Leader {
		return n.removeServer(r, n.opts.Name)
	}
	addr, id := r.LeaderWithID()
	if addr == "" {
		return errors.New("no leader known")
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := n.ep.Dial(dctx, string(addr), mesh.KindAdmin)
	if err != nil {
		return fmt.Errorf("dial leader %s: %w", id, err)
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(10 * time.Second))
	if err := mesh.WriteFrame(s, frameLeave, nil); err != nil {
		return err
	}
	t, p, err := mesh.NewFrameReader(s, 4096).Next()
	if err != nil {
		return fmt.Errorf("leader %s: %w", id, err)
	}
	switch {
	case t == frameLeft && len(p) == 8:
		return nil
	case t == mesh.FrameTypeError:
		re, err := mesh.ParseError(p)
		if err != nil {
			return err
		}
		return fmt.Errorf("leader %s: %w", id, re)
	}
	return fmt.Errorf("leader %s: answer of type %d, %d bytes", id, t, len(p))
}

// serveLeave removes the node at the other end of s, which is leaving;
// leader only.
func (n *Node) serveLeave(s *mesh.Stream) {
	peer := s.Peer()
	if peer.Agent {
		mesh.WriteError(s, mesh.CodeForbidden, "an agent is not a member")
		return
	}
	r := n.rn.get()
	if r.State() != raft.Leader {
		mesh.WriteError(s, mesh.CodeNotLeader, "not the leader")
		return
	}
	if err := n.removeServer(r, peer.Name); err != nil {
		mesh.WriteError(s, mesh.CodeUnavailable, err.Error())
		return
	}
	mesh.WriteFrame(s, frameLeft, binary.BigEndian.AppendUint64(nil, r.AppliedIndex()))
}

// removeServer removes id from the catalog's nodes and from Raft; r leads.
func (n *Node) removeServer(r *raft.Raft, id mesh.NodeID) error {
	if _, ok := n.fsm.Catalog().Nodes[id]; ok {
		data, err := catalog.EncodeCommand(&catalog.Command{Op: catalog.OpNodeRemove, Name: id})
		if err != nil {
			return err
		}
		if err := r.Apply(data, 5*time.Second).Error(); err != nil {
			return fmt.Errorf("unregister node %s: %w", id, err)
		}
	}
	if !inConfiguration(r, id) {
		return nil
	}
	n.log.Info("raft membership change", "change", "remove", "peer", id, "why", "node leave")
	if err := r.RemoveServer(raft.ServerID(id), 0, 5*time.Second).Error(); err != nil {
		return fmt.Errorf("remove %s from raft: %w", id, err)
	}
	return nil
}

// inConfiguration reports whether id is in r's latest configuration (true
// when it cannot be read).
func inConfiguration(r *raft.Raft, id mesh.NodeID) bool {
	cf := r.GetConfiguration()
	if cf.Error() != nil {
		return true
	}
	return slices.ContainsFunc(cf.Configuration().Servers, func(s raft.Server) bool { return mesh.NodeID(s.ID) == id })
}
