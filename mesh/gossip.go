package mesh

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// MemberState is a member's state as this node last learned it.
type MemberState string

// Member states.
const (
	StateAlive   MemberState = "alive"
	StateSuspect MemberState = "suspect"
	StateDead    MemberState = "dead"
	StateLeft    MemberState = "left"
)

// Member is one node of the cluster as gossip sees it.
type Member struct {
	Name  NodeID
	Addr  string // gossip host:port
	State MemberState
	Meta  Meta
	Since time.Time // when this node saw State begin
}

// EventKind says what happened to a member.
type EventKind int

// Event kinds. memberlist reports no suspicion, so EventSuspect is never
// sent by this version; it is kept for callers that switch on all kinds.
const (
	EventJoin EventKind = iota + 1
	EventUpdate
	EventSuspect
	EventDead
	EventLeave
)

func (k EventKind) String() string {
	switch k {
	case EventJoin:
		return "join"
	case EventUpdate:
		return "update"
	case EventSuspect:
		return "suspect"
	case EventDead:
		return "dead"
	case EventLeave:
		return "leave"
	}
	return "event(" + strconv.Itoa(int(k)) + ")"
}

// Event is a change of a member.
type Event struct {
	Kind   EventKind
	Member Member
}

// Gossip profiles.
const (
	ProfileLAN  = "lan"
	ProfileWAN  = "wan"
	ProfileTest = "test"
)

// GossipOptions configure StartGossip.
type GossipOptions struct {
	Name      NodeID
	Meta      Meta   // Role "" means RoleNode
	Bind      string // host:port for UDP and TCP; port 0 picks one (see Addr)
	Advertise string // host:port others use; empty = the bound address
	Key       []byte // gossip key, 32 bytes (AES-256-GCM); required
	Network   Network
	// Profile tunes failure detection: "wan" (default: between sites, as
	// config files and the CLI default too), "lan", or "test" (a stopped
	// member is dead within ~2-3 s).
	Profile string
	// Events receives membership changes if set. A full channel never
	// blocks gossip: the event is dropped and counted (logged); Members
	// stays authoritative.
	Events chan<- Event
	Logger *slog.Logger
}

// Gossip is this node's membership in the cluster (memberlist). Safe for
// concurrent use.
type Gossip struct {
	ml      *memberlist.Memberlist
	log     *slog.Logger
	name    NodeID
	events  chan<- Event
	dropped atomic.Int64

	mu      sync.Mutex
	meta    Meta
	leaving bool
	members map[NodeID]*Member
	down    bool
}

// StartGossip starts memberlist on opts.Bind. Join other members with Join.
func StartGossip(opts GossipOptions) (*Gossip, error) {
	if !ValidName(string(opts.Name)) {
		return nil, fmt.Errorf("start gossip: name %q: want 1-64 characters from [A-Za-z0-9._-]", opts.Name)
	}
	if len(opts.Key) != 32 {
		return nil, fmt.Errorf("start gossip: key is %d bytes, want 32", len(opts.Key))
	}
	if opts.Meta.Role == "" {
		opts.Meta.Role = RoleNode
	}
	if _, err := opts.Meta.encode(false); err != nil {
		return nil, fmt.Errorf("start gossip: %w", err)
	}
	if opts.Network == nil {
		opts.Network = OS()
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	var conf *memberlist.Config
	switch opts.Profile {
	case ProfileLAN:
		conf = memberlist.DefaultLANConfig()
		conf.DeadNodeReclaimTime = 30 * time.Second
	case "", ProfileWAN:
		conf = memberlist.DefaultWANConfig()
		conf.DeadNodeReclaimTime = 60 * time.Second
	case ProfileTest:
		conf = memberlist.DefaultLocalConfig()
		conf.ProbeInterval = 200 * time.Millisecond
		conf.ProbeTimeout = 100 * time.Millisecond
		conf.SuspicionMult = 2
		conf.SuspicionMaxTimeoutMult = 2
		conf.GossipInterval = 50 * time.Millisecond
		conf.PushPullInterval = time.Second
		conf.TCPTimeout = time.Second
		conf.GossipToTheDeadTime = 5 * time.Second
		conf.DeadNodeReclaimTime = time.Second
	default:
		return nil, fmt.Errorf("start gossip: profile %q: want %q, %q or %q", opts.Profile, ProfileLAN, ProfileWAN, ProfileTest)
	}
	log := opts.Logger.With("node", string(opts.Name))
	tr, err := opts.Network.GossipTransport(opts.Bind)
	if err != nil {
		return nil, fmt.Errorf("start gossip: %w", err)
	}
	g := &Gossip{
		log:     log,
		name:    opts.Name,
		events:  opts.Events,
		meta:    opts.Meta,
		members: make(map[NodeID]*Member),
	}
	conf.Name = string(opts.Name)
	conf.Transport = tr
	conf.SecretKey = opts.Key
	conf.Delegate = (*gossipDelegate)(g)
	conf.Events = (*gossipEvents)(g)
	conf.Logger = StdLogger(log, "memberlist")
	if opts.Advertise != "" {
		host, port, err := splitHostPort(opts.Advertise)
		if err != nil {
			tr.Shutdown()
			return nil, fmt.Errorf("start gossip: advertise: %w", err)
		}
		conf.AdvertiseAddr, conf.AdvertisePort = host, port
	}
	if _, port, err := splitHostPort(opts.Bind); err == nil {
		conf.BindPort = port
	}
	ml, err := memberlist.Create(conf)
	if err != nil {
		tr.Shutdown()
		return nil, fmt.Errorf("start gossip on %s: %w", opts.Bind, err)
	}
	g.ml = ml
	return g, nil
}

// Join contacts the given gossip addresses (host:port) and returns how many
// answered. The error lists each address that failed and why.
func (g *Gossip) Join(addrs []string) (int, error) {
	var errs []error
	n := 0
	for _, a := range addrs {
		k, err := g.ml.Join([]string{a})
		n += k
		if err != nil {
			// memberlist wraps each failure in a multi-line multierror;
			// keep the inner ones (a wrong key reads "no installed keys
			// could decrypt the message").
			if me, ok := err.(interface{ WrappedErrors() []error }); ok && len(me.WrappedErrors()) > 0 {
				err = errors.Join(me.WrappedErrors()...)
			}
			errs = append(errs, fmt.Errorf("join %s: %w", a, err))
		}
	}
	return n, errors.Join(errs...)
}

// Members returns every member seen since start, including dead and left
// ones, sorted by name.
func (g *Gossip) Members() []Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]Member, 0, len(g.members))
	for _, m := range g.members {
		out = append(out, *m)
	}
	slices.SortFunc(out, func(a, b Member) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}

// Member returns the member called name, if seen.
func (g *Gossip) Member(name NodeID) (Member, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	m, ok := g.members[name]
	if !ok {
		return Member{}, false
	}
	return *m, true
}

// Local returns this node as a member.
func (g *Gossip) Local() Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	if m, ok := g.members[g.name]; ok {
		return *m
	}
	return Member{Name: g.name, Addr: g.ml.LocalNode().Address(), State: StateAlive, Meta: g.meta}
}

// Addr returns the gossip address (host:port) others reach this node at.
func (g *Gossip) Addr() string { return g.ml.LocalNode().Address() }

// UpdateMeta publishes new meta and waits (up to 5 s) for the broadcast.
func (g *Gossip) UpdateMeta(m Meta) error {
	if m.Role == "" {
		m.Role = RoleNode
	}
	if _, err := m.encode(false); err != nil {
		return fmt.Errorf("update meta: %w", err)
	}
	g.mu.Lock()
	if g.down {
		g.mu.Unlock()
		return ErrClosed
	}
	g.meta = m
	g.mu.Unlock()
	if err := g.ml.UpdateNode(5 * time.Second); err != nil {
		return fmt.Errorf("update meta: %w", err)
	}
	return nil
}

// Leave tells the cluster this node is leaving (others record it as left,
// not dead) and waits up to timeout for that to be sent. Call Shutdown
// afterwards.
func (g *Gossip) Leave(timeout time.Duration) error {
	g.mu.Lock()
	if g.down {
		g.mu.Unlock()
		return ErrClosed
	}
	announced := g.leaving
	g.mu.Unlock()
	if !announced {
		if err := g.AnnounceLeaving(timeout / 2); err != nil {
			return err
		}
	}
	if err := g.ml.Leave(timeout / 2); err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	g.setState(g.name, StateLeft, nil)
	return nil
}

// AnnounceLeaving publishes that this node is about to leave for good,
// ahead of Leave: the leaving flag rides in the meta so that members can
// tell a leave from a death (memberlist reports both as NotifyLeave), and
// a member that gets the leave message before the meta update takes the
// leave for a death. Announcing early, while the node still works, gives
// the update time to reach every member. It waits up to timeout for the
// broadcast.
func (g *Gossip) AnnounceLeaving(timeout time.Duration) error {
	g.mu.Lock()
	if g.down {
		g.mu.Unlock()
		return ErrClosed
	}
	g.leaving = true
	g.mu.Unlock()
	if err := g.ml.UpdateNode(timeout); err != nil {
		g.log.Warn("leaving flag not confirmed", "err", err)
	}
	return nil
}

// Stop tells the cluster this node stops for now, to come back (a clean
// shutdown, issue 15 item 6): members record it dead at once instead of
// finding out by failed probes, and, unlike after Leave, it keeps its
// place. It waits up to timeout for that to be sent. Call Shutdown
// afterwards.
func (g *Gossip) Stop(timeout time.Duration) error {
	g.mu.Lock()
	down := g.down
	g.mu.Unlock()
	if down {
		return ErrClosed
	}
	if err := g.ml.Leave(timeout); err != nil {
		return fmt.Errorf("stop gossip: %w", err)
	}
	return nil
}

// Shutdown stops gossip without telling anyone (others will see this node
// die unless it left first). Members keeps answering with the last state.
func (g *Gossip) Shutdown() error {
	g.mu.Lock()
	if g.down {
		g.mu.Unlock()
		return nil
	}
	g.down = true
	g.mu.Unlock()
	if err := g.ml.Shutdown(); err != nil {
		return fmt.Errorf("shutdown gossip: %w", err)
	}
	return nil
}

// Dropped returns how many events were dropped because Events was full.
func (g *Gossip) Dropped() int64 { return g.dropped.Load() }

// setState records a member's state from n (nil keeps the known address
// and meta) and emits the matching event.
func (g *Gossip) setState(name NodeID, state MemberState, n *memberlist.Node) {
	g.mu.Lock()
	m, ok := g.members[name]
	if !ok {
		m = &Member{Name: name}
		g.members[name] = m
	}
	kind := EventUpdate
	switch {
	case !ok || (state == StateAlive && m.State != StateAlive && m.State != StateSuspect):
		kind = EventJoin
	case state == StateDead:
		kind = EventDead
	case state == StateLeft:
		kind = EventLeave
	}
	if n != nil {
		m.Addr = net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
		meta, leaving, err := decodeMeta(n.Meta)
		if err != nil {
			g.log.Warn("member meta unreadable", "peer", n.Name, "err", err)
		} else {
			m.Meta = meta
			if state == StateDead && leaving {
				state, kind = StateLeft, EventLeave
			}
		}
	}
	if m.State != state {
		m.Since = time.Now()
	}
	m.State = state
	ev := Event{Kind: kind, Member: *m}
	g.mu.Unlock()
	if g.events == nil {
		return
	}
	select {
	case g.events <- ev:
	default:
		if d := g.dropped.Add(1); d == 1 || d%100 == 0 {
			g.log.Warn("gossip events dropped: channel full", "dropped", d)
		}
	}
}

// gossipDelegate publishes the local meta.
type gossipDelegate Gossip

func (d *gossipDelegate) NodeMeta(limit int) []byte {
	g := (*Gossip)(d)
	g.mu.Lock()
	m, leaving := g.meta, g.leaving
	g.mu.Unlock()
	b, err := m.encode(leaving)
	if err != nil || len(b) > limit {
		// Checked in StartGossip and UpdateMeta; unreachable.
		g.log.Error("local meta does not encode", "err", err, "limit", limit)
		return nil
	}
	return b
}

func (d *gossipDelegate) NotifyMsg([]byte)                           {}
func (d *gossipDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *gossipDelegate) LocalState(join bool) []byte                { return nil }
func (d *gossipDelegate) MergeRemoteState(buf []byte, join bool)     {}

// gossipEvents tracks member states from memberlist's notifications.
type gossipEvents Gossip

func (e *gossipEvents) NotifyJoin(n *memberlist.Node) {
	(*Gossip)(e).setState(NodeID(n.Name), StateAlive, n)
}

func (e *gossipEvents) NotifyUpdate(n *memberlist.Node) {
	(*Gossip)(e).setState(NodeID(n.Name), StateAlive, n)
}

func (e *gossipEvents) NotifyLeave(n *memberlist.Node) {
	(*Gossip)(e).setState(NodeID(n.Name), StateDead, n)
}
