package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/internal/bootimg"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/test/testbin"
)

// verifyLine is what the test's boot sector prints on COM1.
const verifyLine = "LIFEBOAT-DRILL-BOOTED"

// TestDrillVerifiesBoot (issue 16, verified points): real node and agent
// processes, web at dc1 with a warm copy at dc2 and [service.verify]
// fsck and boot checks, on the test's own bootable image (a hand-made boot
// sector that prints a line to the serial port, and an ext4 partition).
// dc2's verifier checks the first point by itself; a drill at dc2 passes
// both checks, with the qemu screendump PNG in its
// evidence, and the point shows "verified": ok in points --admin --json;
// with the boot sector zeroed at dc1, the next point's drill fails the
// boot check.
func TestDrillVerifiesBoot(t *testing.T) {
	testbin.NeedTool(t, "qemu-system-x86_64", "qemu-system-x86")
	testbin.NeedTool(t, "mkfs.ext4", "e2fsprogs")
	c := newPCluster(t, [3]string{"dc1-n1", "dc1", "node"}, [3]string{"dc2-n1", "dc2", "node"}, [3]string{"dc3-w1", "dc3", "witness"})
	dc1, dc2 := c.nodes["dc1-n1"], c.nodes["dc2-n1"]
	const size = 8 << 20
	img := filepath.Join(c.dir, "disk.img")
	if err := bootimg.Write(t.Context(), img, bootimg.Options{Size: size, Line: verifyLine, FS: "ext4"}); err != nil {
		t.Fatal(err)
	}
	policy := filepath.Join(c.dir, "cluster.toml")
	os.WriteFile(policy, []byte(sites("dc1", "dc2", "dc3")+service("web", "dc1", `  [service.verify]
  every = "24h"
  checks = ["fsck", "boot"]
  serial_ok = "`+verifyLine+`"
  timeout = "5s"
  memory = "32MiB"
`, server("web1", "disk", img, fmt.Sprintf("%dB", size), "    block_size = \"4KiB\"\n")+copyAt("dc2", `tier = "warm"`))), 0o644)
	c.lb(0, "policy", "apply", "--admin", dc1.admin, "--tls-dir", c.tlsAdmin, policy)
	c.agent("agent1", "dc1", img, dc1.quic)
	// point waits for a point of web at dc2 taken after since and returns
	// its (short) ID.
	point := func(since time.Time) string {
		var id string
		testbin.Eventually(t, "a new point of web at dc2", 60*time.Second, func() error {
			cp, err := c.copyAt(dc1.admin, "dc2")
			if err == nil && (cp.Point == "" || !cp.PointTime.After(since)) {
				err = fmt.Errorf("point %q at %s", cp.Point, cp.PointTime)
			}
			id = cp.Point
			return err
		})
		return id
	}
	drill := func() *catalog.DrillRecord {
		t0 := time.Now()
		out := c.lb(0, "drill", "web", "--json", "--admin", dc2.admin, "--tls-dir", c.tlsOperator)
		// Progress events, one JSON object a line, then the record.
		lines := strings.Split(strings.TrimSpace(out), "\n")
		var d catalog.DrillRecord
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &d); err != nil {
			t.Fatalf("drill --json: %v\n%s", err, out)
		}
		t.Logf("drill of point %.12s in %s: passed %v, %s", d.Point, time.Since(t0).Round(time.Millisecond), d.Passed, d.Error)
		if d.Verified != nil {
			for _, ch := range d.Verified.Checks {
				t.Logf("  %s %s: %s %v", ch.Name, ch.Result, ch.Detail, ch.Evidence)
			}
		}
		return &d
	}
	check := func(v *catalog.Verification, name string) catalog.CheckResult {
		t.Helper()
		if v == nil {
			t.Fatal("the drill ran no verify checks")
		}
		for _, ch := range v.Checks {
			if ch.Name == name {
				return ch
			}
		}
		t.Fatalf("no %s check in %+v", name, v)
		return catalog.CheckResult{}
	}

	t0 := time.Now()
	point(time.Time{})
	t.Logf("first point at dc2 after %s", time.Since(t0).Round(time.Millisecond))
	// The scheduler at dc2 verifies web's first point there by itself.
	testbin.Eventually(t, "dc2's verifier verified a point", 60*time.Second, func() error {
		st, err := c.service(dc2.admin)
		if err == nil && (st.Verified == nil || st.Verified.Verified.Result != catalog.VerifyOK || st.Verified.Verified.Site != "dc2") {
			err = fmt.Errorf("last verified %+v", st.Verified)
		}
		return err
	})
	t.Logf("the scheduler verified a point %s after the agent started", time.Since(t0).Round(time.Millisecond))
	d := drill()
	boot := check(d.Verified, "boot")
	if !d.Passed || d.Verified.Result != catalog.VerifyOK || boot.Result != catalog.VerifyOK ||
		check(d.Verified, "fsck").Result != catalog.VerifyOK {
		t.Fatalf("drill of the bootable image: %+v, verified %+v", d, d.Verified)
	}
	var png bool
	for _, ev := range boot.Evidence {
		if b, err := os.ReadFile(ev); err == nil && strings.HasSuffix(ev, ".png") && bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) &&
			strings.HasPrefix(ev, filepath.Join(dc2.data, "verify", "web")) {
			png = true
		}
	}
	if !png {
		t.Fatalf("no PNG screendump under dc2's DATA_DIR/verify/web in the boot evidence %v", boot.Evidence)
	}
	out := c.lb(0, "points", "--admin", dc2.admin, "--tls-dir", c.tlsViewer, "--service", "web", "--json")
	var kept []api.KeptPoint
	if err := json.Unmarshal([]byte(out), &kept); err != nil {
		t.Fatalf("points --json: %v\n%s", err, out)
	}
	var seen bool
	for _, k := range kept {
		if k.ID == d.Point {
			seen = k.Verified.Result == catalog.VerifyOK && len(k.Verified.Checks) == 2
		}
	}
	if !seen || !strings.Contains(out, `"verified": {`) {
		t.Fatalf("points --admin --json at dc2 does not show %.12s verified ok:\n%s", d.Point, out)
	}

	// The boot sector zeroed: the next point does not boot.
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(make([]byte, bootimg.SectorSize), 0)
	f.Close()
	// The agent scans every 500ms: a point a second after the change
	// holds it.
	point(time.Now().Add(time.Second))
	d = drill()
	p2 := d.Point
	if d.Passed || d.Verified.Result != catalog.VerifyFailed || check(d.Verified, "boot").Result != catalog.VerifyFailed ||
		!strings.Contains(d.Error, "did not print") {
		t.Fatalf("drill of the image without a boot sector: %+v, verified %+v", d, d.Verified)
	}
	st, err := c.service(dc2.admin)
	if err != nil {
		t.Fatal(err)
	}
	if st.Verified == nil || st.Verified.Point != p2 || st.Verified.Verified.Result != catalog.VerifyFailed {
		t.Fatalf("status: last verified %+v, want %.12s failed", st.Verified, p2)
	}
}
