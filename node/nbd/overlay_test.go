package nbd

import (
	"bytes"
	"runtime"
	"sync"
	"syscall"
	"testing"
)

func TestBitmap(t *testing.T) {
	for _, tc := range []struct {
		name        string
		first, last int64
	}{
		{"one block", 5, 5},
		{"within a word", 3, 60},
		{"whole words", 64, 64*5 - 1},
		{"across words", 60, 200},
		{"across pages", pageBlocks - 70, pageBlocks + 130},
		{"far page", 1 << 40, 1<<40 + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m bitmap
			m.set(tc.first, tc.last)
			for b := max(tc.first-70, 0); b <= tc.last+70; b++ {
				if got, want := m.get(b), b >= tc.first && b <= tc.last; got != want {
					t.Fatalf("block %d: got %v, want %v", b, got, want)
				}
			}
		})
	}
}

func newTestOverlay(t *testing.T, size int64) *overlay {
	t.Helper()
	o, err := newOverlay(t.TempDir(), size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.close() })
	return o
}

// TestOverlayConcurrentPartialWrites writes distinct bytes of the same
// blocks from many goroutines: the read-modify-write of one must not undo
// another.
func TestOverlayConcurrentPartialWrites(t *testing.T) {
	const size = 8 * overlayBlock
	data := randData(size, 40)
	pt := newFrozen(data)
	o := newTestOverlay(t, size)
	want := bytes.Clone(data)
	var wg sync.WaitGroup
	for i := range 64 {
		off := int64(i%8)*overlayBlock + int64(i/8)*500 + 3
		p := bytes.Repeat([]byte{byte(i + 1)}, 400)
		copy(want[off:], p)
		wg.Go(func() {
			if err := o.writeAt(pt, p, off); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	got := make([]byte, size)
	if err := o.readAt(pt, got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("overlay lost a concurrent write")
	}
	pt.unchanged(t)
}

// TestOverlayZero checks both ways of zeroing, over a short last block,
// and that without NO_HOLE whole blocks are deallocated.
func TestOverlayZero(t *testing.T) {
	const size = 300*overlayBlock + 123
	data := randData(size, 41)
	for _, noHole := range []bool{false, true} {
		pt := newFrozen(data)
		o := newTestOverlay(t, size)
		if err := o.writeAt(pt, data, 0); err != nil {
			t.Fatal(err)
		}
		before := allocated(t, o)
		want := bytes.Clone(data)
		for _, r := range [][2]int64{{5, 100}, {overlayBlock - 1, 200*overlayBlock + 2}, {size - 200, 200}} {
			if err := o.zero(pt, r[0], r[1], noHole); err != nil {
				t.Fatal(err)
			}
			clear(want[r[0] : r[0]+r[1]])
		}
		got := make([]byte, size)
		if err := o.readAt(pt, got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("noHole=%v: zeroed image differs", noHole)
		}
		if after := allocated(t, o); runtime.GOOS == "linux" && !noHole && after > before-100*overlayBlock {
			t.Fatalf("overlay allocates %d bytes after zeroing 200 blocks, was %d: no holes punched", after, before)
		}
		pt.unchanged(t)
	}
}

func allocated(t *testing.T, o *overlay) int64 {
	t.Helper()
	fi, err := o.f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0
	}
	return st.Blocks * 512
}
