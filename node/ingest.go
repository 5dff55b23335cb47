package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/internal/blockframe"
)

// The node's side of the ingest protocol (mesh doc.go): agents ship the
// blocks of their service's volumes; the node verifies every block against
// its ID, stores it, and commits consistency points into its block store,
// one group per service, volumes named SERVICE/VOLUME.

// maxPendingChanges bounds the map changes an ingest stream may hold
// before it commits: about 40 bytes each.
const maxPendingChanges = 4 << 20

// openStore opens (creating) the node's block store under the cluster's
// dedup key. A store made with another key is refused: its IDs would not
// match what agents and other sites compute.
func openStore(dir string, creds *mesh.Creds, kek *blockstore.KEK, log *slog.Logger) (*blockstore.Store, error) {
	if len(creds.DedupKey) != 32 {
		return nil, fmt.Errorf("the TLS dir holds no dedup.key (32 bytes): reissue the node certificate with `lifeboat ca issue`")
	}
	var key blockstore.Key
	copy(key[:], creds.DedupKey)
	if _, err := os.Stat(filepath.Join(dir, "lifeboat-store.json")); errors.Is(err, os.ErrNotExist) {
		if err := blockstore.Init(dir, blockstore.InitOptions{Key: &key, KEK: kek}); err != nil {
			return nil, fmt.Errorf("create block store: %w", err)
		}
		if kek != nil {
			log.Info("created block store encrypted at rest", "store", dir, "kek", kek.Fingerprint())
		}
	}
	s, err := blockstore.Open(dir, blockstore.Options{Logger: log, KEK: kek})
	if err != nil {
		return nil, err
	}
	if s.DedupKey() != key {
		s.Close()
		return nil, fmt.Errorf("block store %s was made with another dedup key than the cluster's (dedup.key in the TLS dir)", dir)
	}
	if kek != nil && !s.Encrypted() {
		log.Warn("this node has a key-encryption key but its block store is not encrypted: only a new store is created encrypted", "store", dir)
	}
	return s, nil
}

// services tracks, per service, the newest point and each agent's newest
// committed sequence number; one mutex per service orders commits.
type services struct {
	mu  sync.Mutex
	svc map[string]*serviceState
}

type serviceState struct {
	mu      sync.Mutex
	latest  *blockstore.Point
	seqs    map[string]uint64 // by agent
	barrier *pendingBarrier   // released, waiting for the agents' commits
	// agentVolumes: each agent's volumes as of its newest commit.
	agentVolumes map[string][]blockstore.VolumeState
	changed      chan struct{} // closed and replaced when latest changes
}

// setLatest records the service's newest point and wakes its replicators;
// s.mu must be held.
func (s *serviceState) setLatest(p *blockstore.Point) {
	s.latest = p
	close(s.changed)
	s.changed = make(chan struct{})
}

// hold records a point the store holds that did not come from an agent on
// this node (read at start, or replicated here): it becomes the newest if
// it is not older, and its agent's sequence number counts, so that an
// agent shipping here later resumes after it. s.mu must be held.
func (s *serviceState) hold(p *blockstore.Point) {
	if s.latest == nil || !p.Time.Before(s.latest.Time) {
		s.setLatest(p)
	}
	if a, seq, ok := parsePointName(p.Name); ok && seq > s.seqs[a] {
		s.seqs[a] = seq
	}
}

// newest returns the service's newest point (nil = none) and a channel
// closed when it changes.
func (s *serviceState) newest() (*blockstore.Point, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.latest, s.changed
}

func (ss *services) get(name string) *serviceState {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.svc == nil {
		ss.svc = map[string]*serviceState{}
	}
	s := ss.svc[name]
	if s == nil {
		s = &serviceState{seqs: map[string]uint64{}, agentVolumes: map[string][]blockstore.VolumeState{}, changed: make(chan struct{})}
		ss.svc[name] = s
	}
	return s
}

// names returns the services with state on this node.
func (ss *services) names() []string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return slices.Sorted(maps.Keys(ss.svc))
}

// pointName names an ingest point after the agent and its sequence.
func pointName(agent string, seq uint64) string { return agent + "/" + strconv.FormatUint(seq, 10) }

func parsePointName(name string) (agent string, seq uint64, ok bool) {
	a, s, found := strings.Cut(name, "/")
	if !found {
		return "", 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return a, n, err == nil
}

// loadServices reads the newest point per service from the store.
func (n *Node) loadServices(ctx context.Context) error {
	pts, err := n.store.Points(ctx, "")
	if err != nil {
		return err
	}
	for i := range pts {
		p := pts[i]
		if strings.HasPrefix(p.Name, "barrier/") {
			continue // composed from agents' points; never the base of a new one
		}
		s := n.svcs.get(p.Group)
		s.mu.Lock()
		s.hold(&p)
		s.mu.Unlock()
	}
	return nil
}

// refuse returns a refusal sent to the peer as an error frame.
func refuse(code mesh.ErrCode, format string, a ...any) error {
	return blockframe.Refuse(code, format, a...)
}

// refusalHint says what an operator does about a refusal this node sends.
func refusalHint(code mesh.ErrCode) string {
	switch code {
	case mesh.CodeFenced:
		return "the service runs at another site now: stop its servers here, or fail it back"
	case mesh.CodeHeld:
		return "a planned failover is under way: the peer's writes wait until it ends"
	case mesh.CodeWrongNode:
		return "point the peer at a node that holds the service (the message names it)"
	case mesh.CodeForbidden:
		return "check the peer's certificate: its kind, service and site"
	case mesh.CodeNotFound:
		return "check the cluster policy: it must list the service and its volumes"
	case mesh.CodeBadRequest:
		return "the peer sent what this node does not accept; check both run the same version"
	}
	return "the peer retries; if it lasts, check this node's log and store"
}

// serveIngest accepts agents' ingest streams.
func (n *Node) serveIngest(ctx context.Context) error {
	return n.serveStreams(ctx, mesh.KindIngest, "ingest", n.ingest)
}

// serveStreams accepts streams of kind and runs handle on each: a refusal
// it returns (refuse) goes to the peer as an error frame, and the stream
// is aborted when ctx ends. Shutdown waits for the handlers (ingestWG).
func (n *Node) serveStreams(ctx context.Context, kind mesh.StreamKind, what string, handle func(context.Context, *mesh.Stream) error) error {
	for {
		s, err := n.ep.Accept(ctx, kind)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, mesh.ErrClosed) {
				return nil
			}
			return fmt.Errorf("accept %s stream: %w", what, err)
		}
		n.ingestWG.Add(1)
		go func() {
			defer n.ingestWG.Done()
			defer s.Close()
			stop := context.AfterFunc(ctx, func() { s.Abort(mesh.CodeUnavailable) })
			defer stop()
			peer := s.Peer()
			log := n.log.With("peer", peer.Name)
			if peer.Agent {
				log = log.With("service", peer.Service)
			}
			err := handle(ctx, s)
			// A peer that is refused retries every few seconds: its
			// refusals are logged once, then counted (issue 14 item 6).
			key := what + " refused/" + string(peer.Name)
			var ie *blockframe.Refusal
			switch {
			case err == nil:
				n.repeats().OK(key)
			case errors.As(err, &ie):
				n.repeats().Fail(key, what+" refused", err, refusalHint(ie.Code), "peer", peer.Name, "service", peer.Service, "code", ie.Code.String())
				mesh.WriteError(s, ie.Code, ie.Msg)
			case ctx.Err() != nil:
			default:
				n.repeats().OK(key)
				log.Info(what+" stream ended", "err", err)
			}
		}()
	}
}

// ingestSession is one agent's stream.
type ingestSession struct {
	n       *Node
	svc     *config.Service
	state   *serviceState
	agent   string
	volumes map[string]config.Volume // by volume name
	pending map[string]map[int64]blockstore.ID
	count   int
	dec     *zstd.Decoder
}

func (n *Node) ingest(ctx context.Context, s *mesh.Stream) error {
	peer := s.Peer()
	fr := mesh.NewFrameReader(s, mesh.KindIngest.MaxFrame())
	t, p, err := fr.Next()
	if err != nil {
		return fmt.Errorf("read hello: %w", err)
	}
	if !peer.Agent {
		return refuse(mesh.CodeForbidden, "ingest streams are for agent certificates, refused for %s", peer)
	}
	if n.store == nil {
		return refuse(mesh.CodeWrongNode, "node %s is a witness and holds no data: point the agent at a data node of site %s", n.opts.Name, n.opts.Site)
	}
	if t == mesh.FrameBarrierJoin && peer.Agent {
		return n.joinBarrier(ctx, s, fr, p)
	}
	if t != mesh.FrameHello {
		return refuse(mesh.CodeBadRequest, "first frame is type %d, want hello", t)
	}
	h, err := mesh.DecodeHello(p)
	if err != nil {
		return refuse(mesh.CodeBadRequest, "%v", err)
	}
	if h.Service != peer.Service || h.Agent != string(peer.Name) {
		return refuse(mesh.CodeForbidden, "agent certificate is for %s of service %s, not %s of service %s", peer.Name, peer.Service, h.Agent, h.Service)
	}
	if redirect, err := n.ingestHolder(h.Service); err != nil {
		return err
	} else if redirect != nil {
		b, _ := json.Marshal(redirect)
		return mesh.WriteFrame(s, mesh.FrameWelcome, b)
	}
	sess, welcome, err := n.openSession(h)
	if err != nil {
		return err
	}
	defer sess.dec.Close()
	if err := n.backfillScope(ctx, sess); err != nil {
		return refuse(mesh.CodeUnavailable, "service %s: %v", h.Service, err)
	}
	b, _ := json.Marshal(welcome)
	if err := mesh.WriteFrame(s, mesh.FrameWelcome, b); err != nil {
		return err
	}
	n.log.Info("agent connected", "peer", h.Agent, "service", h.Service, "volumes", len(h.Volumes), "seq", welcome.Seq)
	for {
		t, p, err := fr.Next()
		if err != nil {
			return err
		}
		switch t {
		case mesh.FrameOffer:
			// Only the service's own blocks count as held: an agent
			// learns nothing of other services' blocks (issue 13).
			want, err := blockframe.Want(ctx, n.store, h.Service, p)
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
				return refuse(mesh.CodeBadRequest, "%v", err)
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
			return refuse(mesh.CodeBadRequest, "unexpected frame type %d", t)
		}
	}
}

// fenced refuses the writes of a service that failed over to another
// site (sessions opened before the failover end at their next commit), and
// holds them back while the service is stopped for a planned failover.
func (n *Node) fenced(service string) error {
	var err error
	epoch := uint64(1)
	if st := n.Catalog().Services[service]; st != nil {
		epoch = st.Epoch
		if st.Active != "" && st.Active != string(n.opts.Site) {
			err = refuse(mesh.CodeFenced, "fenced: service %s failed over to site %s (epoch %d); this node at %s takes no more writes for it", service, st.Active, st.Epoch, n.opts.Site)
		}
	}
	if err == nil && n.stops.holds(service, epoch, n.opts.Now()) {
		err = refuse(mesh.CodeHeld, "service %s is stopped here for a planned failover: its writes wait", service)
	}
	return err
}

// ingestHolder checks that this node holds service at its site. When
// another node does, it returns the Welcome that redirects the agent there.
func (n *Node) ingestHolder(service string) (*mesh.Welcome, error) {
	cat := n.Catalog()
	if cat.Policy == nil || cat.Policy.Cluster == nil {
		return nil, nil // openSession explains
	}
	if svc := cat.Service(service); svc == nil || svc.Primary != string(n.opts.Site) {
		return nil, nil // openSession explains
	}
	holder := cat.Holder(service, string(n.opts.Site))
	switch holder {
	case n.opts.Name:
		if since, ok := n.fetching(service); ok {
			return nil, refuse(mesh.CodeUnavailable, "node %s took over service %s and is fetching its newest point from a copy (for %s): retry shortly", n.opts.Name, service, time.Since(since).Round(time.Second))
		}
		return nil, nil
	case "":
		return nil, refuse(mesh.CodeUnavailable, "service %s has no holder at site %s yet: the leader places it when a data node of the site is alive", service, n.opts.Site)
	}
	ni, ok := cat.Nodes[holder]
	if !ok || ni.QUIC == "" {
		return nil, refuse(mesh.CodeUnavailable, "service %s is held by %s, whose address is unknown", service, holder)
	}
	return &mesh.Welcome{Node: string(holder), Redirect: ni.QUIC}, nil
}

// openSession checks a Hello against the applied policy.
func (n *Node) openSession(h *mesh.Hello) (*ingestSession, *mesh.Welcome, error) {
	cat := n.Catalog()
	pol := cat.Policy
	if pol == nil || pol.Cluster == nil {
		return nil, nil, refuse(mesh.CodeUnavailable, "no cluster policy applied yet: `lifeboat policy apply FILE` must name service %s", h.Service)
	}
	svc := cat.Service(h.Service)
	if svc == nil {
		return nil, nil, refuse(mesh.CodeNotFound, "service %s is not in the cluster policy (version %d)", h.Service, pol.Version)
	}
	if svc.Primary != string(n.opts.Site) {
		if st := cat.Services[h.Service]; st != nil && st.Active != "" {
			return nil, nil, refuse(mesh.CodeFenced, "fenced: service %s failed over to site %s (epoch %d); this node at %s takes no more writes for it", h.Service, svc.Primary, st.Epoch, n.opts.Site)
		}
		return nil, nil, refuse(mesh.CodeWrongNode, "service %s runs at site %s; this node is at %s: point the agent at a node of site %s", h.Service, svc.Primary, n.opts.Site, svc.Primary)
	}
	sess := &ingestSession{n: n, svc: svc, state: n.svcs.get(h.Service), agent: h.Agent,
		volumes: map[string]config.Volume{}, pending: map[string]map[int64]blockstore.ID{}}
	w := &mesh.Welcome{Node: string(n.opts.Name)}
	for _, hv := range h.Volumes {
		_, v := svc.Volume(hv.Name)
		if v == nil {
			return nil, nil, refuse(mesh.CodeNotFound, "volume %s is not a volume of service %s in the policy", hv.Name, h.Service)
		}
		if int64(v.Size) != hv.Size {
			return nil, nil, refuse(mesh.CodeBadRequest, "volume %s/%s: the agent has %d bytes, the policy says %s (%d bytes)", h.Service, hv.Name, hv.Size, v.Size, int64(v.Size))
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
func (n *Node) backfillScope(ctx context.Context, sess *ingestSession) error {
	service := sess.svc.Name
	done, err := n.store.ScopeMarked(service)
	if err != nil || done {
		return err
	}
	sess.state.mu.Lock()
	p := sess.state.latest
	sess.state.mu.Unlock()
	if p != nil {
		for _, v := range p.Volumes {
			if err := n.store.WalkLeaves(ctx, v, func(_ int64, ids []blockstore.ID) error {
				return n.store.AddScope(ctx, service, ids)
			}); err != nil {
				return fmt.Errorf("record the blocks of volume %s: %w", v.Name, err)
			}
		}
		n.log.Info("service's blocks recorded as its own", "service", service, "point", p.ID)
	}
	return n.store.MarkScope(service)
}

// blocks stores a Blocks frame after checking each block against its ID.
func (s *ingestSession) blocks(ctx context.Context, p []byte) error {
	_, err := blockframe.Put(ctx, s.n.store, s.svc.Name, s.dec, p)
	return err
}

// changes records a volume's map changes until the next commit. Every
// block a change names must be the service's: sent by an agent of it, or
// held for it already. Anything else is another service's block (or none)
// and the stream is refused.
func (s *ingestSession) changes(ctx context.Context, p []byte) error {
	name, cs, err := mesh.DecodeChanges(p)
	if err != nil {
		return refuse(mesh.CodeBadRequest, "%v", err)
	}
	v, ok := s.volumes[name]
	if !ok {
		return refuse(mesh.CodeForbidden, "volume %s was not in this stream's hello", name)
	}
	blocks := (int64(v.Size) + int64(v.BlockSize) - 1) / int64(v.BlockSize)
	m := s.pending[name]
	if m == nil {
		m = map[int64]blockstore.ID{}
		s.pending[name] = m
	}
	ids := make([]blockstore.ID, len(cs))
	for i, c := range cs {
		ids[i] = c.ID
	}
	in, err := s.n.store.InScope(ctx, s.svc.Name, ids)
	if err != nil {
		return refuse(mesh.CodeUnavailable, "look up changed blocks: %v", err)
	}
	for i, c := range cs {
		if !in[i] {
			s.n.log.Warn("ingest refused: a change names a block the service does not hold", "service", s.svc.Name, "peer", s.agent, "volume", name, "block", c.ID.Short())
			return refuse(mesh.CodeForbidden, "volume %s block %d: block %s was neither sent on this stream nor held for service %s", name, c.Block, c.ID.Short(), s.svc.Name)
		}
	}
	for _, c := range cs {
		if c.Block >= blocks {
			return refuse(mesh.CodeBadRequest, "volume %s: block %d past the end (%d blocks)", name, c.Block, blocks)
		}
		if _, seen := m[c.Block]; !seen {
			s.count++
		}
		m[c.Block] = c.ID
	}
	if s.count > maxPendingChanges {
		return refuse(mesh.CodeBadRequest, "more than %d changes without a commit", maxPendingChanges)
	}
	return nil
}

// commit makes a point of the service: the newest state of every volume,
// with this stream's changes applied.
func (s *ingestSession) commit(ctx context.Context, c *mesh.Commit) (*mesh.Committed, error) {
	if err := s.n.fenced(s.svc.Name); err != nil {
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
		return nil, refuse(mesh.CodeBadRequest, "commit seq %d is not after %d, the newest committed for %s", c.Seq, st.seqs[s.agent], s.agent)
	}
	store := s.n.store
	states := map[string]blockstore.VolumeState{}
	if st.latest != nil {
		for _, v := range st.latest.Volumes {
			states[v.Name] = v
		}
	}
	for name, vol := range s.volumes {
		full := s.svc.Name + "/" + name
		if _, ok := states[full]; !ok {
			states[full] = blockstore.VolumeState{Name: full, Size: int64(vol.Size), BlockSize: int(vol.BlockSize)}
		}
	}
	for name, m := range s.pending {
		full := s.svc.Name + "/" + name
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
			return nil, refuse(mesh.CodeInternal, "check blocks: %v", err)
		}
		if len(missing) > 0 {
			return nil, refuse(mesh.CodeBadRequest, "volume %s: %d changed blocks were never sent (first %s)", name, len(missing), missing[0].Short())
		}
		nv, err := store.Update(ctx, states[full], cs)
		if err != nil {
			return nil, refuse(mesh.CodeUnavailable, "update volume %s: %v", full, err)
		}
		states[full] = nv
	}
	pt := blockstore.Point{Group: s.svc.Name, Name: pointName(s.agent, c.Seq), Time: c.Time}
	for _, v := range states {
		pt.Volumes = append(pt.Volumes, v)
	}
	slices.SortFunc(pt.Volumes, func(a, b blockstore.VolumeState) int { return strings.Compare(a.Name, b.Name) })
	if pt.Time.IsZero() {
		pt.Time = time.Now()
	}
	committed, err := store.CommitPoint(ctx, pt)
	if err != nil {
		return nil, refuse(mesh.CodeUnavailable, "commit point: %v", err)
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
	s.count = 0
	s.n.marks.Note(committed)
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

// noteTier records what a tier engine did for service in its next
// watermark.
func (n *Node) noteTier(service string, fn func(*Watermark)) {
	newest, _ := n.svcs.get(service).newest()
	n.marks.NoteTier(service, newest, fn)
}
