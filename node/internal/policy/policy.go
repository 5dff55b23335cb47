// Package policy applies cluster policies to the catalog: it validates
// them, refuses what the nodes cannot do (encryption a site's stores do
// not have), and holds changes to hooks and locks for a second admin when
// the policy asks for four eyes (approvals.go).
package policy

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/internal/clock"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// CatalogReader gives the current catalog (an immutable snapshot).
type CatalogReader interface {
	Catalog() *catalog.Catalog
}

// Options configure an Engine; Note and Logger may be nil.
type Options struct {
	Catalog CatalogReader
	// Propose writes a command to the catalog and returns once it is
	// applied on this node.
	Propose func(context.Context, *catalog.Command) error
	// Members is the gossip membership as this node sees it now.
	Members func() []mesh.Member
	Clock   clock.Clock // nil = the real clock
	// Note adds a result and a detail to the audit entry of the request
	// in ctx, if any.
	Note   func(ctx context.Context, result, detail string)
	Logger *slog.Logger
}

// Engine applies and approves policies.
type Engine struct {
	o   Options
	log *slog.Logger
}

// New returns an Engine.
func New(o Options) *Engine {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Note == nil {
		o.Note = func(context.Context, string, string) {}
	}
	o.Clock = clock.Or(o.Clock)
	return &Engine{o: o, log: o.Logger}
}

// Apply validates a cluster policy file and writes it to the catalog, or
// holds it for a second admin; who and serial name the proposer. A policy
// that does not validate changes nothing.
func (e *Engine) Apply(ctx context.Context, file string, src []byte, who, serial string) (*catalog.PolicyRecord, error) {
	c, err := config.ParseCluster(file, src)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", api.ErrBadPolicy, err)
	}
	if err := e.checkEncryption(c); err != nil {
		return nil, fmt.Errorf("%w: %w", api.ErrBadPolicy, err)
	}
	rec := &catalog.PolicyRecord{File: file, Source: string(src), Cluster: c, AppliedAt: e.o.Clock.Now().UTC(), AppliedBy: who, AppliedBySerial: serial}
	cat := e.o.Catalog.Catalog()
	if changes := sensitiveChanges(cat.PolicyCluster(), c); len(changes) > 0 && needsApprovals(cat.PolicyCluster(), c) > 1 {
		rec.Changes = changes
		if err := e.o.Propose(ctx, &catalog.Command{Op: catalog.OpPolicyPropose, Policy: rec}); err != nil {
			return nil, err
		}
		p := e.o.Catalog.Catalog().PendingPolicy
		e.o.Note(ctx, "pending", fmt.Sprintf("policy %s v%d waits for a second admin: %s", file, p.Version, strings.Join(changes, "; ")))
		e.log.Warn("cluster policy waits for a second admin's approval", "file", file, "by", who, "version", p.Version, "changes", strings.Join(changes, "; "))
		return p, nil
	}
	if err := e.o.Propose(ctx, &catalog.Command{Op: catalog.OpPolicy, Policy: rec}); err != nil {
		return nil, err
	}
	e.log.Info("cluster policy applied", "file", file, "by", who)
	p := e.o.Catalog.Catalog().Policy
	if p == nil {
		return rec, nil
	}
	return p, nil
}

// checkEncryption refuses a policy that asks a site to keep its stores
// encrypted while a node of that site (as gossip sees it now) keeps a plain
// one: the policy would promise what the disks do not do.
func (e *Engine) checkEncryption(c *config.Cluster) error {
	want := map[mesh.Site]bool{}
	for _, s := range c.Sites {
		if s.Encrypt {
			want[mesh.Site(s.Name)] = true
		}
	}
	if len(want) == 0 {
		return nil
	}
	var plain []string
	for _, m := range e.o.Members() {
		if m.State == mesh.StateAlive && m.Meta.Role == "node" && want[m.Meta.Site] && !m.Meta.Encrypted {
			plain = append(plain, fmt.Sprintf("%s (site %s)", m.Name, m.Meta.Site))
		}
	}
	if len(plain) == 0 {
		return nil
	}
	slices.Sort(plain)
	return fmt.Errorf("encrypt = true, but these nodes keep unencrypted block stores: %s. "+
		"Give each an [encryption] kek_file or kek_command in its node file and a new, empty data dir "+
		"(a store is encrypted when it is created), or leave encrypt off for the site", strings.Join(plain, ", "))
}

// Approve applies the pending policy with that version, approved by
// an admin other than the one who proposed it.
func (e *Engine) Approve(ctx context.Context, version uint64, who, serial string) (*catalog.PolicyRecord, error) {
	p := e.o.Catalog.Catalog().PendingPolicy
	switch {
	case p == nil:
		return nil, fmt.Errorf("%w: no policy waits for approval", catalog.ErrBadCommand)
	case p.Version != version:
		return nil, fmt.Errorf("%w: the pending policy is version %d, not %d", catalog.ErrBadCommand, p.Version, version)
	case p.AppliedBy == who || (p.AppliedBySerial != "" && p.AppliedBySerial == serial):
		return nil, fmt.Errorf("%w: %s proposed policy v%d: a different admin must approve it", catalog.ErrBadCommand, who, version)
	}
	rec := *p
	rec.ApprovedBy = who
	if err := e.o.Propose(ctx, &catalog.Command{Op: catalog.OpPolicy, Policy: &rec}); err != nil {
		return nil, err
	}
	e.log.Info("cluster policy approved and applied", "file", rec.File, "by", rec.AppliedBy, "approved_by", who)
	return e.o.Catalog.Catalog().Policy, nil
}
