package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/lifeboat-dr/lifeboat/mesh"
)

// Command ops. A command is one Raft log entry: a version byte, then JSON.
const (
	OpNodeUpsert    = "node_upsert"
	OpNodeRemove    = "node_remove"
	OpPolicy        = "policy_apply"
	OpWatermarks    = "watermarks"
	OpRecovery      = "recovery"
	OpNote          = "note"
	OpHolders       = "holders"
	OpProgress      = "progress"
	OpFailover      = "failover"      // a new epoch: the service runs at another site
	OpFailedOver    = "failover_done" // the failover's outcome: RPO, RTO or error
	OpReprotect     = "reprotect"
	OpBranch        = "branch"
	OpDrill         = "drill"
	OpAudit         = "audit"          // audit entries (kept beside the catalog, not in it)
	OpRevoke        = "revoke"         // certificates no node accepts any more
	OpPolicyPropose = "policy_propose" // a policy waiting for a second admin
	OpMarks         = "marks"          // suspect, damaged and verified points
)

// historyLen bounds the failover and drill records kept per service.
const historyLen = 32

const commandVersion = 1

// MaxCommand bounds a command's encoded size; a policy is the biggest.
const MaxCommand = 4 << 20

// Command is one catalog change.
type Command struct {
	Op         string          `json:"op"`
	Node       *NodeInfo       `json:"node,omitempty"`
	Name       mesh.NodeID     `json:"name,omitempty"`
	Policy     *PolicyRecord   `json:"policy,omitempty"`
	Watermarks []Watermark     `json:"watermarks,omitempty"`
	Recovery   *RecoveryRecord `json:"recovery,omitempty"`
	Holders    []Holder        `json:"holders,omitempty"`
	Progress   []Progress      `json:"progress,omitempty"`
	Failover   *FailoverRecord `json:"failover,omitempty"`
	Branch     *Branch         `json:"branch,omitempty"`
	Drill      *DrillRecord    `json:"drill,omitempty"`
	Service    string          `json:"service,omitempty"`
	On         bool            `json:"on,omitempty"`
	Key        string          `json:"key,omitempty"`
	Value      string          `json:"value,omitempty"`
	Audit      []AuditEntry    `json:"audit,omitempty"`
	Revoke     []Revocation    `json:"revoke,omitempty"`
	Marks      []PointMark     `json:"marks,omitempty"`
}

// ErrBadCommand reports a log entry that does not decode or does not apply.
var ErrBadCommand = errors.New("bad catalog command")

func EncodeCommand(c *Command) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte(commandVersion)
	if err := json.NewEncoder(&buf).Encode(c); err != nil {
		return nil, fmt.Errorf("encode %s command: %w", c.Op, err)
	}
	if buf.Len() > MaxCommand {
		return nil, fmt.Errorf("%w: %s command is %d bytes, limit %d", ErrBadCommand, c.Op, buf.Len(), MaxCommand)
	}
	return buf.Bytes(), nil
}

func DecodeCommand(b []byte) (*Command, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty entry", ErrBadCommand)
	}
	if b[0] != commandVersion {
		return nil, fmt.Errorf("%w: version %d, want %d (is this node older than the cluster?)", ErrBadCommand, b[0], commandVersion)
	}
	if len(b) > MaxCommand {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrBadCommand, len(b), MaxCommand)
	}
	var c Command
	dec := json.NewDecoder(bytes.NewReader(b[1:]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCommand, err)
	}
	return &c, nil
}

func New() *Catalog {
	return &Catalog{
		Nodes:    map[mesh.NodeID]NodeInfo{},
		Services: map[string]*ServiceState{},
		Sites:    map[mesh.Site]SiteInfo{},
	}
}

// apply returns the catalog changed by one command, or an error for a
// command that cannot apply. c itself never changes: the result shares
// every record the command does not touch (copy-on-write), so snapshots
// handed to readers stay as they were.
func (c *Catalog) apply(cmd *Command, index uint64) (*Catalog, error) {
	n := c.edit()
	if err := n.change(cmd); err != nil {
		return nil, err
	}
	n.owned = nil
	n.Index = index
	n.rebuildSites()
	return n, nil
}

// edit returns a copy of c to change: its own top-level maps and slices,
// the service records shared until service or existing takes them.
func (c *Catalog) edit() *Catalog {
	n := *c
	n.Nodes = maps.Clone(c.Nodes)
	n.Services = maps.Clone(c.Services)
	n.Revoked = maps.Clone(c.Revoked)
	n.Notes = maps.Clone(c.Notes)
	n.Recoveries = slices.Clip(c.Recoveries)
	n.owned = map[string]bool{}
	return &n
}

// withIndex returns c as of Raft index idx, sharing everything else.
func (c *Catalog) withIndex(idx uint64) *Catalog {
	n := *c
	n.Index = idx
	return &n
}

// change applies cmd to c, a catalog from edit.
func (c *Catalog) change(cmd *Command) error {
	switch cmd.Op {
	case OpNodeUpsert:
		if cmd.Node == nil || cmd.Node.Name == "" || cmd.Node.Site == "" {
			return fmt.Errorf("%w: node_upsert needs a node with name and site", ErrBadCommand)
		}
		n := *cmd.Node
		if old, ok := c.Nodes[n.Name]; ok && !old.Added.IsZero() {
			n.Added = old.Added
		}
		c.Nodes[n.Name] = n
	case OpNodeRemove:
		if _, ok := c.Nodes[cmd.Name]; !ok {
			return fmt.Errorf("%w: node_remove: no node %q", ErrBadCommand, cmd.Name)
		}
		delete(c.Nodes, cmd.Name)
	case OpPolicy:
		if cmd.Policy == nil || cmd.Policy.Cluster == nil {
			return fmt.Errorf("%w: policy_apply without a policy", ErrBadCommand)
		}
		p := *cmd.Policy
		if c.PendingPolicy != nil && p.ApprovedBy != "" {
			// The approval of the pending policy: it keeps its number.
			if p.Version != c.PendingPolicy.Version {
				return fmt.Errorf("%w: policy_apply: approval of version %d, pending is %d", ErrBadCommand, p.Version, c.PendingPolicy.Version)
			}
		} else {
			p.Version = c.nextPolicyVersion()
		}
		c.Policy = &p
		c.PendingPolicy = nil
		for _, s := range p.Cluster.Services {
			c.service(s.Name)
		}
	case OpPolicyPropose:
		if cmd.Policy == nil || cmd.Policy.Cluster == nil {
			return fmt.Errorf("%w: policy_propose without a policy", ErrBadCommand)
		}
		p := *cmd.Policy
		p.Version = c.nextPolicyVersion()
		c.PendingPolicy = &p
	case OpRevoke:
		if len(cmd.Revoke) == 0 {
			return fmt.Errorf("%w: revoke without serials", ErrBadCommand)
		}
		if c.Revoked == nil {
			c.Revoked = map[string]Revocation{}
		}
		for _, r := range cmd.Revoke {
			if r.Serial == "" {
				return fmt.Errorf("%w: revoke: empty serial", ErrBadCommand)
			}
		}
		for _, r := range cmd.Revoke {
			if _, ok := c.Revoked[r.Serial]; !ok {
				c.Revoked[r.Serial] = r
			}
		}
	case OpWatermarks:
		for _, w := range cmd.Watermarks {
			s := c.service(w.Service)
			if s.Watermarks == nil {
				s.Watermarks = map[string]Watermark{}
			}
			if old, ok := s.Watermarks[w.Site]; !ok || !w.Time.Before(old.Time) {
				s.Watermarks[w.Site] = w
			}
		}
	case OpHolders:
		for _, h := range cmd.Holders {
			s := c.service(h.Service)
			if h.Node == "" {
				delete(s.Holders, h.Site)
				continue
			}
			if s.Holders == nil {
				s.Holders = map[string]mesh.NodeID{}
			}
			s.Holders[h.Site] = h.Node
		}
	case OpProgress:
		for _, p := range cmd.Progress {
			s := c.service(p.Service)
			if s.Progress == nil {
				s.Progress = map[string]Progress{}
			}
			s.Progress[p.Site] = p
		}
	case OpRecovery:
		if cmd.Recovery == nil {
			return fmt.Errorf("%w: recovery without a record", ErrBadCommand)
		}
		c.Recoveries = append(c.Recoveries, *cmd.Recovery)
	case OpFailover, OpFailedOver:
		return c.applyFailover(cmd)
	case OpReprotect:
		s := c.existing(cmd.Service)
		if s == nil || s.Active == "" {
			return fmt.Errorf("%w: reprotect: service %q has not failed over", ErrBadCommand, cmd.Service)
		}
		s.Reprotect = cmd.On
	case OpBranch:
		b := cmd.Branch
		if b == nil || b.Service == "" || b.Node == "" || len(b.Points) == 0 {
			return fmt.Errorf("%w: branch needs a service, a node and points", ErrBadCommand)
		}
		s := c.service(b.Service)
		if i := slices.IndexFunc(s.Branches, func(o Branch) bool { return o.Name == b.Name }); i >= 0 {
			s.Branches[i] = *b
		} else {
			s.Branches = append(s.Branches, *b)
		}
	case OpDrill:
		d := cmd.Drill
		if d == nil || d.Service == "" || d.ID == "" {
			return fmt.Errorf("%w: drill needs a service and an ID", ErrBadCommand)
		}
		s := c.service(d.Service)
		if i := slices.IndexFunc(s.Drills, func(o DrillRecord) bool { return o.ID == d.ID }); i >= 0 {
			s.Drills[i] = *d
		} else {
			s.Drills = append(s.Drills, *d)
			if len(s.Drills) > historyLen {
				s.Drills = slices.Delete(s.Drills, 0, len(s.Drills)-historyLen)
			}
		}
	case OpMarks:
		return c.applyMarks(cmd.Marks)
	case OpNote:
		if c.Notes == nil {
			c.Notes = map[string]string{}
		}
		c.Notes[cmd.Key] = cmd.Value
	default:
		return fmt.Errorf("%w: unknown op %q", ErrBadCommand, cmd.Op)
	}
	return nil
}

// nextPolicyVersion numbers a new policy, applied or pending.
func (c *Catalog) nextPolicyVersion() uint64 {
	v := uint64(1)
	if c.Policy != nil {
		v = c.Policy.Version + 1
	}
	if c.PendingPolicy != nil && c.PendingPolicy.Version >= v {
		v = c.PendingPolicy.Version + 1
	}
	return v
}

// service returns the service's record in a catalog from edit, creating
// it, as a copy of its own to change.
func (c *Catalog) service(name string) *ServiceState {
	if s := c.existing(name); s != nil {
		return s
	}
	s := &ServiceState{Epoch: 1}
	c.Services[name] = s
	c.owned[name] = true
	return s
}

// existing returns the service's record in a catalog from edit as a copy
// of its own to change, or nil.
func (c *Catalog) existing(name string) *ServiceState {
	s := c.Services[name]
	if s == nil || c.owned[name] {
		return s
	}
	cp := *s
	cp.Watermarks = maps.Clone(s.Watermarks)
	cp.Holders = maps.Clone(s.Holders)
	cp.Progress = maps.Clone(s.Progress)
	cp.Failovers = slices.Clone(s.Failovers)
	cp.Branches = slices.Clone(s.Branches)
	cp.Drills = slices.Clone(s.Drills)
	cp.Marks = slices.Clone(s.Marks)
	c.Services[name] = &cp
	c.owned[name] = true
	return &cp
}

// Holder returns the node holding service's copy at site, or "".
func (c *Catalog) Holder(service, site string) mesh.NodeID {
	if s := c.Services[service]; s != nil {
		return s.Holders[site]
	}
	return ""
}

// rebuildSites derives the site list from the nodes and the policy.
func (c *Catalog) rebuildSites() {
	sites := map[mesh.Site]SiteInfo{}
	if c.Policy != nil && c.Policy.Cluster != nil {
		for _, s := range c.Policy.Cluster.Sites {
			sites[mesh.Site(s.Name)] = SiteInfo{Name: mesh.Site(s.Name), Nodes: []mesh.NodeID{}}
		}
	}
	for _, n := range c.Nodes {
		s := sites[n.Site]
		s.Name = n.Site
		s.Nodes = append(s.Nodes, n.Name)
		sites[n.Site] = s
	}
	for k, s := range sites {
		slices.Sort(s.Nodes)
		sites[k] = s
	}
	c.Sites = sites
}
