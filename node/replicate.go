package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/internal/logpolicy"
	"github.com/lifeboat-dr/lifeboat/internal/retry"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/mesh/throttle"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// Replication between sites (issue 5; protocol in mesh doc.go). The holder
// of a service at its primary site runs one sender per recovery site; the
// holder at the recovery site receives. A sender sends a point as the map
// diff from the newest point both sides hold, offering block IDs in batches
// so that only blocks the receiver lacks cross the link; the receiver
// rebuilds each volume's map, checks that it arrives at the sender's roots,
// and commits the point under the same ID. After any cut the next session
// starts from the newest point the receiver committed; blocks it stored
// before the cut are not wanted again.

// quicOverhead is charged to a link on top of the frame bytes for QUIC's
// packet headers, authentication tags and acknowledgements: measured on
// the wire (BenchmarkReplicationThrottle), about 3%.
const quicOverhead = 1.0 / 32

// replBatch is how many map changes a sender handles per offer round.
const replBatch = mesh.MaxOffer

// replicator runs this node's senders and holds one throttle per link.
type replicator struct {
	n       *Node
	mu      sync.Mutex
	senders map[replKey]*sender
	links   map[mesh.Site]*linkState
	fetch   fetchState
	cat     *Catalog // as sync last read it

	logsOnce sync.Once
	logs     *logpolicy.Repeats // see Node.repeats
}

// repeats returns the node's log of failures that repeat (issue 14 item
// 6): replication, fetches, refusals of peers, watermarks and the tier
// engine log a failure once at WARN with the hint, then a count. Keys
// start with what failed ("replicate/SERVICE/SITE", "tier/SERVICE", ...).
func (n *Node) repeats() *logpolicy.Repeats {
	rp := n.repl
	rp.logsOnce.Do(func() {
		rp.logs = logpolicy.New(logpolicy.Options{Log: n.log, Now: n.opts.Now})
	})
	return rp.logs
}

type replKey struct {
	service string
	site    string
}

// linkState is the throttle of the link to one site and the policy it
// reads, refreshed by the replicator loop.
type linkState struct {
	name   string // "dc1-dc2"
	t      *throttle.Link
	policy atomic.Pointer[config.Link] // nil = no policy: unlimited
	share  atomic.Int64                // this node's share divisor: nodes of this site sending on the link
}

// sender replicates one service to one recovery site.
type sender struct {
	n        *Node
	key      replKey
	dest     mesh.NodeID
	tier     throttle.Tier
	tierName string
	coalesce time.Duration
	cadence  config.Cadence
	loc      *time.Location
	link     *linkState
	ctx      context.Context // ends when the sender is stopped
	rated    bool            // the link has a rate: compress harder, always
	cancel   context.CancelFunc
	done     chan struct{}
	log      *slog.Logger

	progMu   sync.Mutex
	prog     Progress
	reported Progress
}

// wanted is one sender the catalog asks for.
type wanted struct {
	key      replKey
	dest     mesh.NodeID
	tier     config.Tier
	coalesce time.Duration
	cadence  config.Cadence
	loc      *time.Location
}

func (w wanted) same(s *sender) bool {
	return s.dest == w.dest && s.tierName == string(w.tier) && s.coalesce == w.coalesce && s.cadence == w.cadence
}

// replicatorLoop starts and stops senders as the catalog's holders and
// policy change, and reports their progress to the catalog.
func (n *Node) replicatorLoop(ctx context.Context) {
	if n.store == nil {
		return
	}
	rp := n.repl
	defer func() {
		rp.mu.Lock()
		for _, s := range rp.senders {
			s.cancel()
			<-s.done
		}
		for _, l := range rp.links {
			l.t.Close()
		}
		rp.mu.Unlock()
	}()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		n.checkBranches(ctx)
		rp.sync(ctx)
		rp.report(ctx)
		_, applied := n.fsm.View()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-applied: // a policy or holder change starts senders at once
		}
	}
}

// sync makes the running senders match the catalog.
func (rp *replicator) sync(ctx context.Context) {
	n := rp.n
	cat := n.Catalog()
	want := map[replKey]wanted{}
	if cat.Policy != nil && cat.Policy.Cluster != nil {
		pol := cat.Policy.Cluster
		for _, svc := range cat.ServiceList() {
			if svc.Primary != string(n.opts.Site) {
				continue
			}
			holder := cat.Holder(svc.Name, svc.Primary)
			for _, c := range svc.Copies {
				dest := cat.Holder(svc.Name, c.Site)
				if holder != n.opts.Name || dest == "" {
					continue
				}
				w := wanted{key: replKey{svc.Name, c.Site}, dest: dest, tier: c.Tier, cadence: c.Schedule}
				if l := pol.Link(svc.Primary, c.Site); l != nil {
					w.coalesce = time.Duration(l.Coalesce)
				}
				if s := pol.Site(c.Site); s != nil {
					w.loc = s.Location()
				}
				want[w.key] = w
			}
		}
	}
	rp.mu.Lock()
	defer rp.mu.Unlock()
	rp.cat = cat
	for site, l := range rp.links {
		rp.refreshLink(l, site)
	}
	rp.startFetches(ctx, cat)
	for k, s := range rp.senders {
		if w, ok := want[k]; !ok || !w.same(s) {
			s.cancel()
			<-s.done
			delete(rp.senders, k)
		}
	}
	for k, w := range want {
		if _, ok := rp.senders[k]; ok {
			continue
		}
		s := rp.newSender(ctx, w)
		rp.senders[k] = s
		go func() {
			defer close(s.done)
			s.run()
		}()
	}
}

// distinctSenders counts the nodes of site from that hold a service with a
// copy at site to.
func distinctSenders(cat *Catalog, from mesh.Site, to mesh.Site) int {
	if cat == nil || cat.Policy == nil || cat.Policy.Cluster == nil {
		return 0
	}
	seen := map[mesh.NodeID]bool{}
	for _, svc := range cat.ServiceList() {
		if svc.Primary != string(from) || svc.Copy(string(to)) == nil {
			continue
		}
		if h := cat.Holder(svc.Name, svc.Primary); h != "" {
			seen[h] = true
		}
	}
	return len(seen)
}

// refreshLink sets a link's policy and share from the catalog sync last
// read; rp.mu must be held. Distinct holders of this site sending on the
// link share it evenly: every node enforces its part without talking to
// the others.
func (rp *replicator) refreshLink(l *linkState, site mesh.Site) {
	l.share.Store(int64(max(1, distinctSenders(rp.cat, rp.n.opts.Site, site))))
	if rp.cat != nil && rp.cat.Policy != nil && rp.cat.Policy.Cluster != nil {
		l.policy.Store(rp.cat.Policy.Cluster.Link(string(rp.n.opts.Site), string(site)))
	}
}

// link returns the throttle of the link to site; rp.mu must be held.
func (rp *replicator) link(site mesh.Site) *linkState {
	if l := rp.links[site]; l != nil {
		return l
	}
	l := &linkState{name: string(rp.n.opts.Site) + "-" + string(site)}
	rp.refreshLink(l, site)
	l.t = throttle.New(throttle.Options{
		Name: l.name,
		Rate: func(t time.Time) float64 {
			p := l.policy.Load()
			if p == nil {
				return 0
			}
			return float64(p.RateAt(t)) / float64(l.share.Load())
		},
		Overhead: quicOverhead,
		Now:      rp.n.opts.Now,
	})
	rp.links[site] = l
	return l
}

func (rp *replicator) newSender(ctx context.Context, w wanted) *sender {
	tier, err := throttle.ParseTier(string(w.tier))
	if err != nil {
		tier = throttle.Cold
	}
	loc := w.loc
	if loc == nil {
		loc = time.UTC
	}
	s := &sender{
		n: rp.n, key: w.key, dest: w.dest, tier: tier, tierName: string(w.tier),
		coalesce: w.coalesce, cadence: w.cadence, loc: loc,
		link: rp.link(mesh.Site(w.key.site)), done: make(chan struct{}),
		log: rp.n.log.With("service", w.key.service, "to_site", w.key.site, "to", w.dest, "tier", w.tier),
	}
	s.prog = Progress{Service: w.key.service, Site: w.key.site, From: rp.n.opts.Name}
	s.ctx, s.cancel = context.WithCancel(ctx)
	return s
}

// report writes the senders' progress to the catalog when it changed.
func (rp *replicator) report(ctx context.Context) {
	rp.mu.Lock()
	var batch []Progress
	var changed []*sender
	for _, s := range rp.senders {
		s.progMu.Lock()
		p := s.prog
		if p.Sending != s.reported.Sending || p.Error != s.reported.Error || p.Backlog != s.reported.Backlog && rp.n.opts.Now().Sub(s.reported.At) > 5*time.Second {
			p.At = rp.n.opts.Now()
			batch = append(batch, p)
			changed = append(changed, s)
		}
		s.progMu.Unlock()
	}
	rp.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rp.n.Apply(actx, &Command{Op: catalog.OpProgress, Progress: batch}); err != nil {
		return // the next round retries
	}
	for i, s := range changed {
		s.progMu.Lock()
		s.reported = batch[i]
		s.progMu.Unlock()
	}
}

func (s *sender) setProgress(fn func(p *Progress)) {
	s.progMu.Lock()
	fn(&s.prog)
	s.progMu.Unlock()
}

// run keeps a session to the receiver going until ctx ends. A session
// that ends is retried with back-off (reset after a session that ran a
// minute). A permanent refusal from the receiver (mesh.IsRetryable: the
// receiver is a witness, keeps no copy, does not take this node for the
// primary's holder...) is not retried as is: the sender parks until the
// policy or the holders in the catalog change, or the park's own back-off
// ends (the receiver's catalog may only lag), and says so once (issue 14
// items 4 and 6).
func (s *sender) run() {
	ctx := s.ctx
	b := retry.New(retry.Options{Initial: 500 * time.Millisecond, Max: 15 * time.Second, Retryable: mesh.IsRetryable})
	parks := retry.New(retry.Options{Initial: 10 * time.Second, Max: 10 * time.Minute})
	logs := s.n.repeats()
	defer logs.Forget(s.logKey())
	defer logs.Forget(s.logKey() + "/parked")
	for ctx.Err() == nil {
		start := time.Now()
		err := s.session(ctx)
		if ctx.Err() != nil {
			return
		}
		s.n.metrics.replErrors.WithLabelValues(s.key.service, s.key.site).Inc()
		if !b.Retryable(err) {
			d := parks.Next()
			s.setProgress(func(p *Progress) { p.Error = "parked: " + err.Error() })
			logs.Fail(s.logKey()+"/parked", "replication refused for good by the receiver; parked until the policy or the holders change", err,
				replRefusalHint(err), "park_max", d)
			if !s.park(ctx, d) {
				return
			}
			b.Reset()
			continue
		}
		if time.Since(start) > time.Minute {
			b.Reset()
		}
		d := b.Next()
		s.setProgress(func(p *Progress) { p.Error = err.Error() })
		logs.Fail(s.logKey(), "replication session ended; retrying", err,
			"replication resumes from the last point the receiver holds once the link and the receiver are back", "retry_in", d)
		if retry.Sleep(ctx, nil, d) != nil {
			return
		}
	}
}

// logKey names the sender's failures in the node's logpolicy.Repeats.
func (s *sender) logKey() string { return "replicate/" + s.key.service + "/" + s.key.site }

// replRefusalHint says what to do about a permanent refusal by the
// receiver, by its code.
func replRefusalHint(err error) string {
	code, _ := mesh.CodeOf(err)
	switch code {
	case mesh.CodeWrongNode:
		return "the receiver is a witness: the leader must place the copy on a data node of the site"
	case mesh.CodeForbidden:
		return "the receiver's catalog disagrees on who holds the service (it may lag), or the certificates' sites do not match the policy"
	case mesh.CodeNotFound:
		return "the receiver's policy does not list the service, or it lost the base point: apply the policy, check the receiver"
	case mesh.CodeBadRequest:
		return "the receiver could not take what was sent: check that both nodes run the same version, and verify the stores"
	}
	return "check the receiver's log"
}

// park waits until what the sender depends on in the catalog (the policy
// version, the service's holders and epoch, the receiver's address)
// changes, at most d. It reports whether ctx is still live.
func (s *sender) park(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	was := s.dependsOn(s.n.Catalog())
	for {
		cat, applied := s.n.fsm.View()
		if s.dependsOn(cat) != was {
			return ctx.Err() == nil
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case <-applied:
		}
	}
}

// dependsOn is what a parked sender waits to see change.
func (s *sender) dependsOn(cat *Catalog) string {
	var b strings.Builder
	if cat.Policy != nil {
		fmt.Fprintf(&b, "policy %d;", cat.Policy.Version)
	}
	if svc := cat.Service(s.key.service); svc != nil {
		fmt.Fprintf(&b, "holders %s %s;", cat.Holder(s.key.service, svc.Primary), cat.Holder(s.key.service, s.key.site))
	}
	if st := cat.Services[s.key.service]; st != nil {
		fmt.Fprintf(&b, "epoch %d %s;", st.Epoch, st.Active)
	}
	if ni, ok := cat.Nodes[s.dest]; ok {
		fmt.Fprintf(&b, "dest %s", ni.QUIC)
	}
	return b.String()
}

// session is one stream to the receiver: hello, then points until an
// error or ctx ends.
func (s *sender) session(ctx context.Context) error {
	cat := s.n.Catalog()
	ni, ok := cat.Nodes[s.dest]
	if !ok || ni.QUIC == "" {
		return fmt.Errorf("holder %s at site %s: address unknown", s.dest, s.key.site)
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	st, err := s.n.ep.Dial(dctx, ni.QUIC, mesh.KindBlocks)
	cancel()
	if err != nil {
		return fmt.Errorf("dial %s: %w", s.dest, err)
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.Abort(mesh.CodeUnavailable) })
	defer stop()
	fr := mesh.NewFrameReader(st, mesh.KindBlocks.MaxFrame())
	b, _ := json.Marshal(mesh.ReplHello{Version: mesh.ReplVersion, Service: s.key.service, Site: s.n.opts.Site, Tier: s.tierName})
	if err := mesh.WriteFrame(st, mesh.FrameReplHello, b); err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	p, err := fr.Expect(mesh.FrameReplWelcome)
	if err != nil {
		return err
	}
	w, err := mesh.DecodeReplWelcome(p)
	if err != nil {
		return err
	}
	base, err := s.commonBase(ctx, w.Points)
	if err != nil {
		return err
	}
	s.setProgress(func(p *Progress) { p.Error = "" })
	logs := s.n.repeats()
	logs.OK(s.logKey())
	logs.OK(s.logKey() + "/parked")
	s.log.Info("replicating", "receiver_has", len(w.Points), "base", pointID(base))
	// A link with a rate is worth CPU: compress harder there.
	level := zstd.SpeedFastest
	s.rated = false
	if l := s.link.policy.Load(); l != nil && (l.Rate > 0 || len(l.Schedule) > 0) {
		level, s.rated = zstd.SpeedDefault, true
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return err
	}
	defer enc.Close()
	var lastSent time.Time
	for {
		next, err := s.next(ctx, base, lastSent)
		if err != nil {
			return err
		}
		lastSent = time.Now()
		if err := s.sendPoint(ctx, st, fr, enc, base, next); err != nil {
			return err
		}
		base = next
	}
}

func pointID(p *blockstore.Point) string {
	if p == nil {
		return ""
	}
	return p.ID
}

// commonBase returns the newest of the receiver's points that this node
// holds too, or nil.
func (s *sender) commonBase(ctx context.Context, theirs []string) (*blockstore.Point, error) {
	if len(theirs) == 0 {
		return nil, nil
	}
	pts, err := s.n.store.Points(ctx, "")
	if err != nil {
		return nil, err
	}
	for _, id := range theirs {
		for i := len(pts) - 1; i >= 0; i-- {
			if pts[i].ID == id && pts[i].Group == s.key.service {
				return &pts[i], nil
			}
		}
	}
	return nil, nil
}

// next waits for the point to send after base: the newest point of the
// service once the tier's timing allows. Warm and hot send as soon as a
// newer point exists, at most once per coalescing window; cold sends at
// the schedule's times. Points made while one is in flight are coalesced
// into the next: the receiver gets the newest, never a mix.
func (s *sender) next(ctx context.Context, base *blockstore.Point, lastSent time.Time) (*blockstore.Point, error) {
	st := s.n.svcs.get(s.key.service)
	for {
		latest, changed := st.newest()
		if latest != nil && (base == nil || latest.Time.After(base.Time)) {
			var due time.Time
			switch {
			case s.tier == throttle.Cold && !s.cadence.IsZero():
				ref := lastSent
				if ref.IsZero() && base != nil {
					ref = base.Time
				}
				if !ref.IsZero() {
					due = s.cadence.Next(ref, s.loc)
				}
			case s.coalesce > 0 && !lastSent.IsZero():
				due = lastSent.Add(s.coalesce)
			}
			wait := time.Until(due)
			if wait <= 0 {
				s.setProgress(func(p *Progress) { p.Sending = latest.ID })
				return latest, nil
			}
			s.setProgress(func(p *Progress) { p.Sending = "" })
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(wait):
			}
			continue
		}
		s.setProgress(func(p *Progress) { p.Sending, p.Backlog = "", 0 })
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-changed:
		}
	}
}

// sendPoint sends pt as the diff from base and waits for the commit.
func (s *sender) sendPoint(ctx context.Context, st *mesh.Stream, fr *mesh.FrameReader, enc *zstd.Encoder, base, pt *blockstore.Point) error {
	store := s.n.store
	release := store.Lease() // the blocks of base and pt stay while we read them
	defer release()
	// Count the changed bytes first: the backlog the status shows.
	var total int64
	for _, v := range pt.Volumes {
		bv := mesh.VolumeFromPoint(base, v)
		if err := store.Diff(ctx, bv, v, func(blockstore.Change) error { total += int64(v.BlockSize); return nil }); err != nil {
			return fmt.Errorf("diff %s: %w", v.Name, err)
		}
	}
	s.setProgress(func(p *Progress) { p.Backlog = total })
	start := time.Now()
	b, _ := json.Marshal(mesh.ReplBegin{Base: pointID(base), Point: *pt})
	if err := mesh.WriteFrame(st, mesh.FrameReplBegin, b); err != nil {
		return err
	}
	bs := &batchSender{s: s, st: st, fr: fr, enc: enc, rd: store.NewReader()}
	for _, v := range pt.Volumes {
		bv := mesh.VolumeFromPoint(base, v)
		name := strings.TrimPrefix(v.Name, pt.Group+"/")
		bs.volume, bs.blockSize = name, v.BlockSize
		err := store.Diff(ctx, bv, v, func(c blockstore.Change) error {
			bs.batch = append(bs.batch, mesh.BlockChange{Block: c.Block, ID: c.New})
			if len(bs.batch) == replBatch {
				return bs.flush(ctx)
			}
			return nil
		})
		if err == nil {
			err = bs.flush(ctx)
		}
		if err != nil {
			return fmt.Errorf("send volume %s of point %s: %w", v.Name, pt.ID, err)
		}
	}
	if err := mesh.WriteFrame(st, mesh.FrameReplCommit, nil); err != nil {
		return err
	}
	p, err := fr.Expect(mesh.FrameReplCommitted)
	if err != nil {
		return err
	}
	c, err := mesh.DecodeReplCommitted(p)
	if err != nil {
		return err
	}
	if c.Point != pt.ID {
		return fmt.Errorf("receiver committed point %s for %s", c.Point, pt.ID)
	}
	s.setProgress(func(p *Progress) { p.Backlog = 0 })
	s.log.Debug("point replicated", "point", pt.ID, "changed_bytes", total, "took", time.Since(start))
	s.n.metrics.replPoints.WithLabelValues(s.key.service, s.key.site).Inc()
	return nil
}

// batchSender sends one volume's changes in offer rounds.
type batchSender struct {
	s         *sender
	st        *mesh.Stream
	fr        *mesh.FrameReader
	enc       *zstd.Encoder
	rd        *blockstore.Reader
	volume    string
	blockSize int
	batch     []mesh.BlockChange
	buf       []byte
	zbuf      []byte
	skipZ     int // frames to send without trying to compress
}

// incompressibleSkip is how many frames a sender on an unlimited link
// sends raw after one that did not compress (on a link with a rate, bytes
// matter more than CPU: every frame is tried).
const incompressibleSkip = 8

// flush offers the batch's blocks, sends those wanted, then the changes.
func (bs *batchSender) flush(ctx context.Context) error {
	if len(bs.batch) == 0 {
		return nil
	}
	s := bs.s
	m := s.n.metrics
	labels := []string{s.link.name, s.tierName}
	var offer []blockstore.ID
	seen := map[blockstore.ID]bool{}
	for _, c := range bs.batch {
		if !c.ID.IsZero() && !seen[c.ID] {
			seen[c.ID] = true
			offer = append(offer, c.ID)
		}
	}
	var logical int64
	for _, c := range bs.batch {
		if !c.ID.IsZero() {
			logical += int64(bs.blockSize)
		}
	}
	m.replLogical.WithLabelValues(labels...).Add(float64(logical))
	if len(offer) > 0 {
		if err := bs.write(ctx, mesh.FrameOffer, mesh.AppendOffer(nil, offer)); err != nil {
			return err
		}
		p, err := bs.fr.Expect(mesh.FrameWant)
		if err != nil {
			return err
		}
		want, err := mesh.DecodeWant(p, len(offer))
		if err != nil {
			return err
		}
		bs.buf = bs.buf[:0]
		raw := 0
		for i, id := range offer {
			if !want[i] {
				m.replDedup.WithLabelValues(labels...).Add(float64(bs.blockSize))
				continue
			}
			data, err := bs.rd.Get(id)
			if err != nil {
				return fmt.Errorf("read block %s: %w", id.Short(), err)
			}
			if raw > 0 && raw+len(data) > mesh.MaxBlocksFrame {
				if err := bs.sendBlocks(ctx, raw); err != nil {
					return err
				}
				raw = 0
			}
			bs.buf = mesh.AppendBlock(bs.buf, mesh.BlockRecord{ID: id, Codec: mesh.CodecRaw, RawLen: len(data), Data: data})
			raw += len(data)
		}
		if raw > 0 {
			if err := bs.sendBlocks(ctx, raw); err != nil {
				return err
			}
		}
	}
	if err := bs.write(ctx, mesh.FrameChanges, mesh.AppendChanges(nil, bs.volume, bs.batch)); err != nil {
		return err
	}
	s.setProgress(func(p *Progress) { p.Backlog = max(0, p.Backlog-int64(len(bs.batch))*int64(bs.blockSize)) })
	bs.batch = bs.batch[:0]
	return nil
}

// sendBlocks sends the records in bs.buf (raw bytes of blocks in it),
// compressed together when that pays.
func (bs *batchSender) sendBlocks(ctx context.Context, raw int) error {
	labels := []string{bs.s.link.name, bs.s.tierName}
	t, p := mesh.FrameBlocks, bs.buf
	if bs.skipZ > 0 {
		// The last frame did not compress: data like it (encrypted or
		// already compressed) is sent raw for a few frames before trying
		// again.
		bs.skipZ--
	} else {
		bs.zbuf = bs.enc.EncodeAll(bs.buf, bs.zbuf[:0])
		if len(bs.zbuf) < len(bs.buf)-len(bs.buf)/16 {
			t, p = mesh.FrameBlocksPacked, bs.zbuf
		} else if !bs.s.rated {
			bs.skipZ = incompressibleSkip
		}
	}
	bs.s.n.metrics.replCompressSaved.WithLabelValues(labels...).Add(float64(len(bs.buf) - len(p)))
	err := bs.write(ctx, t, p)
	bs.buf = bs.buf[:0]
	return err
}

// write sends a frame through the link's throttle, counting the bytes as
// they go out.
func (bs *batchSender) write(ctx context.Context, t mesh.FrameType, p []byte) error {
	s := bs.s
	sent := sentCounter{w: bs.st, c: s.n.metrics.replSent.WithLabelValues(s.link.name, s.tierName)}
	return mesh.WriteFrame(s.link.t.Writer(ctx, sent, s.tier), t, p)
}

// sentCounter counts the bytes written to a stream.
type sentCounter struct {
	w io.Writer
	c prometheus.Counter
}

func (s sentCounter) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	s.c.Add(float64(n))
	return n, err
}

// serveBlocks accepts replication streams from other nodes.
func (n *Node) serveBlocks(ctx context.Context) error {
	return n.serveStreams(ctx, mesh.KindBlocks, "replication", n.receive)
}

// receiver is one incoming replication stream.
type receiver struct {
	n       *Node
	service string
	dec     *zstd.Decoder
	// the point being received
	begin     *mesh.ReplBegin
	states    map[string]blockstore.VolumeState // by full volume name
	release   func()
	unflushed int64             // bytes put since the last flush
	plain     []byte            // a packed frame decompressed
	last      *blockstore.Point // the point committed last on this stream
}

// replFlushBytes is how much a receiver stores between flushes: after a
// crash, at most this much that had arrived is wanted again.
const replFlushBytes = 8 << 20

func (n *Node) receive(ctx context.Context, s *mesh.Stream) error {
	peer := s.Peer()
	if peer.Agent {
		return refuse(mesh.CodeForbidden, "replication streams are for node certificates, refused for %s", peer)
	}
	if n.store == nil {
		return refuse(mesh.CodeWrongNode, "node %s is a witness and holds no data", n.opts.Name)
	}
	fr := mesh.NewFrameReader(s, mesh.KindBlocks.MaxFrame())
	t, p, err := fr.Next()
	if err != nil {
		return fmt.Errorf("read hello: %w", err)
	}
	if t != mesh.FrameReplHello {
		return refuse(mesh.CodeBadRequest, "first frame is type %d, want repl hello", t)
	}
	h, err := mesh.DecodeReplHello(p)
	if err != nil {
		return refuse(mesh.CodeBadRequest, "%v", err)
	}
	if h.Site != peer.Site {
		return refuse(mesh.CodeForbidden, "hello says site %s, the certificate says %s", h.Site, peer.Site)
	}
	cat := n.Catalog()
	svc := cat.Service(h.Service)
	if svc == nil {
		return refuse(mesh.CodeNotFound, "service %s is not in the applied policy", h.Service)
	}
	if h.Fetch {
		return n.serveFetch(ctx, s, fr, h, cat)
	}
	if svc.Copy(string(n.opts.Site)) == nil {
		return refuse(mesh.CodeForbidden, "service %s keeps no copy at site %s", h.Service, n.opts.Site)
	}
	// The sender may have seen this node's assignment first: give the
	// local catalog a moment to apply it.
	for wait := time.Now().Add(3 * time.Second); cat.Holder(h.Service, string(n.opts.Site)) != n.opts.Name && time.Now().Before(wait); {
		var applied <-chan struct{}
		cat, applied = n.fsm.View()
		if cat.Holder(h.Service, string(n.opts.Site)) == n.opts.Name {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-applied:
		case <-time.After(100 * time.Millisecond):
		}
		cat = n.Catalog()
	}
	if holder := cat.Holder(h.Service, string(n.opts.Site)); holder != n.opts.Name {
		return refuse(mesh.CodeUnavailable, "service %s at site %s is held by %q, not %s", h.Service, n.opts.Site, holder, n.opts.Name)
	}
	if from := cat.Holder(h.Service, svc.Primary); from != peer.Name {
		return refuse(mesh.CodeForbidden, "service %s is held at its primary site %s by %q, not %s: only the holder replicates it", h.Service, svc.Primary, from, peer.Name)
	}
	if f := n.branchCheckDue(cat, h.Service); f != nil {
		return refuse(mesh.CodeUnavailable, "service %s failed over away from %s at epoch %d: this node lists its divergent points first", h.Service, n.opts.Site, f.Epoch)
	}
	n.log.Info("replication stream from the primary", "peer", peer.Name, "service", h.Service, "tier", h.Tier)
	return n.receivePoints(ctx, s, fr, h.Service)
}

// receivePoints is the receiving end of a replication stream: Welcome,
// then points until the stream ends.
func (n *Node) receivePoints(ctx context.Context, s *mesh.Stream, fr *mesh.FrameReader, service string) error {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(mesh.MaxPackedPlain))
	if err != nil {
		return err
	}
	defer dec.Close()
	r := &receiver{n: n, service: service, dec: dec}
	defer r.abort()
	pts, err := n.servicePoints(ctx, service, mesh.MaxWelcomePoints)
	if err != nil {
		return refuse(mesh.CodeInternal, "list points: %v", err)
	}
	w := mesh.ReplWelcome{Node: n.opts.Name}
	for _, p := range pts {
		w.Points = append(w.Points, p.ID)
	}
	b, _ := json.Marshal(w)
	if err := mesh.WriteFrame(s, mesh.FrameReplWelcome, b); err != nil {
		return err
	}
	for {
		t, p, err := fr.Next()
		if err != nil {
			return err
		}
		switch t {
		case mesh.FrameReplBegin:
			if err := r.start(ctx, p); err != nil {
				return err
			}
		case mesh.FrameOffer:
			want, err := wantFrame(ctx, n.store, "", p)
			if err != nil {
				return err
			}
			if err := mesh.WriteFrame(s, mesh.FrameWant, want); err != nil {
				return err
			}
		case mesh.FrameBlocks, mesh.FrameBlocksPacked:
			if r.begin == nil {
				return refuse(mesh.CodeBadRequest, "blocks before repl begin")
			}
			if t == mesh.FrameBlocksPacked {
				if r.plain, err = dec.DecodeAll(p, r.plain[:0]); err != nil {
					return refuse(mesh.CodeBadRequest, "packed blocks: zstd: %v", err)
				}
				p = r.plain
			}
			raw, err := putBlocks(ctx, n.store, service, dec, p)
			if err != nil {
				return err
			}
			n.metrics.replReceived.WithLabelValues(service).Add(float64(raw))
			// Make received blocks durable every few MiB: after a cut or
			// a crash the sender offers them again and they are not
			// wanted.
			if r.unflushed += raw; r.unflushed >= replFlushBytes {
				if err := n.store.Flush(ctx); err != nil {
					return refuse(mesh.CodeUnavailable, "flush: %v", err)
				}
				r.unflushed = 0
			}
		case mesh.FrameChanges:
			if err := r.changes(ctx, p); err != nil {
				return err
			}
		case mesh.FrameReplCommit:
			done, err := r.commit(ctx)
			if err != nil {
				return err
			}
			b, _ := json.Marshal(done)
			if err := mesh.WriteFrame(s, mesh.FrameReplCommitted, b); err != nil {
				return err
			}
		default:
			return refuse(mesh.CodeBadRequest, "unexpected frame type %d", t)
		}
	}
}

// servicePoints returns up to max of the service's newest points in the
// store, newest first.
func (n *Node) servicePoints(ctx context.Context, service string, max int) ([]blockstore.Point, error) {
	all, err := n.store.Points(ctx, "")
	if err != nil {
		return nil, err
	}
	var out []blockstore.Point
	for i := len(all) - 1; i >= 0 && len(out) < max; i-- {
		if all[i].Group == service {
			out = append(out, all[i])
		}
	}
	return out, nil
}

func (r *receiver) abort() {
	if r.release != nil {
		r.release()
		r.release = nil
	}
	r.begin = nil
}

// start begins receiving a point on top of its base.
func (r *receiver) start(ctx context.Context, p []byte) error {
	b, err := mesh.DecodeReplBegin(p)
	if err != nil {
		return refuse(mesh.CodeBadRequest, "%v", err)
	}
	if r.begin != nil {
		return refuse(mesh.CodeBadRequest, "repl begin for %s while %s is not committed", b.Point.ID, r.begin.Point.ID)
	}
	if b.Point.Group != r.service {
		return refuse(mesh.CodeForbidden, "point %s is of group %s, this stream replicates %s", b.Point.ID, b.Point.Group, r.service)
	}
	var base *blockstore.Point
	if r.last != nil && r.last.ID == b.Base {
		base = r.last // the usual case: the point committed just before
	} else if b.Base != "" {
		pts, err := r.n.store.Points(ctx, "")
		if err != nil {
			return refuse(mesh.CodeInternal, "list points: %v", err)
		}
		for i := range pts {
			if pts[i].ID == b.Base {
				base = &pts[i]
			}
		}
		if base == nil {
			return refuse(mesh.CodeNotFound, "base point %s is not here", b.Base)
		}
	}
	r.release = r.n.store.Lease()
	r.begin = b
	r.states = map[string]blockstore.VolumeState{}
	for _, v := range b.Point.Volumes {
		if !strings.HasPrefix(v.Name, r.service+"/") {
			return refuse(mesh.CodeBadRequest, "volume %s is not a volume of service %s", v.Name, r.service)
		}
		r.states[v.Name] = mesh.VolumeFromPoint(base, v)
	}
	return nil
}

// changes applies one Changes frame to the volume's map.
func (r *receiver) changes(ctx context.Context, p []byte) error {
	if r.begin == nil {
		return refuse(mesh.CodeBadRequest, "changes before repl begin")
	}
	name, cs, err := mesh.DecodeChanges(p)
	if err != nil {
		return refuse(mesh.CodeBadRequest, "%v", err)
	}
	full := r.service + "/" + name
	v, ok := r.states[full]
	if !ok {
		return refuse(mesh.CodeBadRequest, "changes for volume %s, which point %s does not have", full, r.begin.Point.ID)
	}
	nblocks := (v.Size + int64(v.BlockSize) - 1) / int64(v.BlockSize)
	changes := make([]blockstore.Change, len(cs))
	var ids []blockstore.ID
	for i, c := range cs {
		if c.Block >= nblocks {
			return refuse(mesh.CodeBadRequest, "volume %s: block %d past the end (%d blocks)", full, c.Block, nblocks)
		}
		changes[i] = blockstore.Change{Block: c.Block, New: c.ID}
		if !c.ID.IsZero() {
			ids = append(ids, c.ID)
		}
	}
	missing, err := r.n.store.Missing(ctx, ids)
	if err != nil {
		return refuse(mesh.CodeInternal, "check blocks: %v", err)
	}
	if len(missing) > 0 {
		return refuse(mesh.CodeBadRequest, "volume %s: %d changed blocks were never sent (first %s)", full, len(missing), missing[0].Short())
	}
	nv, err := r.n.store.Update(ctx, v, changes)
	if err != nil {
		return refuse(mesh.CodeUnavailable, "update volume %s: %v", full, err)
	}
	r.states[full] = nv
	return nil
}

// commit checks the rebuilt maps against the sender's roots and commits
// the point under the sender's ID.
func (r *receiver) commit(ctx context.Context) (*mesh.ReplCommitted, error) {
	if r.begin == nil {
		return nil, refuse(mesh.CodeBadRequest, "repl commit before repl begin")
	}
	want := r.begin.Point
	pt := blockstore.Point{Name: want.Name, Group: want.Group, Time: want.Time}
	for _, v := range want.Volumes {
		got := r.states[v.Name]
		if got.Root != v.Root || got.Used != v.Used {
			return nil, refuse(mesh.CodeBadRequest, "volume %s: the changes give root %s (%d blocks used), the sender has %s (%d): base and diff disagree", v.Name, got.Root.Short(), got.Used, v.Root.Short(), v.Used)
		}
		pt.Volumes = append(pt.Volumes, got)
	}
	slices.SortFunc(pt.Volumes, func(a, b blockstore.VolumeState) int { return strings.Compare(a.Name, b.Name) })
	committed, err := r.n.store.CommitPoint(ctx, pt)
	if err != nil {
		return nil, refuse(mesh.CodeUnavailable, "commit point: %v", err)
	}
	r.abort()
	if committed.ID != want.ID {
		return nil, refuse(mesh.CodeInternal, "point committed as %s, the sender's is %s", committed.ID, want.ID)
	}
	st := r.n.svcs.get(r.service)
	st.mu.Lock()
	st.hold(&committed)
	st.mu.Unlock()
	r.last = &committed
	r.n.marks.Note(committed)
	r.n.tiers.Arrived(r.service, committed)
	return &mesh.ReplCommitted{Point: committed.ID, Time: committed.Time}, nil
}
