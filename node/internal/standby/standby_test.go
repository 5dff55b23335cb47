package standby

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/lifeboat-dr/lifeboat/blockstore"
)

// TestApplyChain applies a chain of points that exercises every kind of
// change and checks the images byte for byte against the store after each,
// and again after reopening.
func TestApplyChain(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 1)
	dir := filepath.Join(t.TempDir(), "standby")
	s := openSet(t, dir)
	if _, ok := s.Point(); ok {
		t.Fatal("new standby reports a point")
	}
	steps := []struct {
		name   string
		change func()
		check  func(t *testing.T, st Stats)
	}{
		{"first point, three volumes", func() {
			w.set("db", 1<<20, 4096, 0.3)
			w.set("logs", 600<<10+123, 16<<10, 0.5)
			w.set("empty", 256<<10, 4096, 1)
		}, func(t *testing.T, st Stats) {
			if st.Volumes != 3 || st.Journal == 0 {
				t.Errorf("stats %+v, want 3 volumes and a journal", st)
			}
		}},
		{"a few blocks change", func() { w.mutate("db", 0.05); w.mutate("logs", 0.1) }, func(t *testing.T, st Stats) {
			if st.Volumes != 2 || st.Blocks == 0 || st.Bytes == 0 {
				t.Errorf("stats %+v, want 2 volumes with blocks", st)
			}
		}},
		{"no change at all", func() {}, func(t *testing.T, st Stats) {
			if st.Volumes != 0 || st.Blocks != 0 {
				t.Errorf("stats %+v, want nothing written", st)
			}
		}},
		{"grow to an unaligned size", func() { w.resize("db", 1<<20+5000); w.mutate("db", 0.02) }, nil},
		{"shrink to an unaligned size", func() { w.resize("logs", 300<<10+7) }, nil},
		{"shrink and grow in one", func() { w.resize("db", 700<<10); w.resize("logs", 900<<10) }, nil},
		{"volume added", func() { w.set("cache", 512<<10, 8192, 0.2) }, nil},
		{"volume removed", func() { delete(w.vols, "empty") }, nil},
		{"mostly rewritten", func() { w.mutate("cache", 0.9) }, nil},
		{"block size changes", func() { w.vols["logs"].bs = 4096; w.mutate("logs", 0.01) }, nil},
		{"everything zeroed", func() { clear(w.vols["db"].data) }, nil},
		{"to zero bytes", func() { w.resize("cache", 0) }, nil},
		{"from zero bytes", func() { w.resize("cache", 64<<10) }, nil},
		{"removed and added at once", func() { delete(w.vols, "cache"); w.set("swap", 128<<10, 4096, 0) }, nil},
	}
	for _, step := range steps {
		step.change()
		p := w.commit()
		want := w.expect(p)
		st, err := s.Apply(t.Context(), w.store, p)
		if err != nil {
			t.Fatalf("%s: apply: %v", step.name, err)
		}
		t.Logf("%s: %+v", step.name, st)
		checkAt(t, s, p, want)
		if step.check != nil {
			step.check(t, st)
		}
		for _, v := range p.Volumes {
			if path := s.Path(v.Name); filepath.Dir(path) != dir || !strings.HasSuffix(path, ".img") {
				t.Fatalf("%s: path of %s is %s", step.name, v.Name, path)
			}
		}
		leftovers, _ := filepath.Glob(filepath.Join(dir, "*.new"))
		if _, err := os.Stat(filepath.Join(dir, journalName)); err == nil || len(leftovers) > 0 {
			t.Fatalf("%s: journal or new images left: %v", step.name, leftovers)
		}
		// Reopening finds the same.
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = openSet(t, dir)
		checkAt(t, s, p, want)
	}
}

// TestApplyZeroesAreHoles: blocks that become zero are punched out.
func TestApplyZeroesAreHoles(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 2)
	s := openSet(t, filepath.Join(t.TempDir(), "standby"))
	w.set("disk", 4<<20, 64<<10, 0)
	if _, err := s.Apply(t.Context(), w.store, w.commit()); err != nil {
		t.Fatal(err)
	}
	// Zero 20 of 64 blocks: less than half changed, so through the journal.
	clear(w.vols["disk"].data[1<<20 : 1<<20+20*64<<10])
	p := w.commit()
	if _, err := s.Apply(t.Context(), w.store, p); err != nil {
		t.Fatal(err)
	}
	checkAt(t, s, p, w.expect(p))
	var st syscall.Stat_t
	if err := syscall.Stat(s.Path("erp/disk"), &st); err != nil {
		t.Fatal(err)
	}
	if alloc := st.Blocks * 512; alloc > 4<<20-20*64<<10+64<<10 {
		t.Logf("image allocates %d bytes of %d: this file system does not punch holes", alloc, 4<<20)
	}
}

func TestApplyOrder(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 3)
	s := openSet(t, filepath.Join(t.TempDir(), "standby"))
	w.set("a", 64<<10, 4096, 0)
	p1 := w.commit()
	w.mutate("a", 0.3)
	p2 := w.commit()
	if _, err := s.Apply(t.Context(), w.store, p2); err != nil {
		t.Fatal(err)
	}
	want := w.expect(p2)
	if _, err := s.Apply(t.Context(), w.store, p1); !errors.Is(err, ErrOlder) {
		t.Fatalf("apply older point: %v, want ErrOlder", err)
	}
	same := p2
	same.ID = "0123456789abcdef"
	if _, err := s.Apply(t.Context(), w.store, same); !errors.Is(err, ErrOlder) {
		t.Fatalf("apply another point at the same time: %v, want ErrOlder", err)
	}
	if st, err := s.Apply(t.Context(), w.store, p2); err != nil || st.Volumes != 0 {
		t.Fatalf("apply the current point again: %+v, %v; want a no-op", st, err)
	}
	other := p2
	other.Group, other.ID = "mail", "fedcba9876543210"
	other.Time = other.Time.Add(1)
	if _, err := s.Apply(t.Context(), w.store, other); err == nil || !strings.Contains(err.Error(), `"mail"`) {
		t.Fatalf("apply a point of another service: %v", err)
	}
	checkAt(t, s, p2, want)
}

func TestApplyRefusesBadPoints(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 4)
	s := openSet(t, filepath.Join(t.TempDir(), "standby"))
	w.set("a", 64<<10, 4096, 0)
	good := w.commit()
	for _, tc := range []struct {
		name string
		edit func(p *blockstore.Point)
		want string
	}{
		{"no id", func(p *blockstore.Point) { p.ID = "" }, "point id"},
		{"no volumes", func(p *blockstore.Point) { p.Volumes = nil }, "0 volumes"},
		{"same image file twice", func(p *blockstore.Point) {
			v := p.Volumes[0]
			v.Name = "erp/x/a"
			p.Volumes = append(p.Volumes, v)
		}, "share image file a.img"},
		{"dot file", func(p *blockstore.Point) { p.Volumes[0].Name = "erp/.a" }, "not starting with '.'"},
		{"trailing slash", func(p *blockstore.Point) { p.Volumes[0].Name = "erp/" }, "after the last '/'"},
		{"bad block size", func(p *blockstore.Point) { p.Volumes[0].BlockSize = 1000 }, "block size"},
	} {
		p := good
		p.Volumes = append([]blockstore.VolumeState(nil), good.Volumes...)
		tc.edit(&p)
		_, err := s.Apply(t.Context(), w.store, p)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
	if _, ok := s.Point(); ok {
		t.Fatal("a refused point was applied")
	}
	if imgs := imagesOf(t, s.dir); len(imgs) != 0 {
		t.Fatalf("images written for refused points: %v", imgs)
	}
}

// baseGone is a store that no longer holds the map of the standby's point.
type baseGone struct {
	Source
	base blockstore.ID
}

func (b baseGone) Diff(ctx context.Context, a, c blockstore.VolumeState, fn func(blockstore.Change) error) error {
	return fmt.Errorf("map page %s: %w", a.Root.Short(), blockstore.ErrNotFound)
}

func TestApplyBaseGone(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 5)
	s := openSet(t, filepath.Join(t.TempDir(), "standby"))
	w.set("a", 256<<10, 4096, 0.2)
	w.set("b", 256<<10, 4096, 0.2)
	if _, err := s.Apply(t.Context(), w.store, w.commit()); err != nil {
		t.Fatal(err)
	}
	w.mutate("a", 0.05)
	p := w.commit()
	if _, err := s.Apply(t.Context(), baseGone{Source: w.store}, p); err != nil {
		t.Fatal(err)
	}
	checkAt(t, s, p, w.expect(p))
	// The real thing: the store prunes the standby's point (and its map
	// pages) before the next point is applied.
	w.mutate("a", 0.05)
	w.mutate("b", 0.05)
	p2 := w.commit()
	rep, err := w.store.Maintenance().Prune(t.Context(), blockstore.Retention{Last: 1}, blockstore.PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Rewrite every pack with garbage, so that the base's pages go too.
	gc, err := w.store.Maintenance().GC(t.Context(), blockstore.GCOptions{Threshold: 1e-9})
	if err != nil {
		t.Fatal(err)
	}
	if rep.PointsDeleted == 0 || rep.PagesDeleted+gc.PagesDeleted == 0 {
		t.Fatalf("prune deleted %d points and %d pages; the test needs the base gone", rep.PointsDeleted, rep.PagesDeleted+gc.PagesDeleted)
	}
	if _, err := s.Apply(t.Context(), w.store, p2); err != nil {
		t.Fatal(err)
	}
	checkAt(t, s, p2, w.expect(p2))
}

// failing is a store whose reads fail after a number of blocks.
type failing struct {
	Source
	left int
	err  error
}

func (f *failing) Get(ctx context.Context, id blockstore.ID) ([]byte, error) {
	// Get runs on several goroutines; the test only needs some to fail.
	return nil, f.err
}

func TestApplyStoreErrorChangesNothing(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 6)
	dir := filepath.Join(t.TempDir(), "standby")
	s := openSet(t, dir)
	w.set("a", 256<<10, 4096, 0.2)
	w.set("b", 256<<10, 4096, 0.2)
	p1 := w.commit()
	if _, err := s.Apply(t.Context(), w.store, p1); err != nil {
		t.Fatal(err)
	}
	want := w.expect(p1)
	w.mutate("a", 0.05)
	w.mutate("b", 0.05)
	w.set("c", 64<<10, 4096, 0)
	p2 := w.commit()
	boom := errors.New("disk on fire")
	if _, err := s.Apply(t.Context(), &failing{Source: w.store, err: boom}, p2); !errors.Is(err, boom) {
		t.Fatalf("apply with failing reads: %v, want %v", err, boom)
	}
	checkAt(t, s, p1, want)
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() == journalName || strings.HasSuffix(e.Name(), newExt) {
			t.Fatalf("%s left behind", e.Name())
		}
	}
	// A cancelled context changes nothing either.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.Apply(ctx, w.store, p2); !errors.Is(err, context.Canceled) {
		t.Fatalf("apply with a cancelled context: %v", err)
	}
	checkAt(t, s, p1, want)
	if _, err := s.Apply(t.Context(), w.store, p2); err != nil {
		t.Fatal(err)
	}
	checkAt(t, s, p2, w.expect(p2))
}

var errInjected = errors.New("injected failure")

// TestApplyFailsAtEachStep fails an update at every step and checks the
// rule: before the commit the images stay at the old point; after it they
// are at no point until the next Apply or Open finishes the update.
func TestApplyFailsAtEachStep(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 7)
	w.set("a", 512<<10, 4096, 0.2)
	w.set("b", 256<<10, 8192, 0.2)
	p1 := w.commit()
	w.mutate("a", 0.1)
	w.resize("b", 300<<10)
	w.set("c", 64<<10, 4096, 0)
	p2 := w.commit()
	want1, want2 := w.expect(p1), w.expect(p2)
	steps := []struct {
		step      string
		n         int // fail at the nth call
		committed bool
	}{
		{"images-built", 1, false},
		{"journal-synced", 1, false},
		{"committed", 1, true},
		{"write", 1, true},
		{"write", 8, true},
		{"images-synced", 1, true},
		{"state-written", 1, true},
		{"journal-removed", 1, true},
	}
	for _, tc := range steps {
		for _, reopen := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s-%d-reopen-%v", tc.step, tc.n, reopen), func(t *testing.T) {
				dir := filepath.Join(t.TempDir(), "standby")
				s := openSet(t, dir)
				if _, err := s.Apply(t.Context(), w.store, p1); err != nil {
					t.Fatal(err)
				}
				calls := 0
				s.hook = func(step string) error {
					if step == tc.step {
						if calls++; calls == tc.n {
							return errInjected
						}
					}
					return nil
				}
				_, err := s.Apply(t.Context(), w.store, p2)
				if !errors.Is(err, errInjected) {
					t.Fatalf("apply: %v, want the injected failure", err)
				}
				s.hook = nil
				after := tc.committed && tc.step != "state-written" && tc.step != "journal-removed"
				if p, ok := s.Point(); after && ok {
					t.Fatalf("after a failure past the commit, Point reports %s", p.ID)
				}
				if reopen {
					s.Close()
					s = openSet(t, dir)
				}
				switch {
				case !tc.committed:
					checkAt(t, s, p1, want1)
				case reopen || !after:
					checkAt(t, s, p2, want2)
				}
				if _, err := s.Apply(t.Context(), w.store, p2); err != nil {
					t.Fatal(err)
				}
				checkAt(t, s, p2, want2)
				if _, err := os.Stat(filepath.Join(dir, journalName)); err == nil {
					t.Fatal("journal left after the update finished")
				}
			})
		}
	}
}

func TestOpenLocked(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	openSet(t, dir)
	if _, err := Open(dir, Options{Logger: testLogger(t)}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
}

func TestClosed(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 8)
	s := openSet(t, t.TempDir())
	s.Close()
	w.set("a", 4096, 4096, 0)
	if _, err := s.Apply(t.Context(), w.store, w.commit()); !errors.Is(err, ErrClosed) {
		t.Fatalf("apply after close: %v", err)
	}
}
