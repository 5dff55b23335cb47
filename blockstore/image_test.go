package blockstore

import (
	"bytes"
	"io"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/lifeboat-dr/lifeboat/blockstore/blockstoretest"
)

// TestImageReadAt: random reads of an Image equal the snapshotted bytes,
// also concurrently, and Extents cover every non-zero byte and no whole
// zero block.
func TestImageReadAt(t *testing.T) {
	for _, tc := range []struct {
		name     string
		size, bs int
	}{
		{"4KiB blocks, short last block", 3<<20 + 100, 4096},
		{"64KiB blocks", 4 << 20, 65536},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newTestStore(t)
			img := genImage(3, tc.size)
			p, _, err := s.Snapshot(t.Context(), blockstoretest.Image(img), SnapshotOptions{Volume: "vol", BlockSize: tc.bs})
			if err != nil {
				t.Fatal(err)
			}
			v, _ := p.Volume("vol")
			im, err := s.OpenImage(t.Context(), v)
			if err != nil {
				t.Fatal(err)
			}
			if im.Size() != int64(len(img)) {
				t.Fatalf("size %d, want %d", im.Size(), len(img))
			}
			var wg sync.WaitGroup
			for g := range 4 {
				wg.Go(func() {
					r := rand.New(rand.NewPCG(uint64(g), 9))
					for range 300 {
						off := r.Int64N(int64(len(img)))
						buf := make([]byte, r.IntN(200<<10)+1)
						n, err := im.ReadAt(buf, off)
						end := min(off+int64(len(buf)), int64(len(img)))
						if n != int(end-off) || (end < off+int64(len(buf))) != (err == io.EOF) || (err != nil && err != io.EOF) {
							t.Errorf("ReadAt(%d bytes at %d) = %d, %v", len(buf), off, n, err)
							return
						}
						if !bytes.Equal(buf[:n], img[off:end]) {
							t.Errorf("ReadAt(%d bytes at %d): wrong bytes", len(buf), off)
							return
						}
					}
				})
			}
			wg.Wait()
			covered := make([]bool, len(img))
			for _, e := range im.Extents() {
				for i := e.Off; i < e.Off+e.Len; i++ {
					covered[i] = true
				}
			}
			for i, b := range img {
				if b != 0 && !covered[i] {
					t.Fatalf("byte %d is non-zero but outside the extents", i)
				}
			}
			for off := 0; off < len(img); off += tc.bs {
				end := min(off+tc.bs, len(img))
				if covered[off] && bytes.Count(img[off:end], []byte{0}) == end-off {
					t.Fatalf("zero block at %d is inside an extent", off)
				}
			}
			if _, err := im.ReadAt(make([]byte, 1), int64(len(img))); err != io.EOF {
				t.Fatalf("read at the end: %v, want EOF", err)
			}
		})
	}
}
