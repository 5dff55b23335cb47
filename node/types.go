package node

import (
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/raftstore"
)

// The catalog's types, as the node's API hands them out (package catalog
// holds them and the state machine).
type (
	Catalog        = catalog.Catalog
	NodeInfo       = catalog.NodeInfo
	SiteInfo       = catalog.SiteInfo
	PolicyRecord   = catalog.PolicyRecord
	ServiceState   = catalog.ServiceState
	Holder         = catalog.Holder
	Progress       = catalog.Progress
	Watermark      = catalog.Watermark
	RecoveryRecord = catalog.RecoveryRecord
	Revocation     = catalog.Revocation
	Command        = catalog.Command
	FailoverRecord = catalog.FailoverRecord
	Branch         = catalog.Branch
	DrillRecord    = catalog.DrillRecord
	AuditEntry     = catalog.AuditEntry

	// The admin API's own.
	Client          = api.Client
	APIError        = api.APIError
	RemoteImage     = api.RemoteImage
	Status          = api.Status
	NodeStatus      = api.NodeStatus
	SiteStatus      = api.SiteStatus
	ServiceStatus   = api.ServiceStatus
	CopyStatus      = api.CopyStatus
	SpaceStatus     = api.SpaceStatus
	StoreSpace      = api.StoreSpace
	FailoverRequest = api.FailoverRequest
	FailoverPlan    = api.FailoverPlan
	PlanImage       = api.PlanImage
	FailoverEvent   = api.FailoverEvent
	NotHolderError  = api.NotHolderError
	DrillRequest    = api.DrillRequest
	OperatorDrill   = api.OperatorDrill
	RevokeRequest   = api.RevokeRequest
	Image           = api.Image
	LeaveRequest    = api.LeaveRequest
	LeaveResult     = api.LeaveResult
)

// NewClient returns a client for the admin API at addr (see api.NewClient).
var NewClient = api.NewClient

// IsBadRequest reports whether err is the admin API refusing the input.
var IsBadRequest = api.IsBadRequest

// The admin API's errors (see package api).
var (
	ErrNoQuorum    = api.ErrNoQuorum
	ErrNeedForce   = api.ErrNeedForce
	ErrHasLeader   = api.ErrHasLeader
	ErrForbidden   = api.ErrForbidden
	ErrUnreachable = api.ErrUnreachable
	ErrUnsafe      = api.ErrUnsafe
)

// ErrBadCommand reports a catalog command that does not decode or apply.
var ErrBadCommand = catalog.ErrBadCommand

// RaftStateError reports Raft state on disk that this node cannot use; its
// Hint says how to rejoin.
type RaftStateError = raftstore.RaftStateError
