// Package membership keeps a cluster's Raft configuration and catalog node
// list in line with the gossip membership: it joins the gossip, forms a
// new cluster when none exists (bootstrap), re-joins peers a partition
// declared dead, and on the leader adds, promotes, demotes and removes
// Raft servers one change at a time (placement.Plan) and places the
// services' holders (placement.Holders).
package membership

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"golang.org/x/sync/errgroup"

	"github.com/lifeboat-dr/lifeboat/internal/clock"
	"github.com/lifeboat-dr/lifeboat/internal/logpolicy"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// Gossip is the membership layer as the engine uses it.
type Gossip interface {
	Members() []mesh.Member
	Join(addrs []string) (int, error)
	UpdateMeta(mesh.Meta) error
}

// RaftState says whether this node's Raft has state, and whether its
// gossip metadata says so yet. The node reads it when it builds its
// metadata; the engine sets it.
type RaftState struct {
	has, announced atomic.Bool
}

// NewRaftState returns the state as found at start: has and announced
// alike (the first metadata carries it).
func NewRaftState(has bool) *RaftState {
	s := &RaftState{}
	s.has.Store(has)
	s.announced.Store(has)
	return s
}

// Has reports whether this node's Raft has state.
func (s *RaftState) Has() bool { return s.has.Load() }

// Options configure an Engine; every field but Join, Clock and Logger is
// required.
type Options struct {
	Name mesh.NodeID
	QUIC string // the advertised QUIC address: this node's Raft address
	Join []string
	// BootstrapExpect nodes must see each other before a new cluster
	// forms.
	BootstrapExpect   int
	DeadNodeTimeout   time.Duration // how long a dead node keeps its Raft place
	HolderTimeout     time.Duration // how long a holder may be gone
	ReconcileInterval time.Duration
	ReconnectInterval time.Duration

	Raft    func() *raft.Raft // the node's Raft (it changes on a forced recovery)
	Gossip  Gossip
	Events  <-chan mesh.Event // the gossip's membership events
	Catalog interface{ Catalog() *catalog.Catalog }
	State   *RaftState
	// Meta is this node's gossip metadata as of now.
	Meta func() mesh.Meta
	// VerifyPeer checks that a node's QUIC endpoint holds the cluster
	// CA's certificate for it; LastIndex asks a node for its last Raft
	// index (both over the admin stream).
	VerifyPeer func(ctx context.Context, id mesh.NodeID, addr string) error
	LastIndex  func(ctx context.Context, addr string) (uint64, error)
	Clock      clock.Clock
	Logs       *logpolicy.Repeats
	Logger     *slog.Logger
}

// Engine runs the membership loops of one node.
type Engine struct {
	o      Options
	log    *slog.Logger
	kick   chan struct{} // wakes the reconciler
	joined atomic.Bool   // the gossip join succeeded (or there was none to make)

	goneMu    sync.Mutex
	goneSince map[mesh.NodeID]time.Time
}

// New returns an Engine.
func New(o Options) *Engine {
	o.Clock = clock.Or(o.Clock)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Engine{o: o, log: o.Logger, kick: make(chan struct{}, 1), goneSince: map[mesh.NodeID]time.Time{}}
}

// Run joins the gossip and runs the bootstrap, event, reconcile and
// reconnect loops until ctx ends; it returns when all of them have.
func (e *Engine) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	if len(e.o.Join) > 0 {
		g.Go(func() error { e.joinLoop(ctx); return nil })
	} else {
		e.joined.Store(true)
	}
	g.Go(func() error { e.bootstrapLoop(ctx); return nil })
	g.Go(func() error { e.reconcileLoop(ctx); return nil })
	g.Go(func() error { e.eventLoop(ctx); return nil })
	g.Go(func() error { e.reconnectLoop(ctx); return nil })
	return g.Wait()
}
