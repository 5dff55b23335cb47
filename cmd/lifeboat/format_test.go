package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lifeboat-dr/lifeboat/test/testbin"
)

// TestRestoreFormats: restore --format qcow2 and vhdx write images that
// qemu-img info, check and compare accept and find identical to the raw
// image; bad formats are refused and change nothing.
func TestRestoreFormats(t *testing.T) {
	t.Parallel()
	q := testbin.NeedTool(t, "qemu-img", "qemu-utils")
	tmp := t.TempDir()
	store := newStore(t)
	img := filepath.Join(tmp, "disk.img")
	makeImage(t, img, 5)
	id, _ := snapshot(t, store, img)
	for _, f := range []string{"qcow2", "vhdx"} {
		out := filepath.Join(tmp, "out."+f)
		r := mustRun(t, "restore", "--store", store, "--volume", "disk", "--at", id, "--format", f, "--out", out)
		if !strings.Contains(r.stderr, "restored disk") {
			t.Errorf("restore --format %s: %s", f, r.stderr)
		}
		info, err := exec.Command(q, "info", "--output=json", out).CombinedOutput()
		if err != nil || !strings.Contains(string(info), `"format": "`+f+`"`) {
			t.Fatalf("qemu-img info %s: %v\n%s", f, err, info)
		}
		if b, err := exec.Command(q, "check", "-f", f, out).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img check %s: %v\n%s", f, err, b)
		}
		if b, err := exec.Command(q, "compare", "-f", f, "-F", "raw", out, img).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img compare %s: %v\n%s", f, err, b)
		}
	}
	out := filepath.Join(tmp, "bad.img")
	r := lifeboat(t, "restore", "--store", store, "--volume", "disk", "--format", "vmdk", "--out", out)
	if r.code != exitUsage || !strings.Contains(r.stderr, "vmdk") {
		t.Fatalf("--format vmdk: exit %d: %s", r.code, r.stderr)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("a refused restore left %s", out)
	}
}
