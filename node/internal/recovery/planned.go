package recovery

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/api"
)

// A planned failover asks the service's holder at the site it runs at to
// stop it (admin stream frames 5 and 6): the holder runs the stop hook,
// then waits for the agent's first point made after the hook ended. That
// point holds every write the servers made, so failing over at it loses
// nothing.
const (
	FrameStop    mesh.FrameType = 5 // JSON stopRequest; the node's admin stream server hands it to ServeStop
	frameStopped mesh.FrameType = 6 // JSON stopReply
)

type stopRequest struct {
	Service string `json:"service"`
	By      string `json:"by"`
}

type stopReply struct {
	Point  string    `json:"point"`
	Time   time.Time `json:"time"`
	Output string    `json:"output,omitempty"`
}

// finalPointWait bounds the wait for the agent's point after the stop
// hook, beyond the hook timeout.
const finalPointWait = time.Minute

// finalPoint has the primary's holder stop the service and returns
// the final point once this node holds it.
func (e *Engine) finalPoint(ctx context.Context, service string, svc *config.Service, emit func(api.FailoverEvent)) (blockstore.Point, error) {
	cat := e.o.Catalog.Catalog()
	holder := cat.Holder(service, svc.Primary)
	addr := addrOf(e.o.Members(), holder)
	if holder == "" || addr == "" {
		return blockstore.Point{}, fmt.Errorf("%w: planned failover: the holder of %s at %s (%q) is not reachable; for a lost site use --force without --planned", api.ErrNoQuorum, service, svc.Primary, holder)
	}
	emit(api.FailoverEvent{Step: "stop", Message: fmt.Sprintf("stopping %s at %s (%s): stop hook, then the final point", service, svc.Primary, holder)})
	wait := time.Duration(svc.Hooks.Timeout) + finalPointWait
	sctx, cancel := context.WithTimeout(ctx, wait+10*time.Second)
	defer cancel()
	s, err := e.o.Dial(sctx, addr, mesh.KindAdmin)
	if err != nil {
		return blockstore.Point{}, fmt.Errorf("planned failover: dial %s: %w", holder, err)
	}
	defer s.Close()
	if d, ok := sctx.Deadline(); ok {
		s.SetDeadline(d)
	}
	req, _ := json.Marshal(stopRequest{Service: service, By: string(e.o.Name)})
	if err := mesh.WriteFrame(s, FrameStop, req); err != nil {
		return blockstore.Point{}, fmt.Errorf("planned failover: ask %s to stop: %w", holder, err)
	}
	p, err := mesh.NewFrameReader(s, 64<<10).Expect(frameStopped)
	if err != nil {
		return blockstore.Point{}, fmt.Errorf("planned failover: %s: %w", holder, err)
	}
	var rep stopReply
	if err := json.Unmarshal(p, &rep); err != nil || rep.Point == "" {
		return blockstore.Point{}, fmt.Errorf("planned failover: bad answer from %s: %q", holder, p)
	}
	emit(api.FailoverEvent{Step: "stop", Message: fmt.Sprintf("stopped; final point %s at %s; stop hook: %s", shortID(rep.Point), rep.Time.Format(time.RFC3339Nano), rep.Output)})
	// Wait for the final point to arrive here.
	tick := e.o.Clock.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		latest, changed := e.o.Held.Newest(service)
		if latest != nil && !latest.Time.Before(rep.Time) {
			c, err := e.resolveServicePoint(ctx, service, rep.Point)
			if err == nil {
				emit(api.FailoverEvent{Step: "stop", Message: "the final point is here"})
				return c.point, nil
			}
		}
		select {
		case <-ctx.Done():
			return blockstore.Point{}, fmt.Errorf("planned failover: waiting for the final point %s to arrive: %w", shortID(rep.Point), ctx.Err())
		case <-changed:
		case <-tick.C():
			emit(api.FailoverEvent{Step: "stop", Message: "waiting for the final point to arrive by replication"})
		}
	}
}

// decodeStopRequest checks a stop request's payload.
func decodeStopRequest(p []byte) (stopRequest, error) {
	var req stopRequest
	if len(p) > 64<<10 {
		return req, fmt.Errorf("stop request: %d bytes, limit 64 KiB", len(p))
	}
	dec := json.NewDecoder(bytes.NewReader(p))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, fmt.Errorf("stop request: %v", err)
	}
	if err := blockstore.ValidName("service", req.Service); err != nil {
		return req, fmt.Errorf("stop request: %w", err)
	}
	return req, nil
}

// ServeStop answers a stop request (admin stream frame 5, payload p). It runs on the service's holder at the site it runs at.
func (e *Engine) ServeStop(ctx context.Context, s *mesh.Stream, p []byte) {
	req, err := decodeStopRequest(p)
	if err != nil {
		mesh.WriteError(s, mesh.CodeBadRequest, err.Error())
		return
	}
	if s.Peer().Agent {
		mesh.WriteError(s, mesh.CodeForbidden, "stop request from an agent certificate")
		return
	}
	cat := e.o.Catalog.Catalog()
	svc := cat.Service(req.Service)
	if svc == nil || svc.Primary != string(e.o.Site) || cat.Holder(req.Service, svc.Primary) != e.o.Name {
		mesh.WriteError(s, mesh.CodeWrongNode, fmt.Sprintf("this node does not run service %s as its primary holder", req.Service))
		return
	}
	timeout := time.Duration(svc.Hooks.Timeout)
	s.SetDeadline(time.Now().Add(timeout + finalPointWait + 10*time.Second))
	e.log.Warn("planned failover: stopping the service", "service", req.Service, "by", req.By, "peer", s.Peer().Name)
	out := "no stop hook"
	if svc.Hooks.Stop != "" {
		var err error
		out, err = e.runHook(ctx, "stop", svc.Hooks.Stop, []string{"LIFEBOAT_SERVICE=" + req.Service, "LIFEBOAT_SITE=" + string(e.o.Site)}, timeout)
		if err != nil {
			mesh.WriteError(s, mesh.CodeUnavailable, err.Error())
			return
		}
	}
	stopped := e.o.Clock.Now()
	epoch := cat.Services[req.Service].Epoch
	deadline := e.o.Clock.After(finalPointWait)
	for {
		latest, changed := e.o.Held.Newest(req.Service)
		if latest != nil && !latest.Time.Before(stopped) {
			e.o.Stop(req.Service, epoch)
			e.log.Warn("planned failover: the final point is taken; no more writes for the service here", "service", req.Service, "point", latest.ID)
			b, _ := json.Marshal(stopReply{Point: latest.ID, Time: latest.Time, Output: out})
			mesh.WriteFrame(s, frameStopped, b)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-deadline:
			mesh.WriteError(s, mesh.CodeUnavailable, fmt.Sprintf("no point of %s after the stop hook within %s: is its agent running?", req.Service, finalPointWait))
			return
		}
	}
}

// addrOf returns the QUIC address a member advertises, or "".
func addrOf(members []mesh.Member, id mesh.NodeID) string {
	for _, m := range members {
		if m.Name == id {
			return m.Meta.QUIC
		}
	}
	return ""
}
