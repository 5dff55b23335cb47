package catalog

import (
	"fmt"
	"slices"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/mesh"
)

// FailoverRecord is one failover of a service: planned (both sites up) or
// after the loss of the site it ran at. It starts a new epoch; nodes that
// see a higher epoch for a service they run stop taking its writes.
type FailoverRecord struct {
	Service   string      `json:"service"`
	Epoch     uint64      `json:"epoch"` // the epoch it started
	From      string      `json:"from"`  // the site the service ran at
	To        string      `json:"to"`
	Node      mesh.NodeID `json:"node"` // the holder at To that ran it
	Point     string      `json:"point"`
	PointTime time.Time   `json:"point_time"`
	Planned   bool        `json:"planned,omitempty"`
	Forced    bool        `json:"forced,omitempty"` // the catalog was recovered first
	By        string      `json:"by"`
	Started   time.Time   `json:"started"`
	// Set when it ends.
	Done     bool      `json:"done,omitempty"`
	Finished time.Time `json:"finished,omitzero"`
	// RPO is the data-loss window: the time of the newest point the
	// catalog knew at From, minus Point's time (0 when not older).
	RPO float64 `json:"rpo_seconds"`
	// PointAge is how old the point was when the failover started: an
	// upper bound of the data lost (it includes the time to notice the
	// loss and decide).
	PointAge float64 `json:"point_age_seconds"`
	// RTO runs from the command's start to the servers being up: the
	// health hook passing, or the start hook ending when there is none.
	RTO   float64 `json:"rto_seconds"`
	Error string  `json:"error,omitempty"`
}

// Branch is a run of points a site took for a service after the service
// had failed over elsewhere (writes during a split). They are kept, listed
// and exportable; nothing deletes them.
type Branch struct {
	Name    string      `json:"name"` // SERVICE@SITE-epochN
	Service string      `json:"service"`
	Site    string      `json:"site"`
	Node    mesh.NodeID `json:"node"`  // where the points are
	Epoch   uint64      `json:"epoch"` // the epoch they were written under
	Points  []string    `json:"points"`
	First   time.Time   `json:"first"`
	Last    time.Time   `json:"last"`
	Found   time.Time   `json:"found"`
}

// DrillRecord is one DR drill: an isolated copy of a service brought up
// at a recovery site from a point, a test hook run against it.
type DrillRecord struct {
	ID          string      `json:"id"`
	Service     string      `json:"service"`
	Site        string      `json:"site"`
	Node        mesh.NodeID `json:"node"`
	Point       string      `json:"point"`
	PointTime   time.Time   `json:"point_time"`
	By          string      `json:"by"`
	Started     time.Time   `json:"started"`
	Finished    time.Time   `json:"finished,omitzero"`
	Materialize float64     `json:"materialize_seconds"`
	Hook        float64     `json:"hook_seconds"`
	HookCommand string      `json:"hook_command,omitempty"` // the hook that ran, as the policy (or the operator's own machine) gave it
	Where       string      `json:"where,omitempty"`        // "node" or "operator": where the hook ran
	Passed      bool        `json:"passed"`
	Output      string      `json:"output,omitempty"` // the hook's last lines
	Error       string      `json:"error,omitempty"`
	Dir         string      `json:"dir,omitempty"` // kept images; "" once cleaned up
	// How the point was chosen (issue 16): "newest worth having" or
	// "--at"; PassedOver lists the newer points passed over and why;
	// Warning is what is wrong with a point --at named.
	Chosen     string `json:"chosen,omitempty"`
	PassedOver string `json:"passed_over,omitempty"`
	Warning    string `json:"warning,omitempty"`
	// Verified is the [service.verify] checks the drill ran on its
	// images (issue 16); nil when the service sets none.
	Verified *Verification `json:"verified,omitempty"`
}

// applyFailover applies OpFailover and OpFailedOver.
func (c *Catalog) applyFailover(cmd *Command) error {
	r := cmd.Failover
	if r == nil || r.Service == "" || r.To == "" || r.Point == "" {
		return fmt.Errorf("%w: %s needs a record with service, site and point", ErrBadCommand, cmd.Op)
	}
	epoch := uint64(1)
	if s := c.Services[r.Service]; s != nil {
		epoch = s.Epoch
	}
	if cmd.Op == OpFailover {
		if r.Epoch != epoch+1 {
			return fmt.Errorf("%w: failover of %s to epoch %d, but the service is at epoch %d (another failover ran meanwhile)", ErrBadCommand, r.Service, r.Epoch, epoch)
		}
		s := c.service(r.Service)
		s.Epoch, s.Active, s.Reprotect = r.Epoch, r.To, false
		s.Failovers = append(s.Failovers, *r)
		if len(s.Failovers) > historyLen {
			s.Failovers = slices.Delete(s.Failovers, 0, len(s.Failovers)-historyLen)
		}
	} else {
		s := c.existing(r.Service)
		if s == nil {
			return fmt.Errorf("%w: failover_done: no service %s", ErrBadCommand, r.Service)
		}
		i := slices.IndexFunc(s.Failovers, func(o FailoverRecord) bool { return o.Epoch == r.Epoch })
		if i < 0 {
			return fmt.Errorf("%w: failover_done: service %s has no failover at epoch %d", ErrBadCommand, r.Service, r.Epoch)
		}
		s.Failovers[i] = *r
	}
	return nil
}

// LastFailover returns the service's newest failover record, or nil.
func (s *ServiceState) LastFailover() *FailoverRecord {
	if s == nil || len(s.Failovers) == 0 {
		return nil
	}
	return &s.Failovers[len(s.Failovers)-1]
}

// Service returns the service's policy as it applies now, nil if the
// applied policy has no such service. After a failover the primary is the
// site the service runs at, which keeps no copy of its own; with
// Reprotect, the site it failed over from is a warm copy.
func (c *Catalog) Service(name string) *config.Service {
	if c.Policy == nil || c.Policy.Cluster == nil {
		return nil
	}
	p := c.Policy.Cluster.Service(name)
	if p == nil {
		return nil
	}
	st := c.Services[name]
	if st == nil || st.Active == "" || st.Active == p.Primary {
		return p
	}
	v := *p
	v.Primary = st.Active
	v.Copies = slices.DeleteFunc(slices.Clone(p.Copies), func(cp config.Copy) bool { return cp.Site == st.Active })
	if last := st.LastFailover(); st.Reprotect && last != nil && last.From != st.Active && v.Copy(last.From) == nil {
		v.Copies = append(v.Copies, config.Copy{Site: last.From, Tier: config.TierWarm, Export: config.ExportNone, Retention: p.Retention})
	}
	return &v
}

// ServiceList returns every service of the applied policy as Service
// returns it.
func (c *Catalog) ServiceList() []*config.Service {
	if c.Policy == nil || c.Policy.Cluster == nil {
		return nil
	}
	out := make([]*config.Service, 0, len(c.Policy.Cluster.Services))
	for _, s := range c.Policy.Cluster.Services {
		out = append(out, c.Service(s.Name))
	}
	return out
}
