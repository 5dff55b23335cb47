package bootimg

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestBootSector(t *testing.T) {
	t.Parallel()
	s, err := BootSector("HELLO", 0x83, 2048, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if s[510] != 0x55 || s[511] != 0xAA {
		t.Errorf("no boot signature: % x", s[510:])
	}
	msg := int(binary.LittleEndian.Uint16(s[msgAt:])) - 0x7c00
	if msg != len(code) || !bytes.HasPrefix(s[msg:], []byte("HELLO\r\n\x00")) {
		t.Errorf("message at %d (want %d): %q", msg, len(code), s[msg:msg+8])
	}
	if got := [3]uint32{uint32(s[446+4]), binary.LittleEndian.Uint32(s[446+8:]), binary.LittleEndian.Uint32(s[446+12:])}; got != [3]uint32{0x83, 2048, 4096} {
		t.Errorf("partition entry: got type, first, sectors %v", got)
	}
	for _, bad := range []string{strings.Repeat("x", maxLine+1), "a\nb", "a\x00"} {
		if _, err := BootSector(bad, 0x83, 0, 0); err == nil {
			t.Errorf("line %q: no error", bad)
		}
	}
}

func TestWriteExt4(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil && os.Getenv("CI") != "true" {
		t.Skip("needs mkfs.ext4 (e2fsprogs)")
	}
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := Write(t.Context(), path, Options{Size: 8 << 20, Line: "BOOT-OK", FS: "ext4"}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if b[510] != 0x55 || b[511] != 0xAA || binary.LittleEndian.Uint16(b[PartitionStart+1024+0x38:]) != 0xEF53 {
		t.Fatalf("want a boot sector and an ext4 superblock at 1 MiB")
	}
	if out, err := exec.CommandContext(t.Context(), "e2fsck", "-fn", path+"?offset=1048576").CombinedOutput(); err != nil {
		t.Fatalf("e2fsck: %v: %s", err, out)
	}
	if err := Write(t.Context(), path, Options{Size: 1000, Line: "x"}); err == nil {
		t.Error("size 1000: no error")
	}
}
