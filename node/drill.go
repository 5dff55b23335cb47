package node

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
	"github.com/lifeboat-dr/lifeboat/node/nbd"
)

// A drill brings up an isolated copy of a service at a recovery site: the
// images of a point materialized from the store into DATA_DIR/drills/
// SERVICE/ID/, or with NBD served from the store over NBD with
// copy-on-write overlays there (the standby images, the store's points,
// replication and the catalog's epoch are not touched), then a test hook
// runs against them. The result goes into the catalog's drill records.

func (n *Node) drillsDir(service string) string {
	return filepath.Join(n.opts.DataDir, "drills", service)
}

// Drill runs a drill; emit receives progress.
func (n *Node) Drill(ctx context.Context, req DrillRequest, emit func(FailoverEvent)) (*DrillRecord, error) {
	started := n.opts.Now()
	if n.store == nil {
		return nil, api.ErrNoStore
	}
	cat := n.Catalog()
	svc := cat.Service(req.Service)
	if svc == nil {
		return nil, fmt.Errorf("%w: service %s is not in the applied policy", ErrBadCommand, req.Service)
	}
	site := string(n.opts.Site)
	if svc.Copy(site) == nil {
		return nil, fmt.Errorf("%w: service %s keeps no copy at site %s: drills run at a recovery site", ErrBadCommand, req.Service, site)
	}
	if h := cat.Holder(req.Service, site); h != "" && h != n.opts.Name {
		return nil, &NotHolderError{Service: req.Service, Site: site, Holder: h, Admin: cat.Nodes[h].Admin}
	}
	pt, err := n.resolveServicePoint(ctx, req.Service, req.At)
	if err != nil {
		return nil, err
	}
	d := &DrillRecord{ID: started.UTC().Format("20060102T150405Z") + "-" + pt.ID[:8], Service: req.Service, Site: site, Node: n.opts.Name,
		Point: pt.ID, PointTime: pt.Time, By: req.By, Started: started.UTC()}
	dir := filepath.Join(n.drillsDir(req.Service), d.ID)
	emit(FailoverEvent{Step: "plan", Message: fmt.Sprintf("drill %s of %s at point %s (%s) into %s", d.ID, req.Service, shortID(pt.ID), pt.Time.Format(time.RFC3339), dir)})
	t0 := time.Now()
	var nbdEnv []string
	if req.NBD {
		env, stop, err := n.serveDrillNBD(ctx, pt, dir)
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		defer stop()
		nbdEnv = env
		emit(FailoverEvent{Step: "images", Message: fmt.Sprintf("serving %d volume(s) over NBD with copy-on-write overlays: %s", len(pt.Volumes), strings.Join(env, " "))})
	} else if err := n.materialize(ctx, pt, dir, emit); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	d.Materialize = time.Since(t0).Seconds()
	// The hook comes from the applied policy only: no request carries a
	// command for a node to run (issue 13).
	hook := svc.Hooks.Drill
	if hook == "" {
		hook = svc.Hooks.Health
	}
	d.HookCommand, d.Where = hook, "node"
	st := cat.Services[req.Service]
	var images []PlanImage
	if !req.NBD {
		images = pointImages(dir, pt, "store")
	}
	env := hookEnv(req.Service, site, st.Epoch, pt, dir, images)
	env = append(env, "LIFEBOAT_DRILL="+d.ID)
	env = append(env, nbdEnv...)
	d.Passed = true
	if hook == "" {
		d.Output = "no hook: the images were materialized and nothing else was checked"
	} else {
		t1 := time.Now()
		timeout := time.Duration(svc.Hooks.Timeout)
		if timeout <= 0 {
			timeout = time.Duration(config.DefaultHookTimeout)
		}
		out, err := n.runHook(ctx, "drill", hook, env, timeout)
		d.Hook, d.Output = time.Since(t1).Seconds(), out
		if err != nil {
			d.Passed, d.Error = false, err.Error()
		}
	}
	if req.Keep {
		d.Dir = dir
	} else if err := os.RemoveAll(dir); err != nil {
		d.Dir = dir
		d.Error = fmt.Sprintf("%s; clean up: %v", d.Error, err)
	}
	d.Finished = n.opts.Now().UTC()
	if err := n.Apply(context.WithoutCancel(ctx), &Command{Op: catalog.OpDrill, Drill: d}); err != nil {
		emit(FailoverEvent{Step: "record", Message: "the drill's result could not go into the catalog: " + err.Error()})
	}
	n.log.Info("drill", "service", req.Service, "id", d.ID, "passed", d.Passed, "point", pt.ID, "by", req.By)
	return d, nil
}

// serveDrillNBD serves every volume of p over NBD on 127.0.0.1, writable
// into overlays in dir, until stop is called. It returns the hook
// environment: LIFEBOAT_NBD_<VOLUME>=nbd://ADDR/NAME and LIFEBOAT_NBDS.
func (n *Node) serveDrillNBD(ctx context.Context, p blockstore.Point, dir string) (env []string, stop func(), err error) {
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
		im, err := n.store.OpenImage(ctx, v)
		if err != nil {
			stop()
			return nil, nil, err
		}
		srv, err := nbd.NewServer(nbd.Export{Name: v.Name, Size: im.Size(), Data: im, Writable: true, OverlayDir: dir, Log: n.log})
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
func (n *Node) CleanupDrills(ctx context.Context, service string) ([]DrillRecord, error) {
	st := n.Catalog().Services[service]
	if st == nil {
		return nil, fmt.Errorf("%w: no service %s in the catalog", ErrBadCommand, service)
	}
	var out []DrillRecord
	for _, d := range st.Drills {
		if d.Node != n.opts.Name || d.Dir == "" {
			continue
		}
		if err := os.RemoveAll(d.Dir); err != nil {
			return out, fmt.Errorf("remove drill %s: %w", d.ID, err)
		}
		d.Dir = ""
		if err := n.Apply(ctx, &Command{Op: catalog.OpDrill, Drill: &d}); err != nil {
			return out, err
		}
		out = append(out, d)
	}
	// Directories a crashed drill left behind.
	ents, _ := os.ReadDir(n.drillsDir(service))
	for _, e := range ents {
		os.RemoveAll(filepath.Join(n.drillsDir(service), e.Name()))
	}
	return out, nil
}

// RecordDrill records an operator's drill of a point this node holds.
func (n *Node) RecordDrill(ctx context.Context, od OperatorDrill, by string) (*DrillRecord, error) {
	if n.store == nil {
		return nil, api.ErrNoStore
	}
	if n.Catalog().Service(od.Service) == nil {
		return nil, fmt.Errorf("%w: service %s is not in the applied policy", ErrBadCommand, od.Service)
	}
	pts, err := n.Points(ctx, od.Service, "")
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
	now := n.opts.Now().UTC()
	d := &DrillRecord{ID: now.Format("20060102T150405.000Z") + "-" + pt.ID[:8], Service: od.Service, Site: string(n.opts.Site), Node: n.opts.Name,
		Point: pt.ID, PointTime: pt.Time, By: by, Started: now.Add(-time.Duration(od.HookSeconds * float64(time.Second))), Finished: now,
		Hook: od.HookSeconds, HookCommand: audit.Clip(od.HookCommand), Where: "operator", Passed: od.Passed, Output: audit.Clip(od.Output), Error: audit.Clip(od.Error)}
	if err := n.Apply(ctx, &Command{Op: catalog.OpDrill, Drill: d}); err != nil {
		return nil, err
	}
	n.log.Info("drill recorded", "service", od.Service, "id", d.ID, "passed", d.Passed, "point", pt.ID, "by", by, "where", "operator")
	return d, nil
}
