package agent

import (
	"context"
	"errors"
)

// runIntercept is intercept mode (a FUSE file per volume, every write
// spooled in order, flushes as consistency points).
func (a *Agent) runIntercept(ctx context.Context) error {
	return errors.New("intercept mode is not wired to the daemon yet")
}
