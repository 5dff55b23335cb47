package bootimg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// A Linux guest: an MBR disk whose first partition (FAT, from 1 MiB,
// active) holds SYSLINUX, a kernel and an initramfs with a static
// busybox. The initramfs's /init prints the line to the serial console
// (the kernel runs with console=ttyS0) and to the screen, then sleeps.
// It needs the Debian packages syslinux and syslinux-common (the boot
// loader and its MBR code), mtools and dosfstools, and a kernel and a
// busybox-static binary (from linux-image-amd64 and busybox-static).

// LinuxOptions describe a Linux guest image.
type LinuxOptions struct {
	Size    int64  // bytes; at least 16 MiB more than the kernel and busybox
	Line    string // what /init prints
	Kernel  string // a bzImage, like /boot/vmlinuz-6.1.0-57-amd64
	Busybox string // a static busybox binary
	// MBR is syslinux's MBR code; "" = /usr/lib/syslinux/mbr/mbr.bin.
	MBR string
}

// WriteLinux creates the Linux guest image at path.
func WriteLinux(ctx context.Context, path string, o LinuxOptions) error {
	if o.MBR == "" {
		o.MBR = "/usr/lib/syslinux/mbr/mbr.bin"
	}
	if o.Size < 16<<20 || o.Size%SectorSize != 0 {
		return fmt.Errorf("bootimg: size %d: want a multiple of 512 of at least 16 MiB", o.Size)
	}
	if strings.ContainsAny(o.Line, "'\n\x00") {
		return fmt.Errorf("bootimg: line %q: want one line without quotes", o.Line)
	}
	mbr, err := os.ReadFile(o.MBR)
	if err != nil {
		return fmt.Errorf("bootimg: syslinux MBR code (apt-get install syslinux): %w", err)
	}
	bb, err := os.ReadFile(o.Busybox)
	if err != nil {
		return fmt.Errorf("bootimg: busybox: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".bootimg-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	initScript := "#!/bin/sh\n/bin/busybox mount -t proc proc /proc\n" +
		"echo '" + o.Line + "' > /dev/ttyS0\necho '" + o.Line + "' > /dev/tty0\n" +
		"exec /bin/busybox sleep 100000\n"
	var cpio bytes.Buffer
	w := newCpio(&cpio)
	w.dir("bin")
	w.dir("dev")
	w.dir("proc")
	w.file("bin/busybox", 0o755, bb)
	w.symlink("bin/sh", "busybox")
	w.char("dev/console", 5, 1)
	w.char("dev/ttyS0", 4, 64)
	w.char("dev/tty0", 4, 0)
	w.file("init", 0o755, []byte(initScript))
	w.close()
	cfg := "SERIAL 0 115200\nPROMPT 0\nTIMEOUT 0\nDEFAULT linux\nLABEL linux\n  KERNEL /vmlinuz\n  INITRD /initrd\n  APPEND console=tty0 console=ttyS0 panic=-1 quiet\n"
	files := map[string][]byte{"initrd": cpio.Bytes(), "syslinux.cfg": []byte(cfg)}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(tmp, name), b, 0o600); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(o.Size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	part := path + "@@" + strconv.Itoa(PartitionStart)
	for _, args := range [][]string{
		{"mkfs.fat", "-F", "16", "-n", "LIFEBOAT", "--offset", strconv.Itoa(PartitionStart / SectorSize), path, strconv.FormatInt((o.Size-PartitionStart)>>10, 10)},
		{"mcopy", "-i", part, o.Kernel, "::vmlinuz"},
		{"mcopy", "-i", part, filepath.Join(tmp, "initrd"), "::initrd"},
		{"mcopy", "-i", part, filepath.Join(tmp, "syslinux.cfg"), "::syslinux.cfg"},
		{"syslinux", "--install", "--offset", strconv.Itoa(PartitionStart), path},
	} {
		if out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("bootimg: %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	// The MBR: syslinux's code, one active FAT16 (LBA) partition.
	bs, err := BootSector("", 0x0E, PartitionStart/SectorSize, uint32((o.Size-PartitionStart)/SectorSize))
	if err != nil {
		return err
	}
	copy(bs[:440], mbr[:min(440, len(mbr))])
	bs[446] = 0x80
	f, err = os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(bs[:], 0)
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}

// cpioWriter writes a newc ("070701") cpio archive, the initramfs format.
type cpioWriter struct {
	b   *bytes.Buffer
	ino int
}

func newCpio(b *bytes.Buffer) *cpioWriter { return &cpioWriter{b: b, ino: 1} }

func (w *cpioWriter) entry(name string, mode uint32, rdevMajor, rdevMinor int, data []byte) {
	w.ino++
	fmt.Fprintf(w.b, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		w.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	w.b.WriteString(name)
	w.b.WriteByte(0)
	w.pad()
	w.b.Write(data)
	w.pad()
}

func (w *cpioWriter) pad() {
	for w.b.Len()%4 != 0 {
		w.b.WriteByte(0)
	}
}

func (w *cpioWriter) dir(name string)                         { w.entry(name, 0o040755, 0, 0, nil) }
func (w *cpioWriter) file(name string, perm uint32, b []byte) { w.entry(name, 0o100000|perm, 0, 0, b) }
func (w *cpioWriter) symlink(name, target string)             { w.entry(name, 0o120777, 0, 0, []byte(target)) }
func (w *cpioWriter) char(name string, major, minor int)      { w.entry(name, 0o020600, major, minor, nil) }
func (w *cpioWriter) close()                                  { w.entry("TRAILER!!!", 0, 0, 0, nil) }
