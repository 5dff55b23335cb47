package node

import (
	"context"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/node/api"
)

// Failover (DESIGN "Data path" step 4) runs on the holder of the service
// at the site taking over:
//
//  1. pick the point: the newest held, an ID, or the newest at or before
//     a time; a planned failover first has the primary's holder run the
//     stop hook and waits for the agent's point after it, then for that
//     point to arrive here;
//  2. without a Raft quorum, and only with Force, recover the catalog on
//     this node (RecoverRaft);
//  3. make the images: a hot copy's standby images when they are at the
//     point (moved, not copied), else materialized from the store, into
//     DATA_DIR/failover/SERVICE/POINT12/, fsynced, then marked complete;
//  4. start a new epoch in the catalog: the service now runs here, and
//     every node that sees it stops taking the service's writes elsewhere;
//  5. run the start hook, then the health hook until it passes;
//  6. record RPO and RTO in the catalog.
//
// Each step is idempotent, so a failover that was interrupted finishes when
// run again: the catalog holds its record until it is done.

// The recovery engine's calls, as the node's API (in-process callers and
// the admin API use them).

// Failover brings service up at this node's site (see package recovery).
func (n *Node) Failover(ctx context.Context, req FailoverRequest, emit func(FailoverEvent)) (*FailoverRecord, error) {
	return n.recovery.Failover(ctx, req, emit)
}

// Failback makes the site the service last failed over from a warm copy.
func (n *Node) Failback(ctx context.Context, service, by string) (*ServiceState, error) {
	return n.recovery.Failback(ctx, service, by)
}

// Drill brings a copy of service up from a point, isolated, and runs the
// policy's drill hook against it.
func (n *Node) Drill(ctx context.Context, req DrillRequest, emit func(FailoverEvent)) (*DrillRecord, error) {
	return n.recovery.Drill(ctx, req, emit)
}

// CleanupDrills removes the images drills of service kept.
func (n *Node) CleanupDrills(ctx context.Context, service string) ([]DrillRecord, error) {
	return n.recovery.CleanupDrills(ctx, service)
}

// Images lists this node's failover and drill images and whether each
// is in use.
func (n *Node) Images(ctx context.Context) ([]api.Image, error) { return n.recovery.Images(ctx) }

// RemoveImages removes failover and drill images (SERVICE/KIND/NAME), all
// or none; images in use are refused (api.ErrUnsafe).
func (n *Node) RemoveImages(ctx context.Context, refs []string, by string) ([]api.Image, error) {
	return n.recovery.RemoveImages(ctx, refs, by)
}

// RecordDrill records a drill an operator ran on their own machine.
func (n *Node) RecordDrill(ctx context.Context, od OperatorDrill, by string) (*DrillRecord, error) {
	return n.recovery.RecordDrill(ctx, od, by)
}

// Points lists the points this node holds, oldest first: of one service
// when service is set, holding one volume (SERVICE/VOLUME) when volume is.
func (n *Node) Points(ctx context.Context, service, volume string) ([]blockstore.Point, error) {
	return n.recovery.Points(ctx, service, volume)
}

// standbyImages gives the recovery engine the tier engine's hot copies.
type standbyImages struct{ n *Node }

func (s standbyImages) Path(service, volume string) (string, blockstore.Point, bool) {
	return s.n.StandbyPath(service, volume)
}

func (s standbyImages) Take(service string, p blockstore.Point, dst string) (bool, error) {
	return s.n.tiers.Take(service, p, dst)
}

// StandbyPath returns the path of a volume's standby image of service on
// this node and the point it is at; ok is false when there is none.
func (n *Node) StandbyPath(service, volume string) (path string, p blockstore.Point, ok bool) {
	s, err := n.tiers.Set(service)
	if err != nil {
		return "", blockstore.Point{}, false
	}
	p, ok = s.Point()
	if !ok {
		return "", p, false
	}
	return s.Path(volume), p, true
}
