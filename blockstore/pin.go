package blockstore

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// pointGuard serializes the changes that decide whether a point may go:
// DeletePoints, Pin, LockPoint and the write of a point record. Pins live
// here, in memory only.
type pointGuard struct {
	mu   sync.Mutex
	pins map[string]int // point ID -> number of pins held
}

// Pin keeps point id from being deleted until release is called: while it
// is pinned, DeletePoints refuses it ("in use"). Pins are counted (two Pins
// need two releases) and held in memory only. The point must exist (an
// error wrapping ErrNotFound otherwise). Pin and DeletePoints are atomic
// with each other: a point is never deleted between a successful Pin and
// its release. A reader or writer that builds on a point (Update from a
// base, a restore by point ID) pins it so that GC keeps its blocks.
func (h Holds) Pin(id string) (release func(), err error) {
	s := h.s
	if s.idx.shut.Load() {
		return nil, ErrClosed
	}
	s.pts.mu.Lock()
	defer s.pts.mu.Unlock()
	keys, err := s.idx.pointKeys([]string{id})
	if err != nil {
		return nil, err
	}
	if _, ok := keys[id]; !ok {
		return nil, fmt.Errorf("pin point %s: %w", id, ErrNotFound)
	}
	s.pts.pins[id]++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.pts.mu.Lock()
			if s.pts.pins[id]--; s.pts.pins[id] <= 0 {
				delete(s.pts.pins, id)
			}
			s.pts.mu.Unlock()
		})
	}, nil
}

// Pinned returns the IDs of the points pinned now, sorted.
func (h Holds) Pinned() []string {
	s := h.s
	s.pts.mu.Lock()
	defer s.pts.mu.Unlock()
	out := make([]string, 0, len(s.pts.pins))
	for id := range s.pts.pins {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// pointKeys returns the index keys of those of ids that are points. It
// reads keys only (the point ID ends the key).
func (x *index) pointKeys(ids []string) (map[string][]byte, error) {
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	it, err := x.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixPoint}, UpperBound: []byte{prefixPoint + 1}})
	if err != nil {
		return nil, x.err("find points", err)
	}
	defer it.Close()
	out := map[string][]byte{}
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) != 1+8+pointIDLen {
			return nil, x.corrupt(ZeroID, corruptf("point key %x", k))
		}
		if id := string(k[1+8:]); want[id] {
			out[id] = bytes.Clone(k)
		}
	}
	if err := it.Error(); err != nil {
		return nil, x.err("find points", err)
	}
	return out, nil
}

// Refusal says why DeletePoints kept a point.
type Refusal struct {
	ID     string `json:"id"`
	Reason string `json:"reason"`
}

// DeleteReport says what DeletePoints did.
type DeleteReport struct {
	Deleted []string  `json:"deleted"`
	Refused []Refusal `json:"refused"`
}

// Reasons of a Refusal.
const (
	refusedInUse    = "in use"
	refusedNotFound = "not found"
)

// DeletePoints deletes the point records ids name, with their locks, in
// one synced batch. It refuses (and reports) a point that is locked (its
// lock is after the store's clock says now: "locked until <RFC3339>"),
// pinned ("in use") or unknown ("not found"). It never deletes blocks,
// map pages or pack copies of records: GC does.
func (m Maintenance) DeletePoints(ctx context.Context, ids []string) (DeleteReport, error) {
	return m.deletePoints(ctx, ids, false)
}

// deletePoints is DeletePoints; dry decides and reports but changes nothing.
func (m Maintenance) deletePoints(ctx context.Context, ids []string, dry bool) (DeleteReport, error) {
	s := m.s
	var rep DeleteReport
	if s.idx.shut.Load() {
		return rep, ErrClosed
	}
	s.pts.mu.Lock()
	defer s.pts.mu.Unlock()
	keys, err := s.idx.pointKeys(ids)
	if err != nil {
		return rep, err
	}
	now := s.now()
	b := s.idx.db.NewBatch()
	defer b.Close()
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		pk, ok := keys[id]
		if !ok {
			rep.Refused = append(rep.Refused, Refusal{id, refusedNotFound})
			continue
		}
		if s.pts.pins[id] > 0 {
			rep.Refused = append(rep.Refused, Refusal{id, refusedInUse})
			continue
		}
		until, err := s.idx.lockOf(id)
		if err != nil {
			return DeleteReport{}, err
		}
		if until.After(now) {
			rep.Refused = append(rep.Refused, Refusal{id, "locked until " + until.Format(time.RFC3339)})
			continue
		}
		b.Delete(pk, nil)
		b.Delete(lockKey(id), nil)
		rep.Deleted = append(rep.Deleted, id)
	}
	if dry || len(rep.Deleted) == 0 {
		return rep, nil
	}
	if err := ctx.Err(); err != nil {
		return DeleteReport{}, err
	}
	if err := checkSpace(s.dir, int64(b.Len()), 1<<20, "delete points"); err != nil {
		return DeleteReport{}, err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return DeleteReport{}, s.idx.err("delete points", err)
	}
	return rep, nil
}
