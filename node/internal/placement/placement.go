// Package placement decides who does what in a cluster, as pure
// functions of what the leader knows: which alive nodes vote (an odd
// number, at most MaxVoters, spread over the sites), the next one Raft
// change to get there (Plan), and which data node of each site holds each
// service's copy (Holders). The membership engine gives it a view and
// carries the changes out.
package placement

import (
	"cmp"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-dr/lifeboat/mesh"
)

// maxVoters is the most Raft voters a cluster has; more only slow commits.
const MaxVoters = 5

// candidate is an alive node that could vote.
type Candidate struct {
	ID    mesh.NodeID
	Site  mesh.Site
	Voter bool // a voter now
	Self  bool // the leader running the placement
}

// PlaceVoters returns the nodes that should vote: an odd number, at most
// limit, spread over the sites round-robin so that, when three or more sites
// have nodes, no site holds a majority of the votes (a site loss then never
// takes the quorum with it). Current voters and the leader are kept where the
// spread allows, so that placement does not churn.
func PlaceVoters(alive []Candidate, limit int) []mesh.NodeID {
	if len(alive) == 0 {
		return nil
	}
	bySite := map[mesh.Site][]Candidate{}
	for _, c := range alive {
		bySite[c.Site] = append(bySite[c.Site], c)
	}
	sites := make([]mesh.Site, 0, len(bySite))
	for s, cs := range bySite {
		slices.SortFunc(cs, func(a, b Candidate) int {
			if a.Self != b.Self {
				if a.Self {
					return -1
				}
				return 1
			}
			if a.Voter != b.Voter {
				if a.Voter {
					return -1
				}
				return 1
			}
			return cmp.Compare(a.ID, b.ID)
		})
		sites = append(sites, s)
	}
	// Big sites first, so that the odd vote lands where the nodes are; the
	// leader's site first among equals, so that it keeps its vote.
	slices.SortFunc(sites, func(a, b mesh.Site) int {
		if c := cmp.Compare(len(bySite[b]), len(bySite[a])); c != 0 {
			return c
		}
		if bySite[a][0].Self != bySite[b][0].Self {
			if bySite[a][0].Self {
				return -1
			}
			return 1
		}
		return cmp.Compare(a, b)
	})
	n := min(limit, len(alive))
	if n%2 == 0 {
		n--
	}
	for ; n >= 1; n -= 2 {
		picked, perSite := roundRobin(sites, bySite, n)
		if len(sites) < 3 || slices.Max(perSite) <= (n-1)/2 {
			slices.Sort(picked)
			return picked
		}
	}
	return []mesh.NodeID{bySite[sites[0]][0].ID}
}

// roundRobin takes n nodes, one site at a time.
func roundRobin(sites []mesh.Site, bySite map[mesh.Site][]Candidate, n int) ([]mesh.NodeID, []int) {
	picked := make([]mesh.NodeID, 0, n)
	perSite := make([]int, len(sites))
	for len(picked) < n {
		progress := false
		for i, s := range sites {
			if len(picked) == n {
				break
			}
			if perSite[i] < len(bySite[s]) {
				picked = append(picked, bySite[s][perSite[i]].ID)
				perSite[i]++
				progress = true
			}
		}
		if !progress {
			break
		}
	}
	return picked, perSite
}

// change is one Raft membership change the leader should make.
type Change struct {
	Kind    Kind
	ID      mesh.NodeID
	Address string
	Why     string
}

type Kind int

const (
	AddNonvoter Kind = iota + 1
	Promote
	Demote
	Remove
)

func (k Kind) String() string {
	switch k {
	case AddNonvoter:
		return "add_nonvoter"
	case Promote:
		return "promote"
	case Demote:
		return "demote"
	case Remove:
		return "remove"
	}
	return "unknown"
}

// View is what the leader knows when it plans: the Raft
// configuration, the gossip members, and since when each server in the
// configuration has been gone (dead, left or unknown to gossip).
type View struct {
	Self        mesh.NodeID
	Servers     []raft.Server
	Members     []mesh.Member
	GoneSince   map[mesh.NodeID]time.Time
	Now         time.Time
	DeadTimeout time.Duration
}

// whyNoRaftState is why a voter that came back without Raft state is
// demoted; the reconciler checks with the voter before acting on it.
const WhyNoRaftState = "rejoined without raft state"

// Plan returns the next membership change to make, or false when the
// configuration is as it should be. Changes come one at a time, in this
// order: add new nodes as non-voters; demote voters that lost their Raft
// state (they could vote twice in a term); promote the placed voters; demote
// surplus voters; remove servers gone longer than the dead timeout. No change
// is proposed that would leave the alive voters short of a quorum.
func Plan(v View) (Change, bool) {
	members := map[mesh.NodeID]mesh.Member{}
	for _, m := range v.Members {
		members[m.Name] = m
	}
	inConfig := map[mesh.NodeID]raft.Server{}
	for _, s := range v.Servers {
		inConfig[mesh.NodeID(s.ID)] = s
	}
	// alive is strict (quorum arithmetic must not count a suspect);
	// present also takes suspects (placement must not churn on a hiccup).
	alive := func(id mesh.NodeID) bool {
		m, ok := members[id]
		return ok && m.State == mesh.StateAlive
	}
	present := func(id mesh.NodeID) bool {
		m, ok := members[id]
		return ok && (m.State == mesh.StateAlive || m.State == mesh.StateSuspect)
	}
	allVotersAlive := true
	for _, s := range v.Servers {
		if s.Suffrage == raft.Voter && !alive(mesh.NodeID(s.ID)) {
			allVotersAlive = false
		}
	}
	var cands []Candidate
	for _, m := range v.Members {
		if !present(m.Name) || m.Meta.QUIC == "" {
			continue
		}
		s, ok := inConfig[m.Name]
		cands = append(cands, Candidate{ID: m.Name, Site: m.Meta.Site, Voter: ok && s.Suffrage == raft.Voter, Self: m.Name == v.Self})
	}
	var changes []Change
	// 1. New nodes, and nodes whose address changed, join as non-voters.
	for _, m := range v.Members {
		if m.State != mesh.StateAlive || m.Meta.QUIC == "" || m.Name == v.Self {
			continue
		}
		s, ok := inConfig[m.Name]
		if !ok {
			changes = append(changes, Change{Kind: AddNonvoter, ID: m.Name, Address: m.Meta.QUIC, Why: "new node"})
		} else if string(s.Address) != m.Meta.QUIC && s.Suffrage != raft.Voter {
			changes = append(changes, Change{Kind: AddNonvoter, ID: m.Name, Address: m.Meta.QUIC, Why: "address changed"})
		}
	}
	// 2. A voter that comes back without Raft state forgot its votes.
	for _, s := range v.Servers {
		id := mesh.NodeID(s.ID)
		if s.Suffrage == raft.Voter && id != v.Self && alive(id) && !members[id].Meta.Raft {
			changes = append(changes, Change{Kind: Demote, ID: id, Why: WhyNoRaftState})
		}
	}
	desired := PlaceVoters(cands, MaxVoters)
	isDesired := map[mesh.NodeID]bool{}
	for _, id := range desired {
		isDesired[id] = true
	}
	// 3. Promote placed voters that hold Raft state.
	voters := 0
	for _, s := range v.Servers {
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	for _, id := range desired {
		s, ok := inConfig[id]
		if ok && s.Suffrage != raft.Voter && members[id].Meta.Raft {
			addr := string(s.Address)
			if q := members[id].Meta.QUIC; q != "" {
				addr = q
			}
			changes = append(changes, Change{Kind: Promote, ID: id, Address: addr, Why: "voter placement"})
		}
	}
	// 4. Demote alive voters that placement no longer wants, once the wanted
	// ones vote and every voter is alive: a degraded cluster (a partition, a
	// dead site) keeps its voters until the dead timeout decides.
	allPlaced := allVotersAlive
	for _, id := range desired {
		if s, ok := inConfig[id]; !ok || s.Suffrage != raft.Voter {
			allPlaced = false
		}
	}
	if allPlaced {
		for _, s := range v.Servers {
			id := mesh.NodeID(s.ID)
			if s.Suffrage == raft.Voter && !isDesired[id] && alive(id) && id != v.Self {
				changes = append(changes, Change{Kind: Demote, ID: id, Why: "voter placement"})
			}
		}
	}
	// 5. Remove servers gone for longer than the dead timeout; a node that
	// left gracefully goes at once.
	for _, s := range v.Servers {
		id := mesh.NodeID(s.ID)
		if id == v.Self || present(id) {
			continue
		}
		if m, ok := members[id]; ok && m.State == mesh.StateLeft {
			changes = append(changes, Change{Kind: Remove, ID: id, Why: "left the cluster"})
			continue
		}
		since, ok := v.GoneSince[id]
		if ok && v.Now.Sub(since) >= v.DeadTimeout {
			changes = append(changes, Change{Kind: Remove, ID: id, Why: "dead longer than dead_node_timeout"})
		}
	}
	for _, c := range changes {
		if keepsQuorum(v.Servers, c, alive) {
			return c, true
		}
	}
	return Change{}, false
}

// keepsQuorum reports whether the configuration after c still has a
// quorum of alive voters (and so can commit, and survives the change).
func keepsQuorum(servers []raft.Server, c Change, alive func(mesh.NodeID) bool) bool {
	voters, aliveVoters := 0, 0
	seen := false
	for _, s := range servers {
		id := mesh.NodeID(s.ID)
		voter := s.Suffrage == raft.Voter
		if id == c.ID {
			seen = true
			switch c.Kind {
			case Promote:
				voter = true
			case Demote, Remove:
				voter = false
			}
		}
		if voter {
			voters++
			if alive(id) {
				aliveVoters++
			}
		}
	}
	if !seen && c.Kind == Promote {
		return false
	}
	return voters > 0 && aliveVoters >= voters/2+1
}
