// Package recovery brings services up from their copies: failover
// (planned, unplanned, forced), failback, drills, and the divergent points
// a site kept while a service ran elsewhere (branches). It runs on one
// node, on that node's store, and changes the cluster only through
// catalog commands.
package recovery

import (
	"context"
	"log/slog"
	"sync"
	"syscall"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/internal/clock"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// CatalogReader gives the current catalog (an immutable snapshot).
type CatalogReader interface {
	Catalog() *catalog.Catalog
}

// Standby is the node's hot copies: the images a failover may take over.
type Standby interface {
	// Path returns the path of a volume's standby image of service (any
	// volume when volume is ""), with the point it is at.
	Path(service, volume string) (path string, p blockstore.Point, ok bool)
	// Take moves the service's standby images into dst when they are at
	// p, and reports whether it did.
	Take(service string, p blockstore.Point, dst string) (bool, error)
}

// Options configure an Engine. Every field but Store, Standby, Dial, Members, Held, Stop,
// HooksUser, HookCred and Logger is required.
type Options struct {
	Name    mesh.NodeID
	Site    mesh.Site
	DataDir string            // failover images go to DataDir/failover, drills to DataDir/drills
	Store   *blockstore.Store // nil on a witness: it holds nothing to recover from
	Catalog CatalogReader
	// Propose writes a command to the catalog and returns once it is
	// applied on this node.
	Propose func(context.Context, *catalog.Command) error
	// Quorum reports whether this node reaches a Raft leader.
	Quorum func() bool
	// RecoverRaft makes this node the catalog's only voter (a forced
	// failover without a quorum).
	RecoverRaft func(ctx context.Context, by string, force bool) (*catalog.RecoveryRecord, error)
	// For a planned failover: Dial reaches another node (its admin
	// stream), Members is the gossip membership, Held gives the newest
	// point of a service here and a channel closed when it changes, and
	// Stop holds a service's writes here until the epoch moves on.
	Dial    func(ctx context.Context, addr string, kind mesh.StreamKind) (*mesh.Stream, error)
	Members func() []mesh.Member
	Held    interface {
		Newest(service string) (*blockstore.Point, <-chan struct{})
	}
	Stop      func(service string, epoch uint64)
	Standby   Standby
	HooksUser string              // the user hooks run as, for messages; "" = the node's own
	HookCred  *syscall.Credential // its credential; nil = the node's own
	Clock     clock.Clock         // nil = the real clock
	Logger    *slog.Logger
}

// Engine runs failovers, failbacks and drills on one node.
type Engine struct {
	o   Options
	log *slog.Logger

	mu     sync.Mutex
	busy   map[string]string // image directories a failover or drill works in: why
	warned map[string]bool   // failures logged once (images.go)
}

// New returns an Engine.
func New(o Options) *Engine {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.Clock = clock.Or(o.Clock)
	return &Engine{o: o, log: o.Logger}
}
