package recovery

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// A site that comes back after its service failed over elsewhere may hold
// points the new primary never got: writes it took during the split. The
// service's holder there lists them as a named branch in the catalog before
// it accepts any replicated point of the service (so that the branch is
// exactly the points taken here after the failover point). Nothing deletes
// them: the lifecycle engine pins a branch's points ("pinned: branch NAME").

// branchNote is the catalog note saying up to which epoch a node has
// checked a service for divergent points.
func branchNote(service string, node string) string { return "branch-checked/" + service + "/" + node }

// BranchCheckDue returns the failover away from this site that this node
// has not yet checked for divergent points of service, or nil.
func (e *Engine) BranchCheckDue(cat *catalog.Catalog, service string) *catalog.FailoverRecord {
	st := cat.Services[service]
	if st == nil {
		return nil
	}
	var due *catalog.FailoverRecord
	for i := range st.Failovers {
		if f := &st.Failovers[i]; f.From == string(e.o.Site) {
			due = f
		}
	}
	if due == nil {
		return nil
	}
	if done, _ := strconv.ParseUint(cat.Notes[branchNote(service, string(e.o.Name))], 10, 64); done >= due.Epoch {
		return nil
	}
	return due
}

// CheckBranches records the divergent points of every service that failed
// over away from this site, once per failover.
func (e *Engine) CheckBranches(ctx context.Context) {
	if e.o.Store == nil {
		return
	}
	due := map[string]catalog.FailoverRecord{}
	cat := e.o.Catalog.Catalog()
	for name := range cat.Services {
		if f := e.BranchCheckDue(cat, name); f != nil {
			due[name] = *f
		}
	}
	if len(due) == 0 || !e.o.Quorum() {
		return
	}
	for name, f := range due {
		if err := e.recordBranch(ctx, name, &f); err != nil {
			e.log.Warn("divergent points check", "service", name, "err", err)
		}
	}
}

func (e *Engine) recordBranch(ctx context.Context, service string, f *catalog.FailoverRecord) error {
	pts, err := e.Points(ctx, service, "")
	if err != nil {
		return err
	}
	b := &catalog.Branch{Name: fmt.Sprintf("%s@%s-epoch%d", service, e.o.Site, f.Epoch-1), Service: service, Site: string(e.o.Site),
		Node: e.o.Name, Epoch: f.Epoch - 1, Found: e.o.Clock.Now().UTC()}
	for _, p := range pts {
		if !p.Time.After(f.PointTime) {
			continue
		}
		b.Points = append(b.Points, p.ID)
		if b.First.IsZero() || p.Time.Before(b.First) {
			b.First = p.Time
		}
		if p.Time.After(b.Last) {
			b.Last = p.Time
		}
	}
	if len(b.Points) > 0 {
		if err := e.o.Propose(ctx, &catalog.Command{Op: catalog.OpBranch, Branch: b}); err != nil {
			return err
		}
		e.log.Warn("divergent branch kept: points taken here after the service failed over", "service", service, "branch", b.Name,
			"points", len(b.Points), "first", b.First.Format(time.RFC3339), "last", b.Last.Format(time.RFC3339))
	}
	return e.o.Propose(ctx, &catalog.Command{Op: catalog.OpNote, Key: branchNote(service, string(e.o.Name)), Value: strconv.FormatUint(f.Epoch, 10)})
}
