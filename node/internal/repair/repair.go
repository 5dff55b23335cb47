// Package repair moves sound copies of blocks between nodes by ID, so that
// a node whose store found a block damaged or missing (its scrub, or a
// read in a restore, failover, drill or NBD export) gets it back from
// another node that holds it. It serves the repair requests of replication
// streams (mesh.ReplHello with Repair set; mesh/doc.go) and makes them.
// It holds no state: one Fetcher per node.
package repair

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/streams"
)

// Store is what a Fetcher reads to answer peers.
type Store interface {
	Get(ctx context.Context, id blockstore.ID) ([]byte, error)
	DedupKey() blockstore.Key
}

// CatalogReader gives the catalog: which nodes hold data, at which sites.
type CatalogReader interface {
	Catalog() *catalog.Catalog
}

// Options configure a Fetcher.
type Options struct {
	Name    mesh.NodeID
	Site    mesh.Site
	Store   Store // the node's store
	Catalog CatalogReader
	// Dial opens a stream of kind to a node's QUIC address.
	Dial    func(ctx context.Context, addr string, kind mesh.StreamKind) (*mesh.Stream, error)
	Timeout time.Duration // per peer asked; 0 = 30s
	Logger  *slog.Logger
}

// Fetcher serves and makes repair requests.
type Fetcher struct {
	o    Options
	hash *blockstore.Hasher
	log  *slog.Logger
}

// New returns a Fetcher.
func New(o Options) (*Fetcher, error) {
	h, err := blockstore.NewHasher(o.Store.DedupKey())
	if err != nil {
		return nil, err
	}
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Fetcher{o: o, hash: h, log: o.Logger}, nil
}

type servingKey struct{}

// Serving says whether ctx is that of a repair request this node answers:
// a store read under it must not ask other nodes in turn (which could ask
// this one back).
func Serving(ctx context.Context) bool { return ctx.Value(servingKey{}) != nil }

// maxAnswerFrame bounds the raw block bytes of one Blocks frame sent.
const maxAnswerFrame = mesh.MaxBlocksFrame

// Serve answers one repair stream whose hello (h, already read from fr)
// has Repair set: each Offer of IDs gets the blocks this node reads
// soundly, then a Want bitmap of what was sent. It returns when the peer
// closes its side. Its refusals are streams.Refusals.
func (f *Fetcher) Serve(ctx context.Context, s *mesh.Stream, fr *mesh.FrameReader, h *mesh.ReplHello) error {
	peer := s.Peer()
	if peer.Agent {
		return streams.Refuse(mesh.CodeForbidden, "repair requests are for node certificates, refused for %s", peer)
	}
	if h.Service != "" {
		svc := f.o.Catalog.Catalog().Service(h.Service)
		if svc == nil {
			return streams.Refuse(mesh.CodeNotFound, "service %s is not in the applied policy", h.Service)
		}
		if svc.Primary != string(peer.Site) && svc.Copy(string(peer.Site)) == nil {
			return streams.Refuse(mesh.CodeForbidden, "service %s keeps nothing at site %s", h.Service, peer.Site)
		}
	}
	ctx = context.WithValue(ctx, servingKey{}, true)
	var out []byte
	for {
		t, p, err := fr.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read repair request: %w", err)
		}
		if t != mesh.FrameOffer {
			return streams.Refuse(mesh.CodeBadRequest, "repair: frame type %d, want offer", t)
		}
		ids, err := mesh.DecodeOffer(p)
		if err != nil {
			return streams.Refuse(mesh.CodeBadRequest, "repair: %v", err)
		}
		if len(ids) > mesh.MaxRepairIDs {
			return streams.Refuse(mesh.CodeBadRequest, "repair: %d IDs in one request, at most %d", len(ids), mesh.MaxRepairIDs)
		}
		sent := make([]bool, len(ids))
		out = out[:0]
		for i, id := range ids {
			data, err := f.o.Store.Get(ctx, id)
			if err != nil {
				continue // damaged or absent here too: the peer asks elsewhere
			}
			if len(out) > 0 && len(out)+len(data) > maxAnswerFrame {
				if err := mesh.WriteFrame(s, mesh.FrameBlocks, out); err != nil {
					return err
				}
				out = out[:0]
			}
			out = mesh.AppendBlock(out, mesh.BlockRecord{ID: id, Codec: mesh.CodecRaw, RawLen: len(data), Data: data})
			sent[i] = true
		}
		if len(out) > 0 {
			if err := mesh.WriteFrame(s, mesh.FrameBlocks, out); err != nil {
				return err
			}
		}
		if err := mesh.WriteFrame(s, mesh.FrameWant, mesh.AppendWant(nil, sent)); err != nil {
			return err
		}
	}
}

// Found is a block fetched from a peer, its hash checked.
type Found struct {
	Data []byte
	From mesh.NodeID
}

// Fetch asks the other data nodes for the blocks ids (of service, "" when
// not known), nodes of this site first, then the nodes holding service's
// copies, then the rest, until every block is found or every node was
// asked. It returns what it found; the error says which nodes failed,
// and is nil when every block was found.
func (f *Fetcher) Fetch(ctx context.Context, service string, ids []blockstore.ID) (map[blockstore.ID]Found, error) {
	found := map[blockstore.ID]Found{}
	if Serving(ctx) {
		return found, errors.New("not asked further while answering a repair request")
	}
	want := slices.Clone(ids)
	var errs []error
	for _, ni := range f.peers(service) {
		if len(want) == 0 {
			break
		}
		got, err := f.ask(ctx, ni, service, want)
		for id, data := range got {
			found[id] = Found{Data: data, From: ni.Name}
		}
		if err != nil {
			if ctx.Err() != nil {
				return found, ctx.Err()
			}
			errs = append(errs, fmt.Errorf("%s: %w", ni.Name, err))
		}
		want = slices.DeleteFunc(want, func(id blockstore.ID) bool { _, ok := found[id]; return ok })
	}
	if len(want) > 0 {
		errs = append(errs, fmt.Errorf("%d of %d blocks held by no node asked", len(want), len(ids)))
	}
	return found, errors.Join(errs...)
}

// peers are the data nodes to ask, nearest first: this site's, then the
// service's holders, then the other nodes by site and name.
func (f *Fetcher) peers(service string) []catalog.NodeInfo {
	cat := f.o.Catalog.Catalog()
	holder := map[mesh.NodeID]bool{}
	if st := cat.Services[service]; st != nil {
		for _, n := range st.Holders {
			holder[n] = true
		}
	}
	rank := func(ni catalog.NodeInfo) int {
		switch {
		case ni.Site == f.o.Site:
			return 0
		case holder[ni.Name]:
			return 1
		}
		return 2
	}
	var out []catalog.NodeInfo
	for _, ni := range cat.Nodes {
		if ni.Name == f.o.Name || ni.Role == "witness" || ni.QUIC == "" {
			continue
		}
		out = append(out, ni)
	}
	slices.SortFunc(out, func(a, b catalog.NodeInfo) int {
		if d := rank(a) - rank(b); d != 0 {
			return d
		}
		if c := strings.Compare(string(a.Site), string(b.Site)); c != 0 {
			return c
		}
		return strings.Compare(string(a.Name), string(b.Name))
	})
	return out
}

// ask requests ids from one node, MaxRepairIDs at a time, and returns the
// blocks whose hash matches their ID.
func (f *Fetcher) ask(ctx context.Context, ni catalog.NodeInfo, service string, ids []blockstore.ID) (map[blockstore.ID][]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, f.o.Timeout)
	defer cancel()
	s, err := f.o.Dial(ctx, ni.QUIC, mesh.KindBlocks)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Abort(mesh.CodeUnavailable) })
	defer stop()
	hello := mesh.ReplHello{Version: mesh.ReplVersion, Service: service, Site: f.o.Site, Repair: true}
	b, _ := json.Marshal(hello)
	if err := mesh.WriteFrame(s, mesh.FrameReplHello, b); err != nil {
		return nil, err
	}
	fr := mesh.NewFrameReader(s, mesh.KindBlocks.MaxFrame())
	got := map[blockstore.ID][]byte{}
	for len(ids) > 0 {
		batch := ids[:min(len(ids), mesh.MaxRepairIDs)]
		ids = ids[len(batch):]
		if err := mesh.WriteFrame(s, mesh.FrameOffer, mesh.AppendOffer(nil, batch)); err != nil {
			return got, err
		}
		if err := f.answer(fr, batch, got); err != nil {
			return got, err
		}
	}
	return got, nil
}

// answer reads one answer: Blocks frames, then the Want bitmap.
func (f *Fetcher) answer(fr *mesh.FrameReader, batch []blockstore.ID, got map[blockstore.ID][]byte) error {
	asked := map[blockstore.ID]bool{}
	for _, id := range batch {
		asked[id] = true
	}
	n := 0
	for {
		t, p, err := fr.Next()
		if err != nil {
			return err
		}
		switch t {
		case mesh.FrameTypeError:
			re, err := mesh.ParseError(p)
			if err != nil {
				return err
			}
			return re
		case mesh.FrameBlocks, mesh.FrameWant:
		default:
			return fmt.Errorf("repair answer: frame type %d, want blocks or want", t)
		}
		if t == mesh.FrameWant {
			sent, err := mesh.DecodeWant(p, len(batch))
			if err != nil {
				return err
			}
			if c := countTrue(sent); c != n {
				return fmt.Errorf("repair answer: says %d blocks sent, %d arrived", c, n)
			}
			return nil
		}
		recs, err := mesh.DecodeBlocks(p)
		if err != nil {
			return err
		}
		for _, r := range recs {
			n++
			if !asked[r.ID] || r.Codec != mesh.CodecRaw {
				return fmt.Errorf("repair answer: block %s was not asked for, or not raw", r.ID.Short())
			}
			if f.hash.ID(r.Data) != r.ID {
				f.log.Warn("a node sent a block that does not match its ID; not used", "block", r.ID.String())
				continue
			}
			got[r.ID] = slices.Clone(r.Data)
		}
	}
}

func countTrue(bs []bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// One fetches one block for the store's read path (blockstore
// Options.Fetch); a nil Fetcher (before the node is up) finds nothing.
func (f *Fetcher) One(ctx context.Context, id blockstore.ID) ([]byte, error) {
	if f == nil {
		return nil, errors.New("no repair from other nodes yet: the node is starting")
	}
	got, err := f.Fetch(ctx, "", []blockstore.ID{id})
	if b, ok := got[id]; ok {
		return b.Data, nil
	}
	return nil, err
}
