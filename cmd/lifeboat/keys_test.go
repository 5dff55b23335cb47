package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeKEK(t *testing.T, path string, b byte, mode os.FileMode) {
	t.Helper()
	hex := strings.Repeat(string("0123456789abcdef"[b%16]), 64)
	if err := os.WriteFile(path, []byte(hex+"\n"), mode); err != nil {
		t.Fatal(err)
	}
}

// An encrypted store through the CLI: init, snapshot, restore byte-exact,
// the key missing or wrong (clear errors), rekey, a lost index rebuilt.
func TestEncryptedStoreCLI(t *testing.T) {
	dir := t.TempDir()
	st, img, out := filepath.Join(dir, "st"), filepath.Join(dir, "disk.img"), filepath.Join(dir, "out.img")
	kek, kek2, loose := filepath.Join(dir, "kek"), filepath.Join(dir, "kek2"), filepath.Join(dir, "loose")
	writeKEK(t, kek, 1, 0o600)
	writeKEK(t, kek2, 2, 0o600)
	writeKEK(t, loose, 3, 0o644)
	data := makeImage(t, img, 1)

	if r := lifeboat(t, "store", "init", "--store", st, "--kek-file", loose); r.code != exitError || !strings.Contains(r.stderr, "chmod 600") {
		t.Errorf("init with a world-readable KEK: %d %s", r.code, r.stderr)
	}
	r := mustRun(t, "store", "init", "--store", st, "--kek-file", kek)
	if !strings.Contains(r.stderr, "encrypted at rest") {
		t.Errorf("init: %s", r.stderr)
	}
	mustRun(t, "snapshot", "--store", st, "--kek-file", kek, "--volume", "vol", img)

	r = lifeboat(t, "points", "--store", st)
	if r.code != exitError || !strings.Contains(r.stderr, "encrypted") || !strings.Contains(r.stderr, "--kek-file") {
		t.Errorf("points without the key: %d %s", r.code, r.stderr)
	}
	r = lifeboat(t, "points", "--store", st, "--kek-file", kek2)
	if r.code != exitError || !strings.Contains(r.stderr, "wrong key-encryption key") {
		t.Errorf("points with the wrong key: %d %s", r.code, r.stderr)
	}
	t.Setenv(envKEKFile, kek)
	mustRun(t, "restore", "--store", st, "--volume", "vol", "--out", out)
	if got, _ := os.ReadFile(out); string(got) != string(data) {
		t.Fatal("restored image differs")
	}

	if r := lifeboat(t, "store", "rekey", "--store", st, "--kek-file", kek2, "--new-kek-file", kek); r.code != exitError {
		t.Errorf("rekey with the wrong current key: %d %s", r.code, r.stderr)
	}
	mustRun(t, "store", "rekey", "--store", st, "--kek-file", kek, "--new-kek-file", kek2)
	if r := lifeboat(t, "verify", "--store", st); r.code != exitError {
		t.Errorf("old key after rekey: %d %s", r.code, r.stderr)
	}
	mustRun(t, "verify", "--store", st, "--kek-file", kek2)

	if err := os.RemoveAll(filepath.Join(st, "index")); err != nil {
		t.Fatal(err)
	}
	r = lifeboat(t, "verify", "--store", st, "--kek-file", kek2)
	if r.code != exitDamage || !strings.Contains(r.stderr, "rebuild-index") {
		t.Errorf("verify without an index: %d %s", r.code, r.stderr)
	}
	r = mustRun(t, "store", "rebuild-index", "--store", st, "--kek-file", kek2)
	if !strings.Contains(r.stdout, "1 points") {
		t.Errorf("rebuild: %s", r.stdout)
	}
	os.Remove(out)
	mustRun(t, "restore", "--store", st, "--kek-file", kek2, "--volume", "vol", "--out", out)
	if got, _ := os.ReadFile(out); string(got) != string(data) {
		t.Fatal("restored image differs after the rebuild")
	}
}

// One flipped byte in the index's table: verify, stats and restore exit 3
// naming the file and the rebuild, never panic (exit 2).
func TestDamagedIndexExitCode(t *testing.T) {
	dir := t.TempDir()
	st, img := filepath.Join(dir, "st"), filepath.Join(dir, "disk.img")
	makeImage(t, img, 2)
	mustRun(t, "store", "init", "--store", st)
	mustRun(t, "snapshot", "--store", st, "--volume", "vol", img)
	ssts, _ := filepath.Glob(filepath.Join(st, "index", "*.sst"))
	if len(ssts) == 0 {
		t.Fatal("no index table")
	}
	b, err := os.ReadFile(ssts[0])
	if err != nil {
		t.Fatal(err)
	}
	b[100] ^= 0xff
	if err := os.WriteFile(ssts[0], b, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"verify", "--store", st},
		{"stats", "--store", st},
		{"restore", "--store", st, "--volume", "vol", "--out", filepath.Join(dir, "out.img")},
	} {
		r := lifeboat(t, args...)
		if r.code != exitDamage || !strings.Contains(r.stderr, filepath.Base(ssts[0])) || !strings.Contains(r.stderr, "rebuild-index") {
			t.Errorf("%s: exit %d\n%s", args[0], r.code, r.stderr)
		}
	}
	mustRun(t, "store", "rebuild-index", "--store", st)
	mustRun(t, "verify", "--store", st)
}
