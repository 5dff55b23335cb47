package replicate

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/internal/retry"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/mesh/throttle"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// replBatch is how many map changes a sender handles per offer round.
const replBatch = mesh.MaxOffer

// sender replicates one service to one recovery site.
type sender struct {
	e        *Engine
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
	prog     catalog.Progress
	reported catalog.Progress
}

func (s *sender) setProgress(fn func(p *catalog.Progress)) {
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
	b := retry.New(retry.Options{Initial: 500 * time.Millisecond, Max: 15 * time.Second, Retryable: mesh.IsRetryable, After: s.e.o.Clock.After})
	parks := retry.New(retry.Options{Initial: 10 * time.Second, Max: 10 * time.Minute, After: s.e.o.Clock.After})
	logs := s.e.o.Logs
	defer logs.Forget(s.logKey())
	defer logs.Forget(s.logKey() + "/parked")
	for ctx.Err() == nil {
		start := s.e.o.Clock.Now()
		err := s.session(ctx)
		if ctx.Err() != nil {
			return
		}
		s.e.o.Errors.WithLabelValues(s.key.service, s.key.site).Inc()
		if !b.Retryable(err) {
			d := parks.Next()
			s.setProgress(func(p *catalog.Progress) { p.Error = "parked: " + err.Error() })
			logs.Fail(s.logKey()+"/parked", "replication refused for good by the receiver; parked until the policy or the holders change", err,
				replRefusalHint(err), "park_max", d)
			if !s.park(ctx, d) {
				return
			}
			b.Reset()
			continue
		}
		if s.e.o.Clock.Now().Sub(start) > time.Minute {
			b.Reset()
		}
		d := b.Next()
		s.setProgress(func(p *catalog.Progress) { p.Error = err.Error() })
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
	timeout := s.e.o.Clock.After(d)
	was := s.dependsOn(s.e.o.Catalog.Catalog())
	for {
		cat, applied := s.e.o.Catalog.View()
		if s.dependsOn(cat) != was {
			return ctx.Err() == nil
		}
		select {
		case <-ctx.Done():
			return false
		case <-timeout:
			return true
		case <-applied:
		}
	}
}

// dependsOn is what a parked sender waits to see change.
func (s *sender) dependsOn(cat *catalog.Catalog) string {
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
	cat := s.e.o.Catalog.Catalog()
	ni, ok := cat.Nodes[s.dest]
	if !ok || ni.QUIC == "" {
		return fmt.Errorf("holder %s at site %s: address unknown", s.dest, s.key.site)
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	st, err := s.e.o.Dial(dctx, ni.QUIC, mesh.KindBlocks)
	cancel()
	if err != nil {
		return fmt.Errorf("dial %s: %w", s.dest, err)
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.Abort(mesh.CodeUnavailable) })
	defer stop()
	fr := mesh.NewFrameReader(st, mesh.KindBlocks.MaxFrame())
	b, _ := json.Marshal(mesh.ReplHello{Version: mesh.ReplVersion, Service: s.key.service, Site: s.e.o.Site, Tier: s.tierName})
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
	s.setProgress(func(p *catalog.Progress) { p.Error = "" })
	logs := s.e.o.Logs
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
	// The session's base is pinned: thinning here may not delete the
	// point the receiver builds the next one on.
	unpin, err := s.pin(base)
	if err != nil {
		return err
	}
	defer func() { unpin() }()
	var lastSent time.Time
	for {
		next, err := s.next(ctx, base, lastSent)
		if err != nil {
			return err
		}
		lastSent = s.e.o.Clock.Now()
		unpinNext, err := s.pin(next)
		if err != nil {
			return err
		}
		if err := s.sendPoint(ctx, st, fr, enc, base, next); err != nil {
			unpinNext()
			return err
		}
		unpin()
		base, unpin = next, unpinNext
	}
}

// pin keeps p (nil: nothing) from being thinned until the returned func
// is called.
func (s *sender) pin(p *blockstore.Point) (func(), error) {
	if p == nil {
		return func() {}, nil
	}
	release, err := s.e.o.Store.Holds().Pin(p.ID)
	if err != nil {
		return nil, fmt.Errorf("point %s went meanwhile: %w", p.ID, err)
	}
	return release, nil
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
	pts, err := s.e.o.Store.Points(ctx, "")
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
	for {
		latest, changed := s.e.o.Held.Newest(s.key.service)
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
			wait := due.Sub(s.e.o.Clock.Now())
			if wait <= 0 {
				s.setProgress(func(p *catalog.Progress) { p.Sending = latest.ID })
				return latest, nil
			}
			s.setProgress(func(p *catalog.Progress) { p.Sending = "" })
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-s.e.o.Clock.After(wait):
			}
			continue
		}
		s.setProgress(func(p *catalog.Progress) { p.Sending, p.Backlog = "", 0 })
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-changed:
		}
	}
}

// sendPoint sends pt as the diff from base and waits for the commit.
func (s *sender) sendPoint(ctx context.Context, st *mesh.Stream, fr *mesh.FrameReader, enc *zstd.Encoder, base, pt *blockstore.Point) error {
	store := s.e.o.Store
	release := store.Holds().Lease() // the blocks of base and pt stay while we read them
	defer release()
	// Count the changed bytes first: the backlog the status shows.
	var total int64
	for _, v := range pt.Volumes {
		bv := mesh.VolumeFromPoint(base, v)
		if err := store.Diff(ctx, bv, v, func(blockstore.Change) error { total += int64(v.BlockSize); return nil }); err != nil {
			return fmt.Errorf("diff %s: %w", v.Name, err)
		}
	}
	s.setProgress(func(p *catalog.Progress) { p.Backlog = total })
	start := s.e.o.Clock.Now()
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
	s.setProgress(func(p *catalog.Progress) { p.Backlog = 0 })
	s.log.Debug("point replicated", "point", pt.ID, "changed_bytes", total, "took", s.e.o.Clock.Now().Sub(start))
	s.e.o.Points.WithLabelValues(s.key.service, s.key.site).Inc()
	return nil
}
