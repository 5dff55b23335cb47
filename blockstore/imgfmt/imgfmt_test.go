package imgfmt

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const (
	kib = 1 << 10
	gib = 1 << 30
)

// testImage is an Image in memory: random bytes for each extent. ReadAt
// fails for any range not inside one extent, so tests catch Write reading
// holes or crossing extents.
type testImage struct {
	size int64
	exts []Extent
	data [][]byte
}

func newTestImage(t testing.TB, size int64, exts []Extent) *testImage {
	t.Helper()
	var seed [32]byte
	copy(seed[:], t.Name())
	r := rand.NewChaCha8(seed)
	m := &testImage{size: size, exts: exts}
	for _, e := range exts {
		b := make([]byte, e.Len)
		r.Read(b)
		m.data = append(m.data, b)
	}
	return m
}

func (m *testImage) Size() int64       { return m.size }
func (m *testImage) Extents() []Extent { return m.exts }

func (m *testImage) ReadAt(p []byte, off int64) (int, error) {
	i, ok := slices.BinarySearchFunc(m.exts, off, func(e Extent, off int64) int {
		switch {
		case e.Off+e.Len <= off:
			return -1
		case e.Off > off:
			return 1
		}
		return 0
	})
	if !ok || off+int64(len(p)) > m.exts[i].Off+m.exts[i].Len {
		return 0, fmt.Errorf("read [%d, %d) is not inside one extent", off, off+int64(len(p)))
	}
	return copy(p, m.data[i][off-m.exts[i].Off:]), nil
}

// writeRef writes img as a sparse raw file, the reference for qemu-img
// compare.
func writeRef(t testing.TB, path string, img *testImage) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(img.size); err != nil {
		t.Fatal(err)
	}
	for i, e := range img.exts {
		if _, err := f.WriteAt(img.data[i], e.Off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// sparseWriter writes a stream to a file, skipping all-zero 4 KiB pieces
// so that large test images stay sparse on disk. Write sees it only as an
// io.Writer (writeFile hides the other methods).
type sparseWriter struct {
	f   *os.File
	off int64
}

var zeros4k = make([]byte, 4*kib)

func (s *sparseWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), len(zeros4k)-int(s.off%int64(len(zeros4k))))
		if !bytes.Equal(p[:k], zeros4k[:k]) {
			if _, err := s.f.WriteAt(p[:k], s.off); err != nil {
				return 0, err
			}
		}
		s.off += int64(k)
		p = p[k:]
	}
	return n, nil
}

// writeFile streams img in format f to path through a writer that has
// nothing but Write.
func writeFile(t testing.TB, path string, f Format, img Image) error {
	t.Helper()
	file, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	sw := &sparseWriter{f: file}
	if err := Write(t.Context(), struct{ io.Writer }{sw}, f, img, nil); err != nil {
		return err
	}
	if err := file.Truncate(sw.off); err != nil {
		t.Fatal(err)
	}
	if err := file.Close(); err != nil {
		t.Fatal(err)
	}
	return nil
}

// qemuImg returns the path of qemu-img, or skips the test (fails it when
// CI=true) if it is missing.
func qemuImg(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("qemu-img")
	if err != nil {
		msg := "qemu-img not on PATH: install the qemu-utils package (Debian/Ubuntu: apt-get install qemu-utils) to run the image format checks"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

func runQemuImg(t testing.TB, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(context.Background(), qemuImg(t), args...)
	var outb, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &outb, &errb
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("qemu-img %s: %w\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, outb.String(), errb.String())
	}
	return outb.String(), err
}

// checkWithQemu runs qemu-img info (format detected, virtual size),
// check (no errors, no leaks) and compare (identical to the raw
// reference) on path.
func checkWithQemu(t *testing.T, f Format, path, ref string, size int64) {
	t.Helper()
	out, err := runQemuImg(t, "info", "--output=json", path)
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Format      string `json:"format"`
		VirtualSize int64  `json:"virtual-size"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("qemu-img info output %q: %v", out, err)
	}
	if info.Format != string(f) || info.VirtualSize != size {
		t.Errorf("qemu-img info: got format %q, virtual size %d; want %q, %d", info.Format, info.VirtualSize, f, size)
	}
	if f != Raw {
		out, err := runQemuImg(t, "check", "--output=json", "-f", string(f), path)
		if err != nil {
			t.Fatal(err)
		}
		// qemu-img check exits non-zero on corruptions (2) or leaks (3);
		// the counts are checked as well.
		var check struct {
			CheckErrors int64 `json:"check-errors"`
			Corruptions int64 `json:"corruptions"`
			Leaks       int64 `json:"leaks"`
		}
		if err := json.Unmarshal([]byte(out), &check); err != nil {
			t.Fatalf("qemu-img check output %q: %v", out, err)
		}
		if check.CheckErrors != 0 || check.Corruptions != 0 || check.Leaks != 0 {
			t.Errorf("qemu-img check: %s", out)
		}
		t.Logf("qemu-img check: %s", strings.Join(strings.Fields(out), " "))
	}
	out, err = runQemuImg(t, "compare", "-f", string(f), "-F", "raw", path, ref)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "Images are identical") {
		t.Errorf("qemu-img compare: %s", out)
	}
}

type testCase struct {
	name string
	size int64
	exts []Extent
	// Slow cases are skipped with -short. They also leave out raw, which
	// would stream GiBs of zeros. (qemu-img compare reads all of a VHDX
	// disk: it has no block status.)
	slow bool
}

func testCases() []testCase {
	var sparse []Extent
	for i := range int64(20) {
		sparse = append(sparse, Extent{i*3*mib + 12345, 100_000 + i*777})
	}
	var perCluster []Extent // 49152 data clusters: two qcow2 refcount blocks
	for off := int64(0); off < 3*gib; off += qcowClusterSize {
		perCluster = append(perCluster, Extent{off + 1000, 512})
	}
	return []testCase{
		{name: "empty", size: 16 * mib},
		{name: "full", size: 8 * mib, exts: []Extent{{0, 8 * mib}}},
		{name: "sparse", size: 64 * mib, exts: sparse},
		{name: "adjacent", size: 4 * mib, exts: []Extent{{100, 200}, {300, 70_000}, {70_300, 1}, {3 * mib, mib}}},
		{name: "unaligned_size", size: 10*mib + 512, exts: []Extent{{0, 4096}, {10*mib - 100, 612}}},
		{name: "tiny", size: 512, exts: []Extent{{0, 512}}},
		{name: "zero_size", size: 0},
		// Not a whole number of sectors: qcow2 rounds the virtual size up,
		// VHDX refuses (TestWriteErrors).
		{name: "odd_size", size: 10*mib + 100, exts: []Extent{{10*mib - 50, 150}}},
		{name: "boundaries", size: 600 * mib, exts: []Extent{
			{qcowClusterSize - 10, 20},            // two qcow2 clusters
			{vhdxBlockSize - 300, 600},            // two VHDX blocks
			{512*mib - 1000, 2000},                // two qcow2 L2 tables
			{600*mib - qcowClusterSize - 1, 1000}, // the last clusters and block
		}},
		{name: "vhdx_chunks", size: 5 * gib, slow: true, exts: []Extent{
			{4*gib - 5000, 10_000}, // two VHDX chunks, a sector bitmap entry between
			{5*gib - 512, 512},
		}},
		{name: "large", size: 64 * gib, slow: true, exts: []Extent{
			{0, mib},
			{17*gib + 12345, 3 * mib},
			{40*gib - 1, 2},
			{64*gib - mib, mib},
		}},
		{name: "refcount_blocks", size: 3 * gib, slow: true, exts: perCluster},
	}
}

// formats returns the formats TestWriteQemu checks tc in: not raw for the
// slow cases (it would stream GiBs of zeros, and raw is checked byte for
// byte by TestRawBytes), not VHDX for sizes VHDX refuses (TestWriteErrors
// checks the refusal), and not VHDX for the 64 GiB case (qemu-img compare
// reads every byte of a VHDX, having no block status; vhdx_chunks covers
// VHDX past 4 GiB).
func (tc testCase) formats() []Format {
	var out []Format
	for _, f := range allFormats {
		switch {
		case f == Raw && tc.slow:
		case f == VHDX && (tc.size == 0 || tc.size%512 != 0 || tc.name == "large"):
		default:
			out = append(out, f)
		}
	}
	return out
}

func TestWriteQemu(t *testing.T) {
	qemuImg(t)
	for _, tc := range testCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.slow && testing.Short() {
				t.Skipf("-short: the %d GiB case takes tens of seconds; it runs without -short (as CI does)", tc.size>>30)
			}
			img := newTestImage(t, tc.size, tc.exts)
			dir := t.TempDir()
			ref := filepath.Join(dir, "ref.raw")
			writeRef(t, ref, img)
			for _, f := range tc.formats() {
				t.Run(string(f), func(t *testing.T) {
					path := filepath.Join(dir, "out."+string(f))
					if err := writeFile(t, path, f, img); err != nil {
						t.Fatalf("Write: %v", err)
					}
					if fi, err := os.Stat(path); err != nil {
						t.Fatal(err)
					} else if f == Raw && fi.Size() != tc.size {
						t.Errorf("raw file size: got %d, want %d", fi.Size(), tc.size)
					}
					// qemu-img shows sizes in whole sectors, rounded up.
					checkWithQemu(t, f, path, ref, ceilDiv(tc.size, 512)*512)
				})
			}
		})
	}
}

// TestRawBytes checks the raw stream byte for byte, without qemu-img.
func TestRawBytes(t *testing.T) {
	for _, tc := range testCases() {
		if tc.size > 64*mib {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			img := newTestImage(t, tc.size, tc.exts)
			want := make([]byte, tc.size)
			for i, e := range img.exts {
				copy(want[e.Off:], img.data[i])
			}
			var got bytes.Buffer
			if err := Write(t.Context(), &got, Raw, img, nil); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Errorf("raw stream differs from the image (got %d bytes, want %d)", got.Len(), len(want))
			}
		})
	}
}

// TestQCOW2Layout checks the planned layout without qemu-img: offsets
// in order, refcounts covering exactly the file.
func TestQCOW2Layout(t *testing.T) {
	for _, tc := range append(testCases(), testCase{name: "2TiB_few_extents", size: 2 << 40, exts: []Extent{{0, 1}, {1 << 40, mib}, {2<<40 - 1, 1}}}) {
		t.Run(tc.name, func(t *testing.T) {
			if tc.slow && testing.Short() {
				t.Skipf("-short: the %d GiB case takes tens of seconds; it runs without -short (as CI does)", tc.size>>30)
			}
			exts, err := checkExtents(tc.size, tc.exts)
			if err != nil {
				t.Fatal(err)
			}
			l, err := planQCOW2(tc.size, exts)
			if err != nil {
				t.Fatal(err)
			}
			var n countWriter
			img := newTestImage(t, tc.size, tc.exts)
			if err := Write(t.Context(), &n, QCOW2, img, nil); err != nil {
				t.Fatal(err)
			}
			if got, want := int64(n), l.total*qcowClusterSize; got != want {
				t.Errorf("wrote %d bytes, layout says %d", got, want)
			}
			if need := ceilDiv(l.total, qcowRefcountsBlock); l.rbClusters != need {
				t.Errorf("refcount blocks: got %d, want %d for %d clusters", l.rbClusters, need, l.total)
			}
			if got, want := l.l1Size, ceilDiv(tc.size, 512*mib); got != want {
				t.Errorf("L1 entries: got %d, want %d", got, want)
			}
			if l.dataOff > mib {
				t.Errorf("tables take %d bytes before the data; want at most 1 MiB for these images", l.dataOff)
			}
		})
	}
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) {
	*c += countWriter(len(p))
	return len(p), nil
}

func TestWriteErrors(t *testing.T) {
	tests := []struct {
		name string
		f    Format
		size int64
		exts []Extent
		want string
	}{
		{"vhdx unaligned size", VHDX, 10*mib + 100, nil, "vhdx: virtual size 10485860: want a positive multiple of the 512-byte logical sector"},
		{"vhdx zero size", VHDX, 0, nil, "vhdx: virtual size 0: want a positive multiple"},
		{"vhdx too large", VHDX, 65 << 40, nil, "over the VHDX limit"},
		{"qcow2 too large", QCOW2, 4 << 50, nil, "over the qcow2 limit"},
		{"negative size", Raw, -1, nil, "raw: image size -1 is negative"},
		{"unsorted", QCOW2, mib, []Extent{{4096, 10}, {0, 10}}, "qcow2: extent 1 (offset 0, length 10): starts before the end 4106"},
		{"overlapping", VHDX, mib, []Extent{{0, 4096}, {4095, 10}}, "starts before the end 4096"},
		{"past the end", Raw, mib, []Extent{{mib - 1, 2}}, "ends past the image size"},
		{"negative extent", QCOW2, mib, []Extent{{-1, 2}}, "negative"},
		{"unknown format", Format("vmdk"), mib, nil, `format "vmdk": want raw, qcow2 or vhdx`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var n countWriter
			err := Write(t.Context(), &n, tt.f, &testImage{size: tt.size, exts: tt.exts, data: make([][]byte, len(tt.exts))}, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got error %v, want one containing %q", err, tt.want)
			}
			if n != 0 {
				t.Errorf("wrote %d bytes before failing", n)
			}
		})
	}
}

func TestReadError(t *testing.T) {
	boom := errors.New("boom")
	for _, f := range allFormats {
		t.Run(string(f), func(t *testing.T) {
			img := failingImage{newTestImage(t, 8*mib, []Extent{{3 * mib, 10}}), boom}
			err := Write(t.Context(), io.Discard, f, img, nil)
			if !errors.Is(err, boom) {
				t.Fatalf("got %v, want it to wrap %v", err, boom)
			}
			want := string(f) + ": write data"
			if !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "read image at offset 3145728") {
				t.Errorf("got %q, want it to start %q and name the offset", err, want)
			}
		})
	}
}

type failingImage struct {
	*testImage
	err error
}

func (f failingImage) ReadAt([]byte, int64) (int, error) { return 0, f.err }

func TestWriteError(t *testing.T) {
	boom := errors.New("disk full")
	for _, f := range allFormats {
		t.Run(string(f), func(t *testing.T) {
			img := newTestImage(t, 64*mib, []Extent{{0, 64 * mib}})
			w := &failAfter{n: 5 * mib, err: boom}
			err := Write(t.Context(), w, f, img, nil)
			if !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), string(f)+": write ") {
				t.Fatalf("got %v, want %q wrapped under %q", err, boom, string(f)+": write ...")
			}
		})
	}
}

// failAfter accepts n bytes, then fails every write.
type failAfter struct {
	n   int64
	err error
}

func (w *failAfter) Write(p []byte) (int, error) {
	if int64(len(p)) > w.n {
		return 0, w.err
	}
	w.n -= int64(len(p))
	return len(p), nil
}

func TestParseFormat(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Format
		err  string
	}{
		{"raw", Raw, ""},
		{"qcow2", QCOW2, ""},
		{"VHDX", VHDX, ""},
		{" qcow2 ", QCOW2, ""},
		{"vmdk", "", `image format "vmdk": want raw, qcow2 or vhdx`},
		{"", "", `image format "": want raw, qcow2 or vhdx`},
	} {
		got, err := ParseFormat(tt.in)
		if got != tt.want || (err == nil) != (tt.err == "") || (err != nil && err.Error() != tt.err) {
			t.Errorf("ParseFormat(%q) = %q, %v; want %q, %q", tt.in, got, err, tt.want, tt.err)
		}
	}
}

// TestVHDXHeaders checks the VHDX header section without qemu-img:
// signatures, checksums and the region table.
func TestVHDXHeaders(t *testing.T) {
	img := newTestImage(t, 8*mib, []Extent{{mib, 10}})
	var b bytes.Buffer
	if err := Write(t.Context(), &b, VHDX, img, nil); err != nil {
		t.Fatal(err)
	}
	f := b.Bytes()
	if got, want := int64(len(f)), int64(vhdxBATOff+mib+vhdxBlockSize); got != want {
		t.Fatalf("file size: got %d, want %d", got, want)
	}
	le := binary.LittleEndian
	for _, c := range []struct {
		name      string
		off, size int
		sig       string
	}{
		{"header 1", vhdxHeader1Off, vhdxHeaderSize, "head"},
		{"header 2", vhdxHeader2Off, vhdxHeaderSize, "head"},
		{"region table 1", vhdxRegion1Off, vhdxRegionSize, "regi"},
		{"region table 2", vhdxRegion2Off, vhdxRegionSize, "regi"},
	} {
		s := slices.Clone(f[c.off : c.off+c.size])
		if string(s[:4]) != c.sig {
			t.Errorf("%s: signature %q, want %q", c.name, s[:4], c.sig)
		}
		sum := le.Uint32(s[4:])
		le.PutUint32(s[4:], 0)
		if got := crc32.Checksum(s, castagnoli); got != sum {
			t.Errorf("%s: checksum %#x, computed %#x", c.name, sum, got)
		}
	}
	if string(f[:8]) != "vhdxfile" || string(f[vhdxMetaOff:vhdxMetaOff+8]) != "metadata" {
		t.Errorf("file or metadata signature missing")
	}
	// BAT: block 0 (holding the extent) present right after the BAT, the
	// other three zero.
	bat := f[vhdxBATOff:]
	if e := le.Uint64(bat); e != vhdxBlockFullyPresent|uint64(vhdxBATOff+mib) {
		t.Errorf("BAT entry 0: %#x, want fully present at %#x", e, vhdxBATOff+mib)
	}
	for i := 1; i < 4; i++ {
		if e := le.Uint64(bat[8*i:]); e != vhdxBlockZero {
			t.Errorf("BAT entry %d: %#x, want zero block", i, e)
		}
	}
}
