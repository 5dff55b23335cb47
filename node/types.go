package node

import (
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
)

// ErrBadCommand reports a catalog command that does not decode or apply.
var ErrBadCommand = catalog.ErrBadCommand

// RaftStateError reports Raft state on disk that this node cannot use; its
// Hint says how to rejoin.
type RaftStateError = raftstore.RaftStateError
