package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/test/testbin"
)

// TestScrubRepairsFromAnotherSite runs real processes (dc1-n1, dc2-n1 and
// a witness) with a scan agent protecting a 16 MiB volume of
// incompressible data, so that each block's bytes stand verbatim in the
// packs of both sites. Then, at dc2:
//   - a flipped byte in one block: `lifeboat verify --admin dc2 --repair`
//     repairs it from dc1, and a restore at dc2 is byte-exact;
//   - another: the background scrub (the site's scrub = "1m") finds and
//     repairs it by itself;
//   - another, hit by a restore before any scrub: the read repairs it
//     on the fly and the restore is byte-exact;
//   - one block damaged at both sites: verify --repair names the service,
//     volume, point and byte range as lost, exits 3, and the point is
//     marked damaged at dc2 in the catalog.
func TestScrubRepairsFromAnotherSite(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("-short: this test runs four processes for about a minute; it runs without -short (as CI does)")
	}
	const size, block = 16 << 20, 64 << 10
	c := newPCluster(t, [3]string{"dc1-n1", "dc1", "node"}, [3]string{"dc2-n1", "dc2", "node"}, [3]string{"dc3-w1", "dc3", "witness"})
	dc1, dc2 := c.nodes["dc1-n1"], c.nodes["dc2-n1"]
	img := randomImage(t, size, 21)
	policy := fmt.Sprintf(`
[[site]]
name = "dc1"
[[site]]
name = "dc2"
scrub = "1m"
[[site]]
name = "dc3"
[[service]]
name = "web"
primary = "dc1"
  [[service.server]]
  name = "web1"
    [[service.server.volume]]
    name = "disk"
    path = %q
    size = "%dB"
    block_size = "%dB"
  [[service.copy]]
  site = "dc2"
  tier = "warm"
`, img, size, block)
	pf := filepath.Join(c.dir, "cluster.toml")
	if err := os.WriteFile(pf, []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	c.lb(0, "policy", "apply", "--admin", dc1.admin, "--tls-dir", c.tlsAdmin, pf)
	agent := c.agent("web1", "dc1", img, dc1.quic)
	var point string
	testbin.Eventually(t, "a point of web at dc2", time.Minute, func() error {
		cp, err := c.copyAt(dc1.admin, "dc2")
		if err != nil || cp.Point == "" {
			return fmt.Errorf("no point at dc2 yet (%v)", err)
		}
		point = cp.Point
		return nil
	})
	agent.Stop() // the volume does not change: every point is the image
	want := fileSHA(t, img)
	vol, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	// damage flips a byte in the middle of volume block b in the packs of
	// node n; the block's bytes stand verbatim there (incompressible).
	damage := func(n *pnode, b int) {
		t.Helper()
		needle := vol[b*block+block/2-32 : b*block+block/2+32]
		packs, _ := filepath.Glob(filepath.Join(n.data, "store", "packs", "*.pack"))
		for _, p := range packs {
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if i := bytes.Index(data, needle); i >= 0 {
				f, err := os.OpenFile(p, os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := f.WriteAt([]byte{data[i+32] ^ 0xff}, int64(i+32)); err != nil {
					t.Fatal(err)
				}
				f.Close()
				return
			}
		}
		t.Fatalf("%s: block %d's bytes are in none of %d packs", n.name, b, len(packs))
	}
	restoreExact := func(what string) {
		t.Helper()
		out := filepath.Join(c.dir, strings.ReplaceAll(what, " ", "-")+".img")
		c.lb(0, "restore", "--admin", dc2.admin, "--tls-dir", c.tlsOperator, "--volume", "web/disk", "--at", point, "--out", out)
		if got := fileSHA(t, out); got != want {
			t.Fatalf("%s: restore at dc2 differs from the volume", what)
		}
		os.Remove(out)
	}
	scrubStatus := func() *api.ScrubStatus {
		st, err := c.status(dc2.admin)
		if err != nil || st.Scrub == nil {
			return &api.ScrubStatus{}
		}
		return st.Scrub
	}

	// 1. verify --repair finds the damage and repairs it from dc1.
	damage(dc2, 3)
	out := c.lb(0, "verify", "--admin", dc2.admin, "--tls-dir", c.tlsOperator, "--repair", "--json")
	var res api.ScrubResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("verify --repair --json: %v\n%s", err, out)
	}
	if len(res.Found) == 0 || len(res.Repaired) == 0 || len(res.Lost) != 0 || !res.OK || res.After == nil || !res.After.OK {
		t.Fatalf("verify --repair: found %d, repaired %+v, lost %+v, ok %v, after %+v", len(res.Found), res.Repaired, res.Lost, res.OK, res.After)
	}
	if res.Repaired[0].From != dc1.name || res.Repaired[0].Service != "web" {
		t.Errorf("repaired %+v, want from %s for web", res.Repaired[0], dc1.name)
	}
	restoreExact("after verify repair")

	// 2. The background scrub finds and repairs damage by itself.
	before := scrubStatus().Repaired
	damage(dc2, 7)
	testbin.Eventually(t, "the scrub at dc2 to repair block 7", time.Minute, func() error {
		if st := scrubStatus(); st.Repaired <= before {
			return fmt.Errorf("scrub: %.0f%% of the cycle, %d found, %d repaired", 100*st.Progress, st.Found, st.Repaired)
		}
		return nil
	})
	c.lb(0, "verify", "--admin", dc2.admin, "--tls-dir", c.tlsOperator)

	// 3. A restore meets damage before any scrub: the read repairs it.
	before = scrubStatus().Repaired
	damage(dc2, 11)
	restoreExact("a read repairs")
	if st := scrubStatus(); st.Repaired <= before {
		t.Errorf("the restore's repair is not counted: %d repaired, was %d", st.Repaired, before)
	}

	// 4. A block damaged at both sites is lost: named, and the point marked.
	damage(dc1, 13)
	damage(dc2, 13)
	out, _, code := testbin.RunCode(c.bin, "verify", "--admin", dc2.admin, "--tls-dir", c.tlsOperator, "--repair", "--json")
	if code != 3 {
		t.Fatalf("verify --repair of a block no site holds: exit %d, want 3\n%s", code, out)
	}
	res = api.ScrubResult{}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	// A flipped byte costs the whole frame record (a few blocks stored
	// together); block 13 is among the lost, named by its byte range.
	var lost *api.LostBlock
	for i := range res.Lost {
		if l := &res.Lost[i]; l.Point == point && l.Offset == 13*block {
			lost = l
		}
	}
	if lost == nil || lost.Service != "web" || lost.Volume != "web/disk" || lost.Length != block {
		t.Fatalf("lost = %+v, want web/disk of point %s at %d, %d bytes", res.Lost, point, 13*block, block)
	}
	cl, err := api.NewClient(dc2.admin, c.viewer)
	if err != nil {
		t.Fatal(err)
	}
	testbin.Eventually(t, "the point marked damaged at dc2", 10*time.Second, func() error {
		cat, err := cl.Catalog(context.Background())
		if err != nil {
			return err
		}
		if m, ok := cat.Services["web"].Mark(point); !ok || !m.IsDamaged("dc2") {
			return fmt.Errorf("mark of %s: %+v", point, m)
		}
		return nil
	})
}
