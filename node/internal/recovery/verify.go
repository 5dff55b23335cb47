package recovery

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/checks"
)

// drillChecks runs the service's [service.verify] checks (issue 16) on a
// drill's images: the materialized ones, or for an NBD drill a throwaway
// restore in dir. Evidence goes to DATA_DIR/verify/SERVICE/POINT12/
// drill-ID. It records the result as the point's verification and
// returns it; nil when the service sets no checks.
func (e *Engine) drillChecks(ctx context.Context, svc *config.Service, pt blockstore.Point, id, dir string, materialized []api.PlanImage, emit func(api.FailoverEvent)) *catalog.Verification {
	if len(svc.Verify.Checks) == 0 {
		return nil
	}
	var images []checks.Image
	for _, im := range materialized {
		images = append(images, checks.Image{Volume: im.Volume, Path: im.Path})
	}
	if images == nil {
		var err error
		tmp := filepath.Join(dir, "verify")
		defer os.RemoveAll(tmp)
		if images, err = checks.Restore(ctx, e.o.Store, pt, tmp); err != nil {
			return &catalog.Verification{Result: catalog.VerifyFailed, Site: string(e.o.Site), At: e.o.Clock.Now().UTC(),
				Checks: []catalog.CheckResult{{Name: "restore", Result: catalog.VerifyFailed, Detail: err.Error()}}}
		}
	}
	r := checks.New(checks.Options{HooksUser: e.o.HooksUser, HookCred: e.o.HookCred, Clock: e.o.Clock, Logger: e.log})
	v := r.Run(ctx, checks.Request{Service: svc, Site: string(e.o.Site), Point: pt.ID, PointTime: pt.Time, Images: images,
		Evidence: filepath.Join(checks.EvidenceDir(e.o.DataDir, svc.Name, pt.ID), "drill-"+id), Env: []string{"LIFEBOAT_DRILL=" + id}})
	for _, c := range v.Checks {
		emit(api.FailoverEvent{Step: "verify", Message: fmt.Sprintf("%s %s: %s %s", c.Name, c.Result, c.Detail, strings.Join(c.Evidence, " "))})
	}
	m := catalog.PointMark{Service: svc.Name, Point: pt.ID, Time: pt.Time, Verified: v}
	if err := e.o.Propose(context.WithoutCancel(ctx), &catalog.Command{Op: catalog.OpMarks, Marks: []catalog.PointMark{m}}); err != nil {
		emit(api.FailoverEvent{Step: "verify", Message: "the verification could not go into the catalog: " + err.Error()})
	}
	return v
}
