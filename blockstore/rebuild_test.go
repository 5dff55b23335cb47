package blockstore

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore/blockstoretest"
)

// twoPoints makes a store (encrypted under kek when set) with two points of
// one volume and returns the points with the images they hold.
func twoPoints(t *testing.T, kek *KEK) (dir string, pts []Point, imgs map[string][]byte) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "store")
	if err := Init(dir, InitOptions{KEK: kek}); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, Options{Logger: testLogger(t), FlushEntries: 256, KEK: kek})
	if err != nil {
		t.Fatal(err)
	}
	imgs = map[string][]byte{}
	img := genImage(31, 3<<20)
	for i := range 2 {
		p, _, err := s.Snapshot(t.Context(), blockstoretest.Image(img), SnapshotOptions{Volume: "vol", BlockSize: 4096, Name: fmt.Sprintf("p%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		pts = append(pts, p)
		imgs[p.ID] = bytes.Clone(img)
		copy(img[1<<20:], genImage(uint64(40+i), 256<<10))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, pts, imgs
}

func checkPoints(t *testing.T, dir string, kek *KEK, want []Point, imgs map[string][]byte) {
	t.Helper()
	s, err := Open(dir, Options{Logger: testLogger(t), KEK: kek})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Points(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	ids := func(ps []Point) (out []string) {
		for _, p := range ps {
			out = append(out, p.ID+"/"+p.Name)
		}
		return out
	}
	if !slices.Equal(ids(got), ids(want)) {
		t.Fatalf("points after rebuild %v, want %v", ids(got), ids(want))
	}
	for _, p := range want {
		v, _ := p.Volume("vol")
		if !bytes.Equal(restoreBytes(t, s, v), imgs[p.ID]) {
			t.Fatalf("point %s restores differently after the rebuild", p.ID)
		}
	}
	rep, err := s.Maintenance().Verify(t.Context(), VerifyOptions{})
	if err != nil || len(rep.Damage) > 0 {
		t.Fatalf("verify after rebuild: %v %v", err, rep.Damage)
	}
}

func TestRebuildIndex(t *testing.T) {
	for _, tc := range []struct {
		name string
		kek  *KEK
	}{{"plain", nil}, {"encrypted", testKEK(t, 5)}} {
		t.Run(tc.name, func(t *testing.T) {
			dir, pts, imgs := twoPoints(t, tc.kek)
			// The index is lost altogether.
			if err := os.RemoveAll(filepath.Join(dir, indexDir)); err != nil {
				t.Fatal(err)
			}
			if _, err := Open(dir, Options{Logger: testLogger(t), KEK: tc.kek}); err == nil {
				t.Fatal("open without an index succeeded")
			}
			var calls int
			rep, err := RebuildIndex(t.Context(), dir, Options{Logger: testLogger(t), KEK: tc.kek}, func(done, total int64) { calls++ })
			if err != nil {
				t.Fatal(err)
			}
			if rep.Points != 2 || rep.Skipped != 0 || rep.Blocks == 0 || rep.Pages == 0 || calls == 0 || rep.OldIndex != "" {
				t.Fatalf("report %+v, %d progress calls", rep, calls)
			}
			checkPoints(t, dir, tc.kek, pts, imgs)

			// A second rebuild over a sound index moves it aside.
			rep, err = RebuildIndex(t.Context(), dir, Options{Logger: testLogger(t), KEK: tc.kek}, nil)
			if err != nil || rep.OldIndex == "" {
				t.Fatalf("second rebuild: %v %+v", err, rep)
			}
			if _, err := os.Stat(rep.OldIndex); err != nil {
				t.Fatal(err)
			}
			checkPoints(t, dir, tc.kek, pts, imgs)
		})
	}
}

// Prune drops a point and repacks; the rebuilt index has the kept point.
func TestRebuildIndexAfterPrune(t *testing.T) {
	dir, pts, imgs := twoPoints(t, nil)
	s, err := Open(dir, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Maintenance().Prune(t.Context(), Retention{Last: 1}, PruneOptions{}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	os.RemoveAll(filepath.Join(dir, indexDir))
	rep, err := RebuildIndex(t.Context(), dir, Options{Logger: testLogger(t)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The dropped point's record may still be in a pack prune kept: it
	// comes back only if all its data does.
	got := pts[1:]
	if rep.Points == 2 {
		got = pts
	}
	checkPoints(t, dir, nil, got, imgs)
}

// A damaged frame is skipped and reported; everything else comes back.
func TestRebuildIndexSkipsDamage(t *testing.T) {
	dir, _, _ := twoPoints(t, nil)
	pack := filepath.Join(dir, packsDir, packName(0))
	b, err := os.ReadFile(pack)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/3] ^= 0x40
	b[len(b)/3+1] ^= 0x40
	if err := os.WriteFile(pack, b, 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err := RebuildIndex(t.Context(), dir, Options{Logger: testLogger(t)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Skipped == 0 || len(rep.Damage) == 0 || rep.Frames == 0 {
		t.Fatalf("report %+v", rep)
	}
	var ce *CorruptError
	if !errors.As(rep.Damage[0], &ce) || ce.Path != pack {
		t.Errorf("damage %v", rep.Damage[0])
	}
	s, err := Open(dir, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	vr, err := s.Maintenance().Verify(t.Context(), VerifyOptions{})
	if err != nil || len(vr.Damage) == 0 {
		t.Errorf("verify after rebuilding around damage: %v, %d problems", err, len(vr.Damage))
	}
}

// Every file of the index damaged at many places: open, list, verify and
// restore return nil or a CorruptError (exit 3), never panic, and the
// rebuild brings the store back.
func TestDamagedIndexIsAnError(t *testing.T) {
	dir, pts, imgs := twoPoints(t, nil)
	// Put the index into tables: Close flushed it.
	entries, err := os.ReadDir(filepath.Join(dir, indexDir))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(uint64(blockstoretest.Seed(t)), 1))
	tried := 0
	for _, e := range entries {
		if e.Name() == "LOCK" || e.IsDir() {
			continue
		}
		orig, err := os.ReadFile(filepath.Join(dir, indexDir, e.Name()))
		if err != nil || len(orig) == 0 {
			continue
		}
		for i := range 6 {
			work := filepath.Join(t.TempDir(), "s")
			if err := os.CopyFS(work, os.DirFS(dir)); err != nil {
				t.Fatal(err)
			}
			b := bytes.Clone(orig)
			off := rng.IntN(len(b))
			switch i {
			case 0:
				off = 0
			case 1:
				off = len(b) - 1
			}
			b[off] ^= byte(1 + rng.IntN(255))
			path := filepath.Join(work, indexDir, e.Name())
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			tried++
			what := fmt.Sprintf("%s byte %d", e.Name(), off)
			func() {
				defer func() {
					if p := recover(); p != nil {
						t.Fatalf("%s: panic: %v", what, p)
					}
				}()
				ok := func(op string, err error) {
					var ce *CorruptError
					if err != nil && !errors.As(err, &ce) {
						t.Errorf("%s: %s: %v is not damage", what, op, err)
					}
					if ce != nil && !strings.Contains(ce.Hint, "rebuild-index") && !strings.Contains(ce.Hint, "verify") {
						t.Errorf("%s: %s: hint %q", what, op, ce.Hint)
					}
				}
				s, err := Open(work, Options{Logger: testLogger(t)})
				t.Logf("%s: open: %v", what, err)
				ok("open", err)
				if err != nil {
					return
				}
				defer s.Close()
				got, err := s.Points(t.Context(), "")
				ok("points", err)
				rep, err := s.Maintenance().Verify(t.Context(), VerifyOptions{})
				t.Logf("%s: verify: %v, %d problems", what, err, len(rep.Damage))
				ok("verify", err)
				for _, d := range rep.Damage {
					ok("verify finding", d)
				}
				for _, p := range got {
					v, _ := p.Volume("vol")
					ok("restore", s.Restore(t.Context(), v, make(blockstoretest.Image, v.Size), RestoreOptions{}))
				}
			}()
			if _, err := RebuildIndex(t.Context(), work, Options{Logger: testLogger(t)}, nil); err != nil {
				t.Fatalf("%s: rebuild: %v", what, err)
			}
			checkPoints(t, work, nil, pts, imgs)
		}
	}
	if tried < 12 {
		t.Fatalf("damaged only %d files", tried)
	}
}

// Retention locks survive a rebuild: carried over from the old index; a
// rebuild without one says they are lost.
func TestRebuildIndexKeepsLocks(t *testing.T) {
	dir, pts, _ := twoPoints(t, testKEK(t, 6))
	kek := testKEK(t, 6)
	s, err := Open(dir, Options{Logger: testLogger(t), KEK: kek})
	if err != nil {
		t.Fatal(err)
	}
	until := time.Now().Add(240 * time.Hour).UTC().Round(0)
	if err := s.Holds().LockPoint(pts[0].ID, until); err != nil {
		t.Fatal(err)
	}
	s.Close()

	rep, err := RebuildIndex(t.Context(), dir, Options{Logger: testLogger(t), KEK: kek}, nil)
	if err != nil || rep.Locks != 1 || rep.LocksLost != "" || rep.OldIndex == "" {
		t.Fatalf("rebuild: %v %+v", err, rep)
	}
	s, err = Open(dir, Options{Logger: testLogger(t), KEK: kek})
	if err != nil {
		t.Fatal(err)
	}
	locks, err := s.Holds().Locks(t.Context())
	if err != nil || len(locks) != 1 || !locks[pts[0].ID].Equal(until) {
		t.Fatalf("locks after rebuild: %v %v", locks, err)
	}
	d, err := s.Maintenance().DeletePoints(t.Context(), []string{pts[0].ID, pts[1].ID})
	if err != nil || len(d.Deleted) != 1 || d.Deleted[0] != pts[1].ID || len(d.Refused) != 1 {
		t.Fatalf("delete after rebuild: %+v %v", d, err)
	}
	s.Close()

	// No old index: the rebuild says the locks are lost.
	if err := os.RemoveAll(filepath.Join(dir, indexDir)); err != nil {
		t.Fatal(err)
	}
	rep, err = RebuildIndex(t.Context(), dir, Options{Logger: testLogger(t), KEK: kek}, nil)
	if err != nil || rep.Locks != 0 || rep.LocksLost == "" {
		t.Fatalf("rebuild without an old index: %v %+v", err, rep)
	}
}
