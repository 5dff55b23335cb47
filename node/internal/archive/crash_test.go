package archive

import (
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

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/blockstore/blockstoretest"
	"github.com/lifeboat-dr/lifeboat/internal/testcrash"
)

const crashChildEnv = "LIFEBOAT_ARCHIVE_CRASH_CHILD" // "ARCHIVEDIR STOREDIR POINTID"

// TestMain runs the crash child instead of the tests when
// LIFEBOAT_ARCHIVE_CRASH_CHILD is set (TestCrash starts the test binary so).
func TestMain(m *testing.M) {
	if args := os.Getenv(crashChildEnv); args != "" {
		crashChild(strings.Fields(args))
	}
	os.Exit(m.Run())
}

// crashChild opens the store, prints "ready", exports the point and prints
// "exported" with the microseconds it took.
func crashChild(args []string) {
	fail := testcrash.Exit()
	if len(args) != 3 {
		fail(fmt.Errorf("want 3 arguments, got %q", args))
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	store, err := blockstore.Open(args[1], blockstore.Options{Logger: log})
	if err != nil {
		fail(err)
	}
	ctx := context.Background()
	pts, err := store.Points(ctx, "")
	if err != nil {
		fail(err)
	}
	for _, p := range pts {
		if p.ID != args[2] {
			continue
		}
		fmt.Println("ready")
		start := time.Now()
		if _, err := Export(ctx, store, p, args[0], Options{Logger: log}); err != nil {
			fail(err)
		}
		fmt.Printf("exported %d\n", time.Since(start).Microseconds())
		os.Exit(0)
	}
	fail(fmt.Errorf("no point %s", args[2]))
}

// TestCrash kills a child process exporting a point at random moments and
// checks after each kill that the export is there completely (Verify
// passes) or not at all, and that the next export removes the leftovers.
func TestCrash(t *testing.T) {
	t.Parallel()
	seed := blockstoretest.Seed(t)
	rng := rand.New(rand.NewPCG(uint64(seed), 5))
	s, storeDir := newStore(t)
	p := commit(t, s, "erp", t0,
		image{"db", sparseImage(uint64(seed), 6<<20, 16<<10, 0.5), 16 << 10},
		image{"logs", sparseImage(uint64(seed)+1, 2<<20, 4096, 0.5), 4096})
	s.Close()
	dir := t.TempDir()
	final := filepath.Join(dir, "erp", dirName(p.Time, p.ID))
	exportTime := 300 * time.Millisecond
	rounds := 8
	counts := map[string]int{}
	for round := range rounds + 1 {
		kill := round > 0 // the first round measures an export
		child := testcrash.Start(t, crashChildEnv+"="+dir+" "+storeDir+" "+p.ID)
		var d time.Duration
		if kill {
			<-child.Ready()
			d = time.Duration(rng.Int64N(int64(exportTime) * 5 / 4))
			child.KillAfter(d)
		}
		lines := child.Wait()
		exported := false
		for _, l := range lines {
			f := strings.Fields(l)
			switch f[0] {
			case "error":
				t.Fatalf("round %d: child: %s", round, l)
			case "exported":
				exported = true
				if !kill {
					us, _ := strconv.Atoi(f[1])
					exportTime = time.Duration(us) * time.Microsecond
				}
			}
		}
		if !kill && !exported {
			t.Fatalf("round %d: the child did not export: %q", round, lines)
		}
		list, err := List(dir, "erp")
		if err != nil {
			t.Fatal(err)
		}
		outcome := "absent"
		switch {
		case len(list) == 1 && list[0].Path == final:
			if _, err := Verify(final); err != nil {
				t.Fatalf("round %d (kill after %v): the export is there but damaged: %v", round, d, err)
			}
			outcome = "complete"
			if err := os.RemoveAll(final); err != nil { // export it again next round
				t.Fatal(err)
			}
		case len(list) != 0:
			t.Fatalf("round %d: list %+v", round, list)
		case exported:
			t.Fatalf("round %d: Export returned but the export is missing", round)
		}
		entries, _ := os.ReadDir(filepath.Join(dir, "erp"))
		leftovers := 0
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), tmpPrefix) {
				leftovers++
			}
		}
		if leftovers > 1 {
			t.Fatalf("round %d: %d leftover directories: the next export did not clean up", round, leftovers)
		}
		if leftovers == 1 {
			outcome += " with leftovers"
		}
		counts[outcome]++
		t.Logf("round %d: kill after %v: %s", round, d.Round(time.Millisecond), outcome)
	}
	t.Logf("seed %d: %v (an export takes %v)", seed, counts, exportTime)
	// A last export, in this process, leaves only itself.
	s, err := blockstore.Open(storeDir, blockstore.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := Export(t.Context(), s, p, dir, Options{Logger: testLogger(t)}); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "erp"))
	if len(entries) != 2 {
		t.Fatalf("after a clean export the service directory holds %d entries, want .lock and the export", len(entries))
	}
	if _, err := Verify(final); err != nil {
		t.Fatal(err)
	}
}
