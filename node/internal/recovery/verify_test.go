package recovery

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/internal/testpolicy"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// TestDrillVerifyChecks: a drill runs the policy's [service.verify]
// checks on its images (for an NBD drill on a throwaway restore), records
// them in the drill and as the point's verification, and fails when one
// fails.
func TestDrillVerifyChecks(t *testing.T) {
	f := newFixture(t)
	apply := func(hook string) {
		t.Helper()
		pol, err := config.ParseCluster("p.toml", []byte(testpolicy.Sites("dc1", "dc2")+testpolicy.Service("web", "dc1", "1MiB", `  [service.verify]
  every = "24h"
  checks = ["hook"]
  hook = '`+hook+`'`, testpolicy.Copy("dc2", "warm", ""))))
		if err != nil {
			t.Fatal(err)
		}
		if err := f.propose(t.Context(), &catalog.Command{Op: catalog.OpPolicy, Policy: &catalog.PolicyRecord{Cluster: pol}}); err != nil {
			t.Fatal(err)
		}
	}
	apply(`cmp "$LIFEBOAT_IMAGE_DISK" "$WANT" && test -n "$LIFEBOAT_DRILL" && echo probe-ok`)
	for _, nbd := range []bool{false, true} {
		d, err := f.e.Drill(t.Context(), api.DrillRequest{Service: "web", NBD: nbd, By: "olga"}, noEvents)
		if err != nil {
			t.Fatal(err)
		}
		if !d.Passed || d.Verified == nil || d.Verified.Result != catalog.VerifyOK || !strings.Contains(d.Verified.Checks[0].Detail, "probe-ok") {
			t.Fatalf("nbd %v: drill %+v, verified %+v", nbd, d, d.Verified)
		}
		ev := d.Verified.Checks[0].Evidence
		if len(ev) != 1 || !strings.HasPrefix(ev[0], filepath.Join(f.e.o.DataDir, "verify", "web", f.point.ID[:12], "drill-"+d.ID)) {
			t.Errorf("nbd %v: evidence %v", nbd, ev)
		}
		if m, ok := f.fsm.Catalog().Services["web"].Mark(f.point.ID); !ok || m.Verified == nil || m.Verified.At != d.Verified.At {
			t.Errorf("nbd %v: the point's mark %+v, want the drill's verification", nbd, m)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(f.e.o.DataDir, "drills", "web")); len(ents) != 0 {
		t.Errorf("drills left %d directories", len(ents))
	}
	apply("echo probe-failed; exit 1")
	d, err := f.e.Drill(t.Context(), api.DrillRequest{Service: "web", By: "olga"}, noEvents)
	if err != nil {
		t.Fatal(err)
	}
	if d.Passed || d.Verified.Result != catalog.VerifyFailed || !strings.Contains(d.Error, "verify checks failed: hook: verify hook: exit status 1: probe-failed") {
		t.Fatalf("drill with a failing check: %+v", d)
	}
}
