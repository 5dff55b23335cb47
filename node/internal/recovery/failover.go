package recovery

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/internal/durable"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/standby"
)

// resolveServicePoint picks one of this node's points of service: for ""
// or "latest" the newest worth having (choose.go), else the newest at or
// before an RFC 3339 time, or the one whose ID starts with at (at least 8
// characters), with a warning when that point is not worth having.
func (e *Engine) resolveServicePoint(ctx context.Context, service, at string) (choice, error) {
	pts, err := e.Points(ctx, service, "")
	if err != nil {
		return choice{}, err
	}
	if len(pts) == 0 {
		return choice{}, fmt.Errorf("%w: node %s holds no point of service %s", blockstore.ErrNotFound, e.o.Name, service)
	}
	sortByTime(pts)
	cat := e.o.Catalog.Catalog()
	st, site := cat.Services[service], string(e.o.Site)
	requireVerified := false
	if svc := cat.Service(service); svc != nil {
		requireVerified = svc.Verify.RequireVerified
	}
	if at == "" || at == "latest" {
		return choosePoint(pts, st, site, requireVerified)
	}
	p, err := pointAt(pts, service, at, e.o.Name)
	if err != nil {
		return choice{}, err
	}
	return choice{point: p, warning: atWarning(p, st, site, requireVerified)}, nil
}

// pointAt finds the point --at names among pts (sorted oldest first): the
// newest at or before an RFC 3339 time, or the one whose ID starts with at.
func pointAt(pts []blockstore.Point, service, at string, node mesh.NodeID) (blockstore.Point, error) {
	switch {
	case len(at) >= 10 && at[4] == '-':
		t, err := time.Parse(time.RFC3339Nano, at)
		if err != nil {
			return blockstore.Point{}, fmt.Errorf("%w: --at %q: not an RFC 3339 time (like 2026-11-25T14:30:00Z): %v", catalog.ErrBadCommand, at, err)
		}
		var best *blockstore.Point
		for i := range pts {
			if !pts[i].Time.After(t) {
				best = &pts[i]
			}
		}
		if best == nil {
			return blockstore.Point{}, fmt.Errorf("%w: no point of %s at or before %s here; the oldest is from %s", blockstore.ErrNotFound, service, t.Format(time.RFC3339), pts[0].Time.Format(time.RFC3339))
		}
		return *best, nil
	case len(at) < 8:
		return blockstore.Point{}, fmt.Errorf("%w: --at %q: want latest, an RFC 3339 time or at least 8 characters of a point ID", catalog.ErrBadCommand, at)
	}
	var found []blockstore.Point
	for _, p := range pts {
		if strings.HasPrefix(p.ID, at) {
			found = append(found, p)
		}
	}
	switch len(found) {
	case 0:
		return blockstore.Point{}, fmt.Errorf("%w: no point of %s with ID %s on node %s (lifeboat points --admin lists them)", blockstore.ErrNotFound, service, at, node)
	case 1:
		return found[0], nil
	}
	return blockstore.Point{}, fmt.Errorf("%w: --at %q matches %d points; give more of the ID", catalog.ErrBadCommand, at, len(found))
}

// Failover runs or plans a failover of req.Service to this node's site;
// emit receives progress. See the comment at the top of this file.
func (e *Engine) Failover(ctx context.Context, req api.FailoverRequest, emit func(api.FailoverEvent)) (*catalog.FailoverRecord, error) {
	started := e.o.Clock.Now()
	if e.o.Store == nil {
		return nil, api.ErrNoStore
	}
	site := string(e.o.Site)
	if req.Site != "" && req.Site != site {
		return nil, fmt.Errorf("%w: --to %s: this node is at site %s; run the failover against a node of %s", catalog.ErrBadCommand, req.Site, site, req.Site)
	}
	quorum := e.o.Quorum()
	if !quorum && !req.Force && !req.DryRun {
		return nil, fmt.Errorf("%w. If the site %s ran at is lost for good, run the failover again with --force: it first makes this node the catalog's only voter (as `lifeboat raft recover` does), then fails over", api.ErrNoQuorum, req.Service)
	}
	if !quorum && req.Planned {
		return nil, fmt.Errorf("%w: a planned failover needs both sites and a catalog quorum; for a lost site use --force without --planned", api.ErrNoQuorum)
	}
	cat := e.o.Catalog.Catalog()
	svc := cat.Service(req.Service)
	if svc == nil {
		return nil, fmt.Errorf("%w: service %s is not in the applied policy", blockstore.ErrNotFound, req.Service)
	}
	st := cat.Services[req.Service]
	var resume *catalog.FailoverRecord
	if last := st.LastFailover(); last != nil && !last.Done && last.To == site && st.Active == site {
		resume = last
	}
	if resume == nil && svc.Primary == site {
		return nil, fmt.Errorf("%w: service %s already runs at site %s (epoch %d)", catalog.ErrBadCommand, req.Service, site, st.Epoch)
	}
	cp := svc.Copy(site)
	if resume == nil && cp == nil {
		return nil, fmt.Errorf("%w: service %s keeps no copy at site %s", catalog.ErrBadCommand, req.Service, site)
	}
	if h := cat.Holder(req.Service, site); h != "" && h != e.o.Name {
		return nil, &api.NotHolderError{Service: req.Service, Site: site, Holder: h, Admin: cat.Nodes[h].Admin}
	}
	plan := &api.FailoverPlan{Service: req.Service, From: svc.Primary, To: site, Node: e.o.Name, Epoch: st.Epoch + 1,
		RPOTarget: time.Duration(svc.RPO).Seconds(), Hooks: svc.Hooks, Planned: req.Planned, NeedForce: !quorum}
	if cp != nil {
		plan.Tier = cp.Tier
	} else if pc := cat.Policy.Cluster.Service(req.Service).Copy(site); pc != nil {
		plan.Tier = pc.Tier // resumed: the view no longer has a copy here
	}
	if w, ok := st.Watermarks[svc.Primary]; ok {
		plan.PrimaryNewest = w.Time
	}
	var pt blockstore.Point
	switch {
	case resume != nil:
		plan.From, plan.Epoch, plan.Resume, plan.Planned = resume.From, resume.Epoch, true, resume.Planned
		c, err := e.resolveServicePoint(ctx, req.Service, resume.Point)
		if err != nil {
			return nil, fmt.Errorf("resume the failover at epoch %d: %w", resume.Epoch, err)
		}
		p := c.point
		plan.Chosen = "resume"
		if req.At != "" && req.At != "latest" && !strings.HasPrefix(resume.Point, req.At) {
			return nil, fmt.Errorf("%w: a failover of %s to %s at point %s is in progress; run it again without --at to finish it", catalog.ErrBadCommand, req.Service, site, resume.Point)
		}
		pt = p
		plan.PrimaryNewest = resume.PointTime.Add(time.Duration(resume.RPO * float64(time.Second)))
	case req.Planned:
		if req.At != "" && req.At != "latest" {
			return nil, fmt.Errorf("%w: a planned failover takes the final point after the stop hook; --at does not apply", catalog.ErrBadCommand)
		}
		plan.Chosen = "final"
	default:
		c, err := e.resolveServicePoint(ctx, req.Service, req.At)
		if err != nil {
			return nil, err
		}
		pt = c.point
		plan.Chosen, plan.PassedOver, plan.Warning = chosenHow(req.At), c.passed, c.warning
	}
	fillPlanPoint := func() {
		plan.Point, plan.PointTime = pt.ID, pt.Time
		plan.RPO = 0
		if plan.PrimaryNewest.After(pt.Time) {
			plan.RPO = plan.PrimaryNewest.Sub(pt.Time).Seconds()
		}
		plan.PointAge = max(0, started.Sub(pt.Time).Seconds())
		plan.Images = e.planImages(req.Service, pt, plan.Tier)
	}
	if pt.ID != "" {
		fillPlanPoint()
	}
	emit(api.FailoverEvent{Step: "plan", Plan: plan})
	if req.DryRun {
		return nil, nil
	}
	forced := false
	if !quorum {
		emit(api.FailoverEvent{Step: "catalog", Message: "no Raft quorum: recovering the catalog on this node (forced)"})
		rec, err := e.o.RecoverRaft(ctx, req.By, true)
		if err != nil {
			return nil, fmt.Errorf("forced catalog recovery: %w", err)
		}
		forced = true
		emit(api.FailoverEvent{Step: "catalog", Message: fmt.Sprintf("catalog recovered: voters before %s, now %s", joinNodeIDs(rec.Before), joinNodeIDs(rec.After))})
	}
	if req.Planned && resume == nil {
		p, err := e.finalPoint(ctx, req.Service, svc, emit)
		if err != nil {
			return nil, err
		}
		pt = p
		plan.PrimaryNewest = p.Time
		fillPlanPoint()
	}

	defer e.markBusy(failoverDir(e.o.DataDir, req.Service, pt), "a failover of "+req.Service+" to "+site+" is running on these images")()
	dir, images, err := e.failoverImages(ctx, req.Service, pt, plan.Tier, emit)
	if err != nil {
		return nil, err
	}
	rec := resume
	if rec == nil {
		rec = &catalog.FailoverRecord{Service: req.Service, Epoch: plan.Epoch, From: plan.From, To: site, Node: e.o.Name,
			Point: pt.ID, PointTime: pt.Time, Planned: req.Planned, Forced: forced, By: req.By, Started: started.UTC(), RPO: plan.RPO, PointAge: plan.PointAge}
		if err := e.o.Propose(ctx, &catalog.Command{Op: catalog.OpFailover, Failover: rec}); err != nil {
			return nil, fmt.Errorf("start epoch %d in the catalog: %w", plan.Epoch, err)
		}
		emit(api.FailoverEvent{Step: "epoch", Message: fmt.Sprintf("epoch %d: service %s now runs at %s; %s is fenced for it", rec.Epoch, req.Service, site, plan.From)})
	} else {
		rec.Started = started.UTC() // RTO counts this run
	}
	e.log.Warn("failover", "service", req.Service, "from", rec.From, "to", site, "epoch", rec.Epoch, "point", pt.ID, "by", req.By)
	env := hookEnv(req.Service, site, rec.Epoch, pt, dir, images)
	env = append(env, "LIFEBOAT_PLANNED="+strconv.FormatBool(rec.Planned))
	hookErr := e.startAndCheck(ctx, svc.Hooks, env, emit)
	rec.Finished = e.o.Clock.Now().UTC()
	rec.RTO = rec.Finished.Sub(started).Seconds()
	rec.Done = hookErr == nil
	rec.Error = ""
	if hookErr != nil {
		rec.Error = hookErr.Error()
	}
	if err := e.o.Propose(context.WithoutCancel(ctx), &catalog.Command{Op: catalog.OpFailedOver, Failover: rec}); err != nil && hookErr == nil {
		return nil, fmt.Errorf("record the failover's outcome: %w", err)
	}
	if hookErr != nil {
		return nil, fmt.Errorf("%w (the service is at epoch %d at %s; fix the cause and run the failover again to finish it)", hookErr, rec.Epoch, site)
	}
	return rec, nil
}

func joinNodeIDs(ids []mesh.NodeID) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = string(id)
	}
	return strings.Join(s, ",")
}

// failoverDir is where the failover images of a service at point p live.
func failoverDir(dataDir, service string, p blockstore.Point) string {
	return filepath.Join(dataDir, "failover", service, shortID(p.ID))
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// completeName marks a failover or drill image directory as complete: it
// holds the point's ID.
const completeName = "COMPLETE"

// imageFile is a volume's image file name, as the standby names it: a hot
// failover moves the standby images into place under these names.
func imageFile(volume string) string { return standby.ImageName(volume) }

// planImages says where each volume's image of p will come from.
func (e *Engine) planImages(service string, p blockstore.Point, tier config.Tier) []api.PlanImage {
	dir := failoverDir(e.o.DataDir, service, p)
	ready := completeAt(dir, p.ID)
	standby := false
	if tier == config.TierHot {
		if _, sp, ok := e.o.Standby.Path(service, ""); ok && sp.ID == p.ID {
			standby = true
		}
	}
	src := "store"
	switch {
	case ready:
		src = "ready"
	case standby:
		src = "standby"
	}
	return pointImages(dir, p, src)
}

// pointImages lists the images of p's volumes in dir.
func pointImages(dir string, p blockstore.Point, source string) []api.PlanImage {
	out := make([]api.PlanImage, 0, len(p.Volumes))
	for _, v := range p.Volumes {
		out = append(out, api.PlanImage{Volume: v.Name, Path: filepath.Join(dir, imageFile(v.Name)), Size: v.Size, Source: source})
	}
	return out
}

func completeAt(dir, id string) bool {
	b, err := os.ReadFile(filepath.Join(dir, completeName))
	return err == nil && strings.TrimSpace(string(b)) == id
}

// failoverImages makes sure the images of p exist in the failover
// directory and returns it and the images.
func (e *Engine) failoverImages(ctx context.Context, service string, p blockstore.Point, tier config.Tier, emit func(api.FailoverEvent)) (string, []api.PlanImage, error) {
	dir := failoverDir(e.o.DataDir, service, p)
	images := e.planImages(service, p, tier)
	if completeAt(dir, p.ID) {
		emit(api.FailoverEvent{Step: "images", Message: "images at point " + shortID(p.ID) + " are ready from an earlier run: " + dir})
		return dir, images, nil
	}
	if tier == config.TierHot {
		took, err := e.o.Standby.Take(service, p, dir)
		if err != nil {
			return "", nil, fmt.Errorf("take the standby images: %w", err)
		}
		if took {
			if err := durable.WriteFile(filepath.Join(dir, completeName), []byte(p.ID+"\n"), 0o600); err != nil {
				return "", nil, err
			}
			emit(api.FailoverEvent{Step: "images", Message: "standby images are at the point: moved to " + dir})
			return dir, images, nil
		}
	}
	if err := e.materialize(ctx, p, dir, emit); err != nil {
		return "", nil, err
	}
	for i := range images {
		images[i].Source = "store"
	}
	return dir, images, nil
}

// materialize writes the images of every volume of p into dir (created
// afresh), fsyncs them and marks dir complete.
func (e *Engine) materialize(ctx context.Context, p blockstore.Point, dir string, emit func(api.FailoverEvent)) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("clear %s: %w", dir, err)
	}
	if err := durable.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	release := e.o.Store.Holds().Lease()
	defer release()
	var total, base int64
	for _, v := range p.Volumes {
		total += v.Size
	}
	start := e.o.Clock.Now()
	last := time.Time{}
	for _, v := range p.Volumes {
		path := filepath.Join(dir, imageFile(v.Name))
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("create image: %w", err)
		}
		err = f.Truncate(v.Size)
		if err == nil {
			err = e.o.Store.Restore(ctx, v, blockstore.NewWriteback(f), blockstore.RestoreOptions{Progress: func(done, _ int64) {
				if now := e.o.Clock.Now(); now.Sub(last) >= time.Second {
					last = now
					emit(api.FailoverEvent{Step: "images", Message: "materializing from the store", Done: base + done, Total: total})
				}
			}})
		}
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("materialize %s at point %s: %w", v.Name, shortID(p.ID), err)
		}
		base += v.Size
	}
	if err := durable.WriteFile(filepath.Join(dir, completeName), []byte(p.ID+"\n"), 0o600); err != nil {
		return err
	}
	emit(api.FailoverEvent{Step: "images", Message: fmt.Sprintf("materialized %d bytes from the store in %s: %s", total, e.o.Clock.Now().Sub(start).Round(time.Millisecond), dir), Done: total, Total: total})
	return nil
}

// Failback makes the site the service last failed over from a warm copy
// of it: it receives the blocks that differ from what it holds, and a
// planned failover then brings the service home.
func (e *Engine) Failback(ctx context.Context, service, by string) (*catalog.ServiceState, error) {
	st := e.o.Catalog.Catalog().Services[service]
	last := st.LastFailover()
	if st == nil || st.Active == "" || last == nil {
		return nil, fmt.Errorf("%w: service %s has not failed over: nothing to fail back", catalog.ErrBadCommand, service)
	}
	if err := e.o.Propose(ctx, &catalog.Command{Op: catalog.OpReprotect, Service: service, On: true}); err != nil {
		return nil, err
	}
	e.log.Warn("failback: the old primary site becomes a warm copy", "service", service, "site", last.From, "by", by)
	return e.o.Catalog.Catalog().Services[service], nil
}
