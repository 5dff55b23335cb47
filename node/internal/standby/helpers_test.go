package standby

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/blockstore/blockstoretest"
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// world is a block store with a service's volumes kept in memory too, so
// that each committed point can be checked against what was written.
type world struct {
	t     testing.TB
	store *blockstore.Store
	dir   string
	group string
	now   time.Time
	rng   *rand.Rand
	vols  map[string]*vol // by short name
	want  map[string]digests
}

type vol struct {
	data []byte
	bs   int
	// the volume as last committed: its state and a copy of its data
	last     *blockstore.VolumeState
	lastData []byte
}

func newWorld(t testing.TB, seed uint64) *world {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	if err := blockstore.Init(dir, blockstore.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, dir: dir, group: "erp", now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
		rng: rand.New(rand.NewPCG(seed, 11)), vols: map[string]*vol{}, want: map[string]digests{}}
	w.open()
	t.Cleanup(func() { w.close() })
	return w
}

func (w *world) open() {
	s, err := blockstore.Open(w.dir, blockstore.Options{Logger: testLogger(w.t)})
	if err != nil {
		w.t.Fatal(err)
	}
	w.store = s
}

func (w *world) close() {
	if w.store != nil {
		w.store.Close()
		w.store = nil
	}
}

// fill returns n bytes in which about zeroFrac of the bs-sized blocks are
// zero and the rest random.
func (w *world) fill(n, bs int, zeroFrac float64) []byte {
	b := make([]byte, n)
	for off := 0; off < n; off += bs {
		if w.rng.Float64() < zeroFrac {
			continue
		}
		end := min(off+bs, n)
		for i := off; i < end; i += 8 {
			v := w.rng.Uint64()
			for j := 0; j < 8 && i+j < end; j++ {
				b[i+j] = byte(v >> (8 * j))
			}
		}
	}
	return b
}

func (w *world) set(name string, size, bs int, zeroFrac float64) {
	w.vols[name] = &vol{data: w.fill(size, bs, zeroFrac), bs: bs}
}

// mutate rewrites about frac of the blocks of a volume: half with new
// data, a quarter with zeros, a quarter with a copy of another block.
func (w *world) mutate(name string, frac float64) {
	v := w.vols[name]
	n := len(v.data)
	for off := 0; off < n; off += v.bs {
		if w.rng.Float64() >= frac {
			continue
		}
		end := min(off+v.bs, n)
		switch w.rng.IntN(4) {
		case 0:
			clear(v.data[off:end])
		case 1:
			src := w.rng.IntN(n/v.bs) * v.bs
			copy(v.data[off:end], v.data[src:min(src+(end-off), n)])
		default:
			copy(v.data[off:end], w.fill(end-off, v.bs, 0))
		}
	}
}

// resize grows (with random data in the new part) or shrinks a volume.
func (w *world) resize(name string, size int) {
	v := w.vols[name]
	if size <= len(v.data) {
		v.data = v.data[:size]
		return
	}
	v.data = append(v.data, w.fill(size-len(v.data), v.bs, 0.3)...)
}

// commit stores every volume and commits a point of them, a minute after
// the previous one. Only blocks changed since the last commit are stored
// (the whole volume when its size or block size changed). It records the
// digests of the images the point must give in w.want.
func (w *world) commit() blockstore.Point {
	w.t.Helper()
	ctx := w.t.Context()
	defer w.store.Holds().Lease()()
	names := slices.Sorted(maps.Keys(w.vols))
	var states []blockstore.VolumeState
	for _, name := range names {
		v := w.vols[name]
		st := blockstore.VolumeState{Name: w.group + "/" + name, Size: int64(len(v.data)), BlockSize: v.bs}
		incr := v.last != nil && v.last.Size == st.Size && v.last.BlockSize == st.BlockSize
		if incr {
			st = *v.last
		}
		var changes []blockstore.Change
		var blocks [][]byte
		var nums []int64
		put := func() {
			ids, err := w.store.Put(ctx, blocks)
			if err != nil {
				w.t.Fatal(err)
			}
			for i, id := range ids {
				changes = append(changes, blockstore.Change{Block: nums[i], New: id})
			}
			blocks, nums = blocks[:0], nums[:0]
		}
		for off := 0; off < len(v.data); off += v.bs {
			b := v.data[off:min(off+v.bs, len(v.data))]
			if incr && bytes.Equal(b, v.lastData[off:off+len(b)]) {
				continue
			}
			blocks, nums = append(blocks, b), append(nums, int64(off/v.bs))
			if len(blocks) == 256 {
				put()
			}
		}
		put()
		st, err := w.store.Update(ctx, st, changes)
		if err != nil {
			w.t.Fatal(err)
		}
		v.last, v.lastData = &st, slices.Clone(v.data)
		states = append(states, st)
	}
	w.now = w.now.Add(time.Minute)
	p, err := w.store.CommitPoint(ctx, blockstore.Point{Group: w.group, Name: fmt.Sprintf("p%d", w.now.Unix()), Time: w.now, Volumes: states})
	if err != nil {
		w.t.Fatal(err)
	}
	d := digests{}
	for _, name := range names {
		d[name+imageExt] = digestOf(w.vols[name].data)
	}
	w.want[p.ID] = d
	return p
}

func restoreBytes(t testing.TB, s *blockstore.Store, v blockstore.VolumeState) []byte {
	t.Helper()
	out := make(blockstoretest.Image, v.Size)
	if err := s.Restore(t.Context(), v, out, blockstore.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	return out
}

// digests maps image file names to the SHA-256 of their contents.
type digests map[string]string

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// expect returns what the images of point p must hold, from the store's
// Restore, and checks that it is what the world wrote.
func (w *world) expect(p blockstore.Point) digests {
	w.t.Helper()
	d := expect(w.t, w.store, p)
	if !equalDigests(d, w.want[p.ID]) {
		w.t.Fatalf("the store restores point %s as %v, the world wrote %v", p.ID, d, w.want[p.ID])
	}
	return d
}

// expect returns what the images of point p must hold, from the store.
func expect(t testing.TB, s *blockstore.Store, p blockstore.Point) digests {
	t.Helper()
	d := digests{}
	for _, v := range p.Volumes {
		f, err := fileName(v.Name)
		if err != nil {
			t.Fatal(err)
		}
		d[f] = digestOf(restoreBytes(t, s, v))
	}
	return d
}

// imagesOf returns the digests of the image files in dir.
func imagesOf(t testing.TB, dir string) digests {
	t.Helper()
	d := digests{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), imageExt) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		d[e.Name()] = digestOf(b)
	}
	return d
}

func (d digests) String() string {
	var parts []string
	for k, v := range d {
		parts = append(parts, k+"="+v[:8])
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

func equalDigests(a, b digests) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// checkAt fails unless the set reports point p and its images are p's.
func checkAt(t testing.TB, s *Set, p blockstore.Point, want digests) {
	t.Helper()
	got, ok := s.Point()
	if !ok || got.ID != p.ID {
		t.Fatalf("standby at point %q (ok %v), want %s", got.ID, ok, p.ID)
	}
	if !got.Time.Equal(p.Time) || got.Name != p.Name || got.Group != p.Group || !slices.Equal(got.Volumes, p.Volumes) {
		t.Fatalf("standby point %+v, want %+v", got, p)
	}
	if imgs := imagesOf(t, s.dir); !equalDigests(imgs, want) {
		t.Fatalf("images %v, want %v", imgs, want)
	}
}

func openSet(t testing.TB, dir string) *Set {
	t.Helper()
	s, err := Open(dir, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("open standby: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
