// Package status puts together a node's view of the cluster (api.Status)
// from what its Raft, catalog and gossip say: a pure function, so that what
// an operator reads is tested without a cluster.
package status

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// Raft is what the node's Raft says of itself.
type Raft struct {
	State             string // raft.RaftState's name
	Leader            mesh.NodeID
	Term, CommitIndex uint64
	AppliedIndex      uint64
	LastContact       string
	Servers           []raft.Server // the configuration; nil when it could not be read
}

// Build puts together a node's view of the cluster from its Raft, its
// catalog and its gossip members, as of now.
func Build(self mesh.NodeID, site mesh.Site, r Raft, cat *catalog.Catalog, members []mesh.Member, now time.Time) api.Status {
	st := api.Status{Node: self, Site: site, RaftState: r.State, Voters: []mesh.NodeID{}, Leader: r.Leader,
		Term: r.Term, CommitIndex: r.CommitIndex, AppliedIndex: r.AppliedIndex, LastContact: r.LastContact}
	nodes := map[mesh.NodeID]*api.NodeStatus{}
	get := func(id mesh.NodeID) *api.NodeStatus {
		if s, ok := nodes[id]; ok {
			return s
		}
		s := &api.NodeStatus{Name: id, State: "dead", Raft: "none"}
		nodes[id] = s
		return s
	}
	if cat.Policy != nil {
		st.PolicyVersion = cat.Policy.Version
	}
	for _, ni := range cat.Nodes {
		s := get(ni.Name)
		s.Site, s.Role, s.QUIC = ni.Site, ni.Role, ni.QUIC
	}
	for _, m := range members {
		s := get(m.Name)
		s.State = string(m.State)
		if m.Meta.Site != "" {
			s.Site, s.Role, s.QUIC = m.Meta.Site, m.Meta.Role, m.Meta.QUIC
		}
	}
	for _, srv := range r.Servers {
		s := get(mesh.NodeID(srv.ID))
		if srv.Suffrage == raft.Voter {
			s.Voter, s.Raft = true, "voter"
			st.Voters = append(st.Voters, s.Name)
		} else {
			s.Raft = "nonvoter"
		}
	}
	slices.Sort(st.Voters)
	sites := map[mesh.Site]*api.SiteStatus{}
	for _, s := range cat.Sites {
		sites[s.Name] = &api.SiteStatus{Name: s.Name}
	}
	for _, s := range nodes {
		st.Nodes = append(st.Nodes, *s)
		ss := sites[s.Site]
		if ss == nil {
			ss = &api.SiteStatus{Name: s.Site}
			sites[s.Site] = ss
		}
		ss.Nodes++
		if s.State == "alive" || s.State == "suspect" {
			ss.Alive++
		}
	}
	slices.SortFunc(st.Nodes, func(a, b api.NodeStatus) int { return compareStrings(string(a.Name), string(b.Name)) })
	for _, s := range sites {
		st.Sites = append(st.Sites, *s)
	}
	slices.SortFunc(st.Sites, func(a, b api.SiteStatus) int { return compareStrings(string(a.Name), string(b.Name)) })
	st.Services = []api.ServiceStatus{}
	for name, svc := range cat.Services {
		ss := api.ServiceStatus{Name: name, Epoch: svc.Epoch, Watermarks: []catalog.Watermark{}, Failover: svc.LastFailover(), Branches: svc.Branches}
		if len(svc.Drills) > 0 {
			ss.Drill = &svc.Drills[len(svc.Drills)-1]
		}
		ss.Verified = svc.LastVerified()
		for _, w := range svc.Watermarks {
			ss.Watermarks = append(ss.Watermarks, w)
		}
		for _, m := range svc.Marks {
			if m.IsSuspect() {
				ss.Suspect = append(ss.Suspect, m)
			}
		}
		ss.Suspect = ss.Suspect[max(0, len(ss.Suspect)-maxSuspect):]
		slices.SortFunc(ss.Watermarks, func(a, b catalog.Watermark) int { return compareStrings(a.Site, b.Site) })
		if len(svc.Holders) > 0 {
			ss.Holders = map[string]string{}
			for site, h := range svc.Holders {
				ss.Holders[site] = string(h)
			}
		}
		if cat.Policy != nil && cat.Policy.Cluster != nil {
			if p := cat.Service(name); p != nil {
				ss.Primary, ss.RPOTarget = p.Primary, time.Duration(p.RPO).Seconds()
				for _, c := range p.Copies {
					ss.Copies = append(ss.Copies, copyStatus(cat, p, c, svc, now))
				}
			}
		}
		st.Services = append(st.Services, ss)
	}
	slices.SortFunc(st.Services, func(a, b api.ServiceStatus) int { return compareStrings(a.Name, b.Name) })
	return st
}

// maxSuspect bounds the suspect points a service's status lists.
const maxSuspect = 8

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func copyStatus(cat *catalog.Catalog, svc *config.Service, c config.Copy, st *catalog.ServiceState, now time.Time) api.CopyStatus {
	cs := api.CopyStatus{Site: c.Site, Tier: string(c.Tier), Holder: string(st.Holders[c.Site]), RPO: -1}
	if w, ok := st.Watermarks[c.Site]; ok {
		cs.Point, cs.PointTime, cs.Standby, cs.Export = w.Point, w.Time, w.Standby, w.Export
		cs.RPO = now.Sub(w.Time).Seconds()
		cs.RPOMet = svc.RPO == 0 || now.Sub(w.Time) <= time.Duration(svc.RPO)
	}
	if p, ok := st.Progress[c.Site]; ok {
		cs.Backlog, cs.Sending, cs.Error = p.Backlog, p.Sending, p.Error
	}
	cs.LinkPolicy = "no link policy: unlimited"
	if l := cat.Policy.Cluster.Link(svc.Primary, c.Site); l != nil {
		cs.LinkRate = float64(l.RateAt(now))
		cs.LinkPolicy = describeLink(l)
	}
	return cs
}

// describeLink sums up a link's policy in one line.
func describeLink(l *config.Link) string {
	parts := []string{l.Rate.String()}
	for _, s := range l.Schedule {
		parts = append(parts, fmt.Sprintf("%s %s %s", s.Days, s.Hours, s.Rate))
	}
	if l.Coalesce > 0 {
		parts = append(parts, "coalesce "+l.Coalesce.String())
	}
	return strings.Join(parts, "; ")
}
