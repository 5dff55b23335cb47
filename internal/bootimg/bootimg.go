// Package bootimg writes small bootable disk images for tests of the boot
// and file system checks (issue 16): a hand-made BIOS boot sector that
// prints a line to the first serial port (COM1, I/O port 0x3f8) and to
// the screen, then halts; and, optionally, an MBR partition from 1 MiB to
// the end holding a file system made by mkfs.
//
// The boot sector's code, in 16-bit real mode at 0x7c00:
//
//	cli; cld; xor ax,ax; mov ds,ax
//	mov si,msg; mov dx,0x3f8
//	next: lodsb; test al,al; jz done
//	      out dx,al                          ; COM1
//	      mov ah,0x0e; mov bx,7; int 0x10    ; BIOS teletype
//	      jmp next
//	done: hlt; jmp done
//	msg:  the line, "\r\n", 0
//
// It needs no BIOS serial set-up: qemu's 16550 takes bytes at once.
//
// WriteLinux (linux.go) writes a real Linux guest instead: SYSLINUX, a
// Debian kernel and a busybox initramfs whose /init prints the line on
// the serial console (about 12 s to boot under TCG here).
package bootimg

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
)

// SectorSize is the size of a disk sector, and of the boot sector.
const SectorSize = 512

// PartitionStart is where the partition of an image with a file system
// starts: 1 MiB, the usual alignment.
const PartitionStart = 1 << 20

// code is the boot sector's program up to its message; msgAt is the
// offset of the message's address in it (mov si, imm16).
var code = []byte{
	0xFA, 0xFC, 0x31, 0xC0, 0x8E, 0xD8, // cli; cld; xor ax,ax; mov ds,ax
	0xBE, 0x00, 0x00, // mov si, msg (patched)
	0xBA, 0xF8, 0x03, // mov dx, 0x3f8
	0xAC, 0x84, 0xC0, 0x74, 0x0A, // next: lodsb; test al,al; jz done
	0xEE,       // out dx, al
	0xB4, 0x0E, // mov ah, 0x0e
	0xBB, 0x07, 0x00, // mov bx, 7
	0xCD, 0x10, // int 0x10
	0xEB, 0xF1, // jmp next
	0xF4, 0xEB, 0xFD, // done: hlt; jmp done
}

const msgAt = 7

// maxLine is the longest line a boot sector holds: what is left before
// the partition table at 446, less "\r\n" and the terminating 0.
const maxLine = 446 - 30 - 3

// BootSector returns a boot sector printing line, with an MBR partition
// table entry of type ptype (0x83 Linux) from sector first for sectors
// (none when sectors is 0).
func BootSector(line string, ptype byte, first, sectors uint32) ([SectorSize]byte, error) {
	var s [SectorSize]byte
	if len(line) > maxLine {
		return s, fmt.Errorf("bootimg: line of %d bytes: want at most %d", len(line), maxLine)
	}
	for i := 0; i < len(line); i++ {
		if line[i] == 0 || line[i] == '\r' || line[i] == '\n' {
			return s, fmt.Errorf("bootimg: line %q: want one line without NUL", line)
		}
	}
	n := copy(s[:], code)
	binary.LittleEndian.PutUint16(s[msgAt:], uint16(0x7c00+n))
	copy(s[n:], line+"\r\n\x00")
	if sectors > 0 {
		e := s[446:462]
		e[0] = 0x00                            // not active: the code boots, not a loader
		copy(e[1:4], []byte{0xFE, 0xFF, 0xFF}) // CHS: use the LBA fields
		e[4] = ptype
		copy(e[5:8], []byte{0xFE, 0xFF, 0xFF})
		binary.LittleEndian.PutUint32(e[8:], first)
		binary.LittleEndian.PutUint32(e[12:], sectors)
	}
	s[510], s[511] = 0x55, 0xAA
	return s, nil
}

// Options describe an image.
type Options struct {
	Size int64  // bytes, a multiple of 512; at least 2 MiB with a file system
	Line string // what the boot sector prints
	// FS is the file system of the partition from 1 MiB: "" (no
	// partition) or "ext4" (made by mkfs.ext4 of e2fsprogs).
	FS string
}

// Write creates the image at path (sparse), replacing any file there.
func Write(ctx context.Context, path string, o Options) error {
	if o.Size <= 0 || o.Size%SectorSize != 0 {
		return fmt.Errorf("bootimg: size %d: want a positive multiple of %d", o.Size, SectorSize)
	}
	var first, sectors uint32
	if o.FS != "" {
		if o.Size < 2*PartitionStart {
			return fmt.Errorf("bootimg: size %d: want at least 2 MiB for a file system", o.Size)
		}
		first, sectors = PartitionStart/SectorSize, uint32((o.Size-PartitionStart)/SectorSize)
	}
	bs, err := BootSector(o.Line, 0x83, first, sectors)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(o.Size)
	if err == nil && o.FS != "" {
		err = mkfs(ctx, path, o.FS, o.Size-PartitionStart)
	}
	if err == nil {
		_, err = f.WriteAt(bs[:], 0)
	}
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}

// mkfs makes a file system of size bytes at PartitionStart in the image.
func mkfs(ctx context.Context, path, fs string, size int64) error {
	if fs != "ext4" {
		return fmt.Errorf("bootimg: file system %q: want \"ext4\"", fs)
	}
	cmd := exec.CommandContext(ctx, "mkfs.ext4", "-F", "-q", "-E", "offset="+strconv.Itoa(PartitionStart), path, strconv.FormatInt(size>>10, 10)+"k")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("bootimg: %s: %w: %s", cmd.Args[0], err, out)
	}
	return nil
}
