package node

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/admin"
)

// ApplyPolicy validates a cluster policy file and writes it to the catalog.
// A policy that does not validate changes nothing.
// by names who applies it, for the record (in-process callers; the admin
// API uses the caller's certificate).
func (n *Node) ApplyPolicy(ctx context.Context, file string, src []byte, by string) (*PolicyRecord, error) {
	return n.applyPolicy(ctx, file, src, admin.Caller{ID: mesh.Identity{Name: mesh.NodeID(by)}, OK: true})
}

func (n *Node) applyPolicy(ctx context.Context, file string, src []byte, by admin.Caller) (*PolicyRecord, error) {
	c, err := config.ParseCluster(file, src)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", api.ErrBadPolicy, err)
	}
	if err := n.checkEncryption(c); err != nil {
		return nil, fmt.Errorf("%w: %w", api.ErrBadPolicy, err)
	}
	rec := &PolicyRecord{File: file, Source: string(src), Cluster: c, AppliedAt: n.opts.Now().UTC(), AppliedBy: by.Who(), AppliedBySerial: by.ID.Serial}
	cat := n.Catalog()
	if changes := sensitiveChanges(cat.PolicyCluster(), c); len(changes) > 0 && needsApprovals(cat.PolicyCluster(), c) > 1 {
		rec.Changes = changes
		if err := n.Apply(ctx, &Command{Op: catalog.OpPolicyPropose, Policy: rec}); err != nil {
			return nil, err
		}
		p := n.Catalog().PendingPolicy
		admin.Note(ctx, "pending", fmt.Sprintf("policy %s v%d waits for a second admin: %s", file, p.Version, strings.Join(changes, "; ")))
		n.log.Warn("cluster policy waits for a second admin's approval", "file", file, "by", by.Who(), "version", p.Version, "changes", strings.Join(changes, "; "))
		return p, nil
	}
	if err := n.Apply(ctx, &Command{Op: catalog.OpPolicy, Policy: rec}); err != nil {
		return nil, err
	}
	n.log.Info("cluster policy applied", "file", file, "by", by.Who())
	p := n.Catalog().Policy
	if p == nil {
		return rec, nil
	}
	return p, nil
}

// checkEncryption refuses a policy that asks a site to keep its stores
// encrypted while a node of that site (as gossip sees it now) keeps a plain
// one: the policy would promise what the disks do not do.
func (n *Node) checkEncryption(c *config.Cluster) error {
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
	for _, m := range n.gossip.Members() {
		if m.State == mesh.StateAlive && m.Meta.Role == RoleNode && want[m.Meta.Site] && !m.Meta.Encrypted {
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

// ApprovePolicy applies the pending policy with that version, approved by
// an admin other than the one who proposed it.
func (n *Node) ApprovePolicy(ctx context.Context, version uint64, by admin.Caller) (*PolicyRecord, error) {
	p := n.Catalog().PendingPolicy
	switch {
	case p == nil:
		return nil, fmt.Errorf("%w: no policy waits for approval", ErrBadCommand)
	case p.Version != version:
		return nil, fmt.Errorf("%w: the pending policy is version %d, not %d", ErrBadCommand, p.Version, version)
	case p.AppliedBy == by.Who() || (p.AppliedBySerial != "" && p.AppliedBySerial == by.ID.Serial):
		return nil, fmt.Errorf("%w: %s proposed policy v%d: a different admin must approve it", ErrBadCommand, by.Who(), version)
	}
	rec := *p
	rec.ApprovedBy = by.Who()
	if err := n.Apply(ctx, &Command{Op: catalog.OpPolicy, Policy: &rec}); err != nil {
		return nil, err
	}
	n.log.Info("cluster policy approved and applied", "file", rec.File, "by", rec.AppliedBy, "approved_by", by.Who())
	return n.Catalog().Policy, nil
}

// adminBackend is the node as the admin API's handlers see it: the
// policy calls take the caller's certificate identity.
type adminBackend struct{ *Node }

func (b adminBackend) ApplyPolicy(ctx context.Context, file string, src []byte, by admin.Caller) (*PolicyRecord, error) {
	return b.applyPolicy(ctx, file, src, by)
}
