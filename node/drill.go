package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
)

// A drill brings up an isolated copy of a service at a recovery site: the
// images of a point materialized from the store into DATA_DIR/drills/
// SERVICE/ID/ (a copy: the standby images, the store's points, replication
// and the catalog's epoch are not touched), then a test hook runs against
// them. The result goes into the catalog's drill records.

// DrillRequest asks for a drill on this node.
type DrillRequest struct {
	Service string `json:"service"`
	At      string `json:"at,omitempty"`   // as for a failover
	Hook    string `json:"hook,omitempty"` // run with sh -c; "" = the service's health hook
	Keep    bool   `json:"keep,omitempty"` // leave the images for `drill --cleanup`
	By      string `json:"by,omitempty"`
}

func (n *Node) drillsDir(service string) string {
	return filepath.Join(n.opts.DataDir, "drills", service)
}

// Drill runs a drill; emit receives progress.
func (n *Node) Drill(ctx context.Context, req DrillRequest, emit func(FailoverEvent)) (*DrillRecord, error) {
	started := n.opts.Now()
	if n.store == nil {
		return nil, errNoStore
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
	if err := n.materialize(ctx, pt, dir, emit); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	d.Materialize = time.Since(t0).Seconds()
	hook := req.Hook
	if hook == "" {
		hook = svc.Hooks.Health
	}
	st := cat.Services[req.Service]
	env := hookEnv(req.Service, site, st.Epoch, pt, dir, pointImages(dir, pt, "store"))
	env = append(env, "LIFEBOAT_DRILL="+d.ID)
	d.Passed = true
	if hook == "" {
		d.Output = "no hook: the images were materialized and nothing else was checked"
	} else {
		t1 := time.Now()
		timeout := time.Duration(svc.Hooks.Timeout)
		if timeout <= 0 {
			timeout = time.Duration(config.DefaultHookTimeout)
		}
		out, err := runHook(ctx, "drill", hook, env, timeout)
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
	if err := n.Apply(context.WithoutCancel(ctx), &Command{Op: opDrill, Drill: d}); err != nil {
		emit(FailoverEvent{Step: "record", Message: "the drill's result could not go into the catalog: " + err.Error()})
	}
	n.log.Info("drill", "service", req.Service, "id", d.ID, "passed", d.Passed, "point", pt.ID, "by", req.By)
	return d, nil
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
		if err := n.Apply(ctx, &Command{Op: opDrill, Drill: &d}); err != nil {
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
