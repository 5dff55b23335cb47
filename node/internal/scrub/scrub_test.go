package scrub

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/internal/clock"
	"github.com/lifeboat-dr/lifeboat/internal/testwait"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/repair"
)

// fakeStore scrubs a store of `size` pack bytes in slices and reports the
// bad blocks it was given once, in the slice that reaches them.
type fakeStore struct {
	mu       sync.Mutex
	size     int64
	bad      map[int64]blockstore.BadBlock // by pack offset
	uses     map[blockstore.ID][]blockstore.BlockUse
	repaired map[blockstore.ID][]byte
	asked    []int64 // Bytes of each Scrub call
}

func (f *fakeStore) Scrub(ctx context.Context, o blockstore.ScrubOptions) (blockstore.ScrubReport, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, o.Bytes)
	from := o.From.Offset
	to := f.size
	if o.Bytes > 0 {
		to = min(from+o.Bytes, f.size)
	}
	rep := blockstore.ScrubReport{Bytes: to - from, Next: blockstore.ScrubCursor{Offset: to}}
	for off, b := range f.bad {
		if off >= from && off < to {
			rep.Bad = append(rep.Bad, b)
		}
	}
	if to == f.size {
		rep.Cycle, rep.Next = true, blockstore.ScrubCursor{}
	}
	return rep, nil
}

func (f *fakeStore) Repair(ctx context.Context, id blockstore.ID, data []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.repaired[id] = data
	return nil
}

func (f *fakeStore) Users(ctx context.Context, ids []blockstore.ID) ([]blockstore.BlockUse, error) {
	var out []blockstore.BlockUse
	for _, id := range ids {
		out = append(out, f.uses[id]...)
	}
	return out, nil
}

func (f *fakeStore) Stats(context.Context) (blockstore.Stats, error) {
	return blockstore.Stats{StoredBytes: f.size}, nil
}

type fixture struct {
	st       *fakeStore
	e        *Engine
	clk      *clock.Fake
	proposed chan *catalog.Command
	held     map[blockstore.ID][]byte // what other nodes have
	state    string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	fx := &fixture{
		st: &fakeStore{size: 100 << 20, bad: map[int64]blockstore.BadBlock{}, uses: map[blockstore.ID][]blockstore.BlockUse{},
			repaired: map[blockstore.ID][]byte{}},
		clk:      clock.NewFake(time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)),
		proposed: make(chan *catalog.Command, 16),
		held:     map[blockstore.ID][]byte{},
		state:    filepath.Join(t.TempDir(), "scrub.json"),
	}
	fx.e = fx.engine()
	return fx
}

func (fx *fixture) engine() *Engine {
	return New(Options{Name: "dc2-n1", Site: "dc2", Store: fx.st, Catalog: catalog.NewFSM(), State: fx.state, Clock: fx.clk, Tick: time.Minute,
		Fetch: func(ctx context.Context, service string, ids []blockstore.ID) (map[blockstore.ID]repair.Found, error) {
			out := map[blockstore.ID]repair.Found{}
			for _, id := range ids {
				if b, ok := fx.held[id]; ok {
					out[id] = repair.Found{Data: b, From: mesh.NodeID("dc1-n1")}
				}
			}
			if len(out) < len(ids) {
				return out, errors.New("not held by any node")
			}
			return out, nil
		},
		Propose: func(ctx context.Context, c *catalog.Command) error { fx.proposed <- c; return nil }})
}

func TestHandleRepairsMarksAndCounts(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	good, lost, garbage := blockstore.ID{1}, blockstore.ID{2}, blockstore.ID{3}
	fx.held[good] = []byte("sound copy")
	fx.st.uses[good] = []blockstore.BlockUse{{ID: good, Point: "p1", Volume: "web/disk", Offset: 0, Length: 65536}}
	fx.st.uses[lost] = []blockstore.BlockUse{
		{ID: lost, Point: "p1", Volume: "web/disk", Offset: 65536, Length: 65536},
		{ID: lost, Point: "p2", Volume: "web/disk", Offset: 65536, Length: 65536},
	}
	bad := []blockstore.BadBlock{{ID: good, Path: "packs/1.pack", Offset: 100}, {ID: lost, Missing: true}, {ID: garbage}, {ID: good}}
	out := fx.e.handle(context.Background(), bad)
	if len(out.Repaired) != 1 || out.Repaired[0].From != "dc1-n1" || string(fx.st.repaired[good]) != "sound copy" {
		t.Errorf("repaired %+v, store got %q", out.Repaired, fx.st.repaired[good])
	}
	if len(out.Lost) != 2 || out.Lost[0].Service != "web" || out.Lost[0].Offset != 65536 || out.Unreferenced != 1 {
		t.Errorf("lost %+v, unreferenced %d", out.Lost, out.Unreferenced)
	}
	c := <-fx.proposed
	if c.Op != catalog.OpMarks || len(c.Marks) != 2 || !strings.Contains(c.Marks[0].Damaged["dc2"], "web/disk bytes 65536-131072") {
		t.Errorf("marks %+v", c.Marks)
	}
	st := fx.e.Status()
	if st.Found != 3 || st.Repaired != 1 || st.Lost != 1 {
		t.Errorf("status found %d repaired %d lost %d, want 3, 1, 1", st.Found, st.Repaired, st.Lost)
	}
}

// The background scrub reads a cycle in slices sized to finish it in the
// site's time, keeps its cursor across a restart, and repairs what a
// slice finds.
func TestRunPacesTheCycleAndResumes(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	id := blockstore.ID{9}
	fx.held[id] = []byte("x")
	fx.st.uses[id] = []blockstore.BlockUse{{ID: id, Point: "p1", Volume: "web/disk", Length: 1}}
	fx.st.bad[60<<20] = blockstore.BadBlock{ID: id}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- fx.e.Run(ctx) }()
	// The default cycle (7 days) in 1-minute ticks reads 100 MiB in slices
	// of the 1 MiB minimum; a slice per tick.
	for range 30 {
		testwait.True(t, "the scrub waits for its tick", 10*time.Second, func() bool { return fx.clk.Waiters() > 0 })
		fx.clk.Advance(time.Minute)
	}
	testwait.True(t, "30 slices", 10*time.Second, func() bool {
		fx.st.mu.Lock()
		defer fx.st.mu.Unlock()
		return len(fx.st.asked) >= 30
	})
	cancel()
	<-done
	if b := fx.st.asked[0]; b != minSlice {
		t.Errorf("a slice asked for %d bytes, want the %d minimum", b, minSlice)
	}
	st := fx.e.Status()
	if st.CycleBytes < 29<<20 || st.Progress <= 0.28 || st.Cycles != 0 {
		t.Errorf("after 30 slices: %+v", st)
	}
	// A restart resumes from the saved cursor, and finishes the cycle.
	fx.e = fx.engine()
	if got := fx.e.Status().CycleBytes; got != st.CycleBytes {
		t.Fatalf("restarted engine at %d bytes, want %d", got, st.CycleBytes)
	}
	for fx.e.Status().Cycles == 0 {
		if err := fx.e.slice(context.Background(), time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if st := fx.e.Status(); st.Repaired != 1 || st.LastCycle.IsZero() || st.CycleBytes != 0 {
		t.Errorf("after the cycle: %+v", st)
	}
	if _, ok := fx.st.repaired[id]; !ok {
		t.Error("the block found at 60 MiB was not repaired")
	}
}

// A read's finding: repaired on the fly it is counted; lost it is marked
// by Run.
func TestDamagedFromReads(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	fx.e.Damaged(blockstore.BadBlock{ID: blockstore.ID{1}}, true)
	lost := blockstore.ID{2}
	fx.st.uses[lost] = []blockstore.BlockUse{{ID: lost, Point: "p7", Volume: "db/data", Offset: 4096, Length: 4096}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go fx.e.Run(ctx)
	fx.e.Damaged(blockstore.BadBlock{ID: lost}, false)
	c := <-fx.proposed
	if len(c.Marks) != 1 || c.Marks[0].Service != "db" || c.Marks[0].Point != "p7" {
		t.Errorf("marks %+v", c.Marks)
	}
	if st := fx.e.Status(); st.Repaired != 1 || st.Lost != 1 {
		t.Errorf("status %+v", st)
	}
	(*Engine)(nil).Damaged(blockstore.BadBlock{}, true) // a starting node has none
}

func TestPassRepairs(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	id := blockstore.ID{5}
	fx.held[id] = []byte("y")
	fx.st.uses[id] = []blockstore.BlockUse{{ID: id, Point: "p1", Volume: "web/disk", Length: 1}}
	fx.st.bad[1] = blockstore.BadBlock{ID: id, Offset: 1}
	res, err := fx.e.Pass(context.Background(), false)
	if err != nil || res.OK || len(res.Found) != 1 || len(res.Repaired) != 0 {
		t.Fatalf("pass without repair: %+v, %v", res, err)
	}
	res, err = fx.e.Pass(context.Background(), true)
	if err != nil || !res.OK || len(res.Repaired) != 1 || res.Bytes != fx.st.size {
		t.Fatalf("pass with repair: %+v, %v", res, err)
	}
}
