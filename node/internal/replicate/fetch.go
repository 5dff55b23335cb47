package replicate

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/lifeboat-dr/lifeboat/internal/retry"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/mesh/throttle"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/streams"
)

// fetchState tracks the fetches of this node, by service.
type fetchState struct {
	running map[string]time.Time // start
	done    map[string]bool      // fetched for the current holder assignment
	// A failed fetch is tried again after a back-off, not at every sync.
	retries map[string]*fetchRetry
}

type fetchRetry struct {
	b     *retry.Backoff // after a retryable failure
	park  *retry.Backoff // after a permanent refusal
	after time.Time      // no attempt before
}

// Fetching reports whether agents of service should wait for a fetch, and
// since when it runs. Safe for concurrent use.
func (e *Engine) Fetching(service string) (since time.Time, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	since, ok = e.fetches.running[service]
	if ok && e.o.Clock.Now().Sub(since) > e.o.HolderTimeout {
		return since, false
	}
	return since, ok
}

// startFetches starts a fetch for every service this node holds at its
// primary site without any point; e.mu must be held.
func (e *Engine) startFetches(ctx context.Context, cat *catalog.Catalog) {
	if cat.Policy == nil || cat.Policy.Cluster == nil {
		return
	}
	for _, svc := range cat.ServiceList() {
		if svc.Primary != string(e.o.Site) || cat.Holder(svc.Name, svc.Primary) != e.o.Name {
			delete(e.fetches.done, svc.Name) // a later assignment fetches again
			delete(e.fetches.retries, svc.Name)
			continue
		}
		if _, ok := e.fetches.running[svc.Name]; ok || e.fetches.done[svc.Name] {
			continue
		}
		if r := e.fetches.retries[svc.Name]; r != nil && e.o.Clock.Now().Before(r.after) {
			continue
		}
		if p, _ := e.o.Held.Newest(svc.Name); p != nil {
			e.fetches.done[svc.Name] = true // it has points: nothing to fetch
			continue
		}
		// The copy with the newest point; hot and warm before cold at
		// equal age, as they are closer to the primary's state.
		var from catalog.NodeInfo
		var best catalog.Watermark
		st := cat.Services[svc.Name]
		for _, c := range svc.Copies {
			w, ok := st.Watermarks[c.Site]
			h := cat.Holder(svc.Name, c.Site)
			ni, known := cat.Nodes[h]
			if !ok || w.Point == "" || !known || ni.QUIC == "" {
				continue
			}
			if from.Name == "" || w.Time.After(best.Time) {
				from, best = ni, w
			}
		}
		if from.Name == "" {
			e.fetches.done[svc.Name] = true // no copy anywhere: the agents ship everything
			continue
		}
		e.fetches.running[svc.Name] = e.o.Clock.Now()
		name := svc.Name
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			err := e.fetch(ctx, name, from)
			key := "fetch/" + name
			e.mu.Lock()
			defer e.mu.Unlock()
			delete(e.fetches.running, name)
			switch {
			case err == nil:
				e.fetches.done[name] = true
				delete(e.fetches.retries, name)
				e.o.Logs.OK(key)
				e.o.Logs.OK(key + "/refused")
			case ctx.Err() != nil:
			default:
				if e.fetches.retries == nil {
					e.fetches.retries = map[string]*fetchRetry{}
				}
				r := e.fetches.retries[name]
				if r == nil {
					r = &fetchRetry{b: retry.New(retry.Options{Initial: time.Second, Max: 30 * time.Second, After: e.o.Clock.After}),
						park: retry.New(retry.Options{Initial: 10 * time.Second, Max: 10 * time.Minute, After: e.o.Clock.After})}
					e.fetches.retries[name] = r
				}
				if !mesh.IsRetryable(err) {
					// The copy refuses for good (issue 14 item 4): no
					// quick retry, and the agents are not held off. A
					// copy whose catalog only lagged is asked again
					// after the park; the agents' first point ends it.
					d := r.park.Next()
					r.after = e.o.Clock.Now().Add(d)
					e.o.Logs.Fail(key+"/refused", "fetch of the newest point refused by the copy; parked, the agents ship their changes meanwhile", err,
						"check the copy's node and the policy; a holder change fetches again", "service", name, "from", from.Name, "park", d)
					break
				}
				d := r.b.Next()
				r.after = e.o.Clock.Now().Add(d)
				e.o.Logs.Fail(key, "fetch the newest point from a copy; will retry", err,
					"the agents are held off until the fetch succeeds or holder_timeout passes; check the link to the copy's site",
					"service", name, "from", from.Name, "retry_in", d)
			}
		}()
	}
}

// fetch receives the newest point of service from the holder of a copy.
func (e *Engine) fetch(ctx context.Context, service string, from catalog.NodeInfo) error {
	e.log.Info("holder without points: fetching the newest point from a copy", "service", service, "from", from.Name, "site", from.Site)
	start := e.o.Clock.Now()
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	s, err := e.o.Dial(dctx, from.QUIC, mesh.KindBlocks)
	cancel()
	if err != nil {
		return fmt.Errorf("dial %s: %w", from.Name, err)
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Abort(mesh.CodeUnavailable) })
	defer stop()
	b, _ := json.Marshal(mesh.ReplHello{Version: mesh.ReplVersion, Service: service, Site: e.o.Site, Tier: "primary", Fetch: true})
	if err := mesh.WriteFrame(s, mesh.FrameReplHello, b); err != nil {
		return err
	}
	fr := mesh.NewFrameReader(s, mesh.KindBlocks.MaxFrame())
	err = e.receivePoints(ctx, s, fr, service)
	p, _ := e.o.Held.Newest(service)
	if p == nil {
		if err == nil {
			err = fmt.Errorf("the stream ended without a point")
		}
		return err
	}
	e.log.Info("fetched the newest point from a copy", "service", service, "from", from.Name, "point", p.ID, "point_time", p.Time, "took", e.o.Clock.Now().Sub(start).Round(time.Millisecond))
	return nil
}

// serveFetch sends the newest point of a service this node holds a copy
// of to the holder at the primary site that asks for it, then ends.
func (e *Engine) serveFetch(ctx context.Context, s *mesh.Stream, fr *mesh.FrameReader, h *mesh.ReplHello, cat *catalog.Catalog) error {
	peer := s.Peer()
	svc := cat.Service(h.Service)
	if string(peer.Site) != svc.Primary || cat.Holder(h.Service, svc.Primary) != peer.Name {
		return streams.Refuse(mesh.CodeForbidden, "a fetch of service %s is for its holder at its primary site %s, not %s", h.Service, svc.Primary, peer.Name)
	}
	c := svc.Copy(string(e.o.Site))
	if c == nil || cat.Holder(h.Service, string(e.o.Site)) != e.o.Name {
		return streams.Refuse(mesh.CodeUnavailable, "node %s does not hold a copy of service %s", e.o.Name, h.Service)
	}
	latest, _ := e.o.Held.Newest(h.Service)
	if latest == nil {
		return streams.Refuse(mesh.CodeNotFound, "node %s holds no point of service %s yet", e.o.Name, h.Service)
	}
	tier, err := throttle.ParseTier(string(c.Tier))
	if err != nil {
		tier = throttle.Cold
	}
	e.mu.Lock()
	link := e.link(peer.Site)
	e.mu.Unlock()
	sd := &sender{e: e, key: replKey{h.Service, string(peer.Site)}, dest: peer.Name, tier: tier, tierName: string(c.Tier),
		link: link, rated: true, log: e.log.With("service", h.Service, "to", peer.Name, "fetch", true)}
	p, err := fr.Expect(mesh.FrameReplWelcome)
	if err != nil {
		return err
	}
	w, err := mesh.DecodeReplWelcome(p)
	if err != nil {
		return streams.Refuse(mesh.CodeBadRequest, "%v", err)
	}
	base, err := sd.commonBase(ctx, w.Points)
	if err != nil {
		return err
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return err
	}
	defer enc.Close()
	sd.log.Info("sending the newest point to the primary's new holder", "point", latest.ID)
	if err := sd.sendPoint(ctx, s, fr, enc, base, latest); err != nil {
		return err
	}
	return s.CloseWrite()
}
