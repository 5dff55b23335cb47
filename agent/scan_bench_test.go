package agent

import (
	"crypto/rand"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/time/rate"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/mesh"
)

// BenchmarkScanUnchanged is scan mode's re-check of a volume that did not
// change: read (from the page cache), hash every 64 KiB block with the
// keyed BLAKE3, compare with the last point, send nothing. One goroutine,
// so MB/s is per core. Target: at least 1 GB/s.
func BenchmarkScanUnchanged(b *testing.B) {
	const size = 256 << 20
	path := filepath.Join(b.TempDir(), "vol.img")
	data := make([]byte, size)
	rand.Read(data)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		b.Fatal(err)
	}
	var key blockstore.Key
	h, err := blockstore.NewHasher(key)
	if err != nil {
		b.Fatal(err)
	}
	a := &Agent{opts: Options{Logger: slog.New(slog.DiscardHandler)}, hasher: h}
	c := &conn{welcome: mesh.Welcome{Volumes: []mesh.WelcomeVolume{{Name: "v", Size: size, BlockSize: 64 << 10}}}}
	lim := rate.NewLimiter(rate.Inf, 1<<30)
	v := Volume{Name: "v", Path: path}
	prev, err := idsOf(h, path, 64<<10)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		ids, err := a.scanVolume(b.Context(), c, lim, v, prev)
		if err != nil {
			b.Fatal(err)
		}
		prev = ids
	}
}

// idsOf computes the IDs of a volume's blocks without shipping anything.
func idsOf(h *blockstore.Hasher, path string, bs int) ([]blockstore.ID, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	ids := make([]blockstore.ID, len(data)/bs)
	for i := range ids {
		ids[i] = h.ID(data[i*bs : (i+1)*bs])
	}
	return ids, nil
}
