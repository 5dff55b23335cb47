package node

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// Revocation (issue 13): `lifeboat ca revoke` puts a certificate's serial
// into the catalog (op revoke); every node then refuses it on new
// handshakes (mesh.Creds.SetRevoked) and closes its open connections,
// QUIC and admin, as soon as it applies the entry.

// Revoke records the certificates as revoked and returns the catalog's
// records of them.
func (n *Node) Revoke(ctx context.Context, req RevokeRequest, by string) ([]Revocation, error) {
	if len(req.Certificates) == 0 || len(req.Certificates) > api.MaxRevoke {
		return nil, fmt.Errorf("%w: revoke 1 to %d certificates, not %d", ErrBadCommand, api.MaxRevoke, len(req.Certificates))
	}
	now := n.opts.Clock.Now().UTC()
	recs := make([]Revocation, 0, len(req.Certificates))
	for _, c := range req.Certificates {
		if c.Serial == "" || len(c.Serial) > 64 || !isHex(c.Serial) {
			return nil, fmt.Errorf("%w: serial %q: want the certificate's serial in hex (lifeboat ca revoke prints it)", ErrBadCommand, c.Serial)
		}
		c.At, c.By, c.Reason = now, by, req.Reason
		recs = append(recs, c)
	}
	if err := n.Apply(ctx, &Command{Op: catalog.OpRevoke, Revoke: recs}); err != nil {
		return nil, err
	}
	cat := n.Catalog()
	out := make([]Revocation, 0, len(recs))
	for _, r := range recs {
		out = append(out, cat.Revoked[r.Serial])
	}
	n.log.Warn("certificates revoked", "serials", len(out), "by", by)
	return out, nil
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// revocationLoop applies the catalog's revocations to this node's
// credentials and connections whenever they change.
func (n *Node) revocationLoop(ctx context.Context) {
	var have []string
	for {
		c, ch := n.fsm.View()
		serials := c.RevokedSerials()
		if !slices.Equal(serials, have) {
			n.opts.Creds.SetRevoked(serials)
			quic := n.ep.DropRevoked()
			admin := n.adminSrv.DropRevoked()
			if len(serials) > len(have) {
				n.log.Info("revocations applied", "revoked", len(serials), "closed_quic", quic, "closed_admin", admin)
			}
			have = serials
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		case <-time.After(5 * time.Second):
			// The endpoint's cached connections change without catalog
			// entries; sweep now and then.
			n.ep.DropRevoked()
			n.adminSrv.DropRevoked()
		}
	}
}
