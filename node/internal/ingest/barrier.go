package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/internal/streams"
)

// Cross-agent barriers (mesh doc.go, barrier stream): a service with
// several agents (one per server) gets points that are consistent across
// servers. Every BarrierInterval the node asks all the service's agents
// to stop acknowledging writes and mark their write streams; once all have
// marked (within barrierHold) it releases them. Each agent then commits a
// point exactly at its mark, and the node composes the service point
// "barrier/ID" from those states: no write in it depends on one it lacks,
// because no write was acknowledged anywhere between the first mark and
// the last.

// barrierHold bounds how long agents hold write acknowledgements.
const barrierHold = 500 * time.Millisecond

type barrierConn struct {
	agent string
	s     *mesh.Stream
	fr    *mesh.FrameReader
	dead  chan struct{}
	once  sync.Once
}

func (c *barrierConn) kill() { c.once.Do(func() { close(c.dead); c.s.Close() }) }

// barriers are the barrier streams per service and agent.
type barriers struct {
	mu    sync.Mutex
	conns map[string]map[string]*barrierConn
	next  uint64
}

// pendingBarrier is a released barrier waiting for each agent's commit at
// its mark.
type pendingBarrier struct {
	id     uint64
	at     time.Time
	marks  map[string]uint64                   // agent → mark seq
	states map[string][]blockstore.VolumeState // agent → its volumes at the mark
}

// joinBarrier registers an agent's barrier stream and holds it open until
// the coordinator drops it or the node stops.
func (e *Engine) joinBarrier(ctx context.Context, s *mesh.Stream, fr *mesh.FrameReader, p []byte) error {
	peer := s.Peer()
	h, err := mesh.DecodeHello(p)
	if err != nil {
		return streams.Refuse(mesh.CodeBadRequest, "%v", err)
	}
	if !peer.Agent || h.Service != peer.Service || h.Agent != string(peer.Name) {
		return streams.Refuse(mesh.CodeForbidden, "barrier stream of %s for service %s refused", peer, h.Service)
	}
	c := &barrierConn{agent: h.Agent, s: s, fr: fr, dead: make(chan struct{})}
	e.bars.mu.Lock()
	if e.bars.conns == nil {
		e.bars.conns = map[string]map[string]*barrierConn{}
	}
	if e.bars.conns[h.Service] == nil {
		e.bars.conns[h.Service] = map[string]*barrierConn{}
	}
	if old := e.bars.conns[h.Service][h.Agent]; old != nil {
		old.kill()
	}
	e.bars.conns[h.Service][h.Agent] = c
	e.bars.mu.Unlock()
	e.log.Info("agent joined the service's barriers", "peer", h.Agent, "service", h.Service)
	select {
	case <-ctx.Done():
	case <-c.dead:
	case <-s.Context().Done(): // the agent went away
	}
	c.kill()
	e.bars.mu.Lock()
	if e.bars.conns[h.Service][h.Agent] == c {
		delete(e.bars.conns[h.Service], h.Agent)
	}
	e.bars.mu.Unlock()
	return nil
}

// barrierLoop runs a barrier for every service with two or more agents,
// every BarrierInterval.
func (e *Engine) barrierLoop(ctx context.Context) {
	t := e.o.Clock.NewTicker(e.o.BarrierInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		e.bars.mu.Lock()
		groups := map[string][]*barrierConn{}
		for svc, m := range e.bars.conns {
			if len(m) >= 2 {
				groups[svc] = slices.Collect(maps.Values(m))
			}
		}
		e.bars.mu.Unlock()
		for svc, conns := range groups {
			if err := e.runBarrier(svc, conns); err != nil {
				e.o.Logs.Fail("barrier/"+svc, "barrier across the service's agents failed; the next one retries", err,
					"points stay per agent until a barrier completes; check that every agent of the service is connected (lifeboat status)", "service", svc)
			} else {
				e.o.Logs.OK("barrier/" + svc)
			}
		}
	}
}

// runBarrier runs one barrier over conns.
func (e *Engine) runBarrier(svc string, conns []*barrierConn) error {
	e.bars.mu.Lock()
	e.bars.next++
	id := e.bars.next
	e.bars.mu.Unlock()
	// The point's time: before any agent marks, so every write
	// acknowledged before it is in every agent's part. The wall clock, as
	// the agents' point times are; the stream deadlines are real time too.
	at := time.Now()
	prep, _ := json.Marshal(mesh.Barrier{ID: id, Hold: barrierHold.Milliseconds()})
	deadline := time.Now().Add(barrierHold)
	for _, c := range conns {
		c.s.SetWriteDeadline(deadline)
		if err := mesh.WriteFrame(c.s, mesh.FrameBarrierPrepare, prep); err != nil {
			c.kill()
		}
	}
	marks := map[string]uint64{}
	var problems []string
	for _, c := range conns {
		c.s.SetReadDeadline(deadline)
		t, p, err := c.fr.Next()
		var b mesh.Barrier
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("%s: %v", c.agent, err))
			c.kill()
			continue
		case t != mesh.FrameBarrierMarked || json.Unmarshal(p, &b) != nil || b.ID != id:
			problems = append(problems, fmt.Sprintf("%s: unexpected answer", c.agent))
			c.kill()
			continue
		case b.Seq == 0:
			problems = append(problems, fmt.Sprintf("%s: cannot mark (overflow)", c.agent))
			continue
		}
		marks[c.agent] = b.Seq
	}
	ok := len(problems) == 0
	if ok {
		// Installed before the release: an agent may commit at its mark
		// as soon as it has marked.
		e.installBarrier(svc, &pendingBarrier{id: id, at: at, marks: marks, states: map[string][]blockstore.VolumeState{}})
	}
	rel, _ := json.Marshal(mesh.Barrier{ID: id, OK: ok})
	for _, c := range conns {
		c.s.SetWriteDeadline(time.Now().Add(barrierHold))
		if err := mesh.WriteFrame(c.s, mesh.FrameBarrierRelease, rel); err != nil {
			c.kill()
		}
	}
	if !ok {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// installBarrier makes b the service's pending barrier. Agents that
// already committed exactly at their mark contribute their volumes from
// the newest point (only an agent changes its own volumes); one already
// past its mark makes the barrier fail.
func (e *Engine) installBarrier(svc string, b *pendingBarrier) {
	st := e.svcs.Get(svc)
	st.mu.Lock()
	defer st.mu.Unlock()
	for agent, mark := range b.marks {
		switch seq := st.seqs[agent]; {
		case seq > mark:
			e.log.Warn("barrier dropped: an agent committed past its mark", "service", svc, "peer", agent, "barrier", b.id)
			return
		case seq == mark && st.latest != nil:
			b.states[agent] = st.agentVolumes[agent]
		}
	}
	st.barrier = b
	if len(b.states) == len(b.marks) {
		e.composeBarrier(context.Background(), svc, st)
	}
}

// barrierCommitted notes an agent's commit; when every agent of a pending
// barrier has committed at its mark, it composes the service point. The
// service's mutex is held.
func (s *session) barrierCommitted(ctx context.Context, seq uint64) {
	st := s.state
	b := st.barrier
	if b == nil {
		return
	}
	mark, ok := b.marks[s.agent]
	if !ok || b.states[s.agent] != nil {
		return
	}
	if seq > mark {
		s.e.log.Warn("barrier dropped: an agent committed past its mark", "service", s.svc.Name, "peer", s.agent, "barrier", b.id)
		st.barrier = nil
		return
	}
	if seq < mark {
		return
	}
	b.states[s.agent] = st.agentVolumes[s.agent]
	if len(b.states) == len(b.marks) {
		s.e.composeBarrier(ctx, s.svc.Name, st)
	}
}

// composeBarrier commits the service point of a complete barrier: every
// agent's volumes at its mark, the other volumes as in the newest point.
// The service's mutex is held.
func (e *Engine) composeBarrier(ctx context.Context, svc string, st *State) {
	b := st.barrier
	st.barrier = nil
	vols := map[string]blockstore.VolumeState{}
	if st.latest != nil {
		for _, v := range st.latest.Volumes {
			vols[v.Name] = v
		}
	}
	for _, vs := range b.states {
		for _, v := range vs {
			vols[v.Name] = v
		}
	}
	bp := blockstore.Point{Group: svc, Name: fmt.Sprintf("barrier/%d", b.id), Time: b.at}
	for _, v := range vols {
		bp.Volumes = append(bp.Volumes, v)
	}
	slices.SortFunc(bp.Volumes, func(x, y blockstore.VolumeState) int { return strings.Compare(x.Name, y.Name) })
	if _, err := e.o.Store.CommitPoint(ctx, bp); err != nil {
		e.o.Logs.Fail("barrier commit/"+svc, "commit barrier point", err,
			"the store refuses new points: check its disk (space, errors) and `lifeboat verify`", "service", svc, "barrier", b.id)
		return
	}
	e.o.Logs.OK("barrier commit/" + svc)
	e.log.Info("consistent point across agents", "service", svc, "barrier", b.id, "agents", len(b.marks))
}
