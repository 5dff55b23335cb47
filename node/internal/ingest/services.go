package ingest

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/lifeboat-dr/lifeboat/blockstore"
)

// Services tracks, per service, the newest point and each agent's newest
// committed sequence number; one mutex per service orders commits. The
// zero value is empty and ready; safe for concurrent use.
type Services struct {
	mu  sync.Mutex
	svc map[string]*State
}

// State is one service's ingest state. Lock orders commits: Hold and the
// engine's commits run with it held; Newest takes it itself.
type State struct {
	mu      sync.Mutex
	latest  *blockstore.Point
	seqs    map[string]uint64 // by agent
	barrier *pendingBarrier   // released, waiting for the agents' commits
	// agentVolumes: each agent's volumes as of its newest commit.
	agentVolumes map[string][]blockstore.VolumeState
	changed      chan struct{} // closed and replaced when latest changes
}

// Lock takes the service's mutex.
func (s *State) Lock() { s.mu.Lock() }

// Unlock releases the service's mutex.
func (s *State) Unlock() { s.mu.Unlock() }

// setLatest records the service's newest point and wakes its replicators;
// s.mu must be held.
func (s *State) setLatest(p *blockstore.Point) {
	s.latest = p
	close(s.changed)
	s.changed = make(chan struct{})
}

// Hold records a point the store holds that did not come from an agent on
// this node (read at start, or replicated here): it becomes the newest if
// it is not older, and its agent's sequence number counts, so that an
// agent shipping here later resumes after it. The state must be locked.
func (s *State) Hold(p *blockstore.Point) {
	if s.latest == nil || !p.Time.Before(s.latest.Time) {
		s.setLatest(p)
	}
	if a, seq, ok := ParsePointName(p.Name); ok && seq > s.seqs[a] {
		s.seqs[a] = seq
	}
}

// Newest returns the service's newest point (nil = none) and a channel
// closed when it changes.
func (s *State) Newest() (*blockstore.Point, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.latest, s.changed
}

// Seq returns the newest sequence number committed for agent.
func (s *State) Seq(agent string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seqs[agent]
}

// Get returns the state of service name, creating it empty.
func (ss *Services) Get(name string) *State {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.svc == nil {
		ss.svc = map[string]*State{}
	}
	s := ss.svc[name]
	if s == nil {
		s = &State{seqs: map[string]uint64{}, agentVolumes: map[string][]blockstore.VolumeState{}, changed: make(chan struct{})}
		ss.svc[name] = s
	}
	return s
}

// Names returns the services with state on this node, sorted.
func (ss *Services) Names() []string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return slices.Sorted(maps.Keys(ss.svc))
}

// Load holds the points a store lists: the newest per service, and each
// agent's newest sequence number.
func (ss *Services) Load(ctx context.Context, store *blockstore.Store) error {
	pts, err := store.Points(ctx, "")
	if err != nil {
		return err
	}
	for i := range pts {
		p := pts[i]
		if strings.HasPrefix(p.Name, "barrier/") {
			continue // composed from agents' points; never the base of a new one
		}
		s := ss.Get(p.Group)
		s.mu.Lock()
		s.Hold(&p)
		s.mu.Unlock()
	}
	return nil
}

// PointName names an ingest point after the agent and its sequence.
func PointName(agent string, seq uint64) string { return agent + "/" + strconv.FormatUint(seq, 10) }

// ParsePointName splits a PointName; ok is false for other names.
func ParsePointName(name string) (agent string, seq uint64, ok bool) {
	a, s, found := strings.Cut(name, "/")
	if !found {
		return "", 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return a, n, err == nil
}
