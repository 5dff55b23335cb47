package replicate

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/internal/blockframe"
	"github.com/lifeboat-dr/lifeboat/node/internal/streams"
)

// receiver is one incoming replication stream.
type receiver struct {
	e       *Engine
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

// Receive serves one incoming replication stream (or a fetch of the
// newest point by the primary's holder) until it ends. Its refusals are
// streams.Refusals, for the caller to send to the peer as an error
// frame. Safe for concurrent use, one call per stream.
func (e *Engine) Receive(ctx context.Context, s *mesh.Stream) error {
	peer := s.Peer()
	if peer.Agent {
		return streams.Refuse(mesh.CodeForbidden, "replication streams are for node certificates, refused for %s", peer)
	}
	if e.o.Store == nil {
		return streams.Refuse(mesh.CodeWrongNode, "node %s is a witness and holds no data", e.o.Name)
	}
	fr := mesh.NewFrameReader(s, mesh.KindBlocks.MaxFrame())
	t, p, err := fr.Next()
	if err != nil {
		return fmt.Errorf("read hello: %w", err)
	}
	if t != mesh.FrameReplHello {
		return streams.Refuse(mesh.CodeBadRequest, "first frame is type %d, want repl hello", t)
	}
	h, err := mesh.DecodeReplHello(p)
	if err != nil {
		return streams.Refuse(mesh.CodeBadRequest, "%v", err)
	}
	if h.Site != peer.Site {
		return streams.Refuse(mesh.CodeForbidden, "hello says site %s, the certificate says %s", h.Site, peer.Site)
	}
	if h.Repair {
		if e.o.ServeRepair == nil {
			return streams.Refuse(mesh.CodeUnavailable, "node %s does not answer repair requests", e.o.Name)
		}
		return e.o.ServeRepair(ctx, s, fr, h)
	}
	cat := e.o.Catalog.Catalog()
	svc := cat.Service(h.Service)
	if svc == nil {
		return streams.Refuse(mesh.CodeNotFound, "service %s is not in the applied policy", h.Service)
	}
	if h.Fetch {
		return e.serveFetch(ctx, s, fr, h, cat)
	}
	if svc.Copy(string(e.o.Site)) == nil {
		return streams.Refuse(mesh.CodeForbidden, "service %s keeps no copy at site %s", h.Service, e.o.Site)
	}
	// The sender may have seen this node's assignment first: give the
	// local catalog a moment to apply it.
	for wait := e.o.Clock.Now().Add(3 * time.Second); cat.Holder(h.Service, string(e.o.Site)) != e.o.Name && e.o.Clock.Now().Before(wait); {
		var applied <-chan struct{}
		cat, applied = e.o.Catalog.View()
		if cat.Holder(h.Service, string(e.o.Site)) == e.o.Name {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-applied:
		case <-e.o.Clock.After(100 * time.Millisecond):
		}
		cat = e.o.Catalog.Catalog()
	}
	if holder := cat.Holder(h.Service, string(e.o.Site)); holder != e.o.Name {
		return streams.Refuse(mesh.CodeUnavailable, "service %s at site %s is held by %q, not %s", h.Service, e.o.Site, holder, e.o.Name)
	}
	if from := cat.Holder(h.Service, svc.Primary); from != peer.Name {
		return streams.Refuse(mesh.CodeForbidden, "service %s is held at its primary site %s by %q, not %s: only the holder replicates it", h.Service, svc.Primary, from, peer.Name)
	}
	if f := e.o.BranchCheckDue(cat, h.Service); f != nil {
		return streams.Refuse(mesh.CodeUnavailable, "service %s failed over away from %s at epoch %d: this node lists its divergent points first", h.Service, e.o.Site, f.Epoch)
	}
	if err := e.spaceFor(h.Service); err != nil {
		return err
	}
	e.log.Info("replication stream from the primary", "peer", peer.Name, "service", h.Service, "tier", h.Tier)
	return e.receivePoints(ctx, s, fr, h.Service)
}

// spaceFor refuses new points of service while this node's disk is too
// full for them (Options.Space; mesh.CodeNoSpace, retried by the sender).
func (e *Engine) spaceFor(service string) error {
	if e.o.Space == nil {
		return nil
	}
	return e.o.Space(service)
}

// receivePoints is the receiving end of a replication stream: Welcome,
// then points until the stream ends.
func (e *Engine) receivePoints(ctx context.Context, s *mesh.Stream, fr *mesh.FrameReader, service string) error {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(mesh.MaxPackedPlain))
	if err != nil {
		return err
	}
	defer dec.Close()
	r := &receiver{e: e, service: service, dec: dec}
	defer r.abort()
	pts, err := e.servicePoints(ctx, service, mesh.MaxWelcomePoints)
	if err != nil {
		return streams.Refuse(mesh.CodeInternal, "list points: %v", err)
	}
	w := mesh.ReplWelcome{Node: e.o.Name}
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
			want, err := blockframe.Want(ctx, e.o.Store, "", p)
			if err != nil {
				return err
			}
			if err := mesh.WriteFrame(s, mesh.FrameWant, want); err != nil {
				return err
			}
		case mesh.FrameBlocks, mesh.FrameBlocksPacked:
			if r.begin == nil {
				return streams.Refuse(mesh.CodeBadRequest, "blocks before repl begin")
			}
			if t == mesh.FrameBlocksPacked {
				if r.plain, err = dec.DecodeAll(p, r.plain[:0]); err != nil {
					return streams.Refuse(mesh.CodeBadRequest, "packed blocks: zstd: %v", err)
				}
				p = r.plain
			}
			raw, err := blockframe.Put(ctx, e.o.Store, service, dec, p)
			if err != nil {
				return err
			}
			e.o.Received.WithLabelValues(service).Add(float64(raw))
			// Make received blocks durable every few MiB: after a cut or
			// a crash the sender offers them again and they are not
			// wanted.
			if r.unflushed += raw; r.unflushed >= replFlushBytes {
				if err := e.o.Store.Flush(ctx); err != nil {
					return streams.Refuse(mesh.CodeUnavailable, "flush: %v", err)
				}
				r.unflushed = 0
			}
		case mesh.FrameChanges:
			if err := r.changes(ctx, p); err != nil {
				return err
			}
		case mesh.FrameReplCommit:
			if err := e.spaceFor(service); err != nil {
				return err
			}
			done, err := r.commit(ctx)
			if err != nil {
				return err
			}
			b, _ := json.Marshal(done)
			if err := mesh.WriteFrame(s, mesh.FrameReplCommitted, b); err != nil {
				return err
			}
		default:
			return streams.Refuse(mesh.CodeBadRequest, "unexpected frame type %d", t)
		}
	}
}

// servicePoints returns up to max of the service's newest points in the
// store, newest first.
func (e *Engine) servicePoints(ctx context.Context, service string, max int) ([]blockstore.Point, error) {
	all, err := e.o.Store.Points(ctx, "")
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
		return streams.Refuse(mesh.CodeBadRequest, "%v", err)
	}
	if r.begin != nil {
		return streams.Refuse(mesh.CodeBadRequest, "repl begin for %s while %s is not committed", b.Point.ID, r.begin.Point.ID)
	}
	if b.Point.Group != r.service {
		return streams.Refuse(mesh.CodeForbidden, "point %s is of group %s, this stream replicates %s", b.Point.ID, b.Point.Group, r.service)
	}
	var base *blockstore.Point
	if r.last != nil && r.last.ID == b.Base {
		base = r.last // the usual case: the point committed just before
	} else if b.Base != "" {
		pts, err := r.e.o.Store.Points(ctx, "")
		if err != nil {
			return streams.Refuse(mesh.CodeInternal, "list points: %v", err)
		}
		for i := range pts {
			if pts[i].ID == b.Base {
				base = &pts[i]
			}
		}
		if base == nil {
			return streams.Refuse(mesh.CodeNotFound, "base point %s is not here", b.Base)
		}
	}
	// The base stays while the point is built on it: thinning may not
	// delete it meanwhile (a pin), and GC keeps what the writer reuses (a
	// lease).
	unpin := func() {}
	if base != nil {
		if unpin, err = r.e.o.Store.Holds().Pin(base.ID); err != nil {
			return streams.Refuse(mesh.CodeNotFound, "base point %s is not here: %v", b.Base, err)
		}
	}
	lease := r.e.o.Store.Holds().Lease()
	r.release = func() { lease(); unpin() }
	r.begin = b
	r.states = map[string]blockstore.VolumeState{}
	for _, v := range b.Point.Volumes {
		if !strings.HasPrefix(v.Name, r.service+"/") {
			return streams.Refuse(mesh.CodeBadRequest, "volume %s is not a volume of service %s", v.Name, r.service)
		}
		r.states[v.Name] = mesh.VolumeFromPoint(base, v)
	}
	return nil
}

// changes applies one Changes frame to the volume's map.
func (r *receiver) changes(ctx context.Context, p []byte) error {
	if r.begin == nil {
		return streams.Refuse(mesh.CodeBadRequest, "changes before repl begin")
	}
	name, cs, err := mesh.DecodeChanges(p)
	if err != nil {
		return streams.Refuse(mesh.CodeBadRequest, "%v", err)
	}
	full := r.service + "/" + name
	v, ok := r.states[full]
	if !ok {
		return streams.Refuse(mesh.CodeBadRequest, "changes for volume %s, which point %s does not have", full, r.begin.Point.ID)
	}
	nblocks := (v.Size + int64(v.BlockSize) - 1) / int64(v.BlockSize)
	changes := make([]blockstore.Change, len(cs))
	var ids []blockstore.ID
	for i, c := range cs {
		if c.Block >= nblocks {
			return streams.Refuse(mesh.CodeBadRequest, "volume %s: block %d past the end (%d blocks)", full, c.Block, nblocks)
		}
		changes[i] = blockstore.Change{Block: c.Block, New: c.ID}
		if !c.ID.IsZero() {
			ids = append(ids, c.ID)
		}
	}
	missing, err := r.e.o.Store.Missing(ctx, ids)
	if err != nil {
		return streams.Refuse(mesh.CodeInternal, "check blocks: %v", err)
	}
	if len(missing) > 0 {
		return streams.Refuse(mesh.CodeBadRequest, "volume %s: %d changed blocks were never sent (first %s)", full, len(missing), missing[0].Short())
	}
	nv, err := r.e.o.Store.Update(ctx, v, changes)
	if err != nil {
		return streams.Refuse(mesh.CodeUnavailable, "update volume %s: %v", full, err)
	}
	r.states[full] = nv
	return nil
}

// commit checks the rebuilt maps against the sender's roots and commits
// the point under the sender's ID.
func (r *receiver) commit(ctx context.Context) (*mesh.ReplCommitted, error) {
	if r.begin == nil {
		return nil, streams.Refuse(mesh.CodeBadRequest, "repl commit before repl begin")
	}
	want := r.begin.Point
	pt := blockstore.Point{Name: want.Name, Group: want.Group, Time: want.Time}
	for _, v := range want.Volumes {
		got := r.states[v.Name]
		if got.Root != v.Root || got.Used != v.Used {
			return nil, streams.Refuse(mesh.CodeBadRequest, "volume %s: the changes give root %s (%d blocks used), the sender has %s (%d): base and diff disagree", v.Name, got.Root.Short(), got.Used, v.Root.Short(), v.Used)
		}
		pt.Volumes = append(pt.Volumes, got)
	}
	slices.SortFunc(pt.Volumes, func(a, b blockstore.VolumeState) int { return strings.Compare(a.Name, b.Name) })
	committed, err := r.e.o.Store.CommitPoint(ctx, pt)
	if err != nil {
		return nil, streams.Refuse(mesh.CodeUnavailable, "commit point: %v", err)
	}
	r.abort()
	if committed.ID != want.ID {
		return nil, streams.Refuse(mesh.CodeInternal, "point committed as %s, the sender's is %s", committed.ID, want.ID)
	}
	r.e.o.Held.Hold(r.service, &committed)
	r.last = &committed
	r.e.o.Note(committed)
	r.e.o.Arrived(r.service, committed)
	return &mesh.ReplCommitted{Point: committed.ID, Time: committed.Time}, nil
}
