package archive

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/lifeboat-dr/lifeboat/blockstore/imgfmt"
)

// TestExportFormats: qcow2 and vhdx exports verify, check with sha256sum
// and qemu-img, and equal the store's raw restore; a changed byte is
// found.
func TestExportFormats(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	p := commit(t, s, "erp", t0,
		image{"db", sparseImage(1, 8<<20, 64<<10, 0.05), 64 << 10},
		image{"logs", sparseImage(2, 1<<20, 4096, 0.6), 4096},
	)
	for _, f := range []imgfmt.Format{imgfmt.QCOW2, imgfmt.VHDX} {
		t.Run(string(f), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "archive")
			m, err := Export(t.Context(), s, p, dir, Options{Logger: testLogger(t), ImageFormat: f})
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "erp", m.DirName())
			if m.ImageFormat != string(f) || m.Volumes[0].File != "db."+string(f) {
				t.Fatalf("manifest %+v", m)
			}
			if _, err := Verify(path); err != nil {
				t.Fatalf("verify: %v", err)
			}
			c := exec.Command("sha256sum", "-c", sumsName)
			c.Dir = path
			if out, err := c.CombinedOutput(); err != nil {
				t.Fatalf("sha256sum -c: %v\n%s", err, out)
			}
			if q, err := exec.LookPath("qemu-img"); err == nil {
				for i, v := range p.Volumes {
					raw := filepath.Join(t.TempDir(), "raw.img")
					if err := os.WriteFile(raw, restoreBytes(t, s, v), 0o644); err != nil {
						t.Fatal(err)
					}
					img := filepath.Join(path, m.Volumes[i].File)
					if out, err := exec.Command(q, "compare", "-f", string(f), "-F", "raw", img, raw).CombinedOutput(); err != nil {
						t.Fatalf("qemu-img compare %s: %v\n%s", img, err, out)
					}
				}
			} else if os.Getenv("CI") != "" {
				t.Fatal("qemu-img not found: CI installs qemu-utils")
			}
			// One changed byte in an image is found.
			img := filepath.Join(path, m.Volumes[0].File)
			fh, err := os.OpenFile(img, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			fi, _ := fh.Stat()
			b := make([]byte, 1)
			fh.ReadAt(b, fi.Size()-1)
			b[0] ^= 0xff
			fh.WriteAt(b, fi.Size()-1)
			fh.Close()
			if _, err := Verify(path); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("verify of a changed image: %v, want ErrCorrupt", err)
			}
		})
	}
}
