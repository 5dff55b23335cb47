package lifecycle

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/internal/clock"
	"github.com/lifeboat-dr/lifeboat/internal/testlog"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// TestSoak runs one service through simulated days at two sites on the
// injected clock: a point every 15 minutes at dc1 changing 1-5% of the
// volume's blocks, sent to dc2 every 3 hours as an incremental from the
// newest point the two have in common (the sender's rule), a thinning pass
// at each site every simulated hour and a garbage collection every day,
// with a different ladder at each site. At the end of every day each
// site's points must be exactly what its ladder keeps of the whole history
// plus its pinned points; no transfer may lack a common base (a full
// resend); from day 60 on the stored bytes of each site must stay within
// 10% of the middle of their range (GC rewrites packs a tenth dead, so they
// saw-tooth by about that); at the end both stores verify clean and every
// kept point restores to the content recorded when it was made.
//
// LIFEBOAT_SOAK_DAYS sets the days (default 70; the bench script runs 400).
func TestSoak(t *testing.T) {
	days := 70
	if v := os.Getenv("LIFEBOAT_SOAK_DAYS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("LIFEBOAT_SOAK_DAYS=%q: want a number of days", v)
		}
		days = n
	}
	if testing.Short() {
		days = 10
	}
	wall := time.Now()
	ctx := context.Background()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := clock.NewFake(start)
	ladder1 := `{ keep_last = 4, all = "2h", hourly = "24h", daily = "14d", weekly = "56d" }`
	ladder2 := `{ keep_last = 2, hourly = "12h", daily = "30d", weekly = "42d" }`
	cat := &catRef{policy(t, ladder1, ladder2)}
	cl := cat.c.PolicyCluster()
	key, err := blockstore.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	open := func(site mesh.Site) *blockstore.Store {
		dir := filepath.Join(t.TempDir(), string(site))
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
	s1, s2 := open("dc1"), open("dc2")
	e1 := New(Options{Site: "dc1", Store: s1, Catalog: cat, Clock: clk, Logger: testlog.New(t), GCEvery: 24 * time.Hour, GCThreshold: 0.1})
	e2 := New(Options{Site: "dc2", Store: s2, Catalog: cat, Clock: clk, Logger: testlog.New(t), GCEvery: 24 * time.Hour, GCThreshold: 0.1})

	const blocks, bs = 256, 4096
	rng := rand.New(rand.NewPCG(uint64(wall.UnixNano()), 1))
	t.Logf("seed %d", wall.UnixNano())
	content := make([][]byte, blocks) // the volume now
	for i := range content {
		content[i] = make([]byte, bs) // zero at first
	}
	sums := map[string]blockstore.ID{} // point → hash of the whole volume
	hasher, err := blockstore.NewHasher(key)
	if err != nil {
		t.Fatal(err)
	}
	whole := func() blockstore.ID {
		all := make([]byte, 0, blocks*bs)
		for _, b := range content {
			all = append(all, b...)
		}
		return hasher.ID(all)
	}
	var hist []blockstore.Point // every point dc1 made, oldest first
	v1 := blockstore.VolumeState{Name: "erp/data", Size: blocks * bs, BlockSize: bs}
	record := func() {
		n := blocks/100 + rng.IntN(blocks*5/100-blocks/100+1)
		var changes []blockstore.Change
		var data [][]byte
		for _, b := range rng.Perm(blocks)[:n] {
			buf := make([]byte, bs)
			for i := 0; i < bs; i += 8 {
				x := rng.Uint64()
				for j := range 8 {
					buf[i+j] = byte(x >> (8 * j))
				}
			}
			content[b] = buf
			data = append(data, buf)
			changes = append(changes, blockstore.Change{Block: int64(b)})
		}
		got, err := s1.Put(ctx, data)
		if err != nil {
			t.Fatal(err)
		}
		for i := range changes {
			changes[i].New = got[i]
		}
		slices.SortFunc(changes, func(a, b blockstore.Change) int { return int(a.Block - b.Block) })
		if v1, err = s1.Update(ctx, v1, changes); err != nil {
			t.Fatal(err)
		}
		p, err := s1.CommitPoint(ctx, blockstore.Point{Group: "erp", Time: clk.Now(), Volumes: []blockstore.VolumeState{v1}})
		if err != nil {
			t.Fatal(err)
		}
		hist = append(hist, p)
		sums[p.ID] = whole()
	}
	// transfer sends dc1's newest point to dc2 as the replicator does: the
	// diff from the newest of dc2's points that dc1 holds.
	transfers := 0
	transfer := func() {
		src, _ := s1.Points(ctx, "")
		dst, _ := s2.Points(ctx, "")
		next := src[len(src)-1]
		held := map[string]blockstore.Point{}
		for _, p := range src {
			held[p.ID] = p
		}
		var base *blockstore.Point
		for i := len(dst) - 1; i >= 0 && base == nil; i-- {
			if p, ok := held[dst[i].ID]; ok {
				base = &p
			}
		}
		if base != nil && base.ID == next.ID {
			return
		}
		if base == nil && transfers > 0 {
			t.Fatalf("%s: no point in common between dc1 and dc2: a full resend (dc2 has %d points)", clk.Now(), len(dst))
		}
		bv := mesh.VolumeFromPoint(base, next.Volumes[0])
		var changes []blockstore.Change
		if err := s1.Diff(ctx, bv, next.Volumes[0], func(c blockstore.Change) error {
			changes = append(changes, c)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		var want []blockstore.ID
		for _, c := range changes {
			if !c.New.IsZero() {
				want = append(want, c.New)
			}
		}
		missing, err := s2.Missing(ctx, want)
		if err != nil {
			t.Fatal(err)
		}
		var data [][]byte
		for _, id := range missing {
			b, err := s1.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			data = append(data, b)
		}
		if _, err := s2.Put(ctx, data); err != nil {
			t.Fatal(err)
		}
		v2, err := s2.Update(ctx, bv, changes)
		if err != nil {
			t.Fatal(err)
		}
		p, err := s2.CommitPoint(ctx, blockstore.Point{Group: "erp", Time: next.Time, Volumes: []blockstore.VolumeState{v2}})
		if err != nil {
			t.Fatal(err)
		}
		if p.ID != next.ID {
			t.Fatalf("transfer of %s committed as %s", next.ID, p.ID)
		}
		transfers++
		c := *cat.c
		c.Services = map[string]*catalog.ServiceState{"erp": {Watermarks: map[string]catalog.Watermark{
			"dc1": {Service: "erp", Site: "dc1", Point: hist[len(hist)-1].ID, Time: hist[len(hist)-1].Time},
			"dc2": {Service: "erp", Site: "dc2", Point: p.ID, Time: p.Time}}}}
		cat.c = &c
	}
	// expect is what a site keeps: its ladder over every point it ever
	// had, plus its pins.
	got2 := map[string]time.Time{} // every point dc2 ever had
	expect := func(site mesh.Site, had []blockstore.Point, now []blockstore.Point) []string {
		r, loc, _ := RetentionAt(cl, "erp", site)
		newestFirst := slices.Clone(had)
		slices.Reverse(newestFirst)
		times := make([]time.Time, len(newestFirst))
		for i, p := range newestFirst {
			times[i] = p.Time
		}
		why := r.Ladder(loc).Keep(times, clk.Now())
		want := map[string]bool{}
		for i, p := range newestFirst {
			if why[i] != nil {
				want[p.ID] = true
			}
		}
		for id := range Pins(cat.Catalog(), "erp", site, now) {
			want[id] = true
		}
		out := make([]string, 0, len(want))
		for id := range want {
			out = append(out, id)
		}
		slices.Sort(out)
		return out
	}
	var lo, hi [2]int64 // stored bytes from day 60 on
	packBytes := func(s *blockstore.Store) int64 {
		st, err := s.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.StoredBytes
	}
	for day := 1; day <= days; day++ {
		for q := range 96 {
			clk.Set(start.Add(time.Duration((day-1)*96+q) * 15 * time.Minute))
			record()
			if q%12 == 11 {
				transfer()
			}
			if q%4 == 3 {
				e1.Pass(ctx)
				e2.Pass(ctx)
			}
		}
		// End of the day: the last pass ran after the last point; check
		// both sites.
		p1, _ := s1.Points(ctx, "")
		p2, _ := s2.Points(ctx, "")
		for _, p := range p2 {
			got2[p.ID] = p.Time
		}
		var had2 []blockstore.Point
		for _, p := range hist {
			if _, ok := got2[p.ID]; ok {
				had2 = append(had2, p)
			}
		}
		if w, g := expect("dc1", hist, p1), ids(p1); !slices.Equal(w, g) {
			t.Fatalf("day %d: dc1 keeps %d points, its ladder and pins %d:\n got %v\nwant %v", day, len(g), len(w), g, w)
		}
		if w, g := expect("dc2", had2, p2), ids(p2); !slices.Equal(w, g) {
			t.Fatalf("day %d: dc2 keeps %d points, its ladder and pins %d:\n got %v\nwant %v", day, len(g), len(w), g, w)
		}
		b1, b2 := packBytes(s1), packBytes(s2)
		if day >= 60 {
			for i, b := range []int64{b1, b2} {
				if day == 60 {
					lo[i], hi[i] = b, b
				}
				lo[i], hi[i] = min(lo[i], b), max(hi[i], b)
				if mid := (lo[i] + hi[i]) / 2; float64(hi[i]) > 1.1*float64(mid) {
					t.Fatalf("day %d: dc%d stores %d bytes: from day 60 on it ranged %d..%d, more than 10%% off their middle: not a steady state", day, i+1, b, lo[i], hi[i])
				}
			}
		}
		if day%30 == 0 || day == days || os.Getenv("LIFEBOAT_SOAK_VERBOSE") != "" {
			t.Logf("day %d: dc1 %d points %.1f MiB, dc2 %d points %.1f MiB, %d transfers, wall %s", day, len(p1), float64(b1)/(1<<20),
				len(p2), float64(b2)/(1<<20), transfers, time.Since(wall).Round(time.Second))
		}
	}
	for i, s := range []*blockstore.Store{s1, s2} {
		rep, err := s.Maintenance().Verify(ctx, blockstore.VerifyOptions{})
		if err != nil || len(rep.Damage) > 0 {
			t.Fatalf("dc%d: verify: %v %v", i+1, err, rep.Damage)
		}
		pts, _ := s.Points(ctx, "")
		for _, p := range pts {
			img, err := s.OpenImage(ctx, p.Volumes[0])
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, img.Size())
			if _, err := img.ReadAt(buf, 0); err != nil {
				t.Fatal(err)
			}
			if closer, ok := any(img).(interface{ Close() error }); ok {
				closer.Close()
			}
			if hasher.ID(buf) != sums[p.ID] {
				t.Fatalf("dc%d: point %s at %s restores other bytes than it was made of", i+1, p.ID, p.Time)
			}
		}
	}
	fmt.Fprintf(os.Stderr, "soak: %d simulated days, %d points, %d transfers, wall %s\n", days, len(hist), transfers, time.Since(wall).Round(time.Second))
}
