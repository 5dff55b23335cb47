package recovery

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/internal/durable"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/audit"
	"github.com/lifeboat-dr/lifeboat/node/internal/checks"
	"github.com/lifeboat-dr/lifeboat/node/nbd"
)

// A drill brings up an isolated copy of a service at a recovery site: the
// images of a point materialized from the store into DATA_DIR/drills/
// SERVICE/ID/, or with NBD served from the store over NBD with
// copy-on-write overlays there (the standby images, the store's points,
// replication and the catalog's epoch are not touched), then a test hook
// runs against them. The result goes into the catalog's drill records.

func drillsDir(dataDir, service string) string {
	return filepath.Join(dataDir, "drills", service)
}

// Drill runs a drill; emit receives progress.
func (e *Engine) Drill(ctx context.Context, req api.DrillRequest, emit func(api.FailoverEvent)) (*catalog.DrillRecord, error) {
	started := e.o.Clock.Now()
	if e.o.Store == nil {
		return nil, api.ErrNoStore
	}
	cat := e.o.Catalog.Catalog()
	svc := cat.Service(req.Service)
	if svc == nil {
		return nil, fmt.Errorf("%w: service %s is not in the applied policy", catalog.ErrBadCommand, req.Service)
	}
	site := string(e.o.Site)
	if svc.Copy(site) == nil {
		return nil, fmt.Errorf("%w: service %s keeps no copy at site %s: drills run at a recovery site", catalog.ErrBadCommand, req.Service, site)
	}
	if h := cat.Holder(req.Service, site); h != "" && h != e.o.Name {
		return nil, &api.NotHolderError{Service: req.Service, Site: site, Holder: h, Admin: cat.Nodes[h].Admin}
	}
	c, err := e.resolveServicePoint(ctx, req.Service, req.At)
	if err != nil {
		return nil, err
	}
	pt := c.point
	d := &catalog.DrillRecord{ID: started.UTC().Format("20060102T150405Z") + "-" + pt.ID[:8], Service: req.Service, Site: site, Node: e.o.Name,
		Point: pt.ID, PointTime: pt.Time, By: req.By, Started: started.UTC(), Chosen: chosenHow(req.At), Warning: c.warning}
	if len(c.passed) > 0 {
		d.PassedOver = "passed over " + api.PassedText(c.passed)
	}
	dir := filepath.Join(drillsDir(e.o.DataDir, req.Service), d.ID)
	defer e.markBusy(dir, "drill "+d.ID+" is running")()
	emit(api.FailoverEvent{Step: "plan", Message: fmt.Sprintf("drill %s of %s at point %s (%s, %s) into %s", d.ID, req.Service, shortID(pt.ID), pt.Time.Format(time.RFC3339), d.Chosen, dir)})
	if d.PassedOver != "" {
		emit(api.FailoverEvent{Step: "plan", Message: d.PassedOver})
	}
	if d.Warning != "" {
		emit(api.FailoverEvent{Step: "plan", Message: "warning: " + d.Warning})
	}
	t0 := e.o.Clock.Now()
	var nbdEnv []string
	stopNBD := func() {}
	if req.NBD {
		env, stop, err := e.serveDrillNBD(ctx, pt, dir)
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		var once sync.Once
		stopNBD = func() { once.Do(stop) }
		defer stopNBD()
		nbdEnv = env
		emit(api.FailoverEvent{Step: "images", Message: fmt.Sprintf("serving %d volume(s) over NBD with copy-on-write overlays: %s", len(pt.Volumes), strings.Join(env, " "))})
	} else if err := e.materialize(ctx, pt, dir, emit); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	d.Materialize = e.o.Clock.Now().Sub(t0).Seconds()
	// The hook comes from the applied policy only: no request carries a
	// command for a node to run (issue 13).
	hook := svc.Hooks.Drill
	if hook == "" {
		hook = svc.Hooks.Health
	}
	d.HookCommand, d.Where = hook, "node"
	st := cat.Services[req.Service]
	var images []api.PlanImage
	if !req.NBD {
		images = pointImages(dir, pt, "store")
	}
	env := hookEnv(req.Service, site, st.Epoch, pt, dir, images)
	env = append(env, "LIFEBOAT_DRILL="+d.ID)
	env = append(env, nbdEnv...)
	d.Passed = true
	// The policy's verify checks, on the images before the hook may
	// write them (verify.go).
	if d.Verified = e.drillChecks(ctx, svc, pt, d.ID, dir, images, emit); d.Verified != nil && d.Verified.Result == catalog.VerifyFailed {
		d.Passed, d.Error = false, "verify checks failed: "+checks.Failed(d.Verified)
	}
	if hook == "" {
		d.Output = "no hook: the images were materialized and nothing else was checked"
	} else {
		t1 := e.o.Clock.Now()
		timeout := time.Duration(svc.Hooks.Timeout)
		if timeout <= 0 {
			timeout = time.Duration(config.DefaultHookTimeout)
		}
		out, err := e.runHook(ctx, "drill", hook, env, timeout)
		d.Hook, d.Output = e.o.Clock.Now().Sub(t1).Seconds(), out
		if err != nil {
			d.Passed, d.Error = false, err.Error()
		}
	}
	// The drill ends here: its images go unless it was asked to keep
	// them (issue 15 item 6); the NBD overlays stop being written first.
	stopNBD()
	if req.Keep {
		d.Dir = dir
	} else if err := os.RemoveAll(dir); err != nil {
		d.Dir = dir
		d.Error = fmt.Sprintf("%s; clean up: %v", d.Error, err)
	}
	d.Finished = e.o.Clock.Now().UTC()
	if err := e.o.Propose(context.WithoutCancel(ctx), &catalog.Command{Op: catalog.OpDrill, Drill: d}); err != nil {
		emit(api.FailoverEvent{Step: "record", Message: "the drill's result could not go into the catalog: " + err.Error()})
	}
	e.log.Info("drill", "service", req.Service, "id", d.ID, "passed", d.Passed, "point", pt.ID, "by", req.By)
	return d, nil
}

// serveDrillNBD serves every volume of p over NBD on 127.0.0.1, writable
// into overlays in dir, until stop is called. It returns the hook
// environment: LIFEBOAT_NBD_<VOLUME>=nbd://ADDR/NAME and LIFEBOAT_NBDS.
func (e *Engine) serveDrillNBD(ctx context.Context, p blockstore.Point, dir string) (env []string, stop func(), err error) {
	if err := durable.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	var servers []*nbd.Server
	var wg sync.WaitGroup
	stop = func() {
		cancel()
		wg.Wait()
		for _, s := range servers {
			s.Close()
		}
	}
	var uris []string
	for _, v := range p.Volumes {
		im, err := e.o.Store.OpenImage(ctx, v)
		if err != nil {
			stop()
			return nil, nil, err
		}
		srv, err := nbd.NewServer(nbd.Export{Name: v.Name, Size: im.Size(), Data: im, Writable: true, OverlayDir: dir, Log: e.log})
		if err != nil {
			stop()
			return nil, nil, err
		}
		servers = append(servers, srv)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			stop()
			return nil, nil, fmt.Errorf("drill: serve NBD: %w", err)
		}
		wg.Go(func() { srv.Serve(sctx, ln) })
		uri := "nbd://" + ln.Addr().String() + "/" + v.Name
		uris = append(uris, uri)
		env = append(env, "LIFEBOAT_NBD_"+envName(v.Name[strings.LastIndexByte(v.Name, '/')+1:])+"="+uri)
	}
	return append(env, "LIFEBOAT_NBDS="+strings.Join(uris, " ")), stop, nil
}

// CleanupDrills removes the images of this node's kept drills of service.
func (e *Engine) CleanupDrills(ctx context.Context, service string) ([]catalog.DrillRecord, error) {
	st := e.o.Catalog.Catalog().Services[service]
	if st == nil {
		return nil, fmt.Errorf("%w: no service %s in the catalog", catalog.ErrBadCommand, service)
	}
	var out []catalog.DrillRecord
	for _, d := range st.Drills {
		if d.Node != e.o.Name || d.Dir == "" || e.busyWhy(d.Dir) != "" {
			continue
		}
		if err := os.RemoveAll(d.Dir); err != nil {
			return out, fmt.Errorf("remove drill %s: %w", d.ID, err)
		}
		d.Dir = ""
		if err := e.o.Propose(ctx, &catalog.Command{Op: catalog.OpDrill, Drill: &d}); err != nil {
			return out, err
		}
		out = append(out, d)
	}
	// Directories a crashed drill left behind; not those of a drill
	// running now.
	ents, _ := os.ReadDir(drillsDir(e.o.DataDir, service))
	for _, ent := range ents {
		if dir := filepath.Join(drillsDir(e.o.DataDir, service), ent.Name()); e.busyWhy(dir) == "" {
			os.RemoveAll(dir)
		}
	}
	return out, nil
}

// RecordDrill records an operator's drill of a point this node holds.
func (e *Engine) RecordDrill(ctx context.Context, od api.OperatorDrill, by string) (*catalog.DrillRecord, error) {
	if e.o.Store == nil {
		return nil, api.ErrNoStore
	}
	if e.o.Catalog.Catalog().Service(od.Service) == nil {
		return nil, fmt.Errorf("%w: service %s is not in the applied policy", catalog.ErrBadCommand, od.Service)
	}
	pts, err := e.Points(ctx, od.Service, "")
	if err != nil {
		return nil, err
	}
	var pt *blockstore.Point
	for i := range pts {
		if pts[i].ID == od.Point {
			pt = &pts[i]
		}
	}
	if pt == nil || len(pt.ID) < 8 {
		return nil, fmt.Errorf("%w: service %s has no point %q on this node", blockstore.ErrNotFound, od.Service, od.Point)
	}
	now := e.o.Clock.Now().UTC()
	d := &catalog.DrillRecord{ID: now.Format("20060102T150405.000Z") + "-" + pt.ID[:8], Service: od.Service, Site: string(e.o.Site), Node: e.o.Name,
		Point: pt.ID, PointTime: pt.Time, By: by, Started: now.Add(-time.Duration(od.HookSeconds * float64(time.Second))), Finished: now,
		Hook: od.HookSeconds, HookCommand: audit.Clip(od.HookCommand), Where: "operator", Passed: od.Passed, Output: audit.Clip(od.Output), Error: audit.Clip(od.Error)}
	if err := e.o.Propose(ctx, &catalog.Command{Op: catalog.OpDrill, Drill: d}); err != nil {
		return nil, err
	}
	e.log.Info("drill recorded", "service", od.Service, "id", d.ID, "passed", d.Passed, "point", pt.ID, "by", by, "where", "operator")
	return d, nil
}

// Points lists the points this node holds, oldest first: of one service
// when service is set, holding one volume (SERVICE/VOLUME) when volume is.
func (e *Engine) Points(ctx context.Context, service, volume string) ([]blockstore.Point, error) {
	if e.o.Store == nil {
		return nil, api.ErrNoStore
	}
	pts, err := e.o.Store.Points(ctx, volume)
	if err != nil {
		return nil, err
	}
	out := []blockstore.Point{}
	for _, p := range pts {
		if service == "" || p.Group == service {
			out = append(out, p)
		}
	}
	return out, nil
}
