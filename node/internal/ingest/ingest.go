// Package ingest is the node's side of the ingest protocol (mesh doc.go):
// agents ship the blocks of their service's volumes; the engine verifies
// every block against its ID, stores it, and commits consistency points
// into the block store, one group per service, volumes named
// SERVICE/VOLUME. It fences the writes of a service that runs at another
// site or is stopped for a planned failover, redirects agents to their
// service's holder, and composes points consistent across a service's
// agents (barrier.go). It judges each committed point by the ransomware
// signal (suspect.go). It never proposes to the catalog: new points reach
// it through Note, suspect marks through Mark (the watermark queue).
package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/internal/clock"
	"github.com/lifeboat-dr/lifeboat/internal/logpolicy"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/blockframe"
	"github.com/lifeboat-dr/lifeboat/node/internal/streams"
)

// maxPendingChanges bounds the map changes an ingest stream may hold
// before it commits: about 40 bytes each.
const maxPendingChanges = 4 << 20

// Options configure an Engine.
type Options struct {
	Name    mesh.NodeID
	Site    mesh.Site
	Store   *blockstore.Store // nil on a witness: agents are refused
	Catalog interface{ Catalog() *catalog.Catalog }
	// Accept returns the next stream of a kind (mesh.Endpoint.Accept).
	Accept func(ctx context.Context, kind mesh.StreamKind) (*mesh.Stream, error)
	// Note queues a committed point for the catalog's watermarks.
	Note func(blockstore.Point)
	// Fetching reports whether this node, having taken over service, is
	// still fetching its newest point from a copy, and since when; nil =
	// never.
	Fetching        func(service string) (since time.Time, ok bool)
	BarrierInterval time.Duration // how often services with several agents get a consistent point; 0 = 10s
	// Mark queues a point mark for the catalog (op marks): the ransomware
	// signal's suspect points (suspect.go). nil = none are recorded.
	Mark func(catalog.PointMark)
	// Space refuses new points while the disk is nearly full (space.go);
	// nil = never. Run runs its ticker.
	Space  *Space
	Logs   *logpolicy.Repeats // nil = its own
	Logger *slog.Logger       // nil = slog.Default()
	Clock  clock.Clock        // nil = the real clock
}

// Engine serves agents' ingest streams. Its methods are safe for
// concurrent use.
type Engine struct {
	o     Options
	log   *slog.Logger
	svcs  Services
	bars  barriers
	stops stopMarks // services stopped here for a planned failover
	det   *Detector // the volumes' baselines of the ransomware signal
}

// New returns an Engine; Load reads the store's points, Run serves.
func New(o Options) *Engine {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.Clock = clock.Or(o.Clock)
	if o.Logs == nil {
		o.Logs = logpolicy.New(logpolicy.Options{Log: o.Logger, Now: o.Clock.Now})
	}
	if o.BarrierInterval == 0 {
		o.BarrierInterval = 10 * time.Second
	}
	if o.Fetching == nil {
		o.Fetching = func(string) (time.Time, bool) { return time.Time{}, false }
	}
	if o.Note == nil {
		o.Note = func(blockstore.Point) {}
	}
	if o.Mark == nil {
		o.Mark = func(catalog.PointMark) {}
	}
	return &Engine{o: o, log: o.Logger, det: NewDetector(0)}
}

// Load reads the newest point per service from the store (none on a
// witness). Call it before Run.
func (e *Engine) Load(ctx context.Context) error {
	if e.o.Store == nil {
		return nil
	}
	return e.svcs.Load(ctx, e.o.Store)
}

// Service returns service name's state, creating it empty.
func (e *Engine) Service(name string) *State { return e.svcs.Get(name) }

// Names returns the services with state on this node, sorted.
func (e *Engine) Names() []string { return e.svcs.Names() }

// Run serves ingest streams and runs the barriers until ctx ends or the
// endpoint closes; it returns after every session has ended.
func (e *Engine) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return streams.Serve(ctx, streams.Options{Accept: e.o.Accept, Logs: e.o.Logs, Logger: e.log}, mesh.KindIngest, "ingest", e.ingest)
	})
	g.Go(func() error { e.barrierLoop(ctx); return nil })
	if e.o.Space != nil {
		g.Go(func() error { return e.o.Space.Run(ctx) })
	}
	return g.Wait()
}

// session is one agent's stream.
type session struct {
	e       *Engine
	svc     *config.Service
	state   *State
	agent   string
	volumes map[string]config.Volume // by volume name
	pending map[string]map[int64]blockstore.ID
	count   int
	dec     *zstd.Decoder
	// incompressible counts the blocks that did not compress since the
	// last Changes frame (an agent sends a volume's blocks, then its
	// changes); volIncompressible sums them per volume until the commit.
	incompressible    int64
	volIncompressible map[string]int64
}

func (e *Engine) ingest(ctx context.Context, s *mesh.Stream) error {
	peer := s.Peer()
	fr := mesh.NewFrameReader(s, mesh.KindIngest.MaxFrame())
	t, p, err := fr.Next()
	if err != nil {
		return fmt.Errorf("read hello: %w", err)
	}
	if !peer.Agent {
		return streams.Refuse(mesh.CodeForbidden, "ingest streams are for agent certificates, refused for %s", peer)
	}
	if e.o.Store == nil {
		return streams.Refuse(mesh.CodeWrongNode, "node %s is a witness and holds no data: point the agent at a data node of site %s", e.o.Name, e.o.Site)
	}
	if t == mesh.FrameBarrierJoin && peer.Agent {
		return e.joinBarrier(ctx, s, fr, p)
	}
	if t != mesh.FrameHello {
		return streams.Refuse(mesh.CodeBadRequest, "first frame is type %d, want hello", t)
	}
	h, err := mesh.DecodeHello(p)
	if err != nil {
		return streams.Refuse(mesh.CodeBadRequest, "%v", err)
	}
	if h.Service != peer.Service || h.Agent != string(peer.Name) {
		return streams.Refuse(mesh.CodeForbidden, "agent certificate is for %s of service %s, not %s of service %s", peer.Name, peer.Service, h.Agent, h.Service)
	}
	if redirect, err := e.holder(h.Service); err != nil {
		return err
	} else if redirect != nil {
		b, _ := json.Marshal(redirect)
		return mesh.WriteFrame(s, mesh.FrameWelcome, b)
	}
	sess, welcome, err := e.openSession(h)
	if err != nil {
		return err
	}
	defer sess.dec.Close()
	// Refused before the agent sends a block: a node short of space takes
	// nothing of the service (issue 15 item 5).
	if err := e.spaceFor(h.Service); err != nil {
		return err
	}
	if err := e.backfillScope(ctx, sess); err != nil {
		return streams.Refuse(mesh.CodeUnavailable, "service %s: %v", h.Service, err)
	}
	b, _ := json.Marshal(welcome)
	if err := mesh.WriteFrame(s, mesh.FrameWelcome, b); err != nil {
		return err
	}
	e.log.Info("agent connected", "peer", h.Agent, "service", h.Service, "volumes", len(h.Volumes), "seq", welcome.Seq)
	for {
		t, p, err := fr.Next()
		if err != nil {
			return err
		}
		switch t {
		case mesh.FrameOffer:
			// Only the service's own blocks count as held: an agent
			// learns nothing of other services' blocks (issue 13).
			want, err := blockframe.Want(ctx, e.o.Store, h.Service, p)
			if err != nil {
				return err
			}
			if err := mesh.WriteFrame(s, mesh.FrameWant, want); err != nil {
				return err
			}
		case mesh.FrameBlocks:
			if err := sess.blocks(ctx, p); err != nil {
				return err
			}
		case mesh.FrameChanges:
			if err := sess.changes(ctx, p); err != nil {
				return err
			}
		case mesh.FrameCommit:
			c, err := mesh.DecodeCommit(p)
			if err != nil {
				return streams.Refuse(mesh.CodeBadRequest, "%v", err)
			}
			done, err := sess.commit(ctx, c)
			if err != nil {
				return err
			}
			b, _ := json.Marshal(done)
			if err := mesh.WriteFrame(s, mesh.FrameCommitted, b); err != nil {
				return err
			}
		default:
			return streams.Refuse(mesh.CodeBadRequest, "unexpected frame type %d", t)
		}
	}
}

// fenced refuses the writes of a service that failed over to another
// site (sessions opened before the failover end at their next commit), and
// holds them back while the service is stopped for a planned failover.
func (e *Engine) fenced(service string) error {
	var err error
	epoch := uint64(1)
	if st := e.o.Catalog.Catalog().Services[service]; st != nil {
		epoch = st.Epoch
		if st.Active != "" && st.Active != string(e.o.Site) {
			err = streams.Refuse(mesh.CodeFenced, "fenced: service %s failed over to site %s (epoch %d); this node at %s takes no more writes for it", service, st.Active, st.Epoch, e.o.Site)
		}
	}
	if err == nil && e.stops.holds(service, epoch, e.o.Clock.Now()) {
		err = streams.Refuse(mesh.CodeHeld, "service %s is stopped here for a planned failover: its writes wait", service)
	}
	return err
}

// holder checks that this node holds service at its site. When another
// node does, it returns the Welcome that redirects the agent there.
func (e *Engine) holder(service string) (*mesh.Welcome, error) {
	cat := e.o.Catalog.Catalog()
	if cat.Policy == nil || cat.Policy.Cluster == nil {
		return nil, nil // openSession explains
	}
	if svc := cat.Service(service); svc == nil || svc.Primary != string(e.o.Site) {
		return nil, nil // openSession explains
	}
	holder := cat.Holder(service, string(e.o.Site))
	switch holder {
	case e.o.Name:
		if since, ok := e.o.Fetching(service); ok {
			return nil, streams.Refuse(mesh.CodeUnavailable, "node %s took over service %s and is fetching its newest point from a copy (for %s): retry shortly", e.o.Name, service, time.Since(since).Round(time.Second))
		}
		return nil, nil
	case "":
		return nil, streams.Refuse(mesh.CodeUnavailable, "service %s has no holder at site %s yet: the leader places it when a data node of the site is alive", service, e.o.Site)
	}
	ni, ok := cat.Nodes[holder]
	if !ok || ni.QUIC == "" {
		return nil, streams.Refuse(mesh.CodeUnavailable, "service %s is held by %s, whose address is unknown", service, holder)
	}
	return &mesh.Welcome{Node: string(holder), Redirect: ni.QUIC}, nil
}

// openSession checks a Hello against the applied policy.
func (e *Engine) openSession(h *mesh.Hello) (*session, *mesh.Welcome, error) {
	cat := e.o.Catalog.Catalog()
	pol := cat.Policy
	if pol == nil || pol.Cluster == nil {
		return nil, nil, streams.Refuse(mesh.CodeUnavailable, "no cluster policy applied yet: `lifeboat policy apply FILE` must name service %s", h.Service)
	}
	svc := cat.Service(h.Service)
	if svc == nil {
		return nil, nil, streams.Refuse(mesh.CodeNotFound, "service %s is not in the cluster policy (version %d)", h.Service, pol.Version)
	}
	if svc.Primary != string(e.o.Site) {
		if st := cat.Services[h.Service]; st != nil && st.Active != "" {
			return nil, nil, streams.Refuse(mesh.CodeFenced, "fenced: service %s failed over to site %s (epoch %d); this node at %s takes no more writes for it", h.Service, svc.Primary, st.Epoch, e.o.Site)
		}
		return nil, nil, streams.Refuse(mesh.CodeWrongNode, "service %s runs at site %s; this node is at %s: point the agent at a node of site %s", h.Service, svc.Primary, e.o.Site, svc.Primary)
	}
	sess := &session{e: e, svc: svc, state: e.svcs.Get(h.Service), agent: h.Agent,
		volumes: map[string]config.Volume{}, pending: map[string]map[int64]blockstore.ID{}, volIncompressible: map[string]int64{}}
	w := &mesh.Welcome{Node: string(e.o.Name)}
	for _, hv := range h.Volumes {
		_, v := svc.Volume(hv.Name)
		if v == nil {
			return nil, nil, streams.Refuse(mesh.CodeNotFound, "volume %s is not a volume of service %s in the policy", hv.Name, h.Service)
		}
		if int64(v.Size) != hv.Size {
			return nil, nil, streams.Refuse(mesh.CodeBadRequest, "volume %s/%s: the agent has %d bytes, the policy says %s (%d bytes)", h.Service, hv.Name, hv.Size, v.Size, int64(v.Size))
		}
		sess.volumes[hv.Name] = *v
		w.Volumes = append(w.Volumes, mesh.WelcomeVolume{Name: v.Name, Size: int64(v.Size), BlockSize: int(v.BlockSize)})
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(2*mesh.MaxBlockSize))
	if err != nil {
		return nil, nil, err
	}
	sess.dec = dec
	st := sess.state
	st.mu.Lock()
	w.Seq = st.seqs[h.Agent]
	if st.latest != nil {
		w.Point, w.PointTime = st.latest.ID, st.latest.Time
	}
	st.mu.Unlock()
	return sess, w, nil
}

// backfillScope records, once per service and store, the blocks of the
// service's newest point as the service's own: a store written before
// scopes existed (issue 13) answers its agents without a full resend.
func (e *Engine) backfillScope(ctx context.Context, sess *session) error {
	store := e.o.Store
	service := sess.svc.Name
	done, err := store.Scopes().Marked(service)
	if err != nil || done {
		return err
	}
	sess.state.mu.Lock()
	p := sess.state.latest
	sess.state.mu.Unlock()
	if p != nil {
		for _, v := range p.Volumes {
			if err := store.WalkLeaves(ctx, v, func(_ int64, ids []blockstore.ID) error {
				return store.Scopes().Add(ctx, service, ids)
			}); err != nil {
				return fmt.Errorf("record the blocks of volume %s: %w", v.Name, err)
			}
		}
		e.log.Info("service's blocks recorded as its own", "service", service, "point", p.ID)
	}
	return store.Scopes().Mark(service)
}

// spaceFor refuses new points of service while the disk is too full.
func (e *Engine) spaceFor(service string) error {
	if e.o.Space == nil {
		return nil
	}
	return e.o.Space.Check(service)
}

// blocks stores a Blocks frame after checking each block against its ID.
func (s *session) blocks(ctx context.Context, p []byte) error {
	if err := s.e.spaceFor(s.svc.Name); err != nil {
		return err
	}
	_, n, err := blockframe.PutCounting(ctx, s.e.o.Store, s.svc.Name, s.dec, p)
	s.incompressible += int64(n)
	return err
}

// changes records a volume's map changes until the next commit. Every
// block a change names must be the service's: sent by an agent of it, or
// held for it already. Anything else is another service's block (or none)
// and the stream is refused.
func (s *session) changes(ctx context.Context, p []byte) error {
	name, cs, err := mesh.DecodeChanges(p)
	if err != nil {
		return streams.Refuse(mesh.CodeBadRequest, "%v", err)
	}
	v, ok := s.volumes[name]
	if !ok {
		return streams.Refuse(mesh.CodeForbidden, "volume %s was not in this stream's hello", name)
	}
	blocks := (int64(v.Size) + int64(v.BlockSize) - 1) / int64(v.BlockSize)
	s.volIncompressible[name] += s.incompressible
	s.incompressible = 0
	m := s.pending[name]
	if m == nil {
		m = map[int64]blockstore.ID{}
		s.pending[name] = m
	}
	ids := make([]blockstore.ID, len(cs))
	for i, c := range cs {
		ids[i] = c.ID
	}
	in, err := s.e.o.Store.Scopes().In(ctx, s.svc.Name, ids)
	if err != nil {
		return streams.Refuse(mesh.CodeUnavailable, "look up changed blocks: %v", err)
	}
	for i, c := range cs {
		if !in[i] {
			s.e.log.Warn("ingest refused: a change names a block the service does not hold", "service", s.svc.Name, "peer", s.agent, "volume", name, "block", c.ID.Short())
			return streams.Refuse(mesh.CodeForbidden, "volume %s block %d: block %s was neither sent on this stream nor held for service %s", name, c.Block, c.ID.Short(), s.svc.Name)
		}
	}
	for _, c := range cs {
		if c.Block >= blocks {
			return streams.Refuse(mesh.CodeBadRequest, "volume %s: block %d past the end (%d blocks)", name, c.Block, blocks)
		}
		if _, seen := m[c.Block]; !seen {
			s.count++
		}
		m[c.Block] = c.ID
	}
	if s.count > maxPendingChanges {
		return streams.Refuse(mesh.CodeBadRequest, "more than %d changes without a commit", maxPendingChanges)
	}
	return nil
}

// commit makes a point of the service: the newest state of every volume,
// with this stream's changes applied.
func (s *session) commit(ctx context.Context, c *mesh.Commit) (*mesh.Committed, error) {
	if err := s.e.fenced(s.svc.Name); err != nil {
		return nil, err
	}
	if err := s.e.spaceFor(s.svc.Name); err != nil {
		return nil, err
	}
	st := s.state
	st.mu.Lock()
	defer st.mu.Unlock()
	if c.Seq <= st.seqs[s.agent] {
		// A retry of a point the node already has (the agent missed the
		// answer): nothing to do.
		if len(s.pending) == 0 && st.latest != nil {
			return &mesh.Committed{Seq: c.Seq, Point: st.latest.ID, Time: st.latest.Time}, nil
		}
		return nil, streams.Refuse(mesh.CodeBadRequest, "commit seq %d is not after %d, the newest committed for %s", c.Seq, st.seqs[s.agent], s.agent)
	}
	store := s.e.o.Store
	states := map[string]blockstore.VolumeState{}
	if st.latest != nil {
		for _, v := range st.latest.Volumes {
			states[v.Name] = v
		}
	}
	fresh := map[string]bool{} // volumes without a point yet: their initial copy
	for name, vol := range s.volumes {
		full := s.svc.Name + "/" + name
		if _, ok := states[full]; !ok {
			states[full] = blockstore.VolumeState{Name: full, Size: int64(vol.Size), BlockSize: int(vol.BlockSize)}
			fresh[full] = true
		}
	}
	var samples []Sample
	for name, m := range s.pending {
		full := s.svc.Name + "/" + name
		samples = append(samples, s.sample(name, len(m), fresh[full]))
		cs := make([]blockstore.Change, 0, len(m))
		var ids []blockstore.ID
		for blk, id := range m {
			cs = append(cs, blockstore.Change{Block: blk, New: id})
			if !id.IsZero() {
				ids = append(ids, id)
			}
		}
		slices.SortFunc(cs, func(a, b blockstore.Change) int { return compareInt(a.Block, b.Block) })
		missing, err := store.Missing(ctx, ids)
		if err != nil {
			return nil, streams.Refuse(mesh.CodeInternal, "check blocks: %v", err)
		}
		if len(missing) > 0 {
			return nil, streams.Refuse(mesh.CodeBadRequest, "volume %s: %d changed blocks were never sent (first %s)", name, len(missing), missing[0].Short())
		}
		nv, err := store.Update(ctx, states[full], cs)
		if err != nil {
			return nil, streams.Refuse(mesh.CodeUnavailable, "update volume %s: %v", full, err)
		}
		states[full] = nv
	}
	for name := range s.volumes {
		if _, ok := s.pending[name]; !ok {
			samples = append(samples, s.sample(name, 0, fresh[s.svc.Name+"/"+name]))
		}
	}
	pt := blockstore.Point{Group: s.svc.Name, Name: PointName(s.agent, c.Seq), Time: c.Time}
	for _, v := range states {
		pt.Volumes = append(pt.Volumes, v)
	}
	slices.SortFunc(pt.Volumes, func(a, b blockstore.VolumeState) int { return strings.Compare(a.Name, b.Name) })
	if pt.Time.IsZero() {
		// The wall clock, as the agents' point times are.
		pt.Time = time.Now()
	}
	committed, err := store.CommitPoint(ctx, pt)
	if err != nil {
		return nil, streams.Refuse(mesh.CodeUnavailable, "commit point: %v", err)
	}
	st.setLatest(&committed)
	st.seqs[s.agent] = c.Seq
	var mine []blockstore.VolumeState
	for _, v := range committed.Volumes {
		if _, ok := s.volumes[strings.TrimPrefix(v.Name, s.svc.Name+"/")]; ok {
			mine = append(mine, v)
		}
	}
	st.agentVolumes[s.agent] = mine
	s.barrierCommitted(ctx, c.Seq)
	s.pending = map[string]map[int64]blockstore.ID{}
	s.volIncompressible = map[string]int64{}
	s.count = 0
	s.judge(committed, samples)
	s.e.o.Note(committed)
	return &mesh.Committed{Seq: c.Seq, Point: committed.ID, Time: committed.Time}, nil
}

func compareInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
