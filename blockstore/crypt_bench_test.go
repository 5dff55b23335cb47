package blockstore

import (
	"path/filepath"
	"testing"

	"github.com/lifeboat-dr/lifeboat/blockstore/blockstoretest"
)

// BenchmarkEncryption measures what encryption at rest costs: ingest (a
// first snapshot of a 64 MiB mixed image into an empty store) and restore
// of it, plain and encrypted, in one run. Compare the pairs as ratios:
//
//	go test -run '^$' -bench Encryption -count 3 ./blockstore
func BenchmarkEncryption(b *testing.B) {
	img := genImage(21, 64<<20)
	for _, mode := range []struct {
		name string
		kek  *KEK
	}{{"plain", nil}, {"encrypted", testKEK(b, 1)}} {
		b.Run("ingest/"+mode.name, func(b *testing.B) {
			b.SetBytes(int64(len(img)))
			for b.Loop() {
				b.StopTimer()
				s := newBenchStore(b, mode.kek)
				b.StartTimer()
				if _, _, err := s.Snapshot(b.Context(), blockstoretest.Image(img), SnapshotOptions{Volume: "vol", BlockSize: 4096}); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				s.Close()
				b.StartTimer()
			}
		})
		b.Run("restore/"+mode.name, func(b *testing.B) {
			s := newBenchStore(b, mode.kek)
			defer s.Close()
			p, _, err := s.Snapshot(b.Context(), blockstoretest.Image(img), SnapshotOptions{Volume: "vol", BlockSize: 4096})
			if err != nil {
				b.Fatal(err)
			}
			v, _ := p.Volume("vol")
			out := make(blockstoretest.Image, v.Size)
			b.SetBytes(v.Size)
			for b.Loop() {
				if err := s.Restore(b.Context(), v, out, RestoreOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// newBenchStore creates and opens a store, encrypted under kek if set.
func newBenchStore(b *testing.B, kek *KEK) *Store {
	b.Helper()
	dir := filepath.Join(b.TempDir(), "store")
	if err := Init(dir, InitOptions{KEK: kek}); err != nil {
		b.Fatal(err)
	}
	s, err := Open(dir, Options{KEK: kek})
	if err != nil {
		b.Fatal(err)
	}
	return s
}
