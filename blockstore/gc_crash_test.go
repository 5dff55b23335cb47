package blockstore

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore/blockstoretest"
	"github.com/lifeboat-dr/lifeboat/internal/testcrash"
)

// gcCrashChildEnv makes the test binary the crash child: "DIR SEED".
const gcCrashChildEnv = "LIFEBOAT_GC_CRASH_CHILD"

// Crash-test points: volume "keep-N" points are never deleted by the
// child; "drop-N" points may be. The content of a point is poolImage of
// the seed in its name ("s<seed>"), so parent and child agree on it.
const (
	crashBlocks = 96
	crashPool   = 300
)

func crashImage(seed uint64) []byte { return poolImage(seed, crashBlocks, crashPool) }

func crashSeedOf(p Point) (uint64, error) {
	s, ok := strings.CutPrefix(p.Name, "s")
	if !ok {
		return 0, fmt.Errorf("point %s: name %q", p.ID, p.Name)
	}
	return strconv.ParseUint(s, 10, 64)
}

// gcCrashChild opens the store, prints "ready" and then, until killed,
// deletes "drop" points, commits new ones (reusing pool blocks, so with
// dedup hits on dead blocks) and collects garbage.
func gcCrashChild(args string) {
	fail := testcrash.Exit()
	f := strings.Fields(args)
	seed, _ := strconv.ParseUint(f[1], 10, 64)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	s, err := Open(f[0], Options{Logger: log, FlushEntries: 256})
	if err != nil {
		fail(err)
	}
	ctx := context.Background()
	r := rand.New(rand.NewPCG(seed, 11))
	fmt.Println("ready")
	go func() {
		for i := 0; ; i++ {
			ps := seed*1000 + uint64(i)
			vol := fmt.Sprintf("drop-%d", r.IntN(4))
			if i%3 == 0 {
				vol = fmt.Sprintf("keep-c%d", i%2)
			}
			if _, _, err := s.Snapshot(ctx, blockstoretest.Image(crashImage(ps)), SnapshotOptions{Volume: vol, BlockSize: 4096, Name: fmt.Sprintf("s%d", ps)}); err != nil {
				fail(err)
			}
		}
	}()
	for {
		pts, err := s.Points(ctx, "")
		if err != nil {
			fail(err)
		}
		var drop []string
		for _, p := range pts {
			if strings.HasPrefix(p.Group, "drop-") && r.IntN(2) == 0 {
				drop = append(drop, p.ID)
			}
		}
		if _, err := s.Maintenance().DeletePoints(ctx, drop); err != nil {
			fail(err)
		}
		rep, err := s.Maintenance().GC(ctx, GCOptions{Threshold: 0.05})
		if err != nil {
			fail(err)
		}
		fmt.Printf("gc %d\n", rep.PacksDeleted+rep.PacksRewritten)
	}
}

// TestGCCrash kills a child running GC, DeletePoints and snapshots with
// SIGKILL at random moments; after each kill the store opens, verifies
// clean, every "keep" point that existed before is there, and every point
// restores byte-exact. LIFEBOAT_GC_CRASH_ROUNDS sets the rounds (default 12).
func TestGCCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: this test kills child processes for many rounds; it runs without -short (as CI does)")
	}
	seed := uint64(blockstoretest.Seed(t))
	rng := rand.New(rand.NewPCG(seed, 5))
	rounds := 12
	if v, err := strconv.Atoi(os.Getenv("LIFEBOAT_GC_CRASH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	dir := filepath.Join(t.TempDir(), "store")
	if err := Init(dir, InitOptions{}); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 24 {
		vol := fmt.Sprintf("drop-%d", i%4)
		if i%3 == 0 {
			vol = fmt.Sprintf("keep-%d", i%2)
		}
		ps := uint64(i)
		if _, _, err := s.Snapshot(t.Context(), blockstoretest.Image(crashImage(ps)), SnapshotOptions{Volume: vol, BlockSize: 4096, Name: fmt.Sprintf("s%d", ps)}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	keep := map[string]bool{} // keep points that must survive
	kills, gcs, packs := 0, 0, 0
	for round := range rounds + 1 {
		s, err := Open(dir, Options{Logger: testLogger(t)})
		if err != nil {
			t.Fatalf("round %d: open: %v", round, err)
		}
		vr, err := s.Maintenance().Verify(t.Context(), VerifyOptions{})
		if err != nil || len(vr.Damage) > 0 {
			t.Fatalf("round %d: verify: %v %v", round, err, vr.Damage)
		}
		pts, err := s.Points(t.Context(), "")
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, p := range pts {
			have[p.ID] = true
			ps, err := crashSeedOf(p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(restoreBytes(t, s, p.Volumes[0]), crashImage(ps)) {
				t.Fatalf("round %d: point %s (%s, seed %d) differs", round, p.ID, p.Group, ps)
			}
			if strings.HasPrefix(p.Group, "keep-") {
				keep[p.ID] = true
			}
		}
		for id := range keep {
			if !have[id] {
				t.Fatalf("round %d: keep point %s is gone", round, id)
			}
		}
		s.Close()
		if round == rounds {
			break
		}
		child := testcrash.Start(t, gcCrashChildEnv+"="+dir+" "+strconv.FormatUint(seed+uint64(round)*7919, 10))
		<-child.Ready()
		d := time.Duration(20+rng.IntN(600)) * time.Millisecond
		child.KillAfter(d)
		lines := child.Wait()
		for _, l := range lines {
			if strings.HasPrefix(l, "error ") {
				t.Fatalf("round %d: child: %s", round, l)
			}
			if n, ok := strings.CutPrefix(l, "gc "); ok {
				gcs++
				k, _ := strconv.Atoi(n)
				packs += k
			}
		}
		kills++
	}
	t.Logf("%d kills; %d GC runs finished in the children, %d packs removed; %d keep points checked", kills, gcs, packs, len(keep))
	if gcs == 0 || packs == 0 {
		t.Errorf("no child finished a GC that removed a pack: the kills tested nothing")
	}
}
