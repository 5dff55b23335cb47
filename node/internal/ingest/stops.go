package ingest

import (
	"sync"
	"time"
)

// StopHold is how long a node refuses a service's writes after its final
// point for a planned failover, unless the epoch moves on first (then
// fencing refuses them). If the failover never happens, writes resume.
const StopHold = 15 * time.Minute

// stopMarks are the services this node stopped for a planned failover:
// after the final point it takes no more of their writes, so that the
// final point stays the newest and is the one replicated.
type stopMarks struct {
	mu sync.Mutex
	m  map[string]stopMark
}

type stopMark struct {
	epoch uint64
	until time.Time
}

func (s *stopMarks) set(service string, epoch uint64, until time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]stopMark{}
	}
	s.m[service] = stopMark{epoch, until}
}

// holds reports whether service's writes are held at epoch.
func (s *stopMarks) holds(service string, epoch uint64, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.m[service]
	if ok && (m.epoch != epoch || now.After(m.until)) {
		delete(s.m, service)
		return false
	}
	return ok
}

// Stop holds service's writes at epoch for StopHold from now: its final
// point for a planned failover is taken. Safe for concurrent use.
func (e *Engine) Stop(service string, epoch uint64) {
	e.stops.set(service, epoch, e.o.Clock.Now().Add(StopHold))
}
