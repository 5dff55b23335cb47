package node

import (
	"context"
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
)

// Retiring a node (`lifeboat node leave`, issue 15 item 6). The checks
// run while the admin request waits; the leave itself runs in Run's
// group after the answer is sent:
//
//  1. DATA_DIR/LEFT is written: the node does not start again with this
//     state (--reset-raft makes it a new member);
//  2. a leader hands leadership to another voter first;
//  3. the gossip leave carries the leaving flag, so peers record the node
//     as left, not dead: the leader removes it from Raft at once (not after
//     dead_node_timeout) and moves its holder assignments to other nodes
//     of its site (placement never picks a node that left);
//  4. the node waits (up to leaveWait) until its Raft configuration no
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
	return fmt.Errorf("this node left the cluster (%s: %s): it does not start again with its old state; to rejoin as a new member, start it with --reset-raft",
		path, strings.TrimSpace(string(b)))
}

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
	r := n.rn.get()
	if r.State() == raft.Leader {
		if err := r.LeadershipTransfer().Error(); err != nil {
			log.Warn("node leave: leadership transfer", "err", err)
		} else {
			log.Info("node leave: leadership handed on")
		}
	}
	if err := n.gossip.Leave(5 * time.Second); err != nil {
		log.Warn("node leave: gossip leave", "err", err)
	}
	log.Info("node leave: left the gossip; waiting for the leader to remove this node from raft")
	t := n.opts.Clock.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	deadline := n.opts.Clock.Now().Add(leaveWait)
	for {
		if !inConfiguration(r, n.opts.Name) {
			log.Warn("node left the cluster: removed from raft; stopping")
			return
		}
		if n.opts.Clock.Now().After(deadline) {
			log.Warn("node leave: still in the raft configuration; stopping anyway (the leader removes a node that left when it can)", "waited", leaveWait)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
	}
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
