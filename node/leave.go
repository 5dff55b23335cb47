package node

import (
	"context"

	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/internal/leave"
)

// Retiring a node (`lifeboat node leave`) is the engine in
// node/internal/leave: checked while the admin request waits, carried out
// in Run's group after the answer is sent; Run then ends.

// ErrLeft reports a node that left the cluster (node leave) started again
// on its old data dir.
var ErrLeft = leave.ErrLeft

// Leave checks whether the node may leave; unless the request is a dry
// run, start (called once the answer is sent) begins the leave.
func (b adminBackend) Leave(ctx context.Context, req api.LeaveRequest, by string) (*api.LeaveResult, func(), error) {
	return b.leaver.Leave(ctx, req, by)
}
