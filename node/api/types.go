// Package api is the admin API of a node as its callers see it: the
// request, reply and event types, the error codes, and the Client that the
// CLI and other nodes use. The server side is the node's.
package api

import (
	"fmt"
	"strings"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// NodeStatus is one node in Status.
type NodeStatus struct {
	Name  mesh.NodeID `json:"name"`
	Site  mesh.Site   `json:"site"`
	Role  string      `json:"role"`
	State string      `json:"state"` // alive, suspect, dead or left
	Voter bool        `json:"voter"`
	Raft  string      `json:"raft"` // voter, nonvoter or none
	QUIC  string      `json:"quic,omitempty"`
}

// SiteStatus is one site in Status.
type SiteStatus struct {
	Name  mesh.Site `json:"name"`
	Nodes int       `json:"nodes"`
	Alive int       `json:"alive"`
}

// Status is a node's view of the cluster.
type Status struct {
	Node          mesh.NodeID   `json:"node"`
	Site          mesh.Site     `json:"site"`
	RaftState     string        `json:"raft_state"`
	Leader        mesh.NodeID   `json:"leader"`
	Term          uint64        `json:"term"`
	CommitIndex   uint64        `json:"commit_index"`
	AppliedIndex  uint64        `json:"applied_index"`
	LastContact   string        `json:"last_contact"`
	Voters        []mesh.NodeID `json:"voters"`
	PolicyVersion uint64        `json:"policy_version"`
	Sites         []SiteStatus  `json:"sites"`
	Nodes         []NodeStatus  `json:"nodes"`
	// Services: per service, its epoch and the newest point each site
	// holds (the RPO watermarks), as recorded in the catalog.
	Services []ServiceStatus `json:"services"`
	// Space: this node's stores' free space and what the node refuses
	// for it (nil on a witness, which holds no data).
	Space *SpaceStatus `json:"space,omitempty"`
	// Scrub: this node's read-back of its store (nil on a witness).
	Scrub *ScrubStatus `json:"scrub,omitempty"`
}

// SpaceStatus is a node's disk space (issue 15 item 5): each file system
// its data lives on, the worst state of them, and the services whose new
// points it refuses until space is freed.
type SpaceStatus struct {
	State   string       `json:"state"` // ok, low (under 20% free), critical (refusing new points)
	Stores  []StoreSpace `json:"stores"`
	Refused []string     `json:"refused,omitempty"` // services refused new points, sorted
	// RefusedPriority: services of this priority and lower are refused.
	RefusedPriority *int      `json:"refused_priority,omitempty"`
	Detail          string    `json:"detail,omitempty"` // what happens and what to do
	Checked         time.Time `json:"checked,omitzero"`
	Error           string    `json:"error,omitempty"` // the free space could not be read
}

// StoreSpace is one file system holding a node's data.
type StoreSpace struct {
	Path        string  `json:"path"` // the block store, or the data dir when on another file system
	Free        int64   `json:"free_bytes"`
	Size        int64   `json:"size_bytes"`
	FreePercent float64 `json:"free_percent"`
}

// ServiceStatus is one service in Status.
type ServiceStatus struct {
	Name       string                  `json:"name"`
	Epoch      uint64                  `json:"epoch"`
	Primary    string                  `json:"primary,omitempty"`
	RPOTarget  float64                 `json:"rpo_target_seconds,omitempty"`
	Holders    map[string]string       `json:"holders,omitempty"` // by site
	Watermarks []catalog.Watermark     `json:"watermarks"`
	Copies     []CopyStatus            `json:"copies,omitempty"`
	Failover   *catalog.FailoverRecord `json:"failover,omitempty"` // the newest
	Branches   []catalog.Branch        `json:"branches,omitempty"`
	Drill      *catalog.DrillRecord    `json:"drill,omitempty"` // the newest
	// Suspect are the newest points the ransomware signal flagged that
	// nobody cleared (at most 8, oldest first): an alert.
	Suspect []catalog.PointMark `json:"suspect,omitempty"`
	// Verified is the mark of the most recently verified point, with its
	// verification (issue 16).
	Verified *catalog.PointMark `json:"verified,omitempty"`
}

// CopyStatus is a service's copy at one recovery site: its tier, how old
// the newest point there is against the target, what the replicator has
// left to send, and the link's policy now.
type CopyStatus struct {
	Site       string    `json:"site"`
	Tier       string    `json:"tier"`
	Holder     string    `json:"holder,omitempty"`
	Point      string    `json:"point,omitempty"`
	PointTime  time.Time `json:"point_time,omitzero"`
	RPO        float64   `json:"rpo_seconds"`       // age of Point now; -1 = no point yet
	Standby    string    `json:"standby,omitempty"` // hot: the point the standby images are at
	Export     string    `json:"export,omitempty"`  // cold: the point of the newest export
	RPOMet     bool      `json:"rpo_met"`
	Backlog    int64     `json:"backlog_bytes"`
	Sending    string    `json:"sending,omitempty"`
	Error      string    `json:"error,omitempty"`
	LinkRate   float64   `json:"link_rate_bytes_per_second"` // 0 = unlimited
	LinkPolicy string    `json:"link_policy"`
}

// FailoverRequest asks for a failover (or, with DryRun, only its plan).
type FailoverRequest struct {
	Service string `json:"service"`
	Site    string `json:"site,omitempty"` // the site taking over; "" = this node's
	At      string `json:"at,omitempty"`   // "" or "latest", a point ID, or an RFC 3339 time
	Force   bool   `json:"force,omitempty"`
	Planned bool   `json:"planned,omitempty"`
	DryRun  bool   `json:"dry_run,omitempty"`
	By      string `json:"by,omitempty"`
}

// FailoverPlan is what a failover will do, shown before it does it.
type FailoverPlan struct {
	Service   string      `json:"service"`
	From      string      `json:"from"`
	To        string      `json:"to"`
	Node      mesh.NodeID `json:"node"`
	Tier      config.Tier `json:"tier"`
	Epoch     uint64      `json:"epoch"` // the epoch it will start
	Point     string      `json:"point,omitempty"`
	PointTime time.Time   `json:"point_time,omitzero"`
	// PrimaryNewest is the newest point the catalog knows at From; RPO is
	// the data this failover loses, PrimaryNewest minus PointTime.
	PrimaryNewest time.Time    `json:"primary_newest,omitzero"`
	RPO           float64      `json:"rpo_seconds"`
	PointAge      float64      `json:"point_age_seconds"` // at the failover's start
	RPOTarget     float64      `json:"rpo_target_seconds"`
	Images        []PlanImage  `json:"images"`
	Hooks         config.Hooks `json:"hooks"`
	Planned       bool         `json:"planned,omitempty"`
	NeedForce     bool         `json:"need_force,omitempty"` // no Raft quorum: the catalog is recovered first
	Resume        bool         `json:"resume,omitempty"`     // an interrupted failover is finished
	// Chosen says how the point was chosen: "newest worth having" (the
	// default: newer points that are suspect, after a suspect point,
	// damaged here or, where required, not verified are passed over and
	// listed in PassedOver), "--at", "resume" or "final".
	Chosen     string        `json:"chosen,omitempty"`
	PassedOver []PassedPoint `json:"passed_over,omitempty"`
	Warning    string        `json:"warning,omitempty"` // what is wrong with a point --at named
}

// PointChoice is the point a failover or drill at a node's site would
// take for an --at (GET /v1/points/choose), with what it passed over.
type PointChoice struct {
	Point      string        `json:"point"`
	Time       time.Time     `json:"time"`
	Chosen     string        `json:"chosen"`
	PassedOver []PassedPoint `json:"passed_over,omitempty"`
	Warning    string        `json:"warning,omitempty"`
}

// PassedPoint is a point newer than the one a failover or drill took, and
// why it was passed over. Count > 1 is a run of points with one reason
// (those after one suspect point, After); Point is then the run's oldest.
type PassedPoint struct {
	Point string    `json:"point"`
	Time  time.Time `json:"time"`
	Why   string    `json:"why"`
	After string    `json:"after_suspect,omitempty"`
	Count int       `json:"count"`
}

// PassedText lists passed-over points for plans, drill records and
// errors: "8d0c2a1f (suspect: ...), 3 points from 77aa0b1c on (after
// suspect point 8d0c2a1f)".
func PassedText(passed []PassedPoint) string {
	parts := make([]string, 0, len(passed))
	for _, p := range passed {
		id := p.Point[:min(12, len(p.Point))]
		if p.Count > 1 {
			parts = append(parts, fmt.Sprintf("%d points from %s on (%s)", p.Count, id, p.Why))
		} else {
			parts = append(parts, fmt.Sprintf("%s (%s)", id, p.Why))
		}
	}
	return strings.Join(parts, ", ")
}

// SuspicionText says why the ransomware signal flagged a point:
// "web/disk: 62% of blocks changed, 99% incompressible (baseline 1%, 20%)".
func SuspicionText(s *catalog.Suspicion) string {
	return fmt.Sprintf("%s: %.0f%% of blocks changed, %.0f%% incompressible (baseline %.0f%%, %.0f%%)",
		s.Volume, 100*s.Changed, 100*s.Incompressible, 100*s.BaselineChanged, 100*s.BaselineIncompressible)
}

// PlanImage is one image a failover or drill hands to the hooks.
type PlanImage struct {
	Volume string `json:"volume"` // SERVICE/VOLUME
	Path   string `json:"path"`
	Source string `json:"source"` // "standby" (moved), "store" (materialized), "ready" (made by an earlier run)
	Size   int64  `json:"size"`
}

// FailoverEvent is one line of a failover's progress.
type FailoverEvent struct {
	Step    string                  `json:"step,omitempty"`
	Message string                  `json:"message,omitempty"`
	Done    int64                   `json:"done,omitempty"`
	Total   int64                   `json:"total,omitempty"`
	Plan    *FailoverPlan           `json:"plan,omitempty"`
	Result  *catalog.FailoverRecord `json:"result,omitempty"`
	Drill   *catalog.DrillRecord    `json:"drill,omitempty"`
	Error   string                  `json:"error,omitempty"`
	Code    string                  `json:"code,omitempty"`
}

// NotHolderError says which node must run a failover or drill: the one
// holding the service's points at the site.
type NotHolderError struct {
	Service, Site string
	Holder        mesh.NodeID
	Admin         string // its admin address, "" if unknown
	Msg           string // the message, when it came from the admin API
}

func (e *NotHolderError) Error() string {
	if e.Msg != "" {
		return e.Msg
	}
	if e.Holder == "" {
		return fmt.Sprintf("no node holds service %s at site %s yet", e.Service, e.Site)
	}
	return fmt.Sprintf("service %s at site %s is held by %s (admin %s): run the command there", e.Service, e.Site, e.Holder, e.Admin)
}

// DrillRequest asks for a drill on this node.
type DrillRequest struct {
	Service string `json:"service"`
	At      string `json:"at,omitempty"`   // as for a failover
	Keep    bool   `json:"keep,omitempty"` // leave the images for `drill --cleanup`
	// NBD serves the point's volumes over NBD on loopback with a
	// copy-on-write overlay instead of copying them: instant, and the
	// hook's writes go to the overlay (dropped at the end).
	NBD bool   `json:"nbd,omitempty"`
	By  string `json:"by,omitempty"`
}

// OperatorDrill is the result of a drill whose hook ran on the operator's
// own machine (`lifeboat drill --hook`), against the point read through
// this admin API: the node runs nothing, it only records the result.
type OperatorDrill struct {
	Service     string  `json:"service"`
	Point       string  `json:"point"`
	HookCommand string  `json:"hook_command"`
	HookSeconds float64 `json:"hook_seconds"`
	Passed      bool    `json:"passed"`
	Output      string  `json:"output,omitempty"`
	Error       string  `json:"error,omitempty"`
}

// RevokeRequest asks for certificates to be revoked.
type RevokeRequest struct {
	Certificates []catalog.Revocation `json:"certificates"` // Serial required; Name, Kind, NotAfter for the record
	Reason       string               `json:"reason,omitempty"`
}

// MaxRevoke bounds one request.
const MaxRevoke = 1000
