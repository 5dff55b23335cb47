package checks

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/internal/bootimg"
	"github.com/lifeboat-dr/lifeboat/internal/testlog"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

const bootLine = "LIFEBOAT-TEST-BOOTED"

// need skips without tool, or fails under CI.
func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, name := range tools {
		if _, err := exec.LookPath(name); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("needs %s", name)
			}
			t.Skipf("needs %s", name)
		}
	}
}

func service(checks ...config.Check) *config.Service {
	s := &config.Service{Name: "web", Servers: []config.Server{{Name: "w", Volumes: []config.Volume{{Name: "disk"}}}},
		Verify: config.Verify{Every: config.Duration(time.Hour), Checks: checks, SerialOK: bootLine, Timeout: config.Duration(30 * time.Second), Memory: 32 << 20}}
	return s
}

// image writes the test's bootable image with an ext4 partition.
func image(t *testing.T) string {
	t.Helper()
	need(t, "mkfs.ext4")
	path := filepath.Join(t.TempDir(), "disk.raw")
	if err := bootimg.Write(t.Context(), path, bootimg.Options{Size: 8 << 20, Line: bootLine, FS: "ext4"}); err != nil {
		t.Fatal(err)
	}
	return path
}

func damage(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func run(t *testing.T, svc *config.Service, path string) *catalog.Verification {
	t.Helper()
	r := New(Options{Logger: testlog.New(t)})
	ev := filepath.Join(t.TempDir(), "evidence")
	t0 := time.Now()
	v := r.Run(t.Context(), Request{Service: svc, Site: "dc2", Point: "p1", Images: []Image{{Volume: "web/disk", Path: path}}, Evidence: ev})
	t.Logf("checks %v: %s in %s: %+v", svc.Verify.Checks, v.Result, time.Since(t0).Round(time.Millisecond), v.Checks)
	return v
}

func TestBootCheck(t *testing.T) {
	t.Parallel()
	need(t, "qemu-system-x86_64")
	path := image(t)
	v := run(t, service(config.CheckBoot), path)
	if v.Result != catalog.VerifyOK || len(v.Checks) != 1 || v.Checks[0].Result != catalog.VerifyOK {
		t.Fatalf("boot of a good image: %+v", v)
	}
	var png bool
	for _, e := range v.Checks[0].Evidence {
		if b, err := os.ReadFile(e); err == nil && strings.HasSuffix(e, ".png") && bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
			png = true
		}
	}
	if !png {
		t.Errorf("no PNG screendump in the evidence %v", v.Checks[0].Evidence)
	}
	before, _ := os.ReadFile(path)
	// The boot sector zeroed: the BIOS finds nothing to boot.
	broken := filepath.Join(t.TempDir(), "broken.raw")
	os.WriteFile(broken, before, 0o600)
	damage(t, broken, 0, make([]byte, 512))
	svc := service(config.CheckBoot)
	svc.Verify.Timeout = config.Duration(3 * time.Second)
	v = run(t, svc, broken)
	if v.Result != catalog.VerifyFailed || !strings.Contains(v.Checks[0].Detail, "did not print") {
		t.Fatalf("boot of an image without a boot sector: %+v", v)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("the boot check wrote the image")
	}
}

func TestFsckCheck(t *testing.T) {
	t.Parallel()
	need(t, "e2fsck")
	path := image(t)
	v := run(t, service(config.CheckFsck), path)
	if v.Result != catalog.VerifyOK || !strings.Contains(v.Checks[0].Detail, "partition 1 (ext2/3/4): clean") || len(v.Checks[0].Evidence) != 1 {
		t.Fatalf("fsck of a clean ext4 image: %+v", v)
	}
	// The superblock's counts overwritten, its magic kept.
	damage(t, path, bootimg.PartitionStart+1024, bytes.Repeat([]byte{0xA5}, 0x30))
	v = run(t, service(config.CheckFsck), path)
	if v.Result != catalog.VerifyFailed || !strings.Contains(v.Checks[0].Detail, "e2fsck -n exit code") {
		t.Fatalf("fsck of a damaged superblock: %+v", v)
	}
	// No file system at all on a Linux partition fails too.
	damage(t, path, bootimg.PartitionStart, make([]byte, 2048))
	v = run(t, service(config.CheckFsck), path)
	if v.Result != catalog.VerifyFailed || !strings.Contains(v.Checks[0].Detail, "no ext2/3/4 or xfs superblock") {
		t.Fatalf("fsck of a wiped partition: %+v", v)
	}
}

func TestFsckXFS(t *testing.T) {
	t.Parallel()
	need(t, "mkfs.xfs", "xfs_repair")
	path := filepath.Join(t.TempDir(), "xfs.raw")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Truncate(path, 300<<20)
	if out, err := exec.Command("mkfs.xfs", "-q", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.xfs: %v: %s", err, out)
	}
	v := run(t, service(config.CheckFsck), path)
	if v.Result != catalog.VerifyOK || !strings.Contains(v.Checks[0].Detail, "(xfs): clean") {
		t.Fatalf("xfs_repair -n of a clean xfs: %+v", v)
	}
}

func TestHookAndSkips(t *testing.T) { // not parallel: it sets PATH
	path := filepath.Join(t.TempDir(), "zero.raw")
	os.WriteFile(path, make([]byte, 64<<10), 0o600)
	svc := service(config.CheckHook, config.CheckFsck)
	svc.Verify.Hook = `test -s "$LIFEBOAT_IMAGE_DISK" && test "$LIFEBOAT_PHASE" = verify && echo probe-ok`
	v := run(t, svc, path)
	if v.Result != catalog.VerifyOK || v.Checks[0].Result != catalog.VerifyOK || !strings.Contains(v.Checks[0].Detail, "probe-ok") ||
		v.Checks[1].Result != catalog.VerifySkipped || !strings.Contains(v.Checks[1].Detail, "no file system and no partition table") {
		t.Fatalf("hook and fsck of a blank volume: %+v", v)
	}
	svc.Verify.Hook = "echo no; exit 3"
	if v := run(t, svc, path); v.Result != catalog.VerifyFailed || !strings.Contains(v.Checks[0].Detail, "exit status 3") {
		t.Fatalf("failing hook: %+v", v)
	}
	// A missing tool is a skip with a note, not a failure.
	t.Setenv("PATH", t.TempDir())
	v = New(Options{Logger: testlog.New(t)}).Run(t.Context(), Request{Service: service(config.CheckBoot, config.CheckFsck), Point: "p", Images: []Image{{Volume: "web/disk", Path: path}}, Evidence: t.TempDir()})
	if v.Result != catalog.VerifySkipped || !strings.Contains(v.Checks[0].Detail, "apt-get install qemu-system-x86") {
		t.Fatalf("without qemu: %+v", v)
	}
}

// TestBootCheckLinux boots a real Linux guest (a Debian kernel, a busybox
// initramfs, SYSLINUX on a FAT partition; about 12 s under TCG here). It
// runs when LIFEBOAT_TEST_KERNEL and LIFEBOAT_TEST_BUSYBOX name a kernel
// and a static busybox (from the Debian packages linux-image-amd64 and
// busybox-static; apt-get download and dpkg-deb -x give them without
// installing) and needs syslinux, mtools and dosfstools.
func TestBootCheckLinux(t *testing.T) {
	kernel, busybox := os.Getenv("LIFEBOAT_TEST_KERNEL"), os.Getenv("LIFEBOAT_TEST_BUSYBOX")
	if kernel == "" || busybox == "" {
		t.Skip("needs a Linux kernel and a static busybox: set LIFEBOAT_TEST_KERNEL and LIFEBOAT_TEST_BUSYBOX (.ci/run fetches them from Debian)")
	}
	need(t, "qemu-system-x86_64", "syslinux", "mcopy", "mkfs.fat")
	t.Parallel()
	path := filepath.Join(t.TempDir(), "linux.raw")
	const line = "LIFEBOAT-LINUX-BOOTED"
	if err := bootimg.WriteLinux(t.Context(), path, bootimg.LinuxOptions{Size: 32 << 20, Line: line, Kernel: kernel, Busybox: busybox}); err != nil {
		t.Fatal(err)
	}
	svc := service(config.CheckBoot, config.CheckFsck)
	svc.Verify.SerialOK, svc.Verify.Timeout, svc.Verify.Memory = line, config.Duration(2*time.Minute), 256<<20
	v := run(t, svc, path)
	if v.Result != catalog.VerifyOK || v.Checks[0].Result != catalog.VerifyOK || v.Checks[1].Result != catalog.VerifySkipped ||
		!strings.Contains(v.Checks[1].Detail, "type 0x0e") {
		t.Fatalf("boot of a Linux guest: %+v", v)
	}
}
