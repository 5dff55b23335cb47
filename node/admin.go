package node

import (
	"context"

	"github.com/lifeboat-dr/lifeboat/node/internal/admin"
)

// ApplyPolicy validates a cluster policy file and writes it to the catalog.
// A policy that does not validate changes nothing.
// by names who applies it, for the record (in-process callers; the admin
// API uses the caller's certificate).
func (n *Node) ApplyPolicy(ctx context.Context, file string, src []byte, by string) (*PolicyRecord, error) {
	return n.policy.Apply(ctx, file, src, by, "")
}

// adminBackend is the node as the admin API's handlers see it: the
// policy calls take the caller's certificate identity.
type adminBackend struct{ *Node }

func (b adminBackend) ApplyPolicy(ctx context.Context, file string, src []byte, by admin.Caller) (*PolicyRecord, error) {
	return b.policy.Apply(ctx, file, src, by.Who(), by.ID.Serial)
}

func (b adminBackend) ApprovePolicy(ctx context.Context, version uint64, by admin.Caller) (*PolicyRecord, error) {
	return b.policy.Approve(ctx, version, by.Who(), by.ID.Serial)
}
