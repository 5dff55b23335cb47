package watermark

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/internal/logpolicy"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

type fakeCatalog struct {
	mu   sync.Mutex
	down bool
	cmds []*catalog.Command
}

func (f *fakeCatalog) propose(_ context.Context, c *catalog.Command) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return errors.New("no leader")
	}
	f.cmds = append(f.cmds, c)
	return nil
}

func newQueue(f *fakeCatalog) *Queue {
	return New(Options{Node: "dc1-n1", Site: "dc1", Propose: f.propose,
		Logs: logpolicy.New(logpolicy.Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})})
}

var t0 = time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)

func point(service, id string, at time.Duration, size int64) blockstore.Point {
	return blockstore.Point{ID: id, Group: service, Time: t0.Add(at), Volumes: []blockstore.VolumeState{{Name: service + "/disk", Size: size}}}
}

// TestBatch: many points of a service in one interval are one watermark,
// the newest; services go together in one command.
func TestBatch(t *testing.T) {
	f := &fakeCatalog{}
	q := newQueue(f)
	q.Note(point("web", "p1", 0, 10))
	q.Note(point("web", "p2", time.Second, 20))
	q.Note(point("db", "d1", 0, 5))
	if err := q.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := q.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(f.cmds) != 1 || len(f.cmds[0].Watermarks) != 2 {
		t.Fatalf("commands %+v: want one with two watermarks (an empty queue sends nothing)", f.cmds)
	}
	for _, w := range f.cmds[0].Watermarks {
		if w.Service == "web" && (w.Point != "p2" || w.Size != 20 || w.Node != "dc1-n1" || w.Site != "dc1") {
			t.Errorf("web watermark %+v: want p2, 20 bytes, from dc1-n1 at dc1", w)
		}
	}
}

// TestRequeue: a batch the catalog refused goes again, unless a newer
// point of the service came meanwhile.
func TestRequeue(t *testing.T) {
	f := &fakeCatalog{down: true}
	q := newQueue(f)
	q.Note(point("web", "p1", 0, 1))
	q.Note(point("db", "d1", 0, 1))
	if err := q.Flush(t.Context()); err == nil {
		t.Fatal("flush succeeded while the catalog is down")
	}
	q.Note(point("web", "p2", time.Second, 1))
	f.down = false
	if err := q.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, w := range f.cmds[0].Watermarks {
		got[w.Service] = w.Point
	}
	if got["web"] != "p2" || got["db"] != "d1" {
		t.Errorf("after the retry: %v, want web p2 and db d1", got)
	}
}

// TestNoteTier: a tier's news rides on the next watermark, or sends the
// newest point again when none is queued, and stays for later ones.
func TestNoteTier(t *testing.T) {
	f := &fakeCatalog{}
	q := newQueue(f)
	newest := point("web", "p1", 0, 1)
	q.NoteTier("web", &newest, func(w *catalog.Watermark) { w.Standby, w.StandbyTime = "p1", t0 })
	if err := q.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if w := f.cmds[0].Watermarks[0]; w.Point != "p1" || w.Standby != "p1" {
		t.Fatalf("watermark %+v: want p1 with standby p1", w)
	}
	q.Note(point("web", "p2", time.Second, 1))
	q.NoteTier("web", nil, func(w *catalog.Watermark) { w.Export = "p0" })
	if err := q.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if w := f.cmds[1].Watermarks[0]; w.Point != "p2" || w.Standby != "p1" || w.Export != "p0" {
		t.Errorf("watermark %+v: want p2 keeping standby p1 and export p0", w)
	}
	q.NoteTier("db", nil, func(w *catalog.Watermark) { w.Export = "x" })
	if err := q.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(f.cmds) != 2 {
		t.Errorf("a tier note without any point of the service sent %+v", f.cmds[2:])
	}
}

// TestRun: Run sends on its ticker and returns when its context ends.
func TestRun(t *testing.T) {
	f := &fakeCatalog{}
	q := New(Options{Node: "n", Site: "s", Propose: f.propose, Interval: time.Millisecond,
		Logs: logpolicy.New(logpolicy.Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- q.Run(ctx) }()
	q.Note(point("web", "p1", 0, 1))
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for sent := false; !sent; {
		select {
		case <-tick.C:
			f.mu.Lock()
			sent = len(f.cmds) == 1
			f.mu.Unlock()
		case <-deadline:
			t.Fatal("Run sent nothing in 10 s")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestMarks: point marks go with the next batch, after the watermarks, in
// their own command; a refused batch keeps them for the next.
func TestMarks(t *testing.T) {
	f := &fakeCatalog{down: true}
	q := newQueue(f)
	q.Note(point("web", "p1", 0, 1))
	q.Mark(catalog.PointMark{Service: "web", Point: "p1", Suspect: &catalog.Suspicion{Volume: "web/disk", Changed: 0.6}})
	if err := q.Flush(t.Context()); err == nil {
		t.Fatal("flush succeeded while the catalog is down")
	}
	q.Mark(catalog.PointMark{Service: "web", Point: "p2", Suspect: &catalog.Suspicion{Volume: "web/disk", Changed: 0.7}})
	f.down = false
	if err := q.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(f.cmds) != 2 || f.cmds[0].Op != catalog.OpWatermarks || f.cmds[1].Op != catalog.OpMarks {
		t.Fatalf("commands %+v: want watermarks, then marks", f.cmds)
	}
	if m := f.cmds[1].Marks; len(m) != 2 || m[0].Point != "p1" || m[1].Point != "p2" {
		t.Errorf("marks %+v: want p1 then p2", m)
	}
	if err := q.Flush(t.Context()); err != nil || len(f.cmds) != 2 {
		t.Errorf("a second flush sent %d commands (%v), want none", len(f.cmds)-2, err)
	}
}
