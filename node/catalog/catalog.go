package catalog

import (
	"maps"
	"slices"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/mesh"
)

// Catalog is the cluster state that Raft replicates: the nodes, the applied
// cluster policy, per-service epochs and RPO watermarks, and the record of
// forced recoveries. It stays small: points live in the holders' stores.
type Catalog struct {
	Nodes      map[mesh.NodeID]NodeInfo `json:"nodes"`
	Policy     *PolicyRecord            `json:"policy,omitempty"`
	Services   map[string]*ServiceState `json:"services"`
	Recoveries []RecoveryRecord         `json:"recoveries,omitempty"`
	Notes      map[string]string        `json:"notes,omitempty"`
	Sites      map[mesh.Site]SiteInfo   `json:"sites"`
	// Revoked lists the certificates no node accepts, by serial.
	Revoked map[string]Revocation `json:"revoked,omitempty"`
	// PendingPolicy is a policy that waits for a second admin's approval
	// (policy approvals = 2 and it changes a hook or shortens a lock).
	PendingPolicy *PolicyRecord `json:"pending_policy,omitempty"`
	Index         uint64        `json:"index"` // last applied Raft index

	owned map[string]bool // while a command applies: the services copied to change
}

// Revocation records a revoked certificate.
type Revocation struct {
	Serial   string    `json:"serial"`
	Name     string    `json:"name,omitempty"`
	Kind     string    `json:"kind,omitempty"`
	NotAfter time.Time `json:"not_after,omitzero"` // the certificate's own end: after it the entry may go
	At       time.Time `json:"at"`
	By       string    `json:"by"`
	Reason   string    `json:"reason,omitempty"`
}

// policyCluster returns the applied policy, or nil.
func (c *Catalog) PolicyCluster() *config.Cluster {
	if c.Policy == nil {
		return nil
	}
	return c.Policy.Cluster
}

// revokedSerials lists the revoked serials.
func (c *Catalog) RevokedSerials() []string {
	return slices.Sorted(maps.Keys(c.Revoked))
}

// NodeInfo is what the catalog knows of a node, registered by the leader
// when the node first appears in the membership.
type NodeInfo struct {
	Name   mesh.NodeID `json:"name"`
	Site   mesh.Site   `json:"site"`
	Role   string      `json:"role"`
	QUIC   string      `json:"quic"`
	Gossip string      `json:"gossip"`
	Admin  string      `json:"admin,omitempty"`
	Added  time.Time   `json:"added"`
}

// SiteInfo is a site seen in the cluster: from its nodes or from the policy.
type SiteInfo struct {
	Name  mesh.Site     `json:"name"`
	Nodes []mesh.NodeID `json:"nodes"`
}

// PolicyRecord is an applied cluster policy. Version counts applies from 1.
type PolicyRecord struct {
	Version   uint64          `json:"version"`
	File      string          `json:"file"`
	Source    string          `json:"source"`
	Cluster   *config.Cluster `json:"cluster"`
	AppliedAt time.Time       `json:"applied_at"`
	AppliedBy string          `json:"applied_by"`
	// AppliedBySerial is the proposer's certificate serial.
	AppliedBySerial string `json:"applied_by_serial,omitempty"`
	// ApprovedBy is the second admin of a four-eyes apply.
	ApprovedBy string `json:"approved_by,omitempty"`
	// Changes lists the hook and lock changes that needed approval.
	Changes []string `json:"changes,omitempty"`
}

// ServiceState is the catalog's per-service record.
type ServiceState struct {
	Epoch      uint64                 `json:"epoch"`
	Watermarks map[string]Watermark   `json:"watermarks,omitempty"` // by site
	Holders    map[string]mesh.NodeID `json:"holders,omitempty"`    // by site: the node keeping the service's points there
	Progress   map[string]Progress    `json:"progress,omitempty"`   // by recovery site: the replicator's last report
	// Active is the site the service runs at after a failover; "" means
	// the policy's primary. Epoch counts failovers from 1.
	Active string `json:"active,omitempty"`
	// Reprotect makes the site the service last failed over from a warm
	// copy again: the way back (failback).
	Reprotect bool             `json:"reprotect,omitempty"`
	Failovers []FailoverRecord `json:"failovers,omitempty"` // newest last
	Branches  []Branch         `json:"branches,omitempty"`  // divergent points kept at returning sites
	Drills    []DrillRecord    `json:"drills,omitempty"`    // newest last
	Marks     []PointMark      `json:"marks,omitempty"`     // suspect, damaged and verified points, oldest first
}

// Holder assigns a service's copy at a site to a node.
type Holder struct {
	Service string      `json:"service"`
	Site    string      `json:"site"`
	Node    mesh.NodeID `json:"node"` // "" = none
}

// Progress is what a service's replicator to one recovery site last
// reported: the point it is sending and how much of it is left.
type Progress struct {
	Service string      `json:"service"`
	Site    string      `json:"site"`
	From    mesh.NodeID `json:"from"`
	Sending string      `json:"sending,omitempty"` // point ID; "" = idle
	Backlog int64       `json:"backlog_bytes"`     // changed bytes not yet at the site
	Error   string      `json:"error,omitempty"`
	At      time.Time   `json:"at"`
}

// Watermark is the newest consistency point a site holds for a service.
type Watermark struct {
	Service string      `json:"service"`
	Site    string      `json:"site"`
	Node    mesh.NodeID `json:"node,omitempty"` // the holder
	Point   string      `json:"point"`
	Time    time.Time   `json:"time"`
	Size    int64       `json:"size"` // logical bytes of the service's volumes
	// Hot copies: the point the standby images are at. Cold copies: the
	// point of the newest export in the site's archive directory.
	Standby     string    `json:"standby,omitempty"`
	StandbyTime time.Time `json:"standby_time,omitzero"`
	Export      string    `json:"export,omitempty"`
	ExportTime  time.Time `json:"export_time,omitzero"`
}

// RecoveryRecord logs an operator-forced Raft recovery: who, when, where, and
// the voters before and after.
type RecoveryRecord struct {
	By     string        `json:"by"`
	At     time.Time     `json:"at"`
	Node   mesh.NodeID   `json:"node"`
	Before []mesh.NodeID `json:"voters_before"`
	After  []mesh.NodeID `json:"voters_after"`
}

// sortedNodes returns the catalog's node names in order.
func (c *Catalog) SortedNodes() []mesh.NodeID {
	return slices.Sorted(maps.Keys(c.Nodes))
}
