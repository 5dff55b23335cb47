package node

import "context"

// Revoke records the certificates as revoked and returns the catalog's
// records of them; every node then refuses them and closes their
// connections (node/internal/revoke).
func (n *Node) Revoke(ctx context.Context, req RevokeRequest, by string) ([]Revocation, error) {
	return n.revoker.Revoke(ctx, req, by)
}
