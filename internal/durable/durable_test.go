package durable

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	for _, data := range []string{"one", "two, longer", ""} {
		if err := WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(path); string(got) != data {
			t.Fatalf("read %q, wrote %q", got, data)
		}
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
	// A failed write leaves the old file and no temporary one.
	if err := WriteFile(filepath.Join(dir, "missing", "f"), []byte("x"), 0o600); err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want 1", len(entries))
	}
}

func TestCreateRefusesToReplace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := Create(path, []byte("a"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Create(path, []byte("b"), 0o600); err == nil {
		t.Fatal("Create replaced an existing file")
	}
	if got, _ := os.ReadFile(path); string(got) != "a" {
		t.Errorf("file holds %q", got)
	}
}

func TestMkdirAllAndReadFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b", "c")
	if err := MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, "f")
	if err := WriteFile(f, []byte("12345"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := MkdirAll(f, 0o700); err == nil {
		t.Error("MkdirAll over a file succeeded")
	}
	if b, err := ReadFile(f, 5); err != nil || string(b) != "12345" {
		t.Errorf("ReadFile: %q %v", b, err)
	}
	if _, err := ReadFile(f, 4); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("ReadFile over the limit: %v", err)
	}
}
