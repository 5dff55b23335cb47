package archive

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
)

var t0 = time.Date(2026, 3, 1, 2, 30, 15, 123456789, time.UTC)

func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }

// exportOne commits a point of "erp" with three volumes and exports it.
func exportOne(t *testing.T) (*blockstore.Store, blockstore.Point, string, Manifest) {
	t.Helper()
	s, _ := newStore(t)
	p := commit(t, s, "erp", t0,
		image{"db", sparseImage(1, 8<<20, 64<<10, 0.05), 64 << 10},
		image{"logs", sparseImage(2, 1<<20+123, 4096, 0.6), 4096},
		image{"empty", nil, 4096},
	)
	dir := filepath.Join(t.TempDir(), "archive")
	m, err := Export(t.Context(), s, p, dir, Options{Logger: testLogger(t), Now: fixedClock(t0.Add(time.Hour))})
	if err != nil {
		t.Fatal(err)
	}
	return s, p, dir, m
}

func TestExport(t *testing.T) {
	t.Parallel()
	s, p, dir, m := exportOne(t)
	path := filepath.Join(dir, "erp", "20260301T023015Z-"+p.ID[:12])
	if got := filepath.Join(dir, "erp", m.DirName()); got != path {
		t.Fatalf("export at %s, want %s", got, path)
	}
	if m.Service != "erp" || m.Point.ID != p.ID || m.Point.Name != "nightly" || !m.Point.Time.Equal(p.Time) ||
		!m.Created.Equal(t0.Add(time.Hour)) || m.Format != "lifeboat-export" || m.Version != 1 || m.ImageFormat != "raw" {
		t.Fatalf("manifest %+v", m)
	}
	for i, v := range p.Volumes {
		mv := m.Volumes[i]
		want := restoreBytes(t, s, v)
		got, err := os.ReadFile(filepath.Join(path, mv.File))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s differs from the store's restore of %s", mv.File, v.Name)
		}
		if mv.Name != v.Name || mv.Size != v.Size || mv.BlockSize != v.BlockSize || mv.Root != v.Root || mv.SHA256 != sha256Hex(want) {
			t.Fatalf("manifest volume %+v for %+v (sha256 %s)", mv, v, sha256Hex(want))
		}
	}
	// The mostly-empty volume is sparse.
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(path, "db.img"), &st); err != nil {
		t.Fatal(err)
	}
	if alloc := st.Blocks * 512; alloc >= st.Size/2 {
		t.Fatalf("db.img allocates %d of %d bytes: not sparse", alloc, st.Size)
	}
	// Exactly the files the format names.
	entries, _ := os.ReadDir(path)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{"SHA256SUMS", "db.img", "empty.img", "logs.img", "manifest.json"}; !slices.Equal(names, want) {
		t.Fatalf("export holds %v, want %v", names, want)
	}
	// An operator can check it without lifeboat.
	if sum, err := exec.LookPath("sha256sum"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("sha256sum: %v", err)
		}
		t.Log("sha256sum not installed; not checking SHA256SUMS with it")
	} else {
		cmd := exec.Command(sum, "-c", "--strict", "SHA256SUMS")
		cmd.Dir = path
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("sha256sum -c: %v\n%s", err, out)
		}
		if n := strings.Count(string(out), ": OK\n"); n != 4 {
			t.Fatalf("sha256sum -c checked %d files:\n%s", n, out)
		}
	}
	if vm, err := Verify(path); err != nil || vm.Point.ID != p.ID {
		t.Fatalf("verify: %v", err)
	}
	list, err := List(dir, "erp")
	if err != nil || len(list) != 1 || list[0].Path != path || list[0].PointID != p.ID[:12] || !list[0].Time.Equal(p.Time.Truncate(time.Second)) {
		t.Fatalf("list: %+v, %v", list, err)
	}
	// Exporting the same point again writes nothing and returns the manifest.
	before, _ := os.Stat(filepath.Join(path, "manifest.json"))
	again, err := Export(t.Context(), s, p, dir, Options{Logger: testLogger(t), Now: fixedClock(t0.Add(2 * time.Hour))})
	if err != nil || !again.Created.Equal(m.Created) {
		t.Fatalf("export again: %+v, %v", again, err)
	}
	if after, _ := os.Stat(filepath.Join(path, "manifest.json")); !after.ModTime().Equal(before.ModTime()) {
		t.Fatal("export again rewrote the manifest")
	}
}

func TestVerifyDetectsDamage(t *testing.T) {
	t.Parallel()
	_, _, dir, m := exportOne(t)
	orig := filepath.Join(dir, "erp", m.DirName())
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string)
		file   string
		text   string
	}{
		{"flipped byte in data", func(t *testing.T, path string) {
			flip(t, filepath.Join(path, "logs.img"), 4096*3+7)
		}, "logs.img", "sha256"},
		{"byte written into a hole", func(t *testing.T, path string) {
			f, _ := os.OpenFile(filepath.Join(path, "db.img"), os.O_RDWR, 0)
			defer f.Close()
			var b [1]byte
			for off := int64(0); off < 8<<20; off += 64 << 10 {
				f.ReadAt(b[:], off)
				if b[0] == 0 {
					f.WriteAt([]byte{1}, off)
					return
				}
			}
		}, "db.img", "sha256"},
		{"truncated image", func(t *testing.T, path string) {
			os.Truncate(filepath.Join(path, "db.img"), 4<<20)
		}, "db.img", "the manifest says 8388608"},
		{"grown image", func(t *testing.T, path string) {
			os.Truncate(filepath.Join(path, "empty.img"), 1)
		}, "empty.img", "the manifest says 0"},
		{"manifest edited", func(t *testing.T, path string) {
			b, _ := os.ReadFile(filepath.Join(path, manifestName))
			os.WriteFile(filepath.Join(path, manifestName), bytes.Replace(b, []byte(`"nightly"`), []byte(`"weekly"`), 1), 0o644)
		}, manifestName, "SHA256SUMS says"},
		{"manifest garbage", func(t *testing.T, path string) {
			os.WriteFile(filepath.Join(path, manifestName), []byte("{\"format\":"), 0o644)
		}, manifestName, "manifest"},
		{"sums edited", func(t *testing.T, path string) {
			b, _ := os.ReadFile(filepath.Join(path, sumsName))
			b[len(b)-20] = 'x'
			os.WriteFile(filepath.Join(path, sumsName), b, 0o644)
		}, sumsName, ""},
		{"sums missing an image", func(t *testing.T, path string) {
			b, _ := os.ReadFile(filepath.Join(path, sumsName))
			lines := strings.SplitAfter(string(b), "\n")
			os.WriteFile(filepath.Join(path, sumsName), []byte(strings.Join(lines[:2], "")), 0o644)
		}, sumsName, "lists 2 files"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), m.DirName())
			copyDir(t, orig, path)
			tc.damage(t, path)
			_, err := Verify(path)
			var ce *CorruptError
			if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) || filepath.Base(ce.Path) != tc.file || !strings.Contains(err.Error(), tc.text) || ce.Hint == "" {
				t.Fatalf("verify: %v; want a *CorruptError naming %s with %q", err, tc.file, tc.text)
			}
		})
	}
	t.Run("image missing", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), m.DirName())
		copyDir(t, orig, path)
		os.Remove(filepath.Join(path, "logs.img"))
		if _, err := Verify(path); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "logs.img") {
			t.Fatalf("verify: %v; want a not-exist error naming logs.img", err)
		}
	})
}

func flip(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x10
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o755); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		src, err := os.Open(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		dst, err := os.Create(filepath.Join(to, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(dst, src); err != nil {
			t.Fatal(err)
		}
		src.Close()
		dst.Close()
	}
}

// failingSource writes part of the image, then fails.
type failingSource struct {
	Source
	err error
}

func (f failingSource) Restore(ctx context.Context, v blockstore.VolumeState, w io.WriterAt, o blockstore.RestoreOptions) error {
	w.WriteAt([]byte("partial"), 0)
	return f.err
}

func TestExportLeavesNothingOnError(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	p := commit(t, s, "erp", t0, image{"db", sparseImage(3, 256<<10, 4096, 0.5), 4096})
	dir := t.TempDir()
	boom := errors.New("store on fire")
	if _, err := Export(t.Context(), failingSource{s, boom}, p, dir, Options{Logger: testLogger(t)}); !errors.Is(err, boom) {
		t.Fatalf("export: %v, want %v", err, boom)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := Export(ctx, s, p, dir, Options{Logger: testLogger(t)}); !errors.Is(err, context.Canceled) {
		t.Fatalf("export with a cancelled context: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "erp"))
	for _, e := range entries {
		if e.Name() != lockName {
			t.Fatalf("%s left after failed exports", e.Name())
		}
	}
}

func TestExportCleansLeftovers(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	p := commit(t, s, "erp", t0, image{"db", sparseImage(4, 64<<10, 4096, 0.5), 4096})
	dir := t.TempDir()
	for _, d := range []string{".tmp-20260101T000000Z-0123456789ab", ".prune-20250101T000000Z-0123456789ab"} {
		os.MkdirAll(filepath.Join(dir, "erp", d), 0o755)
		os.WriteFile(filepath.Join(dir, "erp", d, "db.img"), []byte("half"), 0o644)
	}
	if _, err := Export(t.Context(), s, p, dir, Options{Logger: testLogger(t)}); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "erp"))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{lockName, "20260301T023015Z-" + p.ID[:12]}; !slices.Equal(names, want) {
		t.Fatalf("archive holds %v, want %v", names, want)
	}
}

func TestExportRefusesBadPoints(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	good := commit(t, s, "erp", t0, image{"db", sparseImage(5, 8192, 4096, 1), 4096})
	for _, tc := range []struct {
		name string
		edit func(p *blockstore.Point)
		want string
	}{
		{"service with a slash", func(p *blockstore.Point) { p.Group = "erp/x" }, "must not contain '/'"},
		{"short point id", func(p *blockstore.Point) { p.ID = "abc" }, "point id"},
		{"no time", func(p *blockstore.Point) { p.Time = time.Time{} }, "no time"},
		{"same file twice", func(p *blockstore.Point) {
			v := p.Volumes[0]
			v.Name = "erp/other/db"
			p.Volumes = append(p.Volumes, v)
		}, "share image file db.img"},
		{"dot file", func(p *blockstore.Point) { p.Volumes[0].Name = "erp/.db" }, "not starting with '.'"},
	} {
		p := good
		p.Volumes = slices.Clone(good.Volumes)
		tc.edit(&p)
		dir := t.TempDir()
		_, err := Export(t.Context(), s, p, dir, Options{Logger: testLogger(t)})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("%s: refused export left %d entries", tc.name, len(entries))
		}
	}
}

func TestListAndLock(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if l, err := List(dir, "erp"); err != nil || len(l) != 0 {
		t.Fatalf("list of a missing service: %v, %v", l, err)
	}
	sdir := filepath.Join(dir, "erp")
	for _, n := range []string{"20260301T000000Z-aaaaaaaaaaaa", "20260302T000000Z-bbbbbbbbbbbb", "20260301T000000Z-cccccccccccc",
		".tmp-20260303T000000Z-dddddddddddd", "notes", "20260399T000000Z-eeeeeeeeeeee", "20260304T000000Z-EEEEEEEEEEEE"} {
		os.MkdirAll(filepath.Join(sdir, n), 0o755)
	}
	os.WriteFile(filepath.Join(sdir, "20260305T000000Z-ffffffffffff"), nil, 0o644) // a file, not an export
	l, err := List(dir, "erp")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range l {
		names = append(names, e.Name)
	}
	if want := []string{"20260302T000000Z-bbbbbbbbbbbb", "20260301T000000Z-cccccccccccc", "20260301T000000Z-aaaaaaaaaaaa"}; !slices.Equal(names, want) {
		t.Fatalf("list %v, want %v", names, want)
	}
	unlock, err := lock(sdir)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if _, err := Prune(dir, "erp", Retention{KeepLast: 1}, Options{Logger: testLogger(t)}); !errors.Is(err, ErrLocked) {
		t.Fatalf("prune while locked: %v, want ErrLocked", err)
	}
}
