//go:build linux

package intercept

import (
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

type atomicSeed struct{ n atomic.Uint64 }

func (s *atomicSeed) next() uint64 { return s.n.Add(1) }

// nopSink accepts everything.
type nopSink struct{}

func (nopSink) Blocks(string, int64, [][]byte) error { return nil }
func (nopSink) Flush(string) error                   { return nil }

// BenchmarkWrite compares writes through the mount (no-op Sink) with
// writes to the backing file itself: sequential 1 MiB and random 4 KiB.
func BenchmarkWrite(b *testing.B) {
	needFUSE(b)
	const size = 256 << 20
	dir := b.TempDir()
	backing := filepath.Join(dir, "v.img")
	if err := os.WriteFile(backing, nil, 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.Truncate(backing, size); err != nil {
		b.Fatal(err)
	}
	mp := filepath.Join(dir, "mnt")
	os.Mkdir(mp, 0o755)
	fs, err := Mount(Options{Mountpoint: mp, Volumes: []Volume{{"v", backing, 64 << 10}}, Sink: nopSink{},
		Logger: slog.New(slog.NewTextHandler(b.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		b.Fatal(err)
	}
	defer fs.Unmount()
	for _, target := range []struct{ name, path string }{{"direct", backing}, {"fuse", fs.Path("v")}} {
		for _, pattern := range []struct {
			name string
			n    int
			rnd  bool
			par  bool
		}{{"seq1MiB", 1 << 20, false, false}, {"rand4KiB", 4096, true, false}, {"rand4KiB-parallel", 4096, true, true}} {
			b.Run(pattern.name+"/"+target.name, func(b *testing.B) {
				f, err := os.OpenFile(target.path, os.O_RDWR, 0)
				if err != nil {
					b.Fatal(err)
				}
				defer f.Close()
				buf := make([]byte, pattern.n)
				for i := range buf {
					buf[i] = byte(i * 7)
				}
				r := rand.New(rand.NewPCG(1, 1))
				var off int64
				b.SetBytes(int64(pattern.n))
				if pattern.par {
					// Eight writers on one volume: they share its write
					// lock, so this shows what the lock costs.
					b.SetParallelism(4)
					var seed atomicSeed
					b.RunParallel(func(pb *testing.PB) {
						r := rand.New(rand.NewPCG(seed.next(), 2))
						for pb.Next() {
							off := r.Int64N(size/4096) * 4096
							if _, err := unix.Pwrite(int(f.Fd()), buf, off); err != nil {
								b.Error(err)
								return
							}
						}
					})
					return
				}
				for b.Loop() {
					if pattern.rnd {
						off = r.Int64N(size/4096) * 4096
					}
					if _, err := unix.Pwrite(int(f.Fd()), buf, off); err != nil {
						b.Fatal(err)
					}
					off = (off + int64(pattern.n)) % size
				}
			})
		}
	}
}
