// Package verifier is the engine that verifies a service's newest point
// every [service.verify] every (issue 16, verified points). One goroutine
// per node walks the services; for each, one node in the cluster does
// the work: the holder of the service's points at its first recovery site
// with a holder (the primary site's holder when it has no copy). It
// restores the point's volumes into sparse files under
// DATA_DIR/verify/.tmp, runs the checks of node/internal/checks on them,
// removes the files, keeps the evidence in DATA_DIR/verify/SERVICE/POINT12
// (the newest keepEvidence per service) and records the result as the
// point's mark in the catalog (catalog.OpMarks), where status, metrics and
// `lifeboat points --admin` read it. A failed verification is logged at
// WARN.
//
// A point is due when the service's last verification is at least every
// old and the newest point held here has not passed one yet: a passed
// point is not checked again, a failed or skipped one again after every.
// The engine looks every Interval (1m), and at once when a new policy
// applies, when this node becomes a service's verifier, and, until a
// service's first verification, when a new point of it arrives here.
package verifier

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/internal/clock"
	"github.com/lifeboat-dr/lifeboat/internal/logpolicy"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/checks"
)

// keepEvidence is how many points' evidence directories stay per service.
const keepEvidence = 8

// CatalogReader gives the current catalog (an immutable snapshot).
type CatalogReader interface {
	Catalog() *catalog.Catalog
}

// Store is the part of the block store the engine reads.
type Store interface {
	checks.Store
	Points(ctx context.Context, volume string) ([]blockstore.Point, error)
}

// Options configure an Engine. Name, Site, DataDir, Catalog and Propose
// are required.
type Options struct {
	Name    mesh.NodeID
	Site    mesh.Site
	DataDir string            // evidence in DataDir/verify
	Store   *blockstore.Store // nil on a witness: the engine then does nothing
	Catalog CatalogReader
	// Propose writes a command to the catalog and returns once it is
	// applied on this node.
	Propose   func(context.Context, *catalog.Command) error
	Interval  time.Duration       // how often due points are looked for; 0 = 1m
	HooksUser string              // the user verify hooks run as; "" = the node's own
	HookCred  *syscall.Credential // its credential
	Clock     clock.Clock         // nil = the real clock
	Logs      *logpolicy.Repeats  // failures that repeat; nil = one of its own
	Logger    *slog.Logger
}

// Engine verifies points on one node.
type Engine struct {
	o      Options
	store  Store // nil on a witness
	log    *slog.Logger
	checks *checks.Runner
}

// New returns an Engine.
func New(o Options) *Engine {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.Clock = clock.Or(o.Clock)
	if o.Interval <= 0 {
		o.Interval = time.Minute
	}
	if o.Logs == nil {
		o.Logs = logpolicy.New(logpolicy.Options{Log: o.Logger, Now: o.Clock.Now})
	}
	e := &Engine{o: o, log: o.Logger}
	if o.Store != nil {
		e.store = o.Store
	}
	e.checks = checks.New(checks.Options{HooksUser: o.HooksUser, HookCred: o.HookCred, Clock: o.Clock, Logger: o.Logger})
	return e
}

// Run verifies due points every Interval, and when a new policy or a
// new holder applies, until ctx ends.
func (e *Engine) Run(ctx context.Context) error {
	if e.store == nil {
		<-ctx.Done()
		return nil
	}
	type viewer interface {
		View() (*catalog.Catalog, <-chan struct{})
	}
	v, _ := e.o.Catalog.(viewer)
	for {
		e.Pass(ctx)
		tick := e.o.Clock.After(e.o.Interval)
		seen := e.whose(e.o.Catalog.Catalog())
	wait:
		for {
			var changed <-chan struct{}
			var cat *catalog.Catalog
			if v != nil {
				cat, changed = v.View()
				if e.whose(cat) != seen {
					break wait
				}
			}
			select {
			case <-ctx.Done():
				return nil
			case <-tick:
				break wait
			case <-changed:
			}
		}
	}
}

// whose sums up what decides the work: the policy's version, which
// services this node verifies, and the newest point here of those never
// verified yet.
func (e *Engine) whose(cat *catalog.Catalog) string {
	pc := cat.PolicyCluster()
	if pc == nil {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d", cat.Policy.Version)
	for _, p := range pc.Services {
		if svc := cat.Service(p.Name); svc != nil && len(svc.Verify.Checks) > 0 && Verifier(cat, svc) == e.o.Name {
			b.WriteString(" " + p.Name)
			// Until its first verification, a service's new points
			// count too: the first one is verified when it arrives.
			if st := cat.Services[p.Name]; st != nil && st.LastVerified() == nil {
				b.WriteString("@" + st.Watermarks[string(e.o.Site)].Point)
			}
		}
	}
	return b.String()
}

// Verifier returns the node that verifies service's points: the holder
// at the first recovery site (in policy order) that has one, else the
// primary site's holder; "" when none.
func Verifier(cat *catalog.Catalog, svc *config.Service) mesh.NodeID {
	for _, c := range svc.Copies {
		if h := cat.Holder(svc.Name, c.Site); h != "" {
			return h
		}
	}
	return cat.Holder(svc.Name, svc.Primary)
}

// Pass verifies every point due now on this node and returns the
// verifications it recorded.
func (e *Engine) Pass(ctx context.Context) []catalog.PointMark {
	if e.store == nil {
		return nil
	}
	cat := e.o.Catalog.Catalog()
	pc := cat.PolicyCluster()
	if pc == nil {
		return nil
	}
	var pts []blockstore.Point
	var out []catalog.PointMark
	for _, p := range pc.Services {
		svc := cat.Service(p.Name)
		if svc == nil || len(svc.Verify.Checks) == 0 || Verifier(cat, svc) != e.o.Name {
			continue
		}
		if pts == nil {
			var err error
			if pts, err = e.store.Points(ctx, ""); err != nil {
				e.o.Logs.Fail("verify/points", "verify: list points", err, "")
				return out
			}
			e.o.Logs.OK("verify/points")
		}
		newest := newestOf(pts, svc.Name)
		if newest == nil || !e.due(cat.Services[svc.Name], svc, newest.ID) {
			continue
		}
		if ctx.Err() != nil {
			return out
		}
		if m, err := e.Verify(ctx, svc, *newest); err == nil {
			out = append(out, m)
		}
	}
	return out
}

// due says whether service's newest point id is to be verified now.
func (e *Engine) due(st *catalog.ServiceState, svc *config.Service, id string) bool {
	if m, ok := st.Mark(id); ok && m.Verified != nil && m.Verified.Result == catalog.VerifyOK {
		return false
	}
	last := st.LastVerified()
	return last == nil || e.o.Clock.Now().Sub(last.Verified.At) >= time.Duration(svc.Verify.Every)
}

func newestOf(pts []blockstore.Point, service string) *blockstore.Point {
	var newest *blockstore.Point
	for i := range pts {
		if p := &pts[i]; p.Group == service && (newest == nil || p.Time.After(newest.Time)) {
			newest = p
		}
	}
	return newest
}

// Verify restores point p of svc, checks it, records the result in the
// catalog and returns the mark recorded.
func (e *Engine) Verify(ctx context.Context, svc *config.Service, p blockstore.Point) (catalog.PointMark, error) {
	tmp := filepath.Join(e.o.DataDir, "verify", ".tmp", svc.Name)
	t0 := e.o.Clock.Now()
	var v *catalog.Verification
	if why := roomFor(e.o.DataDir, p); why != "" {
		// The restore would eat the disk the store and the ingest need:
		// not checked, and said so.
		v = &catalog.Verification{Result: catalog.VerifySkipped, Site: string(e.o.Site), At: e.o.Clock.Now().UTC(),
			Checks: []catalog.CheckResult{{Name: "restore", Result: catalog.VerifySkipped, Detail: why}}}
		return e.record(ctx, svc, p, v, t0)
	}
	images, err := checks.Restore(ctx, e.store, p, tmp)
	defer os.RemoveAll(tmp)
	if err != nil {
		if ctx.Err() != nil {
			return catalog.PointMark{}, ctx.Err()
		}
		// A point that does not restore is not verified: that is a
		// finding, not an error of the engine.
		v = &catalog.Verification{Result: catalog.VerifyFailed, Site: string(e.o.Site), At: e.o.Clock.Now().UTC(),
			Checks: []catalog.CheckResult{{Name: "restore", Result: catalog.VerifyFailed, Detail: err.Error()}}}
	} else {
		v = e.checks.Run(ctx, checks.Request{Service: svc, Site: string(e.o.Site), Point: p.ID, PointTime: p.Time,
			Images: images, Evidence: checks.EvidenceDir(e.o.DataDir, svc.Name, p.ID)})
	}
	if ctx.Err() != nil {
		return catalog.PointMark{}, ctx.Err()
	}
	os.RemoveAll(tmp)
	return e.record(ctx, svc, p, v, t0)
}

// record puts verification v of point p into the catalog and logs it.
func (e *Engine) record(ctx context.Context, svc *config.Service, p blockstore.Point, v *catalog.Verification, t0 time.Time) (catalog.PointMark, error) {
	log := e.log.With("service", svc.Name, "point", p.ID)
	key := "verify/" + svc.Name
	m := catalog.PointMark{Service: svc.Name, Point: p.ID, Time: p.Time, Verified: v}
	if err := e.o.Propose(context.WithoutCancel(ctx), &catalog.Command{Op: catalog.OpMarks, Marks: []catalog.PointMark{m}}); err != nil {
		e.o.Logs.Fail(key+"/record", "verify: the result could not go into the catalog", err, "the node retries at its next pass", "service", svc.Name)
		return m, err
	}
	e.o.Logs.OK(key + "/record")
	took := e.o.Clock.Now().Sub(t0).Round(time.Millisecond)
	switch v.Result {
	case catalog.VerifyFailed:
		e.o.Logs.Fail(key, "verified point: a check failed", errors.New(checks.Failed(v)),
			"the point may not restore: see the evidence, and drill or fail over to an older point that passed", "service", svc.Name, "point", p.ID)
	default:
		e.o.Logs.OK(key)
		log.Info("verified point", "result", v.Result, "took", took)
	}
	e.pruneEvidence(svc.Name)
	return m, nil
}

// pruneEvidence removes all but the newest keepEvidence evidence
// directories of service.
func (e *Engine) pruneEvidence(service string) {
	dir := filepath.Join(e.o.DataDir, "verify", service)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	type aged struct {
		name string
		t    time.Time
	}
	var ds []aged
	for _, ent := range ents {
		if fi, err := ent.Info(); err == nil && ent.IsDir() {
			ds = append(ds, aged{ent.Name(), fi.ModTime()})
		}
	}
	slices.SortFunc(ds, func(a, b aged) int { return cmp.Compare(b.t.UnixNano(), a.t.UnixNano()) })
	for _, d := range ds[min(keepEvidence, len(ds)):] {
		os.RemoveAll(filepath.Join(dir, d.name))
	}
}

// minFreeAfter is the share of DATA_DIR's file system a verification's
// restore leaves free: above ingest's 5% refusal mark, with room.
const minFreeAfter = 0.10

// roomFor says why p's data does not fit in dataDir's file system with
// minFreeAfter left free, or "".
func roomFor(dataDir string, p blockstore.Point) string {
	var need int64
	for _, v := range p.Volumes {
		need += v.Used * int64(v.BlockSize)
	}
	free, size, err := blockstore.DiskSpace(dataDir)
	if err != nil || size <= 0 {
		return ""
	}
	if float64(free-need) < minFreeAfter*float64(size) {
		return fmt.Sprintf("not enough free space in %s to restore the point for its checks: %d MiB of data, %d MiB free of %d MiB (%.0f%% must stay free)",
			dataDir, need>>20, free>>20, size>>20, 100*minFreeAfter)
	}
	return ""
}
