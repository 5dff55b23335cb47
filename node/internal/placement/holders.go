package placement

import (
	"maps"
	"slices"
	"time"

	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// Holder placement (issue 5). For every service of the policy and every
// site that keeps a copy of it (the primary site included), the catalog
// names one data node of that site as the holder: agents ship to the
// primary site's holder, which replicates to the other sites' holders.
// The leader keeps the assignment: a holder stays while it is alive (or
// gone for less than HolderTimeout); otherwise the least-loaded alive data
// node of the site takes over. Load is the logical size of the services a
// node already holds, so services spread over a site's nodes.

// HolderView is what Holders decides from.
type HolderView struct {
	Cat     *catalog.Catalog
	Present func(mesh.NodeID) bool          // alive or suspect in the gossip
	GoneFor func(mesh.NodeID) time.Duration // how long a node has not been present
	// Left reports a node that left the cluster for good (node leave): it
	// holds nothing from then on, without waiting for Timeout. nil = none.
	Left    func(mesh.NodeID) bool
	Timeout time.Duration
}

// Holders returns the holder changes the catalog needs, in a stable
// order.
func Holders(v HolderView) []catalog.Holder {
	cat := v.Cat
	if cat.Policy == nil || cat.Policy.Cluster == nil {
		return nil
	}
	pol := cat.Policy.Cluster
	dataNode := func(id mesh.NodeID, site string) bool {
		ni, ok := cat.Nodes[id]
		return ok && ni.Role != RoleWitness && string(ni.Site) == site
	}
	left := func(id mesh.NodeID) bool { return v.Left != nil && v.Left(id) }
	keep := func(id mesh.NodeID, site string) bool {
		return dataNode(id, site) && !left(id) && (v.Present(id) || v.GoneFor(id) < v.Timeout)
	}
	// Load of the holders that stay.
	load := map[mesh.NodeID]int64{}
	for _, svc := range pol.Services {
		st := cat.Services[svc.Name]
		if st == nil {
			continue
		}
		for site, id := range st.Holders {
			if keep(id, site) {
				load[id] += int64(svc.Size())
			}
		}
	}
	var out []catalog.Holder
	for _, svc := range pol.Services {
		sites := []string{svc.Primary}
		for _, c := range svc.Copies {
			sites = append(sites, c.Site)
		}
		var cur map[string]mesh.NodeID
		if st := cat.Services[svc.Name]; st != nil {
			cur = st.Holders
		}
		for _, site := range sites {
			id := cur[site]
			if id != "" && keep(id, site) {
				continue
			}
			var best mesh.NodeID
			for _, cand := range cat.SortedNodes() {
				if !dataNode(cand, site) || !v.Present(cand) || left(cand) {
					continue
				}
				if best == "" || load[cand] < load[best] {
					best = cand
				}
			}
			switch {
			case best != "":
				load[best] += int64(svc.Size())
				out = append(out, catalog.Holder{Service: svc.Name, Site: site, Node: best})
			case id != "" && !dataNode(id, site):
				out = append(out, catalog.Holder{Service: svc.Name, Site: site}) // removed from the cluster
			}
		}
		// Sites that no longer keep a copy.
		for _, site := range slices.Sorted(maps.Keys(cur)) {
			if !slices.Contains(sites, site) {
				out = append(out, catalog.Holder{Service: svc.Name, Site: site})
			}
		}
	}
	return out
}

// RoleWitness is the role of a node that votes and holds no data.
const RoleWitness = "witness"
