package blockstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/lifeboat-dr/lifeboat/blockstore/blockstoretest"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func newTestStore(t *testing.T) (*Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	if err := Init(dir, InitOptions{}); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, Options{Logger: testLogger(t), FlushEntries: 1024})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dir
}

// genImage returns size bytes of mixed content: holes, text-like runs,
// random runs and copies of earlier 4 KiB pieces.
func genImage(seed uint64, size int) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, size)
	for off := 0; off < size; off += 4096 {
		end := min(off+4096, size)
		switch r.IntN(4) {
		case 0: // hole
		case 1:
			line := fmt.Sprintf("%08d lifeboat log line level=info seq=%d\n", off, r.IntN(1000))
			for i := off; i < end; i += len(line) {
				copy(b[i:end], line)
			}
		case 2:
			for i := off; i < end; i += 8 {
				var w [8]byte
				binary.LittleEndian.PutUint64(w[:], r.Uint64())
				copy(b[i:end], w[:])
			}
		case 3:
			if off >= 4096 {
				src := r.IntN(off/4096) * 4096
				copy(b[off:end], b[src:src+(end-off)])
			}
		}
	}
	return b
}

func restoreBytes(t *testing.T, s *Store, v VolumeState) []byte {
	t.Helper()
	out := make(blockstoretest.Image, v.Size)
	if err := s.Restore(t.Context(), v, out, RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name      string
		size      int
		blockSize int
	}{
		{"empty", 0, 4096},
		{"one short block", 100, 4096},
		{"4KiB blocks, partial leaf", 3<<20 + 512, 4096},
		{"4KiB blocks, two levels", 300 * 4096 * 2, 4096},
		{"64KiB blocks", 5 << 20, 65536},
		{"1MiB blocks", 3<<20 + 1, 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newTestStore(t)
			img := genImage(1, tc.size)
			p, st, err := s.Snapshot(t.Context(), blockstoretest.Image(img), SnapshotOptions{Volume: "vol", BlockSize: tc.blockSize})
			if err != nil {
				t.Fatal(err)
			}
			v, _ := p.Volume("vol")
			if got := restoreBytes(t, s, v); !bytes.Equal(got, img) {
				t.Fatalf("restored image differs")
			}
			// Unchanged second snapshot: no changed blocks, same root.
			p2, st2, err := s.Snapshot(t.Context(), blockstoretest.Image(img), SnapshotOptions{Volume: "vol"})
			if err != nil {
				t.Fatal(err)
			}
			v2, _ := p2.Volume("vol")
			if st2.Changed != 0 || v2.Root != v.Root {
				t.Errorf("second snapshot: changed %d (first had %d), roots %s %s", st2.Changed, st.Changed, v.Root.Short(), v2.Root.Short())
			}
			rep, err := s.Maintenance().Verify(t.Context(), VerifyOptions{})
			if err != nil || len(rep.Damage) > 0 {
				t.Fatalf("verify: %v %v", err, rep.Damage)
			}
		})
	}
}

func TestDedupAndIncremental(t *testing.T) {
	s, _ := newTestStore(t)
	img := genImage(2, 8<<20)
	p1, _, err := s.Snapshot(t.Context(), blockstoretest.Image(img), SnapshotOptions{Volume: "vol", BlockSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	st1, _ := s.Stats(t.Context())
	// Change 10 blocks: only they are written.
	img2 := bytes.Clone(img)
	r := rand.New(rand.NewPCG(3, 3))
	changed := map[int64]bool{}
	for range 10 {
		b := r.IntN(len(img) / 4096)
		changed[int64(b)] = true
		for i := range 4096 {
			img2[b*4096+i] = byte(r.Uint32())
		}
	}
	p2, st, err := s.Snapshot(t.Context(), blockstoretest.Image(img2), SnapshotOptions{Volume: "vol"})
	if err != nil {
		t.Fatal(err)
	}
	if st.Changed != int64(len(changed)) {
		t.Errorf("changed blocks = %d, want %d", st.Changed, len(changed))
	}
	st2, _ := s.Stats(t.Context())
	if d := st2.UniqueBytes - st1.UniqueBytes; d != int64(len(changed))*4096 {
		t.Errorf("unique bytes grew by %d, want %d", d, len(changed)*4096)
	}
	v1, _ := p1.Volume("vol")
	v2, _ := p2.Volume("vol")
	got := map[int64]bool{}
	if err := s.Diff(t.Context(), v1, v2, func(c Change) error { got[c.Block] = true; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(changed) {
		t.Errorf("diff found %d blocks, want %d", len(got), len(changed))
	}
	for b := range changed {
		if !got[b] {
			t.Errorf("diff missed block %d", b)
		}
	}
	if !bytes.Equal(restoreBytes(t, s, v1), img) || !bytes.Equal(restoreBytes(t, s, v2), img2) {
		t.Fatal("restore of a point differs")
	}
	// Identical content in a second volume costs no new blocks.
	if _, _, err := s.Snapshot(t.Context(), blockstoretest.Image(img), SnapshotOptions{Volume: "copy", BlockSize: 4096}); err != nil {
		t.Fatal(err)
	}
	st3, _ := s.Stats(t.Context())
	if st3.UniqueBytes != st2.UniqueBytes {
		t.Errorf("a copy of a volume added %d unique bytes", st3.UniqueBytes-st2.UniqueBytes)
	}
}

func TestDiffDifferentSizes(t *testing.T) {
	s, _ := newTestStore(t)
	small := genImage(4, 100*4096)
	// Big enough for a map two levels deeper: mostly holes, data at the end.
	big := append(bytes.Clone(small), make([]byte, 70000*4096)...)
	copy(big[len(big)-300*4096:], genImage(5, 300*4096))
	pa, _, err := s.Snapshot(t.Context(), blockstoretest.Image(small), SnapshotOptions{Volume: "a", BlockSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	pb, _, err := s.Snapshot(t.Context(), blockstoretest.Image(big), SnapshotOptions{Volume: "b", BlockSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	va, _ := pa.Volume("a")
	vb, _ := pb.Volume("b")
	var want int
	for b := 100; b < len(big)/4096; b++ {
		if !isZero(big[b*4096 : (b+1)*4096]) {
			want++
		}
	}
	var got int
	err = s.Diff(t.Context(), va, vb, func(c Change) error {
		if c.Block < 100 {
			t.Errorf("block %d reported but equal", c.Block)
		}
		got++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("diff of grown volume: %d changes, want %d", got, want)
	}
}

func TestReopenAndLock(t *testing.T) {
	s, dir := newTestStore(t)
	img := genImage(6, 1<<20)
	p, _, err := s.Snapshot(t.Context(), blockstoretest.Image(img), SnapshotOptions{Volume: "vol", BlockSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrLocked) {
		t.Errorf("second open: %v, want ErrLocked", err)
	}
	s.Close()
	s2, err := Open(dir, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	_, v, err := s2.Resolve(t.Context(), "vol", p.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(restoreBytes(t, s2, v), img) {
		t.Fatal("restore after reopen differs")
	}
	if _, _, err := s2.Resolve(t.Context(), "nope", ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("resolve unknown volume: %v", err)
	}
	if _, err := Open(filepath.Join(t.TempDir(), "x"), Options{}); !errors.Is(err, ErrNotStore) {
		t.Errorf("open non-store: %v", err)
	}
}

func TestSourceChangesSize(t *testing.T) {
	s, _ := newTestStore(t)
	src := &growing{Image: blockstoretest.Image(genImage(7, 1<<20))}
	if _, _, err := s.Snapshot(context.Background(), src, SnapshotOptions{Volume: "vol", BlockSize: 4096}); err == nil {
		t.Fatal("snapshot of a source that changed size succeeded")
	}
	if pts, _ := s.Points(t.Context(), ""); len(pts) != 0 {
		t.Errorf("%d points after a failed snapshot", len(pts))
	}
}

type growing struct {
	blockstoretest.Image
	calls int
}

func (g *growing) Size() (int64, error) {
	g.calls++
	return int64(len(g.Image) + g.calls*4096), nil
}

func TestMain(m *testing.M) {
	if dir := os.Getenv(gcCrashChildEnv); dir != "" {
		gcCrashChild(dir)
	}
	os.Exit(m.Run())
}

// TestSnapshotSparseFile snapshots a sparse file through FileSource, which
// skips holes, and checks the restore is byte-exact.
func TestSnapshotSparseFile(t *testing.T) {
	s, _ := newTestStore(t)
	path := filepath.Join(t.TempDir(), "sparse.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	const size = 40 << 20
	data := genImage(10, 1<<20)
	// Data at the start, in the middle (unaligned to segments) and at the
	// very end; holes between.
	for _, off := range []int64{0, 13<<20 + 8192, size - 1<<20} {
		if _, err := f.WriteAt(data, off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	want, _ := os.ReadFile(path)
	src, err := OpenSource(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if d, err := src.SeekData(1 << 20); err != nil || d != 13<<20 {
		t.Logf("SEEK_DATA after the first extent = %d, %v (file system may not report holes)", d, err)
	}
	p, _, err := s.Snapshot(t.Context(), src, SnapshotOptions{Volume: "sparse", BlockSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	v, _ := p.Volume("sparse")
	if got := restoreBytes(t, s, v); !bytes.Equal(got, want) {
		t.Fatal("restore of a sparse file differs")
	}
}

// TestClosed checks that a closed store refuses every call with ErrClosed
// instead of panicking, and that frequent small commits share a pack.
func TestClosed(t *testing.T) {
	s, dir := newTestStore(t)
	for i := range 20 {
		if _, _, err := s.Snapshot(t.Context(), blockstoretest.Image(genImage(uint64(i), 64<<10)), SnapshotOptions{Volume: "v", BlockSize: 4096}); err != nil {
			t.Fatal(err)
		}
	}
	packs, _ := os.ReadDir(filepath.Join(dir, packsDir))
	if len(packs) > 2 {
		t.Errorf("20 small commits made %d packs, want them to share one", len(packs))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(t.Context(), [][]byte{[]byte("x")}); !errors.Is(err, ErrClosed) {
		t.Errorf("Put after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Get(t.Context(), ID{1}); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Points(t.Context(), ""); !errors.Is(err, ErrClosed) {
		t.Errorf("Points after Close: %v, want ErrClosed", err)
	}
	if err := s.Flush(t.Context()); !errors.Is(err, ErrClosed) {
		t.Errorf("Flush after Close: %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestPruneReclaims keeps only the newest of three points of volumes whose
// content changes completely, and checks that the space is really
// reclaimed, the kept point restores and verify is clean.
func TestPruneReclaims(t *testing.T) {
	s, _ := newTestStore(t)
	imgs := [][]byte{genImage(21, 4<<20), genImage(22, 4<<20), genImage(23, 4<<20)}
	var last Point
	for _, img := range imgs {
		p, _, err := s.Snapshot(t.Context(), blockstoretest.Image(img), SnapshotOptions{Volume: "v", BlockSize: 4096})
		if err != nil {
			t.Fatal(err)
		}
		last = p
	}
	before, err := s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	dry, err := s.Maintenance().Prune(t.Context(), Retention{Last: 1}, PruneOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if pts, _ := s.Points(t.Context(), ""); len(pts) != 3 || dry.PointsDeleted != 2 {
		t.Fatalf("dry run: %d points left, %d reported deleted", len(pts), dry.PointsDeleted)
	}
	rep, err := s.Maintenance().Prune(t.Context(), Retention{Last: 1}, PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.PointsDeleted != 2 || rep.BlocksDeleted == 0 || rep.BlocksDeleted != dry.BlocksDeleted {
		t.Errorf("prune deleted %d points and %d blocks (dry run said %d)", rep.PointsDeleted, rep.BlocksDeleted, dry.BlocksDeleted)
	}
	after, err := s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if after.StoredBytes >= before.StoredBytes*2/3 || after.UniqueBytes >= before.UniqueBytes {
		t.Errorf("prune kept %d of %d stored bytes, %d of %d unique", after.StoredBytes, before.StoredBytes, after.UniqueBytes, before.UniqueBytes)
	}
	v, _ := last.Volume("v")
	if !bytes.Equal(restoreBytes(t, s, v), imgs[2]) {
		t.Fatal("kept point differs after prune")
	}
	if vr, err := s.Maintenance().Verify(t.Context(), VerifyOptions{}); err != nil || len(vr.Damage) > 0 {
		t.Fatalf("verify after prune: %v %v", err, vr.Damage)
	}
}
