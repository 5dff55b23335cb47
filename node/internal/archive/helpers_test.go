package archive

import (
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/blockstore/blockstoretest"
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func newStore(t testing.TB) (*blockstore.Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	if err := blockstore.Init(dir, blockstore.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	s, err := blockstore.Open(dir, blockstore.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dir
}

// image is a volume to commit: its content and block size.
type image struct {
	name string // the part after SERVICE/
	data []byte
	bs   int
}

// sparseImage returns size bytes that are zero except for about dataFrac
// of the bs-sized blocks, which are random.
func sparseImage(seed uint64, size, bs int, dataFrac float64) []byte {
	r := rand.New(rand.NewPCG(seed, 3))
	b := make([]byte, size)
	for off := 0; off < size; off += bs {
		if r.Float64() >= dataFrac {
			continue
		}
		for i := off; i < min(off+bs, size); i++ {
			b[i] = byte(r.Uint32())
		}
	}
	return b
}

// commit stores the images and commits them as a point of service at t.
func commit(t testing.TB, s *blockstore.Store, service string, at time.Time, imgs ...image) blockstore.Point {
	t.Helper()
	ctx := t.Context()
	defer s.Holds().Lease()()
	var states []blockstore.VolumeState
	for _, img := range imgs {
		st := blockstore.VolumeState{Name: service + "/" + img.name, Size: int64(len(img.data)), BlockSize: img.bs}
		var changes []blockstore.Change
		for off := 0; off < len(img.data); off += 256 * img.bs {
			var blocks [][]byte
			for o := off; o < min(off+256*img.bs, len(img.data)); o += img.bs {
				blocks = append(blocks, img.data[o:min(o+img.bs, len(img.data))])
			}
			ids, err := s.Put(ctx, blocks)
			if err != nil {
				t.Fatal(err)
			}
			for i, id := range ids {
				changes = append(changes, blockstore.Change{Block: int64(off/img.bs + i), New: id})
			}
		}
		st, err := s.Update(ctx, st, changes)
		if err != nil {
			t.Fatal(err)
		}
		states = append(states, st)
	}
	p, err := s.CommitPoint(ctx, blockstore.Point{Group: service, Name: "nightly", Time: at, Volumes: states})
	if err != nil {
		t.Fatal(err)
	}
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
