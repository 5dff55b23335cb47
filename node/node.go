package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
	"golang.org/x/sync/errgroup"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/internal/clock"
	"github.com/lifeboat-dr/lifeboat/internal/logpolicy"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/mesh/throttle"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/admin"
	"github.com/lifeboat-dr/lifeboat/node/internal/audit"
	"github.com/lifeboat-dr/lifeboat/node/internal/ingest"
	"github.com/lifeboat-dr/lifeboat/node/internal/lifecycle"
	"github.com/lifeboat-dr/lifeboat/node/internal/membership"
	"github.com/lifeboat-dr/lifeboat/node/internal/metrics"
	"github.com/lifeboat-dr/lifeboat/node/internal/policy"
	"github.com/lifeboat-dr/lifeboat/node/internal/raftstore"
	"github.com/lifeboat-dr/lifeboat/node/internal/recovery"
	"github.com/lifeboat-dr/lifeboat/node/internal/replicate"
	"github.com/lifeboat-dr/lifeboat/node/internal/streams"
	"github.com/lifeboat-dr/lifeboat/node/internal/tiers"
	"github.com/lifeboat-dr/lifeboat/node/internal/watermark"
)

// Roles a node can have. A witness votes in Raft and holds no data: the
// recommended tie-breaker at a third site.
const (
	RoleNode    = "node"
	RoleWitness = "witness"
)

// Options configure a node. The zero value of each optional field is the
// default named in its comment.
type Options struct {
	Name    mesh.NodeID // required
	Site    mesh.Site   // required
	Role    string      // RoleNode (default) or RoleWitness
	DataDir string      // required; Raft state lives in DataDir/raft
	Creds   *mesh.Creds // required: the node's certificate, the CA and the gossip key

	Network   mesh.Network // nil = the operating system's
	Gossip    string       // gossip listen address; required
	QUIC      string       // QUIC listen address; required
	Admin     string       // admin API listen address; "" = no admin API (HTTPS with mutual TLS on every address)
	HooksUser string       // local user the policy's hooks run as; "" = the node's own
	// KEK is the key-encryption key of the node's block store: with it a new
	// store is created encrypted at rest, and an encrypted one opens. nil =
	// a plain store (an encrypted one then refuses to open).
	KEK       *blockstore.KEK
	Advertise string // host to advertise when listening on 0.0.0.0; "" = the gossip layer's choice

	Join            []string      // gossip addresses of nodes to join
	BootstrapExpect int           // nodes that must see each other before a new cluster forms; 0 = 1 without Join, else 3
	DeadNodeTimeout time.Duration // how long a dead node keeps its place in Raft; 0 = 24h
	GossipProfile   string        // "wan" (default, as in node files), "lan" or "test"
	ResetRaft       bool          // move existing Raft state aside and rejoin as a new member

	// RaftConfig, if not nil, adjusts the Raft configuration (tests shorten
	// timeouts); LocalID, Logger and the protocol are set by the node.
	RaftConfig        func(*raft.Config)
	RaftTimeout       time.Duration // Raft RPC and dial timeout; 0 = 10s
	ReconcileInterval time.Duration // leader's membership check; 0 = 1s
	ReconnectInterval time.Duration // how often dead peers are re-joined; 0 = 30s
	WriteTimeout      time.Duration // how long a write waits for a leader; 0 = 10s
	WatermarkInterval time.Duration // how often new points reach the catalog; 0 = 1s
	BarrierInterval   time.Duration // how often services with several agents get a consistent point; 0 = 10s
	HolderTimeout     time.Duration // how long a holder may be gone before another node of its site takes over; 0 = 1m
	ThinEvery         time.Duration // time between retention passes; 0 = 30s
	GCEvery           time.Duration // least time between garbage collections; 0 = 15m
	GCRate            int64         // bytes/s GC may rewrite; 0 = unlimited

	// AnnounceStop makes the end of Run tell the gossip this node stops
	// (peers see it dead at once, it keeps its place); `node run` sets it
	// for SIGTERM. A node that left (node leave) has told them already.
	AnnounceStop bool

	Logger *slog.Logger // nil = slog.Default()
	// Clock is the time of everything time-driven in the node; nil = the
	// real clock (tests pass a clock.Fake, or clock.WithNow for an offset).
	Clock clock.Clock
}

func (o *Options) check() error {
	var errs []error
	if o.Name == "" {
		errs = append(errs, errors.New("node name is required"))
	}
	if o.Site == "" {
		errs = append(errs, errors.New("site is required"))
	}
	if o.DataDir == "" {
		errs = append(errs, errors.New("data dir is required"))
	}
	if o.Creds == nil {
		errs = append(errs, errors.New("TLS credentials are required"))
	} else if o.Creds.Self.Agent || string(o.Creds.Self.Name) != string(o.Name) || string(o.Creds.Self.Site) != string(o.Site) {
		errs = append(errs, fmt.Errorf("the certificate is for %s, not for node %s at site %s: issue one with `lifeboat ca issue --name %s --site %s`",
			describeIdentity(o.Creds.Self), o.Name, o.Site, o.Name, o.Site))
	} else if len(o.Creds.GossipKey) == 0 {
		errs = append(errs, errors.New("the TLS dir holds no gossip.key"))
	}
	switch o.Role {
	case "":
		o.Role = RoleNode
	case RoleNode, RoleWitness:
	default:
		errs = append(errs, fmt.Errorf("role %q: want %q or %q", o.Role, RoleNode, RoleWitness))
	}
	if o.Gossip == "" || o.QUIC == "" {
		errs = append(errs, errors.New("gossip and QUIC listen addresses are required"))
	}
	if o.BootstrapExpect < 0 {
		errs = append(errs, fmt.Errorf("bootstrap_expect %d: want 1 or more", o.BootstrapExpect))
	}
	if o.BootstrapExpect == 0 {
		o.BootstrapExpect = 3
		if len(o.Join) == 0 {
			o.BootstrapExpect = 1
		}
	}
	if o.DeadNodeTimeout == 0 {
		o.DeadNodeTimeout = 24 * time.Hour
	}
	if o.RaftTimeout == 0 {
		o.RaftTimeout = 10 * time.Second
	}
	if o.ReconnectInterval == 0 {
		o.ReconnectInterval = 30 * time.Second
	}
	if o.ReconcileInterval == 0 {
		o.ReconcileInterval = time.Second
	}
	if o.BarrierInterval == 0 {
		o.BarrierInterval = 10 * time.Second
	}
	if o.HolderTimeout == 0 {
		o.HolderTimeout = time.Minute
	}
	if o.WatermarkInterval == 0 {
		o.WatermarkInterval = time.Second
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.Network == nil {
		o.Network = mesh.OS()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.Clock = clock.Or(o.Clock)
	return errors.Join(errs...)
}

func describeIdentity(id mesh.Identity) string {
	if id.Agent {
		return fmt.Sprintf("agent %s of service %s", id.Name, id.Service)
	}
	return fmt.Sprintf("node %s at site %s", id.Name, id.Site)
}

// Node is one lifeboat daemon: gossip membership, the QUIC endpoint, the
// Raft catalog and the admin API.
type Node struct {
	opts Options
	log  *slog.Logger

	ep       *mesh.Endpoint
	gossip   *mesh.Gossip
	events   chan mesh.Event
	stores   *raftstore.Stores
	fsm      *catalog.FSM
	quicAddr string // advertised

	rn raftNode

	adminLn   net.Listener
	adminSrv  *admin.Server // nil without an admin address
	recovery  *recovery.Engine
	policy    *policy.Engine
	audit     *audit.Recorder
	hookCred  *syscall.Credential   // the hooks user's; nil = the node's own
	raftState *membership.RaftState // whether Raft has state, and the gossip says so
	members   *membership.Engine

	store    *blockstore.Store // nil on a witness
	space    *ingest.Space     // the disk space guard; nil on a witness
	ingester *ingest.Engine    // agents' ingest streams and barriers
	svcs     services
	marks    *watermark.Queue // the newest points, not yet in the catalog
	repl     *replicate.Engine
	// logs: failures that repeat (issue 14 item 6) are logged once at
	// WARN with the hint, then counted; keys start with what failed
	// ("replicate/SERVICE/SITE", "tier/SERVICE", ...).
	logs    *logpolicy.Repeats
	tiers   *tiers.Engine
	life    *lifecycle.Engine
	metrics *metrics.Metrics

	leaving  atomic.Bool // node leave accepted (leave.go)
	leaveReq chan string // who asked; Run's leaveWhenAsked carries it out
}

// New opens the node's state and sockets. Run starts it.
func New(opts Options) (_ *Node, err error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	n := &Node{
		opts:     opts,
		log:      opts.Logger.With("node", opts.Name, "site", opts.Site),
		fsm:      catalog.NewFSM(),
		events:   make(chan mesh.Event, 256),
		leaveReq: make(chan string, 1),
	}
	n.logs = logpolicy.New(logpolicy.Options{Log: n.log, Now: opts.Clock.Now})
	n.metrics = metrics.New(metrics.Sources{Catalog: n.fsm, Now: opts.Clock.Now, Links: func() []throttle.Stats {
		if n.repl == nil {
			return nil
		}
		return n.repl.LinkStats()
	}, Space: func() *api.SpaceStatus {
		if n.space == nil {
			return nil
		}
		return n.space.Status()
	}})
	n.audit = audit.New(audit.Options{Node: opts.Name, Clock: opts.Clock, Logger: n.log,
		Propose: func(ctx context.Context, es []AuditEntry) error {
			return n.Apply(ctx, &Command{Op: catalog.OpAudit, Audit: es})
		}})
	if opts.HooksUser != "" {
		if n.hookCred, err = lookupCred(opts.HooksUser); err != nil {
			return nil, err
		}
	}
	var closers []func()
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
		}
	}()
	if err := os.MkdirAll(opts.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	if err := checkLeft(opts.DataDir, opts.ResetRaft); err != nil {
		return nil, err
	}
	raftDir := filepath.Join(opts.DataDir, "raft")
	if opts.ResetRaft {
		aside, err := raftstore.Reset(raftDir, opts.Clock.Now())
		if err != nil {
			return nil, err
		}
		if aside != "" {
			n.log.Warn("raft state moved aside; rejoining as a new member", "path", aside)
		}
	}
	n.stores, err = raftstore.Open(raftDir, &slogWriter{n.log})
	if err != nil {
		return nil, err
	}
	closers = append(closers, func() { n.stores.Close() })
	has, err := raft.HasExistingState(n.stores.Bolt, n.stores.Bolt, n.stores.Snaps)
	if err != nil {
		return nil, &raftstore.RaftStateError{Path: raftDir, Err: err}
	}
	n.raftState = membership.NewRaftState(has)
	if !has {
		n.log.Info("no raft state; this node joins the cluster as a new member", "path", raftDir)
	}

	if opts.Role != RoleWitness {
		lockFor := func(p blockstore.Point) time.Time { return lifecycle.LockFor(n.fsm.Catalog(), opts.Site, p) }
		n.store, err = openStore(filepath.Join(opts.DataDir, "store"), opts.Creds, opts.KEK, lockFor, n.log)
		if err != nil {
			return nil, err
		}
		closers = append(closers, func() { n.store.Close() })
	}

	pc, err := opts.Network.ListenPacket(opts.QUIC)
	if err != nil {
		return nil, fmt.Errorf("listen QUIC on %s: %w", opts.QUIC, err)
	}
	closers = append(closers, func() { pc.Close() })
	n.ep, err = mesh.NewEndpoint(mesh.EndpointOptions{Creds: opts.Creds, Conn: pc, Logger: n.log})
	if err != nil {
		return nil, err
	}
	closers = append(closers, func() { n.ep.Close() })

	if opts.Admin != "" {
		n.adminLn, err = net.Listen("tcp", opts.Admin)
		if err != nil {
			return nil, fmt.Errorf("listen admin API on %s: %w", opts.Admin, err)
		}
		closers = append(closers, func() { n.adminLn.Close() })
	}

	n.gossip, err = mesh.StartGossip(mesh.GossipOptions{
		Name:      opts.Name,
		Meta:      n.meta(""),
		Bind:      opts.Gossip,
		Advertise: advertiseAddr(opts.Advertise, opts.Gossip),
		Key:       opts.Creds.GossipKey,
		Network:   opts.Network,
		Profile:   opts.GossipProfile,
		Events:    n.events,
		Logger:    n.log,
	})
	if err != nil {
		return nil, err
	}
	closers = append(closers, func() { n.gossip.Shutdown() })
	n.quicAddr = n.advertisedQUIC()
	if err := n.gossip.UpdateMeta(n.meta(n.quicAddr)); err != nil {
		return nil, err
	}
	n.marks = watermark.New(watermark.Options{Node: opts.Name, Site: opts.Site, Propose: n.Apply, Interval: opts.WatermarkInterval, Clock: opts.Clock, Logs: n.logs})
	if n.store != nil {
		// The block store's file system, and the data dir's if another
		// (issue 15 item 5; node doc.go, "Disk space").
		n.space = ingest.NewSpace(ingest.SpaceOptions{Name: opts.Name, Site: opts.Site, Paths: []string{n.store.Dir(), opts.DataDir},
			Catalog: n.fsm, Clock: opts.Clock, Logs: n.logs, Logger: n.log})
	}
	n.ingester = ingest.New(ingest.Options{Space: n.space, Name: opts.Name, Site: opts.Site, Store: n.store, Catalog: n.fsm, Accept: n.ep.Accept,
		Note: n.marks.Note, Mark: n.marks.Mark, Fetching: func(service string) (time.Time, bool) { return n.repl.Fetching(service) }, BarrierInterval: opts.BarrierInterval, Logs: n.logs, Logger: n.log, Clock: opts.Clock})
	n.svcs = services{n.ingester}
	if err := n.ingester.Load(context.Background()); err != nil {
		return nil, fmt.Errorf("read points: %w", err)
	}
	n.rn.opts, n.rn.log, n.rn.ep, n.rn.fsm, n.rn.stores, n.rn.addr = &n.opts, n.log, n.ep, n.fsm, n.stores, n.quicAddr
	if err := n.rn.start(); err != nil {
		return nil, err
	}
	n.tiers = tiers.New(tiers.Options{Name: opts.Name, Site: opts.Site, DataDir: opts.DataDir, Store: n.store, Catalog: n.fsm,
		Services: n.svcs.names, Newest: func(service string) *blockstore.Point { p, _ := n.svcs.get(service).newest(); return p },
		NoteTier: func(service string, fn func(*Watermark)) {
			newest, _ := n.svcs.get(service).newest()
			n.marks.NoteTier(service, newest, fn)
		}, Logs: n.logs, Logger: n.log, Clock: opts.Clock,
		StandbyApplied: n.metrics.StandbyApplied, Exports: n.metrics.Exports, Errors: n.metrics.TierErrors})
	var lifeStore lifecycle.Store // a nil *Store would not be a nil interface
	if n.store != nil {
		lifeStore = n.store
	}
	n.life = lifecycle.New(lifecycle.Options{Site: opts.Site, Store: lifeStore, Catalog: n.fsm, Clock: opts.Clock, Logger: n.log,
		Logs: n.logs, Every: opts.ThinEvery, GCEvery: opts.GCEvery, GCRate: opts.GCRate})
	n.policy = policy.New(policy.Options{Catalog: n.fsm, Propose: n.Apply, Members: n.gossip.Members, Clock: opts.Clock,
		Note: admin.Note, Logger: n.log})
	n.recovery = recovery.New(recovery.Options{Name: opts.Name, Site: opts.Site, DataDir: opts.DataDir, Store: n.store,
		Catalog: n.fsm, Propose: n.Apply, Quorum: n.rn.hasQuorum, RecoverRaft: n.RecoverRaft,
		Dial: n.ep.Dial, Members: n.gossip.Members, Held: heldPoints{&n.svcs},
		Stop:    func(service string, epoch uint64) { n.ingester.Stop(service, epoch) },
		Standby: standbyImages{n}, HooksUser: opts.HooksUser, HookCred: n.hookCred, Clock: opts.Clock, Logger: n.log})
	n.repl = replicate.New(replicate.Options{Name: opts.Name, Site: opts.Site, Clock: opts.Clock, HolderTimeout: opts.HolderTimeout,
		Store: n.store, Catalog: n.fsm, Propose: n.Apply, Dial: n.ep.Dial, Held: heldPoints{&n.svcs},
		CheckBranches: n.recovery.CheckBranches, BranchCheckDue: n.recovery.BranchCheckDue,
		Arrived: n.tiers.Arrived, Note: n.marks.Note, Space: n.spaceFor, Logs: n.logs, Logger: n.log,
		Sent: n.metrics.ReplSent, Logical: n.metrics.ReplLogical, Dedup: n.metrics.ReplDedup, CompressSaved: n.metrics.ReplCompressSaved,
		Points: n.metrics.ReplPoints, Errors: n.metrics.ReplErrors, Received: n.metrics.ReplReceived})
	n.members = membership.New(membership.Options{Name: opts.Name, QUIC: n.quicAddr, Join: opts.Join,
		BootstrapExpect: opts.BootstrapExpect, DeadNodeTimeout: opts.DeadNodeTimeout, HolderTimeout: opts.HolderTimeout,
		ReconcileInterval: opts.ReconcileInterval, ReconnectInterval: opts.ReconnectInterval,
		Raft: n.rn.get, Gossip: n.gossip, Events: n.events, Catalog: n.fsm, State: n.raftState,
		Meta: func() mesh.Meta { return n.meta(n.quicAddr) }, VerifyPeer: n.verifyPeer, LastIndex: n.peerLastIndex,
		Clock: opts.Clock, Logs: n.logs, Logger: n.log})
	if opts.Admin != "" {
		n.adminSrv = admin.New(admin.Options{Name: opts.Name, Creds: opts.Creds, Backend: adminBackend{n},
			Store: n.store, Audit: n.audit, Metrics: n.metrics.Handler(), Lifecycle: n.lifeAPI(), Propose: n.Apply, ChoosePoint: n.recovery.ChoosePoint, Logger: n.log})
	}
	return n, nil
}

// lifeAPI is the lifecycle engine for the admin API; nil on a witness.
func (n *Node) lifeAPI() *lifecycle.Engine {
	if n.store == nil {
		return nil
	}
	return n.life
}

// spaceFor refuses received replication points of service while the disk
// is too full, as agents' points are (node doc.go, "Disk space").
func (n *Node) spaceFor(service string) error {
	if n.space == nil {
		return nil
	}
	return n.space.Check(service)
}

// advertiseAddr puts host on bind's port, or returns "" without a host.
func advertiseAddr(host, bind string) string {
	if host == "" {
		return ""
	}
	_, port, err := net.SplitHostPort(bind)
	if err != nil {
		return ""
	}
	return net.JoinHostPort(host, port)
}

// advertisedQUIC is the QUIC address peers dial: the bound port on the
// advertised host, or on the host gossip advertises when bound to any.
func (n *Node) advertisedQUIC() string {
	host, port, _ := net.SplitHostPort(n.ep.Addr().String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = n.opts.Advertise
		if host == "" {
			host, _, _ = net.SplitHostPort(n.gossip.Local().Addr)
		}
	}
	return net.JoinHostPort(host, port)
}

func (n *Node) meta(quic string) mesh.Meta {
	admin := ""
	if n.adminLn != nil {
		admin = n.adminLn.Addr().String()
	}
	return mesh.Meta{Site: n.opts.Site, QUIC: quic, Admin: admin, Role: n.opts.Role, Raft: n.raftState.Has(),
		Encrypted: n.store != nil && n.store.Encrypted()}
}

// Name returns the node's name.
func (n *Node) Name() mesh.NodeID { return n.opts.Name }

// GossipAddr returns the address the gossip layer listens on.
func (n *Node) GossipAddr() string { return n.gossip.Addr() }

// QUICAddr returns the advertised QUIC address.
func (n *Node) QUICAddr() string { return n.quicAddr }

// AdminAddr returns the admin API's address, or "" without one.
func (n *Node) AdminAddr() string {
	if n.adminLn == nil {
		return ""
	}
	return n.adminLn.Addr().String()
}

// Run joins the cluster and serves until ctx ends (or the node left the
// cluster: node leave), then shuts the node down without leaving the
// cluster (a restart keeps the node's place; with AnnounceStop peers hear
// of the stop at once).
func (n *Node) Run(ctx context.Context) error {
	defer n.shutdown()
	ctx, stop := context.WithCancel(ctx) // node leave ends the node (leave.go)
	defer stop()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { n.leaveWhenAsked(ctx, stop); return nil })
	g.Go(func() error { return n.members.Run(ctx) })
	g.Go(func() error { return n.serveForwarded(ctx) })
	g.Go(func() error { return n.ingester.Run(ctx) })
	g.Go(func() error { return n.marks.Run(ctx) })
	g.Go(func() error {
		return streams.Serve(ctx, streams.Options{Accept: n.ep.Accept, Logs: n.logs, Logger: n.log}, mesh.KindBlocks, "replication", n.repl.Receive)
	})
	g.Go(func() error { return n.repl.Run(ctx) })
	g.Go(func() error { return n.tiers.Run(ctx) })
	g.Go(func() error { return n.life.Run(ctx) })
	g.Go(func() error { return n.recovery.Run(ctx) }) // removes failover images after failback
	g.Go(func() error { return n.audit.Run(ctx) })
	g.Go(func() error { n.revocationLoop(ctx); return nil })
	if n.adminLn != nil {
		g.Go(func() error { return n.adminSrv.Serve(ctx, n.adminLn) })
	}
	n.log.Info("node running", "quic", n.quicAddr, "gossip", n.gossip.Addr(), "admin", n.AdminAddr())
	err := g.Wait()
	if ctx.Err() != nil && err == nil {
		return nil
	}
	return err
}

// Leave announces a graceful departure: the leader removes this node from
// Raft at once instead of waiting for the dead timeout.
func (n *Node) Leave(timeout time.Duration) error {
	return n.gossip.Leave(timeout)
}

func (n *Node) shutdown() {
	if n.opts.AnnounceStop && !n.leaving.Load() {
		if err := n.gossip.Stop(2 * time.Second); err != nil {
			n.log.Warn("announce the stop to the gossip", "err", err)
		}
	}
	if err := n.rn.get().Shutdown().Error(); err != nil {
		n.log.Warn("raft shutdown", "err", err)
	}
	n.gossip.Shutdown()
	n.ep.Close()
	if err := n.stores.Close(); err != nil {
		n.log.Warn("close raft log", "err", err)
	}
	if n.store != nil {
		if err := n.store.Close(); err != nil {
			n.log.Warn("close block store", "err", err)
		}
	}
	if n.adminLn != nil {
		n.adminLn.Close()
	}
	n.log.Info("node stopped")
}

// slogWriter adapts a logger to the io.Writer that raft's snapshot store
// wants.
type slogWriter struct{ log *slog.Logger }

func (w *slogWriter) Write(p []byte) (int, error) {
	w.log.Debug(string(p))
	return len(p), nil
}

// lookupCred returns the uid and gid hooks run as for a user name.
func lookupCred(name string) (*syscall.Credential, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("hooks user %q: %w", name, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("hooks user %q: uid %q gid %q are not numbers", name, u.Uid, u.Gid)
	}
	// No supplementary groups: the node's (root's) must not pass on.
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}
