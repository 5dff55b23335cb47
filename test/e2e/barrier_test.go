package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/test/testbin"
)

const slots = 64 // 4 KiB slots per volume that the counter cycles through

// maxCounter returns the highest counter written into an image's slots.
func maxCounter(img []byte) int {
	best := 0
	for i := range slots {
		s := bytes.TrimRight(img[i*4096:(i+1)*4096], "\x00 ")
		if n, err := strconv.Atoi(string(s)); err == nil && n > best {
			best = n
		}
	}
	return best
}

// TestBarrierAcrossAgents: two servers of one service, one agent each
// (intercept mode), and an application that writes counter k on server 1,
// and only once that write is acknowledged, k on server 2 (so the second
// write depends on the first). Every point the node composes across the
// agents ("barrier/ID") must hold, on server 1, every counter it holds on
// server 2.
func TestBarrierAcrossAgents(t *testing.T) {
	needFUSE(t)
	var images []string
	for range 2 {
		img, _ := makeImage(t)
		images = append(images, img)
	}
	s := startSiteVolumes(t, []string{"disk1", "disk2"}, images)
	agent2TLS := filepath.Join(s.dir, "agent2-tls")
	testbin.Run(t, s.bin, 0, "ca", "issue", "--dir", filepath.Join(s.dir, "ca"), "--agent", "--name", "web2", "--site", "dc1", "--service", "web", "--out", agent2TLS)
	var files []string
	for i, spec := range []struct{ name, tls string }{{"web1", s.agentTLS}, {"web2", agent2TLS}} {
		mount, spool := filepath.Join(s.dir, "mnt-"+spec.name), filepath.Join(s.dir, "spool-"+spec.name)
		vol := fmt.Sprintf("disk%d", i+1)
		ag := testbin.Start(t, spec.name, filepath.Join(s.dir, spec.name+".log"), s.bin, "agent", "run",
			"--name", spec.name, "--service", "web", "--volume", vol+"="+images[i], "--node", s.quic,
			"--tls-dir", spec.tls, "--spool", spool, "--mode", "intercept", "--mount", mount, "--interval", "5s")
		t.Cleanup(func() {
			ag.Stop()
			if t.Failed() {
				t.Logf("%s log:\n%s", spec.name, ag.Tail(30))
			}
		})
		files = append(files, filepath.Join(mount, vol))
	}
	var fs []*os.File
	for _, f := range files {
		testbin.Eventually(t, "volume file "+f, 30*time.Second, func() error {
			_, err := os.Stat(f)
			return err
		})
		fh, err := os.OpenFile(f, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		fs = append(fs, fh)
	}
	stop := time.Now().Add(12 * time.Second)
	block := make([]byte, 4096)
	for k := 1; time.Now().Before(stop); k++ {
		for i := range block {
			block[i] = 0
		}
		copy(block, strconv.Itoa(k))
		off := int64(k%slots) * 4096
		for _, f := range fs { // server 1, then (after its ack) server 2
			if _, err := f.WriteAt(block, off); err != nil {
				t.Fatalf("write %d: %v", k, err)
			}
		}
	}
	var barrierPts int
	testbin.Eventually(t, "three cross-agent points", 30*time.Second, func() error {
		barrierPts = 0
		for _, p := range s.points(t) {
			if strings.HasPrefix(p.Name, "barrier/") {
				barrierPts++
			}
		}
		if barrierPts < 3 {
			return fmt.Errorf("%d barrier points", barrierPts)
		}
		return nil
	})
	checked := 0
	for _, p := range s.points(t) {
		if !strings.HasPrefix(p.Name, "barrier/") {
			continue
		}
		a := maxCounter(restoreVolume(t, s, "web/disk1", p.ID))
		b := maxCounter(restoreVolume(t, s, "web/disk2", p.ID))
		if b > a {
			t.Errorf("point %s: server 2 holds counter %d but server 1 only %d: a write depends on one the point lacks", p.Name, b, a)
		}
		checked++
	}
	t.Logf("%d cross-agent points checked", checked)
}

func restoreVolume(t *testing.T, s *site, volume, at string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "v.img")
	testbin.Run(t, s.bin, 0, "restore", "--admin", s.admin, "--tls-dir", s.opTLS, "--volume", volume, "--at", at, "--out", out)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
