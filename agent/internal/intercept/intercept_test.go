//go:build linux

package intercept

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lifeboat-dr/lifeboat/internal/testwait"
)

// need skips the test when a prerequisite is missing, or fails it with
// CI=true.
func need(t testing.TB, ok bool, what string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("prerequisite missing: %s (CI=true: not skipping)", what)
	}
	t.Skipf("prerequisite missing: %s", what)
}

func needFUSE(t testing.TB) {
	t.Helper()
	_, err := os.Stat("/dev/fuse")
	need(t, err == nil, "/dev/fuse")
	need(t, os.Geteuid() == 0, "root (to mount FUSE)")
}

func needTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		_, err := exec.LookPath(tool)
		need(t, err == nil, tool+" in PATH")
	}
}

// call is one Sink call.
type call struct {
	volume string
	first  int64
	blocks [][]byte // nil for Flush
	flush  bool
}

// recorder is a Sink that records every call in order.
type recorder struct {
	mu    sync.Mutex
	calls []call
	fail  error
}

func (r *recorder) Blocks(volume string, first int64, blocks [][]byte) error {
	cp := make([][]byte, len(blocks))
	for i, b := range blocks {
		cp[i] = bytes.Clone(b)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	r.calls = append(r.calls, call{volume: volume, first: first, blocks: cp})
	return nil
}

func (r *recorder) Flush(volume string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, call{volume: volume, flush: true})
	return nil
}

func (r *recorder) snapshot() []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]call(nil), r.calls...)
}

// replay applies the recorded block calls of volume onto base.
func replay(calls []call, volume string, base []byte, bs int) []byte {
	img := bytes.Clone(base)
	for _, c := range calls {
		if c.flush || c.volume != volume {
			continue
		}
		for i, b := range c.blocks {
			off := (c.first + int64(i)) * int64(bs)
			copy(img[off:], b) // a padded last block is cut at the end
		}
	}
	return img
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// setup makes backing files with random content and mounts them.
type fixture struct {
	fs      *FS
	sink    *recorder
	initial map[string][]byte
	backing map[string]string
	bs      map[string]int
}

func setup(t *testing.T, sizes map[string]int64, bs map[string]int) *fixture {
	t.Helper()
	needFUSE(t)
	dir := t.TempDir()
	mp := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	fx := &fixture{sink: &recorder{}, initial: map[string][]byte{}, backing: map[string]string{}, bs: bs}
	r := rand.New(rand.NewPCG(1, 2))
	var vols []Volume
	for name, size := range sizes {
		p := filepath.Join(dir, name+".img")
		data := randBytes(r, int(size))
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		fx.initial[name], fx.backing[name] = data, p
		vols = append(vols, Volume{Name: name, Backing: p, BlockSize: bs[name]})
	}
	fs, err := Mount(Options{Mountpoint: mp, Volumes: vols, Sink: fx.sink, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	fx.fs = fs
	t.Cleanup(func() {
		if err := fs.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	return fx
}

// check asserts that replaying the sink onto the initial image gives the
// backing file, and that reads through the mount give it too.
func (fx *fixture) check(t *testing.T, name string) {
	t.Helper()
	got := replay(fx.sink.snapshot(), name, fx.initial[name], fx.bs[name])
	want, err := os.ReadFile(fx.backing[name])
	if err != nil {
		t.Fatal(err)
	}
	if i := firstDiff(got, want); i >= 0 {
		t.Fatalf("volume %s: sink replay differs from the backing file at byte %d (block %d)", name, i, i/fx.bs[name])
	}
	through, err := os.ReadFile(fx.fs.Path(name))
	if err != nil {
		t.Fatal(err)
	}
	if i := firstDiff(through, want); i >= 0 {
		t.Fatalf("volume %s: read through the mount differs from the backing file at byte %d", name, i)
	}
}

func firstDiff(a, b []byte) int {
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

func TestWritePatterns(t *testing.T) {
	const size = 4<<20 + 1000 // the last 4 KiB block is partial
	fx := setup(t, map[string]int64{"small": size, "big": 8 << 20}, map[string]int{"small": 4096, "big": 64 << 10})
	r := rand.New(rand.NewPCG(3, 4))
	model := bytes.Clone(fx.initial["small"])
	f, err := os.OpenFile(fx.fs.Path("small"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || fi.Size() != size {
		t.Fatalf("file size %v, %v; want %d", fi.Size(), err, size)
	}
	writes := []struct {
		name string
		off  int64
		n    int
	}{
		{"one byte", 5, 1},
		{"unaligned in a block", 4097, 100},
		{"spanning two blocks", 8190, 10},
		{"aligned block", 12288, 4096},
		{"aligned run", 16384, 5 * 4096},
		{"unaligned long", 65536 + 77, 300_000},
		{"1 MiB", 1 << 20, 1 << 20},
		{"into the partial last block", size - 900, 900},
	}
	for _, w := range writes {
		before := len(fx.sink.snapshot())
		data := randBytes(r, w.n)
		if k, err := f.WriteAt(data, w.off); err != nil || k != w.n {
			t.Fatalf("%s: wrote %d, %v", w.name, k, err)
		}
		copy(model[w.off:], data)
		calls := fx.sink.snapshot()[before:]
		// Each call covers whole blocks and the write; block content
		// matches the model right after the write.
		var lo, hi int64 = -1, -1
		for _, c := range calls {
			if lo < 0 {
				lo = c.first
			}
			hi = c.first + int64(len(c.blocks))
			for i, b := range c.blocks {
				off := (c.first + int64(i)) * 4096
				want := model[off:min(off+4096, size)]
				if !bytes.Equal(b[:len(want)], want) || !allZero(b[len(want):]) {
					t.Fatalf("%s: block %d handed to the sink is not the block after the write", w.name, c.first+int64(i))
				}
			}
		}
		if lo != w.off/4096 || hi != (w.off+int64(w.n)-1)/4096+1 {
			t.Errorf("%s: sink got blocks %d..%d, want %d..%d", w.name, lo, hi-1, w.off/4096, (w.off+int64(w.n)-1)/4096)
		}
	}
	got, err := os.ReadFile(fx.backing["small"])
	if err != nil {
		t.Fatal(err)
	}
	if i := firstDiff(got, model); i >= 0 {
		t.Fatalf("backing file differs from what was written at byte %d", i)
	}
	// Past the end: cut at the end, nothing beyond.
	// (os.File.WriteAt retries the rest and reports 0 with the error.)
	if k, err := unix.Pwrite(int(f.Fd()), make([]byte, 2000), size-1000); k != 1000 {
		t.Errorf("write across the end: wrote %d, %v; want 1000", k, err)
	}
	if _, err := f.WriteAt([]byte{1}, size+10); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("write past the end: %v, want ENOSPC", err)
	}
	fx.check(t, "small")

	// Concurrent overlapping writers on both volumes: the sink's order is
	// the apply order, so the replay still equals the backing files.
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 9))
			name := []string{"small", "big"}[g%2]
			f, err := os.OpenFile(fx.fs.Path(name), os.O_RDWR, 0)
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			for range 150 {
				n := 1 + r.IntN(200_000)
				// Concentrate on the first 256 KiB so writes collide.
				off := r.Int64N(256 << 10)
				if _, err := f.WriteAt(randBytes(r, n), off); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	fx.check(t, "small")
	fx.check(t, "big")
}

func TestFsyncReachesFlush(t *testing.T) {
	fx := setup(t, map[string]int64{"v": 1 << 20}, map[string]int{"v": 4096})
	f, err := os.OpenFile(fx.fs.Path("v"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("hello"), 10); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("world"), 5000); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	calls := fx.sink.snapshot()
	var kinds []string
	for _, c := range calls {
		if c.flush {
			kinds = append(kinds, "flush")
		} else {
			kinds = append(kinds, fmt.Sprintf("blocks %d", c.first))
		}
	}
	if got, want := strings.Join(kinds, ", "), "blocks 0, flush, blocks 1, flush"; got != want {
		t.Errorf("sink calls %q, want %q", got, want)
	}
	// Closing a handle that wrote is a consistency point too; closing a
	// reader is not.
	if _, err := f.WriteAt([]byte("!"), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if c := fx.sink.snapshot(); !c[len(c)-1].flush {
		t.Error("close after a write did not reach Flush")
	}
	n := len(fx.sink.snapshot())
	if _, err := os.ReadFile(fx.fs.Path("v")); err != nil {
		t.Fatal(err)
	}
	if len(fx.sink.snapshot()) != n {
		t.Error("a reader's close reached the sink")
	}
}

func TestSinkErrorFailsWrite(t *testing.T) {
	fx := setup(t, map[string]int64{"v": 1 << 20}, map[string]int{"v": 4096})
	f, err := os.OpenFile(fx.fs.Path("v"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fx.sink.mu.Lock()
	fx.sink.fail = errors.New("node gone")
	fx.sink.mu.Unlock()
	if _, err := f.WriteAt([]byte("x"), 0); !errors.Is(err, syscall.EIO) {
		t.Errorf("write with a failing sink: %v, want EIO", err)
	}
}

func TestNamespaceIsFixed(t *testing.T) {
	fx := setup(t, map[string]int64{"v": 1 << 20}, map[string]int{"v": 4096})
	mp := fx.fs.Mountpoint()
	p := fx.fs.Path("v")
	ents, err := os.ReadDir(mp)
	if err != nil || len(ents) != 1 || ents[0].Name() != "v" {
		t.Fatalf("mount lists %v, %v; want [v]", ents, err)
	}
	cases := []struct {
		name string
		op   func() error
	}{
		{"create", func() error { return os.WriteFile(filepath.Join(mp, "new"), nil, 0o600) }},
		{"mkdir", func() error { return os.Mkdir(filepath.Join(mp, "d"), 0o700) }},
		{"unlink", func() error { return os.Remove(p) }},
		{"rename", func() error { return os.Rename(p, filepath.Join(mp, "w")) }},
		{"truncate", func() error { return os.Truncate(p, 100) }},
		{"open with O_TRUNC", func() error {
			f, err := os.OpenFile(p, os.O_RDWR|os.O_TRUNC, 0)
			if err == nil {
				f.Close()
			}
			return err
		}},
		{"symlink", func() error { return os.Symlink(p, filepath.Join(mp, "l")) }},
	}
	for _, c := range cases {
		if err := c.op(); !errors.Is(err, syscall.EPERM) {
			t.Errorf("%s: %v, want EPERM", c.name, err)
		}
	}
	if fi, err := os.Stat(p); err != nil || fi.Size() != 1<<20 {
		t.Errorf("after refused changes: %v, %v", fi, err)
	}
	if n := len(fx.sink.snapshot()); n != 0 {
		t.Errorf("%d sink calls from refused operations", n)
	}
}

func TestMountRejectsBadOptions(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	os.WriteFile(img, make([]byte, 8192), 0o600)
	cases := []struct {
		name string
		o    Options
	}{
		{"no sink", Options{Mountpoint: dir, Volumes: []Volume{{"v", img, 4096}}}},
		{"no volumes", Options{Mountpoint: dir, Sink: &recorder{}}},
		{"bad block size", Options{Mountpoint: dir, Sink: &recorder{}, Volumes: []Volume{{"v", img, 3000}}}},
		{"small block size", Options{Mountpoint: dir, Sink: &recorder{}, Volumes: []Volume{{"v", img, 2048}}}},
		{"slash in name", Options{Mountpoint: dir, Sink: &recorder{}, Volumes: []Volume{{"a/b", img, 4096}}}},
		{"twice", Options{Mountpoint: dir, Sink: &recorder{}, Volumes: []Volume{{"v", img, 4096}, {"v", img, 4096}}}},
		{"missing backing", Options{Mountpoint: dir, Sink: &recorder{}, Volumes: []Volume{{"v", img + "x", 4096}}}},
		{"missing mountpoint", Options{Mountpoint: dir + "/nope", Sink: &recorder{}, Volumes: []Volume{{"v", img, 4096}}}},
	}
	for _, c := range cases {
		if fs, err := Mount(c.o); err == nil {
			fs.Unmount()
			t.Errorf("%s: Mount succeeded", c.name)
		}
	}
}

// run runs a command and fails the test with its output on error.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestLoopDeviceExt4(t *testing.T) {
	needFUSE(t)
	needTools(t, "losetup", "mkfs.ext4", "mount", "umount", "e2fsck")
	_, err := os.Stat("/dev/loop-control")
	need(t, err == nil, "/dev/loop-control")
	fx := setup(t, map[string]int64{"disk": 64 << 20}, map[string]int{"disk": 4096})
	// Start from zeros so the file system is all that is on it.
	if err := os.WriteFile(fx.backing["disk"], make([]byte, 64<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	fx.initial["disk"] = make([]byte, 64<<20)
	loop := run(t, "losetup", "--find", "--show", fx.fs.Path("disk"))
	detached := false
	defer func() {
		if !detached {
			exec.Command("losetup", "-d", loop).Run()
		}
	}()
	run(t, "mkfs.ext4", "-q", "-F", loop)
	mnt := t.TempDir()
	run(t, "mount", loop, mnt)
	r := rand.New(rand.NewPCG(5, 6))
	want := map[string][]byte{}
	for i := range 40 {
		name := filepath.Join(mnt, fmt.Sprintf("f%02d", i))
		data := randBytes(r, 1+r.IntN(400<<10))
		if err := os.WriteFile(name, data, 0o600); err != nil {
			t.Fatal(err)
		}
		want[name] = data
	}
	run(t, "sync")
	run(t, "umount", mnt)
	run(t, "losetup", "-d", loop)
	detached = true
	fx.check(t, "disk")
	flushes := 0
	for _, c := range fx.sink.snapshot() {
		if c.flush {
			flushes++
		}
	}
	if flushes == 0 {
		t.Error("no consistency point from the file system's flushes")
	}
	// The replayed image is a clean file system with the files.
	img := filepath.Join(t.TempDir(), "replay.img")
	if err := os.WriteFile(img, replay(fx.sink.snapshot(), "disk", fx.initial["disk"], 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, "e2fsck", "-fn", img)
	run(t, "mount", "-o", "loop,ro", img, mnt)
	defer run(t, "umount", mnt)
	for name, data := range want {
		got, err := os.ReadFile(name)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s in the replayed image: %d bytes, %v", name, len(got), err)
		}
	}
	t.Logf("%d sink calls, %d flushes", len(fx.sink.snapshot()), flushes)
}

const mountChildEnv = "LIFEBOAT_INTERCEPT_MOUNT_CHILD"

// TestMain runs the mount child instead of the tests when
// LIFEBOAT_INTERCEPT_MOUNT_CHILD is set (TestRemountAfterKill starts the
// test binary so).
func TestMain(m *testing.M) {
	if spec := os.Getenv(mountChildEnv); spec != "" {
		mountChild(spec)
	}
	os.Exit(m.Run())
}

// mountChild mounts spec (mountpoint:backing), prints "mounted" and serves
// until killed.
func mountChild(spec string) {
	mp, backing, _ := strings.Cut(spec, ":")
	if _, err := Mount(Options{Mountpoint: mp, Volumes: []Volume{{"v", backing, 4096}}, Sink: &recorder{}}); err != nil {
		fmt.Printf("error %v\n", err)
		os.Exit(3)
	}
	fmt.Println("mounted")
	select {}
}

func TestRemountAfterKill(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	mp := filepath.Join(dir, "mnt")
	backing := filepath.Join(dir, "v.img")
	os.Mkdir(mp, 0o755)
	if err := os.WriteFile(backing, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Executable()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), mountChildEnv+"="+mp+":"+backing)
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = t.Output()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 64)
	k, _ := out.Read(line)
	if !strings.HasPrefix(string(line[:k]), "mounted") {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child: %q", line[:k])
	}
	if err := os.WriteFile(filepath.Join(mp, "v"), []byte("before"), 0); err == nil {
		t.Fatal("write with O_TRUNC through the child's mount succeeded")
	}
	f, err := os.OpenFile(filepath.Join(mp, "v"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("before"), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	// The mount is stale now.
	testwait.For(t, "the mountpoint after the kill says ENOTCONN", 5*time.Second, func() error {
		if _, err := os.Stat(mp); !errors.Is(err, syscall.ENOTCONN) {
			return fmt.Errorf("stat: %v", err)
		}
		return nil
	})
	sink := &recorder{}
	fs, err := Mount(Options{Mountpoint: mp, Volumes: []Volume{{"v", backing, 4096}}, Sink: sink, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatalf("mount over a stale mount: %v", err)
	}
	got := make([]byte, 6)
	f, err = os.OpenFile(fs.Path("v"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadAt(got, 0); err != nil || string(got) != "before" {
		t.Errorf("read after remount: %q, %v", got, err)
	}
	if _, err := f.WriteAt([]byte("after"), 100); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if len(sink.snapshot()) == 0 {
		t.Error("the new mount's sink saw nothing")
	}
	if err := fs.Unmount(); err != nil {
		t.Fatal(err)
	}
	if err := fs.Unmount(); err != nil {
		t.Errorf("second Unmount: %v", err)
	}
	if err := UnmountStale(mp); err != nil {
		t.Errorf("UnmountStale with nothing mounted: %v", err)
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
