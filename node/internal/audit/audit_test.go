package audit

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/internal/clock"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// fakeCatalog stands in for Raft: it keeps what was proposed, or refuses
// while down.
type fakeCatalog struct {
	mu      sync.Mutex
	down    bool
	batches [][]catalog.AuditEntry
}

func (f *fakeCatalog) propose(_ context.Context, es []catalog.AuditEntry) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return errors.New("no leader")
	}
	f.batches = append(f.batches, es)
	return nil
}

func (f *fakeCatalog) entries() []catalog.AuditEntry {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []catalog.AuditEntry
	for _, b := range f.batches {
		out = append(out, b...)
	}
	return out
}

func newRecorder(f *fakeCatalog, c *clock.Fake) *Recorder {
	return New(Options{Node: "dc1-n1", Propose: f.propose, Clock: c, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
}

func read(who, from, target string) *catalog.AuditEntry {
	return &catalog.AuditEntry{Who: who, Kind: "operator", From: from, Action: "GET /v1/image", Target: target, Result: "ok"}
}

// TestCoalesce: identical data reads within the window are one entry with a
// count, from any port of the same host; another target, another caller
// or a read after the window makes an entry of its own.
func TestCoalesce(t *testing.T) {
	f, c := &fakeCatalog{}, clock.NewFake(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC))
	a := newRecorder(f, c)
	a.Record(read("alice", "10.0.0.1:5000", "web/disk"), true)
	a.Record(read("alice", "10.0.0.1:5001", "web/disk"), true)
	c.Advance(30 * time.Second)
	a.Record(read("alice", "10.0.0.1:5002", "web/disk"), true)
	a.Record(read("alice", "10.0.0.1:5003", "db/disk"), true)
	a.Record(read("bob", "10.0.0.1:5004", "web/disk"), true)
	if err := a.Flush(t.Context(), 0); err != nil {
		t.Fatal(err)
	}
	c.Advance(2 * repeatWindow)
	a.Record(read("alice", "10.0.0.1:5005", "web/disk"), true)
	if err := a.Flush(t.Context(), 0); err != nil {
		t.Fatal(err)
	}
	es := f.entries()
	want := []struct {
		who, target string
		count       int
	}{{"alice", "web/disk", 3}, {"alice", "db/disk", 1}, {"bob", "web/disk", 1}, {"alice", "web/disk", 1}}
	if len(es) != len(want) {
		t.Fatalf("%d entries, want %d: %+v", len(es), len(want), es)
	}
	for i, w := range want {
		if es[i].Who != w.who || es[i].Target != w.target || es[i].Count != w.count || es[i].Node != "dc1-n1" {
			t.Errorf("entry %d = %s %s count %d node %s, want %s %s count %d node dc1-n1", i, es[i].Who, es[i].Target, es[i].Count, es[i].Node, w.who, w.target, w.count)
		}
	}
	if !es[0].Time.Equal(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("first entry's time %v, want the clock's", es[0].Time)
	}
}

// TestMutationsNotCoalesced: calls recorded without coalescing are one
// entry each, and long fields are clipped.
func TestMutationsNotCoalesced(t *testing.T) {
	f, c := &fakeCatalog{}, clock.NewFake(time.Unix(0, 0))
	a := newRecorder(f, c)
	for range 3 {
		e := read("alice", "10.0.0.1:1", "web")
		e.Action, e.Detail = "POST /v1/failover", strings.Repeat("x", 2*maxDetail)
		a.Record(e, false)
	}
	if err := a.Flush(t.Context(), 0); err != nil {
		t.Fatal(err)
	}
	es := f.entries()
	if len(es) != 3 {
		t.Fatalf("%d entries, want 3", len(es))
	}
	if n := len(es[0].Detail); n != maxDetail+3 {
		t.Errorf("detail of %d bytes, want it clipped to %d", n, maxDetail+3)
	}
}

// TestKeptWhileDown: entries wait while the catalog refuses, a flood past
// maxPending drops the oldest and says how many, refusals past the rate
// limit are counted in one entry, and everything left arrives once the
// catalog is back.
func TestKeptWhileDown(t *testing.T) {
	f, c := &fakeCatalog{down: true}, clock.NewFake(time.Unix(0, 0))
	a := newRecorder(f, c)
	for i := range maxPending + 10 {
		e := read("alice", "10.0.0.1:1", "web")
		e.Detail = string(rune('a' + i%26))
		a.Record(e, false)
	}
	for range 300 {
		e := read("mallory", "10.0.0.9:1", "web")
		e.Result = "refused"
		a.Record(e, false)
	}
	if err := a.Flush(t.Context(), 0); err == nil {
		t.Fatal("flush succeeded while the catalog is down")
	}
	f.mu.Lock()
	f.down = false
	f.mu.Unlock()
	if err := a.Flush(t.Context(), 0); err != nil {
		t.Fatal(err)
	}
	es := f.entries()
	if es[0].Who != "lifeboat" || !strings.Contains(es[0].Detail, "audit entries dropped") {
		t.Errorf("first entry %+v, want the note of dropped entries", es[0])
	}
	var refused, counted, total int
	for _, e := range es {
		switch {
		case e.Who == "mallory":
			refused++
		case e.Who == "lifeboat" && e.Result == "refused":
			counted += e.Count
		}
		total++
	}
	if refused+counted != 300 || counted == 0 {
		t.Errorf("refusals: %d recorded one by one and %d counted, want 300 in all with some counted", refused, counted)
	}
	for _, b := range f.batches {
		if len(b) > batchSize {
			t.Errorf("a batch of %d entries, limit %d", len(b), batchSize)
		}
	}
	if total > maxPending+2 {
		t.Errorf("%d entries arrived, want at most %d kept plus the notes", total, maxPending)
	}
}

// TestRunFlushesAtEnd: Run sends what was recorded, and what is pending
// when its context ends.
func TestRunFlushesAtEnd(t *testing.T) {
	f, c := &fakeCatalog{}, clock.NewFake(time.Unix(0, 0))
	a := newRecorder(f, c)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- a.Run(ctx) }()
	a.Record(read("alice", "10.0.0.1:1", "web"), false)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if es := f.entries(); len(es) != 1 {
		t.Fatalf("%d entries after Run ended, want 1", len(es))
	}
}
