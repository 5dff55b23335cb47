package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/node"
	"github.com/lifeboat-dr/lifeboat/test/testbin"
)

// pointAtDC2 starts the replication sites with policy, ships the workload
// image once from an agent at dc1, and returns the harness, dc2-n1 and the
// point once dc2 holds it.
func pointAtDC2(t *testing.T, policy []byte) (*harness, *node.Node, blockstore.Point) {
	h := replSites(t, policy)
	img, _ := workloadImage(t)
	startAgent(t, h, img, time.Hour)
	dc2 := h.node("dc2-n1")
	var pt blockstore.Point
	h.eventually("a point at dc2", 60*time.Second, func() error {
		var err error
		pt, err = newest(t, dc2)
		return err
	})
	return h, dc2, pt
}

// TestFailoverResumes: a warm failover whose health hook fails leaves the
// service at the new epoch, not done; run again after the cause is fixed
// it finishes in the same epoch, with the images it already made. Also:
// the plan of a dry run changes nothing, a failover to a site without a
// copy and one at an unknown point are refused and change nothing.
func TestFailoverResumes(t *testing.T) {
	t.Parallel()
	hooks := t.TempDir()
	policy := bytes.Replace(replPolicy("warm", ""), []byte(`[[service.server]]`), fmt.Appendf(nil, `  [service.hooks]
  start = 'echo "$LIFEBOAT_EPOCH $LIFEBOAT_POINT" >> %[1]q/starts'
  health = 'test -e %[1]q/healthy'
  timeout = "2s"
  [[service.server]]`, hooks), 1)
	h, dc2, pt := pointAtDC2(t, policy)
	ctx := t.Context()
	noEvents := func(node.FailoverEvent) {}
	var plan *node.FailoverPlan
	if _, err := dc2.Failover(ctx, node.FailoverRequest{Service: "web", DryRun: true}, func(e node.FailoverEvent) { plan = e.Plan }); err != nil {
		t.Fatal(err)
	}
	if plan == nil || plan.Point != pt.ID || plan.Epoch != 2 || plan.Tier != "warm" || plan.Images[0].Source != "store" {
		t.Fatalf("plan %+v", plan)
	}
	if _, err := h.node("dc1-n1").Failover(ctx, node.FailoverRequest{Service: "web"}, noEvents); !errors.Is(err, node.ErrBadCommand) {
		t.Fatalf("failover to the primary's own site: %v", err)
	}
	if _, err := dc2.Failover(ctx, node.FailoverRequest{Service: "web", At: "ffffffffffff"}, noEvents); !errors.Is(err, blockstore.ErrNotFound) {
		t.Fatalf("failover at an unknown point: %v", err)
	}
	if st := dc2.Catalog().Services["web"]; st.Epoch != 1 || st.Active != "" {
		t.Fatalf("refused and planned failovers changed the catalog: %+v", st)
	}

	// The health hook fails: the failover is recorded, not done.
	_, err := dc2.Failover(ctx, node.FailoverRequest{Service: "web", By: "test"}, noEvents)
	if err == nil || !strings.Contains(err.Error(), "health hook did not pass") {
		t.Fatalf("failover with a failing health hook: %v", err)
	}
	st := dc2.Catalog().Services["web"]
	if f := st.LastFailover(); st.Epoch != 2 || st.Active != "dc2" || f == nil || f.Done || f.Error == "" {
		t.Fatalf("after the failed failover: %+v", st)
	}
	// Fixed, run again: same epoch, same point, done.
	if err := os.WriteFile(filepath.Join(hooks, "healthy"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var resumed bool
	rec, err := dc2.Failover(ctx, node.FailoverRequest{Service: "web", By: "test"}, func(e node.FailoverEvent) {
		if e.Plan != nil {
			resumed = e.Plan.Resume && e.Plan.Images[0].Source == "ready"
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if !resumed || rec.Epoch != 2 || !rec.Done || rec.Point != pt.ID {
		t.Fatalf("resumed failover: resumed %v, record %+v", resumed, rec)
	}
	starts, _ := os.ReadFile(filepath.Join(hooks, "starts"))
	if want := strings.Repeat("2 "+pt.ID+"\n", 2); string(starts) != want {
		t.Fatalf("start hook runs %q, want %q", starts, want)
	}
	got, err := os.ReadFile(filepath.Join(h.nodes["dc2-n1"].dir, "failover", "web", pt.ID[:12], "disk.img"))
	if err != nil {
		t.Fatal(err)
	}
	if want := imageAt(t, h, "dc2-n1", pt.ID); !bytes.Equal(got, want) {
		t.Fatal("the failover image differs from the point")
	}
	// Now the service runs at dc2: another failover there is refused.
	if _, err := dc2.Failover(ctx, node.FailoverRequest{Service: "web"}, noEvents); !errors.Is(err, node.ErrBadCommand) {
		t.Fatalf("second failover: %v", err)
	}
}

// TestDrillOverNBD: a drill with NBD copies nothing; the policy's drill
// hook reads the point over NBD and writes into the overlay, and the point
// is unchanged.
func TestDrillOverNBD(t *testing.T) {
	t.Parallel()
	qemuIO := testbin.NeedTool(t, "qemu-io", "qemu-utils")
	hook := qemuIO + ` -f raw -c "write -P 0xab 0 65536" -c "read -P 0xab 0 65536" "$LIFEBOAT_NBD_DISK" && test -z "$LIFEBOAT_IMAGE_DISK"`
	policy := bytes.Replace(replPolicy("warm", ""), []byte(`[[service.server]]`), fmt.Appendf(nil, `  [service.hooks]
  drill = '%s'
  [[service.server]]`, hook), 1)
	h, dc2, pt := pointAtDC2(t, policy)
	d, err := dc2.Drill(t.Context(), node.DrillRequest{Service: "web", NBD: true, By: "test"}, func(node.FailoverEvent) {})
	if err != nil {
		t.Fatal(err)
	}
	if !d.Passed || d.Point != pt.ID || d.HookCommand != hook {
		t.Fatalf("drill %+v", d)
	}
	if want := imageAt(t, h, "dc1-n1", pt.ID); !bytes.Equal(imageAt(t, h, "dc2-n1", pt.ID), want) {
		t.Fatal("the drill's writes reached the point")
	}
	if ents, _ := os.ReadDir(filepath.Join(h.nodes["dc2-n1"].dir, "drills", "web")); len(ents) != 0 {
		t.Fatalf("the drill left %d entries", len(ents))
	}
}
