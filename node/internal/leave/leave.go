// Package leave retires a node from the cluster (`lifeboat node leave`,
// issue 15 item 6). The checks run while the admin request waits (Leave);
// the leave itself runs in Run after the answer is sent:
//
//  1. DATA_DIR/LEFT is written: the node does not start again with this
//     state (CheckLeft; --reset-raft makes it a new member);
//  2. the gossip's leaving flag is announced (before the transfer, so
//     that it has spread), so peers record the node as left, not dead;
//     placement never picks a node that left;
//  3. a leader hands leadership to another voter;
//  4. the gossip leave;
//  5. it asks the leader (admin stream type 7, ServeLeave) to remove it
//     from the catalog and Raft at once (the leader also removes a member
//     that left by itself, but one that took the leave for a death would
//     wait for dead_node_timeout); with the node gone from the catalog its
//     holder assignments move to other nodes of its site;
//  6. the node waits (up to Options.Wait) until its Raft configuration no
//     longer lists it, and Run returns ErrLeft: the node stops.
//
// Leave refuses, unless forced, when no leader is reachable (nobody could
// remove it), when the remaining voters would not be a quorum, and when
// the node is the holder at its site of services whose points it keeps:
// no other node of the site has them.
package leave

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/internal/clock"
	"github.com/lifeboat-dr/lifeboat/internal/durable"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/placement"
	"github.com/lifeboat-dr/lifeboat/node/internal/streams"
)

// Frame types of the admin stream: a leaving node asks the leader to
// remove it from Raft and from the catalog.
const (
	FrameLeave mesh.FrameType = 7 // empty: remove the sender
	FrameLeft  mesh.FrameType = 8 // 8 bytes: the leader's applied index after the removal, big-endian
)

// File marks a data dir whose node left the cluster.
const File = "LEFT"

// ErrLeft reports a node that left the cluster (node leave): New refuses
// to start again on its old data dir, and Run returns it once the node
// is out.
var ErrLeft = errors.New("this node left the cluster")

// CheckLeft refuses to start a node that left, unless its Raft state is
// reset (it then joins as a new member).
func CheckLeft(dataDir string, reset bool) error {
	path := filepath.Join(dataDir, File)
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

// Gossip is the membership layer as a leaving node uses it.
type Gossip interface {
	Members() []mesh.Member
	// AnnounceLeaving spreads the leaving flag; Leave leaves the gossip.
	AnnounceLeaving(timeout time.Duration) error
	Leave(timeout time.Duration) error
}

// Options configure an Engine. All but Points, Wait, Clock and Logger are
// required.
type Options struct {
	Name    mesh.NodeID
	Site    mesh.Site
	DataDir string
	Raft    func() *raft.Raft // the node's Raft (it changes on a forced recovery)
	Quorum  func() bool       // whether this node reaches a Raft leader
	Gossip  Gossip
	Catalog interface{ Catalog() *catalog.Catalog }
	// Points lists the points this node holds of a service; nil on a
	// witness (it holds none).
	Points func(ctx context.Context, service, volume string) ([]blockstore.Point, error)
	Dial   streams.Dial // reaches the leader's admin stream
	// Wait bounds how long a leaving node waits to see itself out of the
	// Raft configuration before it stops anyway; 0 = 30s.
	Wait   time.Duration
	Clock  clock.Clock
	Logger *slog.Logger
}

// Engine carries out one node's leave.
type Engine struct {
	o       Options
	log     *slog.Logger
	leaving atomic.Bool // a leave was accepted
	req     chan string // who asked; Run carries it out
}

// New returns an Engine.
func New(o Options) *Engine {
	o.Clock = clock.Or(o.Clock)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Wait == 0 {
		o.Wait = 30 * time.Second
	}
	return &Engine{o: o, log: o.Logger, req: make(chan string, 1)}
}

// Leaving reports whether a leave was accepted (the node has told the
// gossip, or is about to).
func (e *Engine) Leaving() bool { return e.leaving.Load() }

// Leave checks whether the node may leave; unless the request is a dry
// run, start (to call once the answer is sent) begins the leave, which
// Run carries out. A refusal is api.ErrUnsafe.
func (e *Engine) Leave(ctx context.Context, req api.LeaveRequest, by string) (*api.LeaveResult, func(), error) {
	if e.leaving.Load() {
		return nil, nil, fmt.Errorf("%w: node %s is leaving already", api.ErrUnsafe, e.o.Name)
	}
	res, problems, err := e.plan(ctx)
	if err != nil {
		return nil, nil, err
	}
	res.DryRun = req.DryRun
	if len(problems) > 0 && !req.Force {
		return nil, nil, fmt.Errorf("%w: node %s does not leave: %s. Nothing changed; --force leaves anyway", api.ErrUnsafe, e.o.Name, strings.Join(problems, "; "))
	}
	res.Warnings = problems
	if req.DryRun {
		return res, nil, nil
	}
	if !e.leaving.CompareAndSwap(false, true) {
		return nil, nil, fmt.Errorf("%w: node %s is leaving already", api.ErrUnsafe, e.o.Name)
	}
	e.log.Warn("node leave asked", "by", by, "force", req.Force, "raft", res.Raft, "holds", res.Holds, "overridden", problems)
	return res, func() {
		select {
		case e.req <- by:
		default:
		}
	}, nil
}

// plan says what leaving means for this node and what speaks against it.
func (e *Engine) plan(ctx context.Context) (*api.LeaveResult, []string, error) {
	res := &api.LeaveResult{Node: e.o.Name, Site: e.o.Site, Raft: "none"}
	r := e.o.Raft()
	cf := r.GetConfiguration()
	if err := cf.Error(); err != nil {
		return nil, nil, fmt.Errorf("read the raft configuration: %w", err)
	}
	alive := map[mesh.NodeID]bool{}
	for _, m := range e.o.Gossip.Members() {
		alive[m.Name] = m.State == mesh.StateAlive
	}
	var problems []string
	voters, aliveVoters := 0, 0
	var others []string
	for _, s := range cf.Configuration().Servers {
		id := mesh.NodeID(s.ID)
		if id == e.o.Name {
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
	case !e.o.Quorum():
		problems = append(problems, "no Raft leader is reachable, so nobody can remove it from the configuration (lifeboat status shows which voters are gone)")
	case res.Raft == "voter" && voters == 0:
		problems = append(problems, "it is the cluster's only Raft voter: the catalog would go with it")
	case res.Raft == "voter" && aliveVoters < voters/2+1:
		problems = append(problems, fmt.Sprintf("it would lose the Raft quorum: %d of the %d other voters are alive, %d are needed (%s)",
			aliveVoters, voters, voters/2+1, strings.Join(others, ", ")))
	}
	only, err := e.holds(ctx, res)
	if err != nil {
		return nil, nil, err
	}
	if p := e.onlyHolder(only, alive); p != "" {
		problems = append(problems, p)
	}
	return res, problems, nil
}

// holds lists in res the services this node holds at its site and
// returns those of them it keeps points of.
func (e *Engine) holds(ctx context.Context, res *api.LeaveResult) ([]string, error) {
	var only []string
	for name, st := range e.o.Catalog.Catalog().Services {
		if st.Holders[string(e.o.Site)] != e.o.Name {
			continue
		}
		res.Holds = append(res.Holds, name)
		if e.o.Points == nil {
			continue
		}
		pts, err := e.o.Points(ctx, name, "")
		if err != nil {
			return nil, err
		}
		if len(pts) > 0 {
			only = append(only, name)
		}
	}
	slices.Sort(res.Holds)
	slices.Sort(only)
	return only, nil
}

// onlyHolder is the problem of leaving with the only points of services
// at the site, naming who takes them over; "" without any.
func (e *Engine) onlyHolder(only []string, alive map[mesh.NodeID]bool) string {
	if len(only) == 0 {
		return ""
	}
	cat := e.o.Catalog.Catalog()
	site := string(e.o.Site)
	var takers []string
	for _, id := range cat.SortedNodes() {
		ni := cat.Nodes[id]
		if id != e.o.Name && ni.Site == e.o.Site && ni.Role != placement.RoleWitness && alive[id] {
			takers = append(takers, string(id))
		}
	}
	next := "no other data node of " + site + " is alive to take them over: the site loses its copy"
	if len(takers) > 0 {
		next = strings.Join(takers, ", ") + " take the services over from the points replication brings"
	}
	return fmt.Sprintf("it is the only holder of the points of %s at site %s: leaving loses them there (%s)",
		strings.Join(only, ", "), site, next)
}

// Run waits for an accepted leave and carries it out: it returns ErrLeft
// once the node is out (or waited Options.Wait for it), which ends the
// node, and nil when ctx ends first. It starts no goroutines.
func (e *Engine) Run(ctx context.Context) error {
	var by string
	select {
	case <-ctx.Done():
		return nil
	case by = <-e.req:
	}
	log := e.log.With("by", by)
	at := e.o.Clock.Now().UTC().Format(time.RFC3339)
	if err := durable.WriteFile(filepath.Join(e.o.DataDir, File), []byte("left at "+at+", by "+by+"\n"), 0o600); err != nil {
		log.Error("node leave: mark the data dir", "err", err)
	}
	// The leaving flag first, so that it has reached the members when the
	// leave message does (they record "left", not "dead").
	if err := e.o.Gossip.AnnounceLeaving(2 * time.Second); err != nil {
		log.Warn("node leave: announce", "err", err)
	}
	r := e.o.Raft()
	if r.State() == raft.Leader {
		if err := r.LeadershipTransfer().Error(); err != nil {
			log.Warn("node leave: leadership transfer", "err", err)
		} else {
			log.Info("node leave: leadership handed on")
		}
	}
	// Out of the gossip before out of Raft: the leader adds alive members
	// it does not have back as non-voters.
	if err := e.o.Gossip.Leave(5 * time.Second); err != nil {
		log.Warn("node leave: gossip leave", "err", err)
	}
	log.Info("node leave: left the gossip; asking the leader to remove this node from raft")
	e.awaitRemoval(ctx, r, log)
	return ErrLeft
}

// awaitRemoval asks the leader to remove this node (retried while the
// leadership moves) until r's configuration no longer lists it, Wait
// has passed or ctx ends. The leader removes a member that left by itself
// too, but a member that took the leave for a death would wait for
// dead_node_timeout.
func (e *Engine) awaitRemoval(ctx context.Context, r *raft.Raft, log *slog.Logger) {
	t := e.o.Clock.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	deadline := e.o.Clock.Now().Add(e.o.Wait)
	asked := false
	for {
		if !inConfiguration(r, e.o.Name) {
			log.Warn("node left the cluster: removed from raft; stopping")
			return
		}
		if !asked {
			if err := e.askRemoval(ctx, r); err != nil {
				log.Debug("node leave: removal not confirmed yet", "err", err)
			} else {
				asked = true
			}
		}
		if e.o.Clock.Now().After(deadline) {
			log.Warn("node leave: still in this node's raft configuration; stopping anyway (the leader removes a node that left when it can)",
				"waited", e.o.Wait, "removal_confirmed", asked)
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
func (e *Engine) askRemoval(ctx context.Context, r *raft.Raft) error {
	if r.State() == raft.Leader {
		return e.remove(r, e.o.Name)
	}
	addr, id := r.LeaderWithID()
	if addr == "" {
		return errors.New("no leader known")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	t, p, err := streams.Request(ctx, e.o.Dial, string(addr), mesh.KindAdmin, FrameLeave, nil, 10*time.Second)
	switch {
	case err != nil:
		return fmt.Errorf("leader %s: %w", id, err)
	case t != FrameLeft || len(p) != 8:
		return fmt.Errorf("leader %s: answer of type %d, %d bytes", id, t, len(p))
	}
	return nil
}

// ServeLeave removes the node at the other end of s, which is leaving
// (admin stream type 7); leader only.
func (e *Engine) ServeLeave(_ context.Context, s *mesh.Stream, _ []byte) {
	peer := s.Peer()
	if peer.Agent {
		mesh.WriteError(s, mesh.CodeForbidden, "an agent is not a member")
		return
	}
	r := e.o.Raft()
	if r.State() != raft.Leader {
		mesh.WriteError(s, mesh.CodeNotLeader, "not the leader")
		return
	}
	if err := e.remove(r, peer.Name); err != nil {
		mesh.WriteError(s, mesh.CodeUnavailable, err.Error())
		return
	}
	mesh.WriteFrame(s, FrameLeft, binary.BigEndian.AppendUint64(nil, r.AppliedIndex()))
}

// remove removes id from the catalog's nodes and from Raft; r leads.
func (e *Engine) remove(r *raft.Raft, id mesh.NodeID) error {
	if _, ok := e.o.Catalog.Catalog().Nodes[id]; ok {
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
	e.log.Info("raft membership change", "change", "remove", "peer", id, "why", "node leave")
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
