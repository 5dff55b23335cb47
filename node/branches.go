package node

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
// them: nodes prune no points.

// branchNote is the catalog note saying up to which epoch a node has
// checked a service for divergent points.
func branchNote(service string, node string) string { return "branch-checked/" + service + "/" + node }

// branchCheckDue returns the failover away from this site that this node
// has not yet checked for divergent points of service, or nil.
func (n *Node) branchCheckDue(cat *Catalog, service string) *FailoverRecord {
	st := cat.Services[service]
	if st == nil {
		return nil
	}
	var due *FailoverRecord
	for i := range st.Failovers {
		if f := &st.Failovers[i]; f.From == string(n.opts.Site) {
			due = f
		}
	}
	if due == nil {
		return nil
	}
	if done, _ := strconv.ParseUint(cat.Notes[branchNote(service, string(n.opts.Name))], 10, 64); done >= due.Epoch {
		return nil
	}
	return due
}

// checkBranches records the divergent points of every service that failed
// over away from this site, once per failover.
func (n *Node) checkBranches(ctx context.Context) {
	if n.store == nil {
		return
	}
	due := map[string]FailoverRecord{}
	cat := n.Catalog()
	for name := range cat.Services {
		if f := n.branchCheckDue(cat, name); f != nil {
			due[name] = *f
		}
	}
	if len(due) == 0 || !n.hasQuorum() {
		return
	}
	for name, f := range due {
		if err := n.recordBranch(ctx, name, &f); err != nil {
			n.log.Warn("divergent points check", "service", name, "err", err)
		}
	}
}

func (n *Node) recordBranch(ctx context.Context, service string, f *FailoverRecord) error {
	pts, err := n.Points(ctx, service, "")
	if err != nil {
		return err
	}
	b := &Branch{Name: fmt.Sprintf("%s@%s-epoch%d", service, n.opts.Site, f.Epoch-1), Service: service, Site: string(n.opts.Site),
		Node: n.opts.Name, Epoch: f.Epoch - 1, Found: n.opts.Now().UTC()}
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
		if err := n.Apply(ctx, &Command{Op: catalog.OpBranch, Branch: b}); err != nil {
			return err
		}
		n.log.Warn("divergent branch kept: points taken here after the service failed over", "service", service, "branch", b.Name,
			"points", len(b.Points), "first", b.First.Format(time.RFC3339), "last", b.Last.Format(time.RFC3339))
	}
	return n.Apply(ctx, &Command{Op: catalog.OpNote, Key: branchNote(service, string(n.opts.Name)), Value: strconv.FormatUint(f.Epoch, 10)})
}
