package catalog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/mesh"
)

// FSM is the Raft state machine holding the catalog. It publishes every
// applied state as an immutable snapshot: readers take one with Catalog or
// View and hold it as long as they like, never a lock and never a copy.
// Apply builds the next state copy-on-write (see Catalog.apply).
type FSM struct {
	cur atomic.Pointer[state]
}

// state is one published version: the catalog, the audit log beside it,
// and a channel closed when a newer version replaces it.
type state struct {
	cat     *Catalog
	audit   []AuditEntry // oldest first; never changed in place (see auditAdd)
	changed chan struct{}
}

var _ raft.FSM = (*FSM)(nil)

// NewFSM returns a state machine holding an empty catalog.
func NewFSM() *FSM {
	f := &FSM{}
	f.cur.Store(&state{cat: New(), changed: make(chan struct{})})
	return f
}

// Catalog returns the current catalog. It is shared and immutable: the
// caller must not change it.
func (f *FSM) Catalog() *Catalog { return f.cur.Load().cat }

// View returns the current catalog and a channel closed as soon as a newer
// one is published: wait on it to see the next change.
func (f *FSM) View() (*Catalog, <-chan struct{}) {
	s := f.cur.Load()
	return s.cat, s.changed
}

// Audit returns the audit entries at or after since, at most limit (the
// newest; 0 = all), oldest first. The slice is shared: do not change it.
func (f *FSM) Audit(since time.Time, limit int) []AuditEntry {
	es := f.cur.Load().audit
	i, _ := slices.BinarySearchFunc(es, since, func(e AuditEntry, t time.Time) int { return e.Time.Compare(t) })
	es = es[i:]
	if limit > 0 && len(es) > limit {
		es = es[len(es)-limit:]
	}
	return slices.Clip(es)
}

// publish makes next the current state and wakes whoever waits on the
// previous one. Raft calls Apply and Restore one at a time, so there is one
// writer.
func (f *FSM) publish(cat *Catalog, audit []AuditEntry) {
	old := f.cur.Load()
	f.cur.Store(&state{cat: cat, audit: audit, changed: make(chan struct{})})
	close(old.changed)
}

// WaitIndex returns once the catalog has applied Raft index idx.
func (f *FSM) WaitIndex(ctx context.Context, idx uint64) error {
	for {
		cat, ch := f.View()
		if cat.Index >= idx {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for catalog index %d (at %d): %w", idx, cat.Index, ctx.Err())
		case <-ch:
		}
	}
}

// ApplyResult is what FSM.Apply returns through the ApplyFuture: the error
// of a command that did not apply (the catalog is then unchanged but for
// its index).
type ApplyResult struct {
	Err error
}

// Apply implements raft.FSM. A bad entry is an error result and changes
// nothing but the index; it never stops the state machine.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return ApplyResult{}
	}
	s := f.cur.Load()
	cmd, err := DecodeCommand(l.Data)
	if err != nil {
		f.publish(s.cat.withIndex(l.Index), s.audit)
		return ApplyResult{Err: err}
	}
	if cmd.Op == OpAudit {
		var pol *config.Audit
		if p := s.cat.PolicyCluster(); p != nil {
			pol = &p.Audit
		}
		f.publish(s.cat.withIndex(l.Index), auditAdd(s.audit, cmd.Audit, pol))
		return ApplyResult{}
	}
	next, err := s.cat.apply(cmd, l.Index)
	if err != nil {
		// A refused command still consumed its index.
		next = s.cat.withIndex(l.Index)
	}
	f.publish(next, s.audit)
	return ApplyResult{Err: err}
}

// Snapshot implements raft.FSM. The state it captures is immutable, so
// Persist may encode it while Apply goes on.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	s := f.cur.Load()
	return &fsmSnapshot{body: snapshotBody{Catalog: s.cat, Audit: s.audit}}, nil
}

// snapshotBody is what a version 2 snapshot holds after its magic.
type snapshotBody struct {
	Catalog *Catalog     `json:"catalog"`
	Audit   []AuditEntry `json:"audit,omitempty"`
}

// snapshotMagic starts a catalog snapshot: name and format version.
// Version 1 held the catalog alone; version 2 a snapshotBody.
var (
	snapshotMagicV1 = []byte("LBCAT\x00\x01\n")
	snapshotMagic   = []byte("LBCAT\x00\x02\n")
)

// maxSnapshot bounds a catalog snapshot read back from disk or the wire.
const maxSnapshot = 256 << 20

// Restore implements raft.FSM.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxSnapshot+1))
	if err != nil {
		return fmt.Errorf("read catalog snapshot: %w", err)
	}
	cat, audit, err := DecodeSnapshot(b)
	if err != nil {
		return err
	}
	f.publish(cat, audit)
	return nil
}

// DecodeSnapshot decodes a catalog snapshot (either version).
func DecodeSnapshot(b []byte) (*Catalog, []AuditEntry, error) {
	if len(b) > maxSnapshot {
		return nil, nil, fmt.Errorf("catalog snapshot: larger than %d bytes", maxSnapshot)
	}
	cat := New()
	var audit []AuditEntry
	switch {
	case bytes.HasPrefix(b, snapshotMagicV1):
		if err := json.Unmarshal(b[len(snapshotMagicV1):], cat); err != nil {
			return nil, nil, fmt.Errorf("catalog snapshot: %w", err)
		}
	case bytes.HasPrefix(b, snapshotMagic):
		body := snapshotBody{Catalog: cat}
		if err := json.Unmarshal(b[len(snapshotMagic):], &body); err != nil {
			return nil, nil, fmt.Errorf("catalog snapshot: %w", err)
		}
		if body.Catalog == nil {
			return nil, nil, errors.New("catalog snapshot: no catalog")
		}
		cat, audit = body.Catalog, body.Audit
	default:
		return nil, nil, fmt.Errorf("catalog snapshot: bad header (want %q)", snapshotMagic)
	}
	if cat.Nodes == nil {
		cat.Nodes = map[mesh.NodeID]NodeInfo{}
	}
	if cat.Services == nil {
		cat.Services = map[string]*ServiceState{}
	}
	for k, s := range cat.Services {
		if s == nil {
			return nil, nil, fmt.Errorf("catalog snapshot: service %q: null record", k)
		}
	}
	cat.rebuildSites()
	return cat, audit, nil
}

type fsmSnapshot struct{ body snapshotBody }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	b, err := json.Marshal(s.body)
	if err != nil {
		sink.Cancel()
		return fmt.Errorf("snapshot catalog: %w", err)
	}
	if _, err := sink.Write(snapshotMagic); err != nil {
		sink.Cancel()
		return fmt.Errorf("write catalog snapshot: %w", err)
	}
	if _, err := sink.Write(b); err != nil {
		sink.Cancel()
		return fmt.Errorf("write catalog snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}
