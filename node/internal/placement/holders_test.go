package placement

import (
	"fmt"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/internal/testpolicy"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// holderCatalog: sites dc1 (two data nodes), dc2 (one data node and a
// witness), services a, b, c of 1, 2 and 3 MiB at dc1 with a copy at dc2,
// and the holders given.
func holderCatalog(t *testing.T, holders map[string]map[string]mesh.NodeID) *catalog.Catalog {
	t.Helper()
	src := testpolicy.Sites("dc1", "dc2")
	for i, name := range []string{"a", "b", "c"} {
		src += testpolicy.Service(name, "dc1", fmt.Sprintf("%dMiB", i+1), "", testpolicy.Copy("dc2", "warm", ""))
	}
	pol, err := config.ParseCluster("p.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	c := catalog.New()
	c.Policy = &catalog.PolicyRecord{Cluster: pol}
	for _, n := range []catalog.NodeInfo{{Name: "dc1-n1", Site: "dc1"}, {Name: "dc1-n2", Site: "dc1"}, {Name: "dc2-n1", Site: "dc2"}, {Name: "dc2-w", Site: "dc2", Role: RoleWitness}} {
		c.Nodes[n.Name] = n
	}
	for svc, hs := range holders {
		c.Services[svc] = &catalog.ServiceState{Epoch: 1, Holders: hs}
	}
	return c
}

func holderView(c *catalog.Catalog, gone map[mesh.NodeID]time.Duration) HolderView {
	return HolderView{Cat: c, Timeout: time.Minute,
		Present: func(id mesh.NodeID) bool { _, g := gone[id]; return !g },
		GoneFor: func(id mesh.NodeID) time.Duration { return gone[id] }}
}

func byKey(hs []catalog.Holder) map[string]mesh.NodeID {
	out := map[string]mesh.NodeID{}
	for _, h := range hs {
		out[h.Service+"@"+h.Site] = h.Node
	}
	return out
}

// TestHoldersSpread: a new policy gets a holder for every service at every
// site, services spread over a site's nodes by size, never the witness.
func TestHoldersSpread(t *testing.T) {
	got := byKey(Holders(holderView(holderCatalog(t, nil), nil)))
	if len(got) != 6 {
		t.Fatalf("%d holders, want 6: %v", len(got), got)
	}
	for _, s := range []string{"a", "b", "c"} {
		if got[s+"@dc2"] != "dc2-n1" {
			t.Errorf("%s at dc2: %q, want dc2-n1 (the witness holds nothing)", s, got[s+"@dc2"])
		}
	}
	// a (1 MiB) and b (2 MiB) go to one node, then c (3 MiB) to the
	// other: the least loaded each time.
	if got["a@dc1"] == got["b@dc1"] || got["c@dc1"] != got["a@dc1"] {
		t.Errorf("dc1 holders %v: want a and b on different nodes and c beside a, the lighter", got)
	}
}

// TestHoldersStayAndMove: holders that are present, or gone for less than
// the timeout, stay; one gone longer is replaced by another node of its
// site; with no node left at the site the holder stays assigned; a site
// that no longer keeps a copy loses its holder; a node removed from the
// cluster is unassigned.
func TestHoldersStayAndMove(t *testing.T) {
	cur := map[string]map[string]mesh.NodeID{
		"a": {"dc1": "dc1-n1", "dc2": "dc2-n1"},
		"b": {"dc1": "dc1-n2", "dc2": "dc2-n1", "dc3": "dc3-n1"},
		"c": {"dc1": "dc1-n1", "dc2": "dc2-n1"},
	}
	if got := Holders(holderView(holderCatalog(t, cur), map[mesh.NodeID]time.Duration{"dc1-n1": 30 * time.Second})); len(got) != 1 || got[0] != (catalog.Holder{Service: "b", Site: "dc3"}) {
		t.Errorf("holder gone 30 s (timeout 1 m): changes %v, want only b's dc3 holder dropped", got)
	}
	got := byKey(Holders(holderView(holderCatalog(t, cur), map[mesh.NodeID]time.Duration{"dc1-n1": 2 * time.Minute, "dc2-n1": 2 * time.Minute})))
	if got["a@dc1"] != "dc1-n2" || got["c@dc1"] != "dc1-n2" {
		t.Errorf("dc1-n1 gone 2 m: %v, want a and c moved to dc1-n2", got)
	}
	if _, ok := got["a@dc2"]; ok {
		t.Errorf("dc2 has no other data node, yet a's dc2 holder changed: %v", got)
	}
	c := holderCatalog(t, cur)
	delete(c.Nodes, "dc2-n1")
	got = byKey(Holders(holderView(c, map[mesh.NodeID]time.Duration{"dc2-n1": time.Hour})))
	if h, ok := got["a@dc2"]; !ok || h != "" {
		t.Errorf("holder removed from the cluster: %v, want a@dc2 unassigned", got)
	}
	if got := Holders(holderView(catalog.New(), nil)); got != nil {
		t.Errorf("no policy: %v", got)
	}
}

// TestHoldersMoveFromLeftNode: a node that left (node leave) holds nothing
// from then on, without waiting for the timeout, and is never chosen.
func TestHoldersMoveFromLeftNode(t *testing.T) {
	cur := map[string]map[string]mesh.NodeID{
		"a": {"dc1": "dc1-n1", "dc2": "dc2-n1"},
		"b": {"dc1": "dc1-n2", "dc2": "dc2-n1"},
		"c": {"dc1": "dc1-n1", "dc2": "dc2-n1"},
	}
	v := holderView(holderCatalog(t, cur), map[mesh.NodeID]time.Duration{"dc1-n1": time.Second})
	v.Left = func(id mesh.NodeID) bool { return id == "dc1-n1" }
	got := byKey(Holders(v))
	if len(got) != 2 || got["a@dc1"] != "dc1-n2" || got["c@dc1"] != "dc1-n2" {
		t.Errorf("dc1-n1 left a second ago: changes %v, want a and c at dc1 moved to dc1-n2 at once", got)
	}
	// Left but still answering gossip for a moment: not chosen either.
	v = holderView(holderCatalog(t, nil), nil)
	v.Left = func(id mesh.NodeID) bool { return id == "dc1-n1" }
	for k, h := range byKey(Holders(v)) {
		if h == "dc1-n1" {
			t.Errorf("%s placed on dc1-n1, which left", k)
		}
	}
}
