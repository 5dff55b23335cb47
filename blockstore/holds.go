package blockstore

import (
	"context"
	"sync"
)

// The holds GC and deletion honour besides point records: writers' leases
// and open images' volumes, here; pins (pin.go) and locks (lock.go).

// Holds are what keep blocks and points from GC and deletion: writers'
// leases (gc.go), pins (in memory) and retention locks (durable, lock.go):
// s.Holds().Lease, Pin, Pinned, LockPoint, Locks.
type Holds struct{ s *Store }

// Holds returns the store's leases, pins and locks.
func (s *Store) Holds() Holds { return Holds{s} }

// Lease protects a writer's blocks from garbage collection until release
// is called. A writer that puts blocks (or learns from Missing or Has that
// the store holds them) and later commits a point referencing them holds a
// lease from before the first Put to the CommitPoint, so that GC cannot
// remove a block between the two. A lease does not keep GC from running:
// a GC run waits, before it deletes anything, for the leases taken before
// it began, and notes the lookups of later ones itself (gc.go). Snapshot
// takes its own lease. Release may be called more than once.
func (h Holds) Lease() (release func()) { return h.s.leases.take() }

// leaseSet counts writers' leases by the order they were taken, so that
// GC waits only for those older than itself.
type leaseSet struct {
	mu      sync.Mutex
	next    uint64
	held    map[uint64]struct{}
	changed chan struct{} // closed and replaced at each release
}

func (l *leaseSet) init() {
	l.held = map[uint64]struct{}{}
	l.changed = make(chan struct{})
}

func (l *leaseSet) take() func() {
	l.mu.Lock()
	id := l.next
	l.next++
	l.held[id] = struct{}{}
	l.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			delete(l.held, id)
			close(l.changed)
			l.changed = make(chan struct{})
			l.mu.Unlock()
		})
	}
}

// epoch returns the number of the next lease.
func (l *leaseSet) epoch() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.next
}

// wait returns when no lease numbered below before is held.
func (l *leaseSet) wait(ctx context.Context, before uint64) error {
	for {
		l.mu.Lock()
		old := false
		for id := range l.held {
			if id < before {
				old = true
				break
			}
		}
		ch := l.changed
		l.mu.Unlock()
		if !old {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// imageRoots are the volumes of open images: GC roots.
type imageRoots struct {
	mu   sync.Mutex
	next uint64
	vols map[uint64]VolumeState
}

func (r *imageRoots) init() { r.vols = map[uint64]VolumeState{} }

func (r *imageRoots) add(v VolumeState) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next++
	r.vols[r.next] = v
	return r.next
}

func (r *imageRoots) remove(id uint64) {
	r.mu.Lock()
	delete(r.vols, id)
	r.mu.Unlock()
}

func (r *imageRoots) list() []VolumeState {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]VolumeState, 0, len(r.vols))
	for _, v := range r.vols {
		out = append(out, v)
	}
	return out
}
