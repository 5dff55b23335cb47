// Package raftnode is a node's Raft instance: started over the node's
// stores (node/internal/raftstore), the catalog's state machine and the
// QUIC endpoint's raft streams, with the node's configuration, transport
// and quorum check, and the operator-forced recovery that replaces the
// instance with one where this node is the only voter. Because the
// instance can be replaced, callers ask for the current one (Current)
// each time instead of keeping it.
//
// It starts no goroutines of its own (raft's are the library's): the
// node shuts the current instance down when it stops.
package raftnode

import (
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-dr/lifeboat/internal/clock"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/raftstore"
)

// Options configure a Raft. Name, Addr, Layer, FSM and Stores are
// required.
type Options struct {
	Name mesh.NodeID
	Addr string // the advertised QUIC address: Raft tells followers the leader's from it
	// Layer returns a new layer over the endpoint's raft streams
	// (mesh.Endpoint.RaftLayer): each transport closes its own, and a
	// recovery makes two more.
	Layer  func() raft.StreamLayer
	FSM    raft.FSM
	Stores *raftstore.Stores
	// Timeout bounds Raft RPCs and dials; 0 = 10s.
	Timeout time.Duration
	// Adjust, if not nil, adjusts the configuration (tests shorten
	// timeouts); LocalID and Logger are set here.
	Adjust func(*raft.Config)
	Clock  clock.Clock  // the time of a recovery's record
	Logger *slog.Logger // nil = slog.Default()
}

// Raft is the node's Raft instance.
type Raft struct {
	o   Options
	log *slog.Logger

	mu   sync.RWMutex
	raft *raft.Raft
}

// Start starts the node's Raft over its stores.
func Start(o Options) (*Raft, error) {
	o.Clock = clock.Or(o.Clock)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	n := &Raft{o: o, log: o.Logger}
	if err := n.start(); err != nil {
		return nil, err
	}
	return n, nil
}

// layer gives Raft the endpoint's raft streams under the advertised
// address: Raft tells followers the leader's address from it.
type layer struct {
	raft.StreamLayer
	addr net.Addr
}

func (l layer) Addr() net.Addr { return l.addr }

type stringAddr string

func (a stringAddr) Network() string { return "quic" }

func (a stringAddr) String() string { return string(a) }

func (n *Raft) config() *raft.Config {
	c := raft.DefaultConfig()
	c.LocalID = raft.ServerID(n.o.Name)
	c.Logger = mesh.HCLogger(n.log, "raft")
	// A follower learns that an entry committed from the leader's next
	// message, sent at the latest after CommitTimeout: a write forwarded by
	// a follower waits for that (read your writes). 10ms instead of 50ms
	// takes the forwarded p50 from ~78ms to ~17ms (BenchmarkCatalogWrite) for ~100 small packets a
	// second per follower when idle.
	c.CommitTimeout = 10 * time.Millisecond
	c.SnapshotThreshold = 1024
	c.TrailingLogs = 2048
	if n.o.Adjust != nil {
		n.o.Adjust(c)
	}
	return c
}

func (n *Raft) transport() *raft.NetworkTransport {
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  layer{StreamLayer: n.o.Layer(), addr: stringAddr(n.o.Addr)},
		MaxPool: 3,
		Timeout: n.o.Timeout,
		Logger:  mesh.HCLogger(n.log, "raft-net"),
	})
}

// start starts a Raft instance and makes it the current one.
func (n *Raft) start() error {
	trans := n.transport()
	s := n.o.Stores
	r, err := raft.NewRaft(n.config(), n.o.FSM, s.Bolt, s.Bolt, s.Snaps, trans)
	if err != nil {
		trans.Close()
		return &raftstore.RaftStateError{Path: s.Dir, Err: err}
	}
	n.mu.Lock()
	n.raft = r
	n.mu.Unlock()
	return nil
}

// Current returns the current Raft instance.
func (n *Raft) Current() *raft.Raft {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.raft
}

// HasQuorum reports whether this node reaches a Raft leader.
func (n *Raft) HasQuorum() bool {
	r := n.Current()
	if r.State() == raft.Leader {
		return true
	}
	_, id := r.LeaderWithID()
	return id != "" && time.Since(r.LastContact()) < 5*time.Second
}

// Recover is the operator-forced recovery for a majority of voters lost
// for good: it rewrites the Raft configuration with this node as the only
// voter (raft.RecoverCluster) and starts a new instance, which leads. It
// refuses without force (api.ErrNeedForce) and while a leader is
// reachable (api.ErrHasLeader). The record it returns, by the operator
// by, is for the caller to put into the catalog.
func (n *Raft) Recover(by string, force bool) (*catalog.RecoveryRecord, error) {
	if !force {
		return nil, fmt.Errorf("%w: it makes this node the only voter and forgets the others; run it only when a majority of voters is gone for good", api.ErrNeedForce)
	}
	n.mu.Lock()
	r := n.raft
	if _, leader := r.LeaderWithID(); leader != "" && (r.State() == raft.Leader || time.Since(r.LastContact()) < 5*time.Second) {
		n.mu.Unlock()
		return nil, fmt.Errorf("%w (leader %s)", api.ErrHasLeader, leader)
	}
	rec := &catalog.RecoveryRecord{By: by, At: n.o.Clock.Now().UTC(), Node: n.o.Name, After: []mesh.NodeID{n.o.Name}}
	if cf := r.GetConfiguration(); cf.Error() == nil {
		for _, s := range cf.Configuration().Servers {
			if s.Suffrage == raft.Voter {
				rec.Before = append(rec.Before, mesh.NodeID(s.ID))
			}
		}
	}
	n.log.Warn("forced raft recovery: this node becomes the only voter", "by", by, "voters_before", rec.Before)
	if err := r.Shutdown().Error(); err != nil {
		n.mu.Unlock()
		return nil, fmt.Errorf("stop raft: %w", err)
	}
	cfg := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(n.o.Name), Address: raft.ServerAddress(n.o.Addr)}}}
	trans := n.transport()
	s := n.o.Stores
	err := raft.RecoverCluster(n.config(), catalog.NewFSM(), s.Bolt, s.Bolt, s.Snaps, trans, cfg)
	trans.Close()
	n.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("recover raft: %w", err)
	}
	if err := n.start(); err != nil {
		return nil, err
	}
	return rec, nil
}
