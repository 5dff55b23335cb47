// Package revoke is certificate revocation on a node (issue 13): `lifeboat
// ca revoke` puts a certificate's serial into the catalog (op revoke);
// every node then refuses it on new handshakes (mesh.Creds.SetRevoked)
// and closes its open connections, QUIC and admin, as soon as it applies
// the entry (Run).
//
// It never removes a revocation: the catalog keeps every serial it got.
package revoke

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/lifeboat-dr/lifeboat/internal/clock"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// Catalog is the node's catalog as the engine reads it.
type Catalog interface {
	Catalog() *catalog.Catalog
	// View returns the catalog and a channel closed when it changes.
	View() (*catalog.Catalog, <-chan struct{})
}

// Options configure an Engine. Catalog, Propose and Creds are required.
type Options struct {
	Catalog Catalog
	Propose func(ctx context.Context, cmd *catalog.Command) error // writes to the catalog
	// Creds are the node's credentials: new handshakes refuse the serials
	// set there (mesh.Creds).
	Creds interface{ SetRevoked(serials []string) }
	// DropQUIC and DropAdmin close the open connections of revoked peers
	// and say how many they closed; nil = none to close.
	DropQUIC, DropAdmin func() int
	// Sweep is how often connections are checked without a catalog
	// change (the endpoint's cached connections change without entries);
	// 0 = 5s.
	Sweep  time.Duration
	Clock  clock.Clock
	Logger *slog.Logger
}

// Engine applies the catalog's revocations to one node.
type Engine struct {
	o   Options
	log *slog.Logger
}

// New returns an Engine.
func New(o Options) *Engine {
	o.Clock = clock.Or(o.Clock)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Sweep == 0 {
		o.Sweep = 5 * time.Second
	}
	none := func() int { return 0 }
	if o.DropQUIC == nil {
		o.DropQUIC = none
	}
	if o.DropAdmin == nil {
		o.DropAdmin = none
	}
	return &Engine{o: o, log: o.Logger}
}

// Revoke records the certificates of req as revoked by by and returns the
// catalog's records of them. A bad request is catalog.ErrBadCommand.
func (e *Engine) Revoke(ctx context.Context, req api.RevokeRequest, by string) ([]catalog.Revocation, error) {
	if len(req.Certificates) == 0 || len(req.Certificates) > api.MaxRevoke {
		return nil, fmt.Errorf("%w: revoke 1 to %d certificates, not %d", catalog.ErrBadCommand, api.MaxRevoke, len(req.Certificates))
	}
	now := e.o.Clock.Now().UTC()
	recs := make([]catalog.Revocation, 0, len(req.Certificates))
	for _, c := range req.Certificates {
		if c.Serial == "" || len(c.Serial) > 64 || !isHex(c.Serial) {
			return nil, fmt.Errorf("%w: serial %q: want the certificate's serial in hex (lifeboat ca revoke prints it)", catalog.ErrBadCommand, c.Serial)
		}
		c.At, c.By, c.Reason = now, by, req.Reason
		recs = append(recs, c)
	}
	if err := e.o.Propose(ctx, &catalog.Command{Op: catalog.OpRevoke, Revoke: recs}); err != nil {
		return nil, err
	}
	cat := e.o.Catalog.Catalog()
	out := make([]catalog.Revocation, 0, len(recs))
	for _, r := range recs {
		out = append(out, cat.Revoked[r.Serial])
	}
	e.log.Warn("certificates revoked", "serials", len(out), "by", by)
	return out, nil
}

// isHex reports whether s is lowercase hex.
func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Run applies the catalog's revocations to the node's credentials and
// connections whenever they change, and sweeps the connections every
// Sweep, until ctx ends. It starts no goroutines.
func (e *Engine) Run(ctx context.Context) error {
	var have []string
	for {
		c, ch := e.o.Catalog.View()
		serials := c.RevokedSerials()
		if !slices.Equal(serials, have) {
			e.o.Creds.SetRevoked(serials)
			quic, admin := e.o.DropQUIC(), e.o.DropAdmin()
			if len(serials) > len(have) {
				e.log.Info("revocations applied", "revoked", len(serials), "closed_quic", quic, "closed_admin", admin)
			}
			have = serials
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ch:
		case <-e.o.Clock.After(e.o.Sweep):
			e.o.DropQUIC()
			e.o.DropAdmin()
		}
	}
}
