package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"

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
func (c *Catalog) policyCluster() *config.Cluster {
	if c.Policy == nil {
		return nil
	}
	return c.Policy.Cluster
}

// revokedSerials lists the revoked serials.
func (c *Catalog) revokedSerials() []string {
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

// Command ops. A command is one Raft log entry: a version byte, then JSON.
const (
	opNodeUpsert    = "node_upsert"
	opNodeRemove    = "node_remove"
	opPolicy        = "policy_apply"
	opWatermarks    = "watermarks"
	opRecovery      = "recovery"
	opNote          = "note"
	opHolders       = "holders"
	opProgress      = "progress"
	opFailover      = "failover"      // a new epoch: the service runs at another site
	opFailedOver    = "failover_done" // the failover's outcome: RPO, RTO or error
	opReprotect     = "reprotect"
	opBranch        = "branch"
	opDrill         = "drill"
	opAudit         = "audit"          // audit entries (kept beside the catalog, not in it)
	opRevoke        = "revoke"         // certificates no node accepts any more
	opPolicyPropose = "policy_propose" // a policy waiting for a second admin
)

// historyLen bounds the failover and drill records kept per service.
const historyLen = 32

const commandVersion = 1

// maxCommand bounds a command's encoded size; a policy is the biggest.
const maxCommand = 4 << 20

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
}

// ErrBadCommand reports a log entry that does not decode or does not apply.
var ErrBadCommand = errors.New("bad catalog command")

func encodeCommand(c *Command) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte(commandVersion)
	if err := json.NewEncoder(&buf).Encode(c); err != nil {
		return nil, fmt.Errorf("encode %s command: %w", c.Op, err)
	}
	if buf.Len() > maxCommand {
		return nil, fmt.Errorf("%w: %s command is %d bytes, limit %d", ErrBadCommand, c.Op, buf.Len(), maxCommand)
	}
	return buf.Bytes(), nil
}

func decodeCommand(b []byte) (*Command, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty entry", ErrBadCommand)
	}
	if b[0] != commandVersion {
		return nil, fmt.Errorf("%w: version %d, want %d (is this node older than the cluster?)", ErrBadCommand, b[0], commandVersion)
	}
	if len(b) > maxCommand {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrBadCommand, len(b), maxCommand)
	}
	var c Command
	dec := json.NewDecoder(bytes.NewReader(b[1:]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCommand, err)
	}
	return &c, nil
}

func newCatalog() *Catalog {
	return &Catalog{
		Nodes:    map[mesh.NodeID]NodeInfo{},
		Services: map[string]*ServiceState{},
		Sites:    map[mesh.Site]SiteInfo{},
	}
}

// apply changes the catalog by one command. It returns an error for a
// command that cannot apply; the catalog is then unchanged.
func (c *Catalog) apply(cmd *Command, index uint64) error {
	switch cmd.Op {
	case opNodeUpsert:
		if cmd.Node == nil || cmd.Node.Name == "" || cmd.Node.Site == "" {
			return fmt.Errorf("%w: node_upsert needs a node with name and site", ErrBadCommand)
		}
		n := *cmd.Node
		if old, ok := c.Nodes[n.Name]; ok && !old.Added.IsZero() {
			n.Added = old.Added
		}
		c.Nodes[n.Name] = n
	case opNodeRemove:
		if _, ok := c.Nodes[cmd.Name]; !ok {
			return fmt.Errorf("%w: node_remove: no node %q", ErrBadCommand, cmd.Name)
		}
		delete(c.Nodes, cmd.Name)
	case opPolicy:
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
	case opPolicyPropose:
		if cmd.Policy == nil || cmd.Policy.Cluster == nil {
			return fmt.Errorf("%w: policy_propose without a policy", ErrBadCommand)
		}
		p := *cmd.Policy
		p.Version = c.nextPolicyVersion()
		c.PendingPolicy = &p
	case opRevoke:
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
	case opWatermarks:
		for _, w := range cmd.Watermarks {
			s := c.service(w.Service)
			if s.Watermarks == nil {
				s.Watermarks = map[string]Watermark{}
			}
			if old, ok := s.Watermarks[w.Site]; !ok || !w.Time.Before(old.Time) {
				s.Watermarks[w.Site] = w
			}
		}
	case opHolders:
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
	case opProgress:
		for _, p := range cmd.Progress {
			s := c.service(p.Service)
			if s.Progress == nil {
				s.Progress = map[string]Progress{}
			}
			s.Progress[p.Site] = p
		}
	case opRecovery:
		if cmd.Recovery == nil {
			return fmt.Errorf("%w: recovery without a record", ErrBadCommand)
		}
		c.Recoveries = append(c.Recoveries, *cmd.Recovery)
	case opFailover, opFailedOver:
		return c.applyFailover(cmd, index)
	case opReprotect:
		s := c.Services[cmd.Service]
		if s == nil || s.Active == "" {
			return fmt.Errorf("%w: reprotect: service %q has not failed over", ErrBadCommand, cmd.Service)
		}
		s.Reprotect = cmd.On
	case opBranch:
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
	case opDrill:
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
	case opNote:
		if c.Notes == nil {
			c.Notes = map[string]string{}
		}
		c.Notes[cmd.Key] = cmd.Value
	default:
		return fmt.Errorf("%w: unknown op %q", ErrBadCommand, cmd.Op)
	}
	c.Index = index
	c.rebuildSites()
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

// service returns the service's record, creating it.
func (c *Catalog) service(name string) *ServiceState {
	s := c.Services[name]
	if s == nil {
		s = &ServiceState{Epoch: 1}
		c.Services[name] = s
	}
	return s
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

// clone returns a deep copy through JSON: the catalog is small.
func (c *Catalog) clone() *Catalog {
	b, err := json.Marshal(c)
	if err != nil {
		panic(fmt.Sprintf("catalog does not marshal: %v", err))
	}
	out := newCatalog()
	if err := json.Unmarshal(b, out); err != nil {
		panic(fmt.Sprintf("catalog does not unmarshal: %v", err))
	}
	return out
}

// fsm is the Raft state machine holding the catalog.
type fsm struct {
	mu      sync.RWMutex
	cat     *Catalog
	audit   auditLog      // beside the catalog: Catalog() does not copy it
	applied chan struct{} // closed and replaced at every applied entry
}

var _ raft.FSM = (*fsm)(nil)

func newFSM() *fsm { return &fsm{cat: newCatalog(), applied: make(chan struct{})} }

// notify wakes waitIndex callers; f.mu must be held for writing.
func (f *fsm) notify() {
	close(f.applied)
	f.applied = make(chan struct{})
}

// waitIndex returns once the catalog has applied Raft index idx.
func (f *fsm) waitIndex(ctx context.Context, idx uint64) error {
	for {
		f.mu.RLock()
		at, ch := f.cat.Index, f.applied
		f.mu.RUnlock()
		if at >= idx {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for catalog index %d (at %d): %w", idx, at, ctx.Err())
		case <-ch:
		}
	}
}

// applyResult is what fsm.Apply returns through the ApplyFuture.
type applyResult struct {
	err error
}

// Apply implements raft.FSM. A bad entry is logged as an error result and
// changes nothing; it never stops the state machine.
func (f *fsm) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return applyResult{}
	}
	cmd, err := decodeCommand(l.Data)
	if err != nil {
		f.mu.Lock()
		f.cat.Index = l.Index
		f.notify()
		f.mu.Unlock()
		return applyResult{err: err}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if cmd.Op == opAudit {
		var pol *config.Audit
		if p := f.cat.policyCluster(); p != nil {
			pol = &p.Audit
		}
		f.audit.add(cmd.Audit, pol)
		f.cat.Index = l.Index
		f.notify()
		return applyResult{}
	}
	err = f.cat.apply(cmd, l.Index)
	if err != nil {
		// A refused command still consumed its index.
		f.cat.Index = l.Index
	}
	f.notify()
	return applyResult{err: err}
}

// read calls fn with the catalog under the read lock; fn must not keep it.
func (f *fsm) read(fn func(*Catalog)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fn(f.cat)
}

// Snapshot implements raft.FSM: a JSON copy of the catalog and the audit
// log.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	b, err := json.Marshal(snapshotBody{Catalog: f.cat, Audit: f.audit.entries})
	if err != nil {
		return nil, fmt.Errorf("snapshot catalog: %w", err)
	}
	return &fsmSnapshot{data: b}, nil
}

// snapshotBody is what a version 2 snapshot holds after its magic.
type snapshotBody struct {
	Catalog *Catalog     `json:"catalog"`
	Audit   []AuditEntry `json:"audit,omitempty"`
}

// snapshotMagic starts a catalog snapshot: name and format version.
// Version 1 held the catalog alone; version 2 a snapshotBody.
var (
	snapshotMagicV1 = []byte("LBCAT\x00\x01\n")
	snapshotMagic   = []byte("LBCAT\x00\x02\n")
)

// maxSnapshot bounds a catalog snapshot read back from disk or the wire.
const maxSnapshot = 256 << 20

// Restore implements raft.FSM.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxSnapshot+1))
	if err != nil {
		return fmt.Errorf("read catalog snapshot: %w", err)
	}
	cat, audit, err := decodeSnapshot(b)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.cat = cat
	f.audit = auditLog{entries: audit}
	f.notify()
	f.mu.Unlock()
	return nil
}

func decodeSnapshot(b []byte) (*Catalog, []AuditEntry, error) {
	if len(b) > maxSnapshot {
		return nil, nil, fmt.Errorf("catalog snapshot: larger than %d bytes", maxSnapshot)
	}
	cat := newCatalog()
	var audit []AuditEntry
	switch {
	case bytes.HasPrefix(b, snapshotMagicV1):
		if err := json.Unmarshal(b[len(snapshotMagicV1):], cat); err != nil {
			return nil, nil, fmt.Errorf("catalog snapshot: %w", err)
		}
	case bytes.HasPrefix(b, snapshotMagic):
		body := snapshotBody{Catalog: cat}
		if err := json.Unmarshal(b[len(snapshotMagic):], &body); err != nil {
			return nil, nil, fmt.Errorf("catalog snapshot: %w", err)
		}
		if body.Catalog == nil {
			return nil, nil, errors.New("catalog snapshot: no catalog")
		}
		cat, audit = body.Catalog, body.Audit
	default:
		return nil, nil, fmt.Errorf("catalog snapshot: bad header (want %q)", snapshotMagic)
	}
	if cat.Nodes == nil {
		cat.Nodes = map[mesh.NodeID]NodeInfo{}
	}
	if cat.Services == nil {
		cat.Services = map[string]*ServiceState{}
	}
	for k, s := range cat.Services {
		if s == nil {
			return nil, nil, fmt.Errorf("catalog snapshot: service %q: null record", k)
		}
	}
	cat.rebuildSites()
	return cat, audit, nil
}

type fsmSnapshot struct{ data []byte }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(snapshotMagic); err != nil {
		sink.Cancel()
		return fmt.Errorf("write catalog snapshot: %w", err)
	}
	if _, err := sink.Write(s.data); err != nil {
		sink.Cancel()
		return fmt.Errorf("write catalog snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}

// sortedNodes returns the catalog's node names in order.
func (c *Catalog) sortedNodes() []mesh.NodeID {
	return slices.Sorted(maps.Keys(c.Nodes))
}
