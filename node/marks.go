package node

import (
	"context"

	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/internal/admin"
)

// The admin API's point marks routes (issue 16) take the node as an
// admin.MarksBackend: Apply from Node, the choice of point from the
// recovery engine.
var _ admin.MarksBackend = adminBackend{}

// ChoosePoint is the point a failover or drill here takes for at.
func (b adminBackend) ChoosePoint(ctx context.Context, service, at string) (api.PointChoice, error) {
	return b.recovery.ChoosePoint(ctx, service, at)
}
