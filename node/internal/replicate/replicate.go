package replicate

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/internal/clock"
	"github.com/lifeboat-dr/lifeboat/internal/logpolicy"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/mesh/throttle"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// CatalogReader gives the current catalog (an immutable snapshot); View
// also returns a channel closed at the next change.
type CatalogReader interface {
	Catalog() *catalog.Catalog
	View() (*catalog.Catalog, <-chan struct{})
}

// Held is the node's newest point per service, shared with ingest. Safe
// for concurrent use.
type Held interface {
	// Newest returns the service's newest point (nil = none) and a channel
	// closed when it changes.
	Newest(service string) (*blockstore.Point, <-chan struct{})
	// Hold records a point committed here by replication: it becomes the
	// newest if it is not older.
	Hold(service string, p *blockstore.Point)
}

// Options configure an Engine. Every field but Store, Logs, Logger, Now,
// HolderTimeout and the counters is required.
type Options struct {
	Name          mesh.NodeID
	Site          mesh.Site
	Clock         clock.Clock       // progress reports, throttles, schedules, back-off; nil = the real clock
	HolderTimeout time.Duration     // how long agents are held off while a fetch runs; 0 = 1m
	Store         *blockstore.Store // nil on a witness: Run returns at once
	Catalog       CatalogReader
	// Propose writes a command (the senders' progress) to the catalog and
	// returns once it is applied on this node.
	Propose func(context.Context, *catalog.Command) error
	// Dial opens a stream of kind to a node's QUIC address.
	Dial func(ctx context.Context, addr string, kind mesh.StreamKind) (*mesh.Stream, error)
	Held Held
	// CheckBranches records the divergent points of services that failed
	// over away from this site (the recovery engine's), before senders
	// start; BranchCheckDue returns the failover whose branch check is
	// still due for service, when a receiver must wait for it.
	CheckBranches  func(ctx context.Context)
	BranchCheckDue func(cat *catalog.Catalog, service string) *catalog.FailoverRecord
	// Arrived tells the tier engines that a point was committed here;
	// Note queues it for the service's watermark.
	Arrived func(service string, p blockstore.Point)
	Note    func(p blockstore.Point)
	// Space refuses received points of a service while the disk is too
	// full (a *streams.Refusal with mesh.CodeNoSpace); nil = never.
	Space func(service string) error
	// ServeRepair answers a stream whose hello asks for blocks by ID
	// (node/internal/repair); nil = such streams are refused.
	ServeRepair func(ctx context.Context, s *mesh.Stream, fr *mesh.FrameReader, h *mesh.ReplHello) error
	Logs        *logpolicy.Repeats // failures that repeat; nil = a new one on Logger
	Logger      *slog.Logger
	// Counters; nil = not counted. Sent, Logical, Dedup and CompressSaved
	// are by link and tier; Points and Errors by service and site;
	// Received by service.
	Sent, Logical, Dedup, CompressSaved *prometheus.CounterVec
	Points, Errors, Received            *prometheus.CounterVec
}

// Engine runs this node's senders, holds one throttle per link, fetches
// missing points, and receives the streams the node hands it.
type Engine struct {
	o       Options
	log     *slog.Logger
	mu      sync.Mutex
	senders map[replKey]*sender
	links   map[mesh.Site]*linkState
	fetches fetchState
	cat     *catalog.Catalog // as sync last read it
	wg      sync.WaitGroup   // running fetches
}

// New returns an Engine; Run starts it.
func New(o Options) *Engine {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.Clock = clock.Or(o.Clock)
	if o.HolderTimeout == 0 {
		o.HolderTimeout = time.Minute
	}
	if o.Logs == nil {
		o.Logs = logpolicy.New(logpolicy.Options{Log: o.Logger, Now: o.Clock.Now})
	}
	lt, ss := []string{"link", "tier"}, []string{"service", "site"}
	for _, c := range []struct {
		v      **prometheus.CounterVec
		labels []string
	}{{&o.Sent, lt}, {&o.Logical, lt}, {&o.Dedup, lt}, {&o.CompressSaved, lt}, {&o.Points, ss}, {&o.Errors, ss}, {&o.Received, []string{"service"}}} {
		if *c.v == nil {
			*c.v = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "unregistered"}, c.labels)
		}
	}
	return &Engine{o: o, log: o.Logger, senders: map[replKey]*sender{}, links: map[mesh.Site]*linkState{},
		fetches: fetchState{running: map[string]time.Time{}, done: map[string]bool{}}}
}

// LinkStats returns a snapshot of the throttle of every link this node
// has sent on (for the link gauges). Safe for concurrent use.
func (e *Engine) LinkStats() []throttle.Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]throttle.Stats, 0, len(e.links))
	for _, l := range e.links {
		out = append(out, l.t.Stats())
	}
	return out
}

type replKey struct {
	service string
	site    string
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

// Run starts and stops senders as the catalog's holders and policy change,
// and reports their progress to the catalog, until ctx ends. It returns
// once every sender and fetch it started has ended. On a witness (no
// Store) it returns at once.
func (e *Engine) Run(ctx context.Context) error {
	if e.o.Store == nil {
		return nil
	}
	defer e.wg.Wait() // the fetches: they end with ctx
	defer func() {
		e.mu.Lock()
		for _, s := range e.senders {
			s.cancel()
			<-s.done
		}
		for _, l := range e.links {
			l.t.Close()
		}
		e.mu.Unlock()
	}()
	t := e.o.Clock.NewTicker(time.Second)
	defer t.Stop()
	for {
		e.o.CheckBranches(ctx)
		e.sync(ctx)
		e.report(ctx)
		_, applied := e.o.Catalog.View()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
		case <-applied: // a policy or holder change starts senders at once
		}
	}
}

// sync makes the running senders match the catalog.
func (e *Engine) sync(ctx context.Context) {
	cat := e.o.Catalog.Catalog()
	want := wantedSenders(cat, e.o.Name, e.o.Site)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cat = cat
	for site, l := range e.links {
		e.refreshLink(l, site)
	}
	e.startFetches(ctx, cat)
	for k, s := range e.senders {
		if w, ok := want[k]; !ok || !w.same(s) {
			s.cancel()
			<-s.done
			delete(e.senders, k)
		}
	}
	for k, w := range want {
		if _, ok := e.senders[k]; ok {
			continue
		}
		s := e.newSender(ctx, w)
		e.senders[k] = s
		go func() {
			defer close(s.done)
			s.run()
		}()
	}
}

// wantedSenders returns the senders node name at site should run by the
// catalog: one per service whose primary's holder it is and recovery site
// with a holder.
func wantedSenders(cat *catalog.Catalog, name mesh.NodeID, site mesh.Site) map[replKey]wanted {
	want := map[replKey]wanted{}
	if cat.Policy != nil && cat.Policy.Cluster != nil {
		pol := cat.Policy.Cluster
		for _, svc := range cat.ServiceList() {
			if svc.Primary != string(site) {
				continue
			}
			holder := cat.Holder(svc.Name, svc.Primary)
			for _, c := range svc.Copies {
				dest := cat.Holder(svc.Name, c.Site)
				if holder != name || dest == "" {
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
	return want
}

func (e *Engine) newSender(ctx context.Context, w wanted) *sender {
	tier, err := throttle.ParseTier(string(w.tier))
	if err != nil {
		tier = throttle.Cold
	}
	loc := w.loc
	if loc == nil {
		loc = time.UTC
	}
	s := &sender{
		e: e, key: w.key, dest: w.dest, tier: tier, tierName: string(w.tier),
		coalesce: w.coalesce, cadence: w.cadence, loc: loc,
		link: e.link(mesh.Site(w.key.site)), done: make(chan struct{}),
		log: e.log.With("service", w.key.service, "to_site", w.key.site, "to", w.dest, "tier", w.tier),
	}
	s.prog = catalog.Progress{Service: w.key.service, Site: w.key.site, From: e.o.Name}
	s.ctx, s.cancel = context.WithCancel(ctx)
	return s
}

// report writes the senders' progress to the catalog when it changed.
func (e *Engine) report(ctx context.Context) {
	e.mu.Lock()
	var batch []catalog.Progress
	var changed []*sender
	for _, s := range e.senders {
		s.progMu.Lock()
		p := s.prog
		if p.Sending != s.reported.Sending || p.Error != s.reported.Error || p.Backlog != s.reported.Backlog && e.o.Clock.Now().Sub(s.reported.At) > 5*time.Second {
			p.At = e.o.Clock.Now()
			batch = append(batch, p)
			changed = append(changed, s)
		}
		s.progMu.Unlock()
	}
	e.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := e.o.Propose(actx, &catalog.Command{Op: catalog.OpProgress, Progress: batch}); err != nil {
		return // the next round retries
	}
	for i, s := range changed {
		s.progMu.Lock()
		s.reported = batch[i]
		s.progMu.Unlock()
	}
}
