package blockstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// Scopes record which blocks a scope (a service) is known to hold, so
// that a node answers an agent's "which of these blocks do you lack" only
// about its own service's blocks, and refuses a point that names blocks of
// another (issue 13). A block is stored once whatever scopes hold it
// (dedup across services stays on disk); a scope learns a block when it
// sends it (or when replication brings it for that scope). Scope entries
// are advisory in one direction only: In also checks the store holds
// the block, so a stale entry can never make a block look present, and a
// lost one (a crash before the index synced) only costs a resend.
//
// Index keys: 's' len(scope)(1) scope ID(32) -> empty; and the backfill
// mark 'S' len(scope)(1) scope -> empty (doc.go).

// Scopes is the store's scope records: s.Scopes().Add, In, Marked, Mark.
type Scopes struct{ s *Store }

// Scopes returns the store's scope records.
func (s *Store) Scopes() Scopes { return Scopes{s} }

const (
	prefixScope     = 's'
	prefixScopeMark = 'S'
	maxScopeLen     = 255
)

func scopeKey(scope string, id ID) []byte {
	k := make([]byte, 0, 2+len(scope)+IDSize)
	k = append(k, prefixScope, byte(len(scope)))
	k = append(k, scope...)
	return append(k, id[:]...)
}

func checkScope(scope string) error {
	if scope == "" || len(scope) > maxScopeLen {
		return fmt.Errorf("scope %q: want 1 to %d bytes", scope, maxScopeLen)
	}
	return nil
}

// Add records that scope holds ids (zero IDs are skipped).
func (sc Scopes) Add(ctx context.Context, scope string, ids []ID) error {
	s := sc.s
	if err := checkScope(scope); err != nil {
		return err
	}
	if s.idx.shut.Load() {
		return ErrClosed
	}
	b := s.idx.db.NewBatch()
	defer b.Close()
	for _, id := range ids {
		if id.IsZero() {
			continue
		}
		if err := b.Set(scopeKey(scope, id), nil, nil); err != nil {
			return fmt.Errorf("add scope %s: %w", scope, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("add scope %s: %w", scope, err)
	}
	return nil
}

// In reports for each id whether scope holds it and the store has
// it. The zero block is in every scope.
func (sc Scopes) In(ctx context.Context, scope string, ids []ID) ([]bool, error) {
	s := sc.s
	if err := checkScope(scope); err != nil {
		return nil, err
	}
	out := make([]bool, len(ids))
	for i, id := range ids {
		if id.IsZero() {
			out[i] = true
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if s.idx.shut.Load() {
			return nil, ErrClosed
		}
		_, closer, err := s.idx.db.Get(scopeKey(scope, id))
		switch {
		case errors.Is(err, pebble.ErrNotFound):
			continue
		case err != nil:
			return nil, s.idx.err("scope lookup", err)
		}
		closer.Close()
		ok, err := s.w.has(ref{kindBlock, id})
		if err != nil {
			return nil, err
		}
		out[i] = ok
	}
	return out, nil
}

func scopeMarkKey(scope string) []byte {
	return append([]byte{prefixScopeMark, byte(len(scope))}, scope...)
}

// Marked reports whether Mark was called for scope.
func (sc Scopes) Marked(scope string) (bool, error) {
	s := sc.s
	if err := checkScope(scope); err != nil {
		return false, err
	}
	if s.idx.shut.Load() {
		return false, ErrClosed
	}
	_, closer, err := s.idx.db.Get(scopeMarkKey(scope))
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, s.idx.err("scope lookup", err)
	}
	closer.Close()
	return true, nil
}

// Mark records (durably) that scope's entries were backfilled from
// the points it held before scopes existed.
func (sc Scopes) Mark(scope string) error {
	s := sc.s
	if err := checkScope(scope); err != nil {
		return err
	}
	if s.idx.shut.Load() {
		return ErrClosed
	}
	if err := s.idx.db.Set(scopeMarkKey(scope), nil, pebble.Sync); err != nil {
		return fmt.Errorf("mark scope %s: %w", scope, err)
	}
	return nil
}
