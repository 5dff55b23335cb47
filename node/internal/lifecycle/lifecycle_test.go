package lifecycle

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/internal/clock"
	"github.com/lifeboat-dr/lifeboat/internal/testlog"
	"github.com/lifeboat-dr/lifeboat/internal/testwait"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// policy makes a catalog holding a two-site policy for service erp with
// the given retention tables at dc1 (the primary) and dc2 (a warm copy).
func policy(t testing.TB, dc1, dc2 string) *catalog.Catalog {
	t.Helper()
	src := fmt.Sprintf(`
[[site]]
name = "dc1"
[[site]]
name = "dc2"
[[site]]
name = "dc3"
[[service]]
name = "erp"
primary = "dc1"
retention = %s
  [[service.server]]
  name = "db"
    [[service.server.volume]]
    name = "data"
    path = "/dev/vdb"
    size = "1MiB"
  [[service.copy]]
  site = "dc2"
  tier = "warm"
  retention = %s
`, dc1, dc2)
	cl, err := config.ParseCluster("cluster.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	cat := catalog.New()
	cat.Policy = &catalog.PolicyRecord{Version: 1, Cluster: cl}
	cat.Services["erp"] = &catalog.ServiceState{}
	return cat
}

type catRef struct{ c *catalog.Catalog }

func (r *catRef) Catalog() *catalog.Catalog { return r.c }

// store opens a new store whose clock and locks follow clk and cat.
func store(t testing.TB, clk clock.Clock, cat *catRef, site mesh.Site) *blockstore.Store {
	t.Helper()
	dir := t.TempDir()
	key := blockstore.Key{1, 2, 3} // one cluster: the same dedup key at every site
	if err := blockstore.Init(dir, blockstore.InitOptions{Key: &key}); err != nil {
		t.Fatal(err)
	}
	s, err := blockstore.Open(dir, blockstore.Options{Logger: testlog.New(t), Now: clk.Now,
		LockFor: func(p blockstore.Point) time.Time { return LockFor(cat.Catalog(), site, p) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// commit records a point of erp at time at, changing a few of the 16
// blocks of its volume from base.
func commit(t testing.TB, s *blockstore.Store, base blockstore.VolumeState, at time.Time, rng *rand.Rand) blockstore.Point {
	t.Helper()
	ctx := context.Background()
	const bs = 4096
	if base.Name == "" {
		base = blockstore.VolumeState{Name: "erp/data", Size: 16 * bs, BlockSize: bs}
	}
	var changes []blockstore.Change
	for range 2 {
		b := make([]byte, bs)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		ids, err := s.Put(ctx, [][]byte{b})
		if err != nil {
			t.Fatal(err)
		}
		changes = append(changes, blockstore.Change{Block: rng.Int64N(16), New: ids[0]})
	}
	slices.SortFunc(changes, func(a, b blockstore.Change) int { return int(a.Block - b.Block) })
	changes = slices.CompactFunc(changes, func(a, b blockstore.Change) bool { return a.Block == b.Block })
	v, err := s.Update(ctx, base, changes)
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.CommitPoint(ctx, blockstore.Point{Group: "erp", Time: at, Volumes: []blockstore.VolumeState{v}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func ids(pts []blockstore.Point) []string {
	var out []string
	for _, p := range pts {
		out = append(out, p.ID)
	}
	slices.Sort(out)
	return out
}

func keptIDs(p Plan) []string {
	var out []string
	for _, pp := range p.Points {
		if pp.Kept() {
			out = append(out, pp.ID)
		}
	}
	slices.Sort(out)
	return out
}

// The newest of each hour for six hours, plus the newest two: after a day
// of a point every 10 minutes the store holds exactly those.
func TestThinKeepsTheLadder(t *testing.T) {
	ctx := context.Background()
	start := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	clk := clock.NewFake(start)
	cat := &catRef{policy(t, `{ keep_last = 2, hourly = "6h" }`, `{ keep_last = 3 }`)}
	s := store(t, clk, cat, "dc1")
	e := New(Options{Site: "dc1", Store: s, Catalog: cat, Clock: clk, Logger: testlog.New(t)})
	rng := rand.New(rand.NewPCG(1, 2))
	var v blockstore.VolumeState
	for i := range 24 * 6 {
		clk.Set(start.Add(time.Duration(i) * 10 * time.Minute))
		p := commit(t, s, v, clk.Now(), rng)
		v = p.Volumes[0]
		if _, err := e.Thin(ctx, "", false); err != nil {
			t.Fatal(err)
		}
	}
	pts, err := s.Points(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	// Newest at 23:50: last 23:50, 23:40; hourly 23:50 (hour 23), 22:50 ...
	// 18:50 (ages under 6h: hours 18..23, 18:50 is 5h old) = 6.
	if len(pts) != 7 {
		t.Fatalf("kept %d points, want 7 (2 last, one of each of 6 hours, sharing the newest): %v", len(pts), pts)
	}
	plans, err := e.Thin(ctx, "erp", true)
	if err != nil {
		t.Fatal(err)
	}
	for _, pp := range plans[0].Points {
		if !pp.Kept() {
			t.Errorf("point %s at %s not kept after a pass", pp.ID, pp.Time)
		}
		if pp.Time.Minute() != 50 && !slices.Contains(pp.Keep, "last") {
			t.Errorf("point at %s kept for %v: want the newest of its hour", pp.Time, pp.Keep)
		}
	}
	// Every kept point restores: GC after thinning lost nothing.
	if _, err := e.Collect(ctx, false); err != nil {
		t.Fatal(err)
	}
	rep, err := s.Maintenance().Verify(ctx, blockstore.VerifyOptions{})
	if err != nil || len(rep.Damage) > 0 {
		t.Fatalf("verify after thinning and GC: %v %v", err, rep.Damage)
	}
}

// Two sites with different ladders over one history keep different points;
// dc1 keeps dc2's newest as its base.
func TestTwoLaddersOneHistory(t *testing.T) {
	ctx := context.Background()
	start := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	clk := clock.NewFake(start)
	cat := &catRef{policy(t, `{ keep_last = 3 }`, `{ keep_last = 1, hourly = "24h" }`)}
	s1, s2 := store(t, clk, cat, "dc1"), store(t, clk, cat, "dc2")
	e1 := New(Options{Site: "dc1", Store: s1, Catalog: cat, Clock: clk, Logger: testlog.New(t)})
	e2 := New(Options{Site: "dc2", Store: s2, Catalog: cat, Clock: clk, Logger: testlog.New(t)})
	rng1, rng2 := rand.New(rand.NewPCG(7, 7)), rand.New(rand.NewPCG(7, 7))
	var v1, v2 blockstore.VolumeState
	var hist []blockstore.Point
	var sent blockstore.Point
	for i := range 12*5 - 1 { // 5 hours of a point every 5 minutes
		clk.Set(start.Add(time.Duration(i) * 5 * time.Minute))
		p1 := commit(t, s1, v1, clk.Now(), rng1)
		p2 := commit(t, s2, v2, clk.Now(), rng2) // the same content: the same point
		if p1.ID != p2.ID {
			t.Fatalf("point %d: %s at dc1, %s at dc2", i, p1.ID, p2.ID)
		}
		v1, v2 = p1.Volumes[0], p2.Volumes[0]
		hist = append(hist, p1)
		// Every 25 minutes dc2 gets dc1's newest point (a lagging copy):
		// then it is dc2's watermark.
		if i%5 == 0 {
			next := *cat.c
			next.Services = map[string]*catalog.ServiceState{"erp": {Watermarks: map[string]catalog.Watermark{
				"dc2": {Service: "erp", Site: "dc2", Point: p1.ID, Time: p1.Time}}}}
			cat.c = &next
			sent = p1
		}
		for _, e := range []*Engine{e1, e2} {
			if _, err := e.Thin(ctx, "", false); err != nil {
				t.Fatal(err)
			}
		}
	}
	p1, _ := s1.Points(ctx, "")
	p2, _ := s2.Points(ctx, "")
	base := sent.ID // sent three points before the last: not among the newest 3
	want1 := ids([]blockstore.Point{hist[len(hist)-1], hist[len(hist)-2], hist[len(hist)-3], sent})
	if got := ids(p1); !slices.Equal(got, want1) {
		t.Fatalf("dc1 keeps %v, want the newest 3 and dc2's base %s: %v", got, base, want1)
	}
	// dc2: the newest of each of the 5 hours.
	if len(p2) != 5 {
		t.Fatalf("dc2 keeps %d points, want 5 (one an hour)", len(p2))
	}
	plans, _ := e1.Thin(ctx, "erp", true)
	for _, pp := range plans[0].Points {
		if pp.ID == base && !slices.Contains(pp.Keep, "pinned: base for dc2") {
			t.Fatalf("dc2's base kept for %v", pp.Keep)
		}
	}
}

// A point's lock is fixed when it is recorded: shortening the policy's
// lock does not free it, and it goes once the lock expires.
func TestLockOutlivesPolicyChange(t *testing.T) {
	ctx := context.Background()
	start := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	clk := clock.NewFake(start)
	cat := &catRef{policy(t, `{ keep_last = 1, lock = "7d" }`, `{ keep_last = 1 }`)}
	s := store(t, clk, cat, "dc1")
	e := New(Options{Site: "dc1", Store: s, Catalog: cat, Clock: clk, Logger: testlog.New(t)})
	rng := rand.New(rand.NewPCG(3, 4))
	locked := commit(t, s, blockstore.VolumeState{}, clk.Now(), rng)
	cat.c = policy(t, `{ keep_last = 1 }`, `{ keep_last = 1 }`) // the lock is shortened to none
	clk.Advance(time.Hour)
	newer := commit(t, s, locked.Volumes[0], clk.Now(), rng)
	plans, err := e.Thin(ctx, "", false)
	if err != nil {
		t.Fatal(err)
	}
	if got := keptIDs(plans[0]); !slices.Equal(got, ids([]blockstore.Point{locked, newer})) {
		t.Fatalf("kept %v, want the locked point and the newest", got)
	}
	var why []string
	for _, pp := range plans[0].Points {
		if pp.ID == locked.ID {
			why = pp.Keep
		}
	}
	if len(why) != 1 || !strings.HasPrefix(why[0], "locked until 2026-12-14T00:00:00Z") {
		t.Fatalf("locked point kept for %v", why)
	}
	// Asking the store directly is refused too.
	rep, err := s.Maintenance().DeletePoints(ctx, []string{locked.ID})
	if err != nil || len(rep.Deleted) != 0 || len(rep.Refused) != 1 {
		t.Fatalf("DeletePoints of a locked point: %+v %v", rep, err)
	}
	clk.Set(start.Add(7*24*time.Hour + time.Second))
	if _, err := e.Thin(ctx, "", false); err != nil {
		t.Fatal(err)
	}
	pts, _ := s.Points(ctx, "")
	if got := ids(pts); !slices.Equal(got, []string{newer.ID}) {
		t.Fatalf("after the lock expired: %v, want only %s", got, newer.ID)
	}
}

// Pins name every reason a point must stay.
func TestPins(t *testing.T) {
	at := func(m int) time.Time { return time.Date(2026, 12, 7, 0, m, 0, 0, time.UTC) }
	pts := []blockstore.Point{{ID: "a", Time: at(1)}, {ID: "b", Time: at(2)}, {ID: "c", Time: at(3)}, {ID: "d", Time: at(4)}, {ID: "e", Time: at(5)}}
	cat := catalog.New()
	cat.Services["erp"] = &catalog.ServiceState{
		Watermarks: map[string]catalog.Watermark{
			"dc1": {Point: "e", Time: at(5), Standby: "d"},
			"dc2": {Point: "b", Time: at(2)},
			"dc3": {Point: "zz", Time: at(3) /* not held: the newest here not newer: c */},
		},
		Failovers: []catalog.FailoverRecord{{Point: "a", Done: true}},
		Drills:    []catalog.DrillRecord{{Point: "c"}, {Point: "e", Finished: at(9)}},
		Branches:  []catalog.Branch{{Name: "erp@dc1-epoch1", Site: "dc1", Points: []string{"d"}}, {Name: "x", Site: "dc2", Points: []string{"e"}}},
	}
	got := Pins(cat, "erp", "dc1", pts)
	want := map[string][]string{
		"a": {"pinned: failover"},
		"b": {"pinned: base for dc2"},
		"c": {"pinned: base for dc3", "pinned: drill"},
		"d": {"pinned: standby", "pinned: branch erp@dc1-epoch1"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("pins\n got %v\nwant %v", got, want)
	}
}

// A suspect point pins the newest clean point before it; a run of suspect
// points pins the one before the run; a cleared suspicion pins nothing.
func TestPinsCleanBeforeSuspect(t *testing.T) {
	at := func(m int) time.Time { return time.Date(2026, 12, 7, 0, m, 0, 0, time.UTC) }
	var pts []blockstore.Point
	for i, id := range []string{"p1", "p2", "p3", "p4", "p5", "p6", "p7"} {
		pts = append(pts, blockstore.Point{ID: id, Time: at(i + 1)})
	}
	sus := func(id string, m int, cleared string) catalog.PointMark {
		return catalog.PointMark{Service: "erp", Point: id, Time: at(m), Suspect: &catalog.Suspicion{Volume: "erp/data", Changed: 0.6, Cleared: cleared}}
	}
	cat := catalog.New()
	cat.Services["erp"] = &catalog.ServiceState{Marks: []catalog.PointMark{
		sus("p2", 2, "alice"),              // a false alarm, cleared
		sus("p5", 5, ""), sus("p6", 6, ""), // an attack over two points
		{Service: "erp", Point: "p3", Time: at(3), Damaged: map[string]string{"dc2": "erp/data bytes 0-65535"}}, // damaged elsewhere: still clean here
	}}
	got := Pins(cat, "erp", "dc1", pts)
	want := map[string][]string{"p4": {"pinned: clean before suspect p5", "pinned: clean before suspect p6"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("pins\n got %v\nwant %v", got, want)
	}
}

// Run thins on its ticker with the injected clock.
func TestRunThinsOnTicker(t *testing.T) {
	start := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	clk := clock.NewFake(start)
	cat := &catRef{policy(t, `{ keep_last = 1 }`, `{ keep_last = 1 }`)}
	s := store(t, clk, cat, "dc1")
	e := New(Options{Site: "dc1", Store: s, Catalog: cat, Clock: clk, Logger: testlog.New(t), Every: time.Minute, GCEvery: time.Minute})
	rng := rand.New(rand.NewPCG(5, 6))
	p := commit(t, s, blockstore.VolumeState{}, start, rng)
	commit(t, s, p.Volumes[0], start.Add(time.Second), rng)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	if err := clk.WaitFor(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute)
	testwait.True(t, "a pass and a collection after a tick", 10*time.Second, func() bool { return e.Summary().GC != nil })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if sum := e.Summary(); sum.PointsDeleted != 1 {
		t.Fatalf("summary %+v, want 1 point deleted", sum)
	}
}

// Explain carries each point's mark from the catalog: suspect (and the
// pin of the clean point before it), damaged, verified.
func TestExplainMarks(t *testing.T) {
	start := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	clk := clock.NewFake(start)
	cat := &catRef{policy(t, `{ keep_last = 1 }`, `{ keep_last = 1 }`)}
	s := store(t, clk, cat, "dc1")
	e := New(Options{Site: "dc1", Store: s, Catalog: cat, Clock: clk, Logger: testlog.New(t)})
	rng := rand.New(rand.NewPCG(9, 9))
	p1 := commit(t, s, blockstore.VolumeState{}, start, rng)
	p2 := commit(t, s, p1.Volumes[0], start.Add(time.Minute), rng)
	p3 := commit(t, s, p2.Volumes[0], start.Add(2*time.Minute), rng)
	cat.c.Services["erp"].Marks = []catalog.PointMark{
		{Service: "erp", Point: p2.ID, Time: p2.Time, Suspect: &catalog.Suspicion{Volume: "erp/data", Changed: 0.6, Incompressible: 1}},
		{Service: "erp", Point: p3.ID, Time: p3.Time, Damaged: map[string]string{"dc2": "erp/data bytes 0-4095"},
			Verified: &catalog.Verification{Result: catalog.VerifyOK, Site: "dc1"}},
	}
	kept, err := e.Explain(t.Context(), "erp", []blockstore.Point{p1, p2, p3})
	if err != nil {
		t.Fatal(err)
	}
	if k := kept[0]; k.Suspect || !slices.Contains(k.Keep, "pinned: clean before suspect "+p2.ID) {
		t.Errorf("p1 %+v: want kept as the clean point before suspect p2 (keep_last = 1 would drop it)", k)
	}
	if k := kept[1]; !k.Suspect || k.Suspicion == nil || k.Suspicion.Changed != 0.6 {
		t.Errorf("p2 %+v: want suspect with its figures", k)
	}
	if k := kept[2]; k.Suspect || k.Damaged["dc2"] == "" || k.Verified.Result != catalog.VerifyOK {
		t.Errorf("p3 %+v: want damaged at dc2, verified ok, not suspect", k)
	}
}
