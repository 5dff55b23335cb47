package node

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/internal/durable"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/standby"
)

// Failover (DESIGN "Data path" step 4) runs on the holder of the service
// at the site taking over:
//
//  1. pick the point: the newest held, an ID, or the newest at or before
//     a time; a planned failover first has the primary's holder run the
//     stop hook and waits for the agent's point after it, then for that
//     point to arrive here;
//  2. without a Raft quorum, and only with Force, recover the catalog on
//     this node (RecoverRaft);
//  3. make the images: a hot copy's standby images when they are at the
//     point (moved, not copied), else materialized from the store, into
//     DATA_DIR/failover/SERVICE/POINT12/, fsynced, then marked complete;
//  4. start a new epoch in the catalog: the service now runs here, and
//     every node that sees it stops taking the service's writes elsewhere;
//  5. run the start hook, then the health hook until it passes;
//  6. record RPO and RTO in the catalog.
//
// Each step is idempotent, so a failover that was interrupted finishes when
// run again: the catalog holds its record until it is done.

// hasQuorum reports whether this node reaches a Raft leader.
func (n *Node) hasQuorum() bool {
	r := n.r()
	if r.State() == raft.Leader {
		return true
	}
	_, id := r.LeaderWithID()
	return id != "" && time.Since(r.LastContact()) < 5*time.Second
}

// resolveServicePoint picks one of this node's points of service: the
// newest for "" or "latest", the newest at or before an RFC 3339 time, or
// the one whose ID starts with at (at least 8 characters).
func (n *Node) resolveServicePoint(ctx context.Context, service, at string) (blockstore.Point, error) {
	pts, err := n.Points(ctx, service, "")
	if err != nil {
		return blockstore.Point{}, err
	}
	if len(pts) == 0 {
		return blockstore.Point{}, fmt.Errorf("%w: node %s holds no point of service %s", blockstore.ErrNotFound, n.opts.Name, service)
	}
	slices.SortStableFunc(pts, func(a, b blockstore.Point) int { return a.Time.Compare(b.Time) })
	switch {
	case at == "" || at == "latest":
		return pts[len(pts)-1], nil
	case len(at) >= 10 && at[4] == '-':
		t, err := time.Parse(time.RFC3339Nano, at)
		if err != nil {
			return blockstore.Point{}, fmt.Errorf("%w: --at %q: not an RFC 3339 time (like 2026-11-25T14:30:00Z): %v", ErrBadCommand, at, err)
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
		return blockstore.Point{}, fmt.Errorf("%w: --at %q: want latest, an RFC 3339 time or at least 8 characters of a point ID", ErrBadCommand, at)
	}
	var found []blockstore.Point
	for _, p := range pts {
		if strings.HasPrefix(p.ID, at) {
			found = append(found, p)
		}
	}
	switch len(found) {
	case 0:
		return blockstore.Point{}, fmt.Errorf("%w: no point of %s with ID %s on node %s (lifeboat points --admin lists them)", blockstore.ErrNotFound, service, at, n.opts.Name)
	case 1:
		return found[0], nil
	}
	return blockstore.Point{}, fmt.Errorf("%w: --at %q matches %d points; give more of the ID", ErrBadCommand, at, len(found))
}

// Failover runs or plans a failover of req.Service to this node's site;
// emit receives progress. See the comment at the top of this file.
func (n *Node) Failover(ctx context.Context, req FailoverRequest, emit func(FailoverEvent)) (*FailoverRecord, error) {
	started := n.opts.Now()
	if n.store == nil {
		return nil, api.ErrNoStore
	}
	site := string(n.opts.Site)
	if req.Site != "" && req.Site != site {
		return nil, fmt.Errorf("%w: --to %s: this node is at site %s; run the failover against a node of %s", ErrBadCommand, req.Site, site, req.Site)
	}
	quorum := n.hasQuorum()
	if !quorum && !req.Force && !req.DryRun {
		return nil, fmt.Errorf("%w. If the site %s ran at is lost for good, run the failover again with --force: it first makes this node the catalog's only voter (as `lifeboat raft recover` does), then fails over", ErrNoQuorum, req.Service)
	}
	if !quorum && req.Planned {
		return nil, fmt.Errorf("%w: a planned failover needs both sites and a catalog quorum; for a lost site use --force without --planned", ErrNoQuorum)
	}
	cat := n.Catalog()
	svc := cat.Service(req.Service)
	if svc == nil {
		return nil, fmt.Errorf("%w: service %s is not in the applied policy", blockstore.ErrNotFound, req.Service)
	}
	st := cat.Services[req.Service]
	var resume *FailoverRecord
	if last := st.LastFailover(); last != nil && !last.Done && last.To == site && st.Active == site {
		resume = last
	}
	if resume == nil && svc.Primary == site {
		return nil, fmt.Errorf("%w: service %s already runs at site %s (epoch %d)", ErrBadCommand, req.Service, site, st.Epoch)
	}
	cp := svc.Copy(site)
	if resume == nil && cp == nil {
		return nil, fmt.Errorf("%w: service %s keeps no copy at site %s", ErrBadCommand, req.Service, site)
	}
	if h := cat.Holder(req.Service, site); h != "" && h != n.opts.Name {
		return nil, &NotHolderError{Service: req.Service, Site: site, Holder: h, Admin: cat.Nodes[h].Admin}
	}
	plan := &FailoverPlan{Service: req.Service, From: svc.Primary, To: site, Node: n.opts.Name, Epoch: st.Epoch + 1,
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
		p, err := n.resolveServicePoint(ctx, req.Service, resume.Point)
		if err != nil {
			return nil, fmt.Errorf("resume the failover at epoch %d: %w", resume.Epoch, err)
		}
		if req.At != "" && req.At != "latest" && !strings.HasPrefix(resume.Point, req.At) {
			return nil, fmt.Errorf("%w: a failover of %s to %s at point %s is in progress; run it again without --at to finish it", ErrBadCommand, req.Service, site, resume.Point)
		}
		pt = p
		plan.PrimaryNewest = resume.PointTime.Add(time.Duration(resume.RPO * float64(time.Second)))
	case req.Planned:
		if req.At != "" && req.At != "latest" {
			return nil, fmt.Errorf("%w: a planned failover takes the final point after the stop hook; --at does not apply", ErrBadCommand)
		}
	default:
		p, err := n.resolveServicePoint(ctx, req.Service, req.At)
		if err != nil {
			return nil, err
		}
		pt = p
	}
	fillPlanPoint := func() {
		plan.Point, plan.PointTime = pt.ID, pt.Time
		plan.RPO = 0
		if plan.PrimaryNewest.After(pt.Time) {
			plan.RPO = plan.PrimaryNewest.Sub(pt.Time).Seconds()
		}
		plan.PointAge = max(0, started.Sub(pt.Time).Seconds())
		plan.Images = n.planImages(req.Service, pt, plan.Tier)
	}
	if pt.ID != "" {
		fillPlanPoint()
	}
	emit(FailoverEvent{Step: "plan", Plan: plan})
	if req.DryRun {
		return nil, nil
	}
	forced := false
	if !quorum {
		emit(FailoverEvent{Step: "catalog", Message: "no Raft quorum: recovering the catalog on this node (forced)"})
		rec, err := n.RecoverRaft(ctx, req.By, true)
		if err != nil {
			return nil, fmt.Errorf("forced catalog recovery: %w", err)
		}
		forced = true
		emit(FailoverEvent{Step: "catalog", Message: fmt.Sprintf("catalog recovered: voters before %s, now %s", joinNodeIDs(rec.Before), joinNodeIDs(rec.After))})
	}
	if req.Planned && resume == nil {
		p, err := n.plannedFinalPoint(ctx, req.Service, svc, emit)
		if err != nil {
			return nil, err
		}
		pt = p
		plan.PrimaryNewest = p.Time
		fillPlanPoint()
	}

	dir, images, err := n.failoverImages(ctx, req.Service, pt, plan.Tier, emit)
	if err != nil {
		return nil, err
	}
	rec := resume
	if rec == nil {
		rec = &FailoverRecord{Service: req.Service, Epoch: plan.Epoch, From: plan.From, To: site, Node: n.opts.Name,
			Point: pt.ID, PointTime: pt.Time, Planned: req.Planned, Forced: forced, By: req.By, Started: started.UTC(), RPO: plan.RPO, PointAge: plan.PointAge}
		if err := n.Apply(ctx, &Command{Op: catalog.OpFailover, Failover: rec}); err != nil {
			return nil, fmt.Errorf("start epoch %d in the catalog: %w", plan.Epoch, err)
		}
		emit(FailoverEvent{Step: "epoch", Message: fmt.Sprintf("epoch %d: service %s now runs at %s; %s is fenced for it", rec.Epoch, req.Service, site, plan.From)})
	} else {
		rec.Started = started.UTC() // RTO counts this run
	}
	n.log.Warn("failover", "service", req.Service, "from", rec.From, "to", site, "epoch", rec.Epoch, "point", pt.ID, "by", req.By)
	env := hookEnv(req.Service, site, rec.Epoch, pt, dir, images)
	env = append(env, "LIFEBOAT_PLANNED="+strconv.FormatBool(rec.Planned))
	hookErr := n.startAndCheck(ctx, svc.Hooks, env, emit)
	rec.Finished = n.opts.Now().UTC()
	rec.RTO = rec.Finished.Sub(started).Seconds()
	rec.Done = hookErr == nil
	rec.Error = ""
	if hookErr != nil {
		rec.Error = hookErr.Error()
	}
	if err := n.Apply(context.WithoutCancel(ctx), &Command{Op: catalog.OpFailedOver, Failover: rec}); err != nil && hookErr == nil {
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
func (n *Node) failoverDir(service string, p blockstore.Point) string {
	return filepath.Join(n.opts.DataDir, "failover", service, shortID(p.ID))
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
func (n *Node) planImages(service string, p blockstore.Point, tier config.Tier) []PlanImage {
	dir := n.failoverDir(service, p)
	ready := completeAt(dir, p.ID)
	standby := false
	if tier == config.TierHot {
		if _, sp, ok := n.StandbyPath(service, ""); ok && sp.ID == p.ID {
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
func pointImages(dir string, p blockstore.Point, source string) []PlanImage {
	out := make([]PlanImage, 0, len(p.Volumes))
	for _, v := range p.Volumes {
		out = append(out, PlanImage{Volume: v.Name, Path: filepath.Join(dir, imageFile(v.Name)), Size: v.Size, Source: source})
	}
	return out
}

func completeAt(dir, id string) bool {
	b, err := os.ReadFile(filepath.Join(dir, completeName))
	return err == nil && strings.TrimSpace(string(b)) == id
}

// failoverImages makes sure the images of p exist in the failover
// directory and returns it and the images.
func (n *Node) failoverImages(ctx context.Context, service string, p blockstore.Point, tier config.Tier, emit func(FailoverEvent)) (string, []PlanImage, error) {
	dir := n.failoverDir(service, p)
	images := n.planImages(service, p, tier)
	if completeAt(dir, p.ID) {
		emit(FailoverEvent{Step: "images", Message: "images at point " + shortID(p.ID) + " are ready from an earlier run: " + dir})
		return dir, images, nil
	}
	if tier == config.TierHot {
		took, err := n.tiers.take(service, p, dir)
		if err != nil {
			return "", nil, fmt.Errorf("take the standby images: %w", err)
		}
		if took {
			if err := durable.WriteFile(filepath.Join(dir, completeName), []byte(p.ID+"\n"), 0o600); err != nil {
				return "", nil, err
			}
			emit(FailoverEvent{Step: "images", Message: "standby images are at the point: moved to " + dir})
			return dir, images, nil
		}
	}
	if err := n.materialize(ctx, p, dir, emit); err != nil {
		return "", nil, err
	}
	for i := range images {
		images[i].Source = "store"
	}
	return dir, images, nil
}

// materialize writes the images of every volume of p into dir (created
// afresh), fsyncs them and marks dir complete.
func (n *Node) materialize(ctx context.Context, p blockstore.Point, dir string, emit func(FailoverEvent)) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("clear %s: %w", dir, err)
	}
	if err := durable.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	release := n.store.Lease()
	defer release()
	var total, base int64
	for _, v := range p.Volumes {
		total += v.Size
	}
	start := time.Now()
	last := time.Time{}
	for _, v := range p.Volumes {
		path := filepath.Join(dir, imageFile(v.Name))
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("create image: %w", err)
		}
		err = f.Truncate(v.Size)
		if err == nil {
			err = n.store.Restore(ctx, v, blockstore.NewWriteback(f), blockstore.RestoreOptions{Progress: func(done, _ int64) {
				if now := time.Now(); now.Sub(last) >= time.Second {
					last = now
					emit(FailoverEvent{Step: "images", Message: "materializing from the store", Done: base + done, Total: total})
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
	emit(FailoverEvent{Step: "images", Message: fmt.Sprintf("materialized %d bytes from the store in %s: %s", total, time.Since(start).Round(time.Millisecond), dir), Done: total, Total: total})
	return nil
}

// hookEnv is the environment of start, health and drill hooks.
func hookEnv(service, site string, epoch uint64, p blockstore.Point, dir string, images []PlanImage) []string {
	env := []string{
		"LIFEBOAT_SERVICE=" + service,
		"LIFEBOAT_SITE=" + site,
		"LIFEBOAT_EPOCH=" + strconv.FormatUint(epoch, 10),
		"LIFEBOAT_POINT=" + p.ID,
		"LIFEBOAT_POINT_TIME=" + p.Time.UTC().Format(time.RFC3339Nano),
		"LIFEBOAT_IMAGE_DIR=" + dir,
	}
	paths := make([]string, len(images))
	for i, im := range images {
		paths[i] = im.Path
		env = append(env, "LIFEBOAT_IMAGE_"+envName(im.Volume[strings.LastIndexByte(im.Volume, '/')+1:])+"="+im.Path)
	}
	return append(env, "LIFEBOAT_IMAGES="+strings.Join(paths, " "))
}

// envName makes a volume name an environment variable suffix: upper case,
// anything but letters and digits as '_'.
func envName(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		}
		return '_'
	}, s)
}

// runHook runs cmd with sh -c and env added, killing it after timeout. It
// returns the output's last lines.
// runHook runs a hook of the applied policy with sh -c, as the node's
// hooks user when one is set.
func (n *Node) runHook(ctx context.Context, phase, cmd string, env []string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := exec.CommandContext(ctx, "/bin/sh", "-c", cmd)
	c.Env = append(append(os.Environ(), env...), "LIFEBOAT_PHASE="+phase)
	if n.hookCred != nil {
		c.SysProcAttr = &syscall.SysProcAttr{Credential: n.hookCred}
	}
	n.log.Info("hook", "phase", phase, "command", cmd, "user", n.opts.HooksUser)
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	c.WaitDelay = time.Second
	err := c.Run()
	tail := lastLines(out.String(), 5)
	if ctx.Err() == context.DeadlineExceeded {
		return tail, fmt.Errorf("%s hook did not finish within %s (killed)", phase, timeout)
	}
	if err != nil {
		return tail, fmt.Errorf("%s hook: %w: %s", phase, err, tail)
	}
	return tail, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// startAndCheck runs the start hook, then the health hook until it passes
// or the hook timeout ends.
func (n *Node) startAndCheck(ctx context.Context, h config.Hooks, env []string, emit func(FailoverEvent)) error {
	timeout := time.Duration(h.Timeout)
	if timeout <= 0 {
		timeout = time.Duration(config.DefaultHookTimeout)
	}
	if h.Start == "" {
		emit(FailoverEvent{Step: "start", Message: "no start hook in the policy: the images are ready, start the servers by hand"})
	} else {
		t0 := time.Now()
		out, err := n.runHook(ctx, "start", h.Start, env, timeout)
		if err != nil {
			return err
		}
		emit(FailoverEvent{Step: "start", Message: fmt.Sprintf("start hook ran in %s: %s", time.Since(t0).Round(time.Millisecond), out)})
	}
	if h.Health == "" {
		return nil
	}
	t0 := time.Now()
	deadline := t0.Add(timeout)
	for try := 1; ; try++ {
		out, err := n.runHook(ctx, "health", h.Health, env, timeout)
		if err == nil {
			emit(FailoverEvent{Step: "health", Message: fmt.Sprintf("health hook passed after %s (try %d): %s", time.Since(t0).Round(time.Millisecond), try, out)})
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("health hook did not pass within %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
