package main

import (
	"bytes"
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/test/testbin"
)

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestServeNBD serves a point of a local store over NBD to real clients:
// nbdinfo sees its size, qemu-img convert copies it out byte for byte, and
// with --writable qemu-io's writes read back while the point stays as it
// was.
func TestServeNBD(t *testing.T) {
	t.Parallel()
	qemuImg := testbin.NeedTool(t, "qemu-img", "qemu-utils")
	qemuIO := testbin.NeedTool(t, "qemu-io", "qemu-utils")
	nbdinfo := testbin.NeedTool(t, "nbdinfo", "libnbd-bin")
	tmp := t.TempDir()
	store := newStore(t)
	img := filepath.Join(tmp, "disk.img")
	data := makeImage(t, img, 9)
	id, _ := snapshot(t, store, img)

	serve := func(extra ...string) (addr string, stop func() result) {
		addr = freePort(t)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan result, 1)
		go func() {
			done <- lifeboatCtx(ctx, append([]string{"serve-nbd", "--store", store, "--volume", "disk", "--at", id, "--listen", addr}, extra...)...)
		}()
		for deadline := time.Now().Add(10 * time.Second); ; {
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				cancel()
				t.Fatalf("serve-nbd does not listen on %s: %+v", addr, <-done)
			}
			time.Sleep(20 * time.Millisecond)
		}
		return addr, func() result { cancel(); return <-done }
	}

	addr, stop := serve()
	uri := "nbd://" + addr + "/disk"
	out, err := exec.Command(nbdinfo, "--json", uri).CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"export-size": 3145728`) || !strings.Contains(string(out), `"is_read_only": true`) {
		t.Fatalf("nbdinfo: %v\n%s", err, out)
	}
	copyOut := filepath.Join(tmp, "copy.img")
	if out, err := exec.Command(qemuImg, "convert", "-f", "raw", "-O", "raw", uri, copyOut).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	checkFile(t, copyOut, data)
	if r := stop(); r.code != exitInterrupted || !strings.Contains(r.stdout, "serving disk at point "+id) {
		t.Fatalf("serve-nbd: exit %d\nstdout %s\nstderr %s", r.code, r.stdout, r.stderr)
	}

	addr, stop = serve("--writable", "--overlay-dir", tmp)
	uri = "nbd://" + addr + "/disk"
	if out, err := exec.Command(qemuIO, "-f", "raw", "-c", "write -P 0xab 4096 8192", "-c", "read -P 0xab 4096 8192", uri).CombinedOutput(); err != nil || bytes.Contains(out, []byte("fail")) {
		t.Fatalf("qemu-io write and read back: %v\n%s", err, out)
	}
	stop()
	// The point is unchanged.
	restored := filepath.Join(tmp, "restored.img")
	mustRun(t, "restore", "--store", store, "--volume", "disk", "--at", id, "--out", restored)
	checkFile(t, restored, data)
}
