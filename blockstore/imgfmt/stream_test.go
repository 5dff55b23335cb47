package imgfmt

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
)

var allFormats = []Format{Raw, QCOW2, VHDX}

// TestWritePipe streams each format through an io.Pipe, which cannot
// seek, and checks that the whole image arrives.
func TestWritePipe(t *testing.T) {
	for _, f := range allFormats {
		t.Run(string(f), func(t *testing.T) {
			img := newTestImage(t, 16*mib, []Extent{{100, mib}, {9*mib + 7, 3 * mib}})
			var want countWriter
			if err := Write(t.Context(), &want, f, img, nil); err != nil {
				t.Fatal(err)
			}
			pr, pw := io.Pipe()
			errc := make(chan error, 1)
			go func() {
				err := Write(t.Context(), pw, f, img, nil)
				pw.CloseWithError(err)
				errc <- err
			}()
			var got bytes.Buffer
			if _, err := io.Copy(&got, pr); err != nil {
				t.Fatalf("read the pipe: %v", err)
			}
			if err := <-errc; err != nil {
				t.Fatalf("Write: %v", err)
			}
			if int64(got.Len()) != int64(want) {
				t.Errorf("read %d bytes from the pipe, want %d", got.Len(), want)
			}
			if f == Raw {
				raw := make([]byte, img.size)
				for i, e := range img.exts {
					copy(raw[e.Off:], img.data[i])
				}
				if !bytes.Equal(got.Bytes(), raw) {
					t.Errorf("raw stream differs from the image")
				}
			}
		})
	}
}

// TestWriteCancel cancels ctx while the image streams through a pipe:
// Write stops within a chunk or two and returns the context's error.
func TestWriteCancel(t *testing.T) {
	const size = 64 * mib
	for _, f := range allFormats {
		t.Run(string(f), func(t *testing.T) {
			img := newTestImage(t, size, []Extent{{0, size}})
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			pr, pw := io.Pipe()
			errc := make(chan error, 1)
			go func() {
				err := Write(ctx, pw, f, img, nil)
				pw.CloseWithError(err)
				errc <- err
			}()
			const before = 8 * mib
			if _, err := io.CopyN(io.Discard, pr, before); err != nil {
				t.Fatalf("read the first %d bytes: %v", before, err)
			}
			cancel()
			after, _ := io.Copy(io.Discard, pr)
			err := <-errc
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("got %v, want context.Canceled", err)
			}
			if after > 3*chunkSize {
				t.Errorf("%d bytes arrived after the cancel, want at most %d", after, 3*chunkSize)
			}
		})
	}
}

// TestWriteCancelInTables cancels ctx at the first write, while a
// 64 GiB disk with data in every 512 MiB still has megabytes of tables
// to go: Write stops there, before the data.
func TestWriteCancelInTables(t *testing.T) {
	var exts []Extent
	for off := int64(0); off < 64*gib; off += 512 * mib {
		exts = append(exts, Extent{off + 1, 1})
	}
	for _, tt := range []struct {
		f    Format
		want string
	}{
		{QCOW2, "qcow2: write L2 table: context canceled"},
		{VHDX, "vhdx: write metadata: context canceled"},
	} {
		t.Run(string(tt.f), func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			w := &cancelingWriter{cancel: cancel}
			err := Write(ctx, w, tt.f, newTestImage(t, 64*gib, exts), nil)
			if err == nil || err.Error() != tt.want || !errors.Is(err, context.Canceled) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
			if w.n > 2*chunkSize {
				t.Errorf("wrote %d bytes, want at most %d", w.n, 2*chunkSize)
			}
		})
	}
}

// cancelingWriter calls cancel at the first write.
type cancelingWriter struct {
	cancel func()
	n      int64
}

func (w *cancelingWriter) Write(p []byte) (int, error) {
	w.cancel()
	w.n += int64(len(p))
	return len(p), nil
}

func TestWriteCanceledBefore(t *testing.T) {
	for _, f := range allFormats {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		var n countWriter
		err := Write(ctx, &n, f, newTestImage(t, mib, nil), nil)
		if !errors.Is(err, context.Canceled) || n != 0 {
			t.Errorf("%s: got %v after writing %d bytes, want context.Canceled and nothing written", f, err, n)
		}
	}
}

func TestProgress(t *testing.T) {
	const size = 40 * mib
	for _, f := range allFormats {
		t.Run(string(f), func(t *testing.T) {
			img := newTestImage(t, size, []Extent{{3 * mib, 5 * mib}, {30 * mib, 1}})
			var calls, last int64
			err := Write(t.Context(), io.Discard, f, img, func(done, total int64) {
				calls++
				if total != size || done < last || done > total {
					t.Errorf("progress(%d, %d) after done %d; want total %d, done rising", done, total, last, size)
				}
				last = done
			})
			if err != nil {
				t.Fatal(err)
			}
			if last != size || calls < 3 {
				t.Errorf("progress: %d calls ending at %d, want several ending at %d", calls, last, size)
			}
		})
	}
}

// patternImage is a virtual disk whose extents repeat one short pattern.
type patternImage struct {
	size    int64
	exts    []Extent
	pattern []byte // 2*chunkSize bytes
}

func (p *patternImage) Size() int64       { return p.size }
func (p *patternImage) Extents() []Extent { return p.exts }
func (p *patternImage) ReadAt(b []byte, off int64) (int, error) {
	for n := 0; n < len(b); {
		n += copy(b[n:], p.pattern[(off+int64(n))%chunkSize:])
	}
	return len(b), nil
}

// BenchmarkWrite writes a 1 GiB disk, half of it allocated in 8 MiB
// extents, to io.Discard. MB/s counts the virtual disk.
func BenchmarkWrite(b *testing.B) {
	const size = 1 << 30
	img := &patternImage{size: size, pattern: bytes.Repeat([]byte("lifeboat imgfmt\n"), 2*chunkSize/16)}
	for off := int64(0); off < size; off += 16 * mib {
		img.exts = append(img.exts, Extent{off, 8 * mib})
	}
	for _, f := range allFormats {
		b.Run(string(f), func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				if err := Write(b.Context(), io.Discard, f, img, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
