package blockstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Retention locks (issue: continuous thinning). A point may carry a lock:
// until that moment no path deletes it (DeletePoints, Prune). A lock is
// only ever raised. It is stored under its own key so that the point
// record's format stays as it is:
//
//	'l' pointID(16) -> lock-until: unix nanoseconds, 8 bytes little endian, > 0
//
// sealed like every other value in an encrypted store. The lock is written
// in the same synced batch as the point record (CommitPoint, with
// Options.LockFor) and deleted in the same batch as it (DeletePoints).

const (
	prefixLock  = 'l'
	lockValSize = 8
)

func lockKey(id string) []byte {
	return append([]byte{prefixLock}, id...)
}

func encodeLock(until time.Time) []byte {
	return binary.LittleEndian.AppendUint64(nil, uint64(until.UnixNano()))
}

// decodeLock checks and decodes a lock value.
func decodeLock(b []byte) (time.Time, error) {
	if len(b) != lockValSize {
		return time.Time{}, corruptf("point lock: %d bytes, want %d", len(b), lockValSize)
	}
	n := int64(binary.LittleEndian.Uint64(b))
	if n <= 0 {
		return time.Time{}, corruptf("point lock: time %d", n)
	}
	return time.Unix(0, n).UTC(), nil
}

// lockOf returns the lock of point id (zero when it has none).
func (x *index) lockOf(id string) (time.Time, error) {
	k := lockKey(id)
	v, closer, err := x.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, x.err("read point lock", err)
	}
	defer closer.Close()
	v, err = x.openValue(k, v)
	var t time.Time
	if err == nil {
		t, err = decodeLock(v)
	}
	if err != nil {
		return time.Time{}, x.corrupt(ZeroID, fmt.Errorf("point %s: %w", id, err))
	}
	return t, nil
}

// LockPoint raises the lock of point id to until: the point cannot be
// deleted before then. A lock is never lowered; an until at or before the
// current lock is a no-op. The point must exist (an error wrapping
// ErrNotFound otherwise). The lock is durable when LockPoint returns.
func (h Holds) LockPoint(id string, until time.Time) error {
	s := h.s
	if s.idx.shut.Load() {
		return ErrClosed
	}
	if until.UnixNano() <= 0 {
		return fmt.Errorf("lock point %s: time %s is not after 1970", id, until)
	}
	s.pts.mu.Lock()
	defer s.pts.mu.Unlock()
	keys, err := s.idx.pointKeys([]string{id})
	if err != nil {
		return err
	}
	if _, ok := keys[id]; !ok {
		return fmt.Errorf("lock point %s: %w", id, ErrNotFound)
	}
	cur, err := s.idx.lockOf(id)
	if err != nil {
		return err
	}
	if !until.After(cur) {
		return nil
	}
	k := lockKey(id)
	if err := s.idx.db.Set(k, s.idx.sealValue(k, encodeLock(until)), pebble.Sync); err != nil {
		return s.idx.err("lock point "+id, err)
	}
	return nil
}

// Locks returns the lock of every point that has one, by point ID. Locks in
// the past are included (they no longer hold anything).
func (h Holds) Locks(ctx context.Context) (map[string]time.Time, error) {
	if h.s.idx.shut.Load() {
		return nil, ErrClosed
	}
	out, err := h.s.idx.locks(ctx)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// locks reads every lock; on an error it returns those read before it too.
func (x *index) locks(ctx context.Context) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	it, err := x.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixLock}, UpperBound: []byte{prefixLock + 1}})
	if err != nil {
		return out, x.err("list locks", err)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		k := it.Key()
		if len(k) != 1+pointIDLen {
			return out, x.corrupt(ZeroID, corruptf("lock key %x", k))
		}
		v, err := x.openValue(k, it.Value())
		var t time.Time
		if err == nil {
			t, err = decodeLock(v)
		}
		if err != nil {
			return out, x.corrupt(ZeroID, fmt.Errorf("point %s: %w", k[1:], err))
		}
		out[string(k[1:])] = t
	}
	return out, x.err("list locks", it.Error())
}
