package status

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/internal/testpolicy"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// TestBuild: nodes from the catalog, the gossip and the Raft
// configuration, counted per site; a copy's RPO against its target, its
// progress and its link policy; everything in a stable order.
func TestBuild(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	pol, err := config.ParseCluster("p.toml", []byte(testpolicy.Sites("dc1", "dc2", "dc3")+`[[link]]
between = ["dc1", "dc2"]
rate = "100Mbit"
`+testpolicy.Service("web", "dc1", "1MiB", `rpo = "30s"`, testpolicy.Copy("dc2", "hot", ""), testpolicy.Copy("dc3", "warm", ""))))
	if err != nil {
		t.Fatal(err)
	}
	cat := catalog.New()
	cat.Policy = &catalog.PolicyRecord{Version: 3, Cluster: pol}
	cat.Nodes["dc1-n1"] = catalog.NodeInfo{Name: "dc1-n1", Site: "dc1", Role: "node"}
	cat.Nodes["dc3-n1"] = catalog.NodeInfo{Name: "dc3-n1", Site: "dc3", Role: "node"}
	cat.Sites["dc1"] = catalog.SiteInfo{Name: "dc1"}
	cat.Services["web"] = &catalog.ServiceState{Epoch: 1,
		Holders:    map[string]mesh.NodeID{"dc1": "dc1-n1", "dc2": "dc2-n1"},
		Watermarks: map[string]catalog.Watermark{"dc2": {Site: "dc2", Point: "p2", Time: now.Add(-10 * time.Second)}, "dc3": {Site: "dc3", Point: "p1", Time: now.Add(-time.Minute)}},
		Progress:   map[string]catalog.Progress{"dc2": {Site: "dc2", Backlog: 4096, Sending: "p3"}},
		Marks: []catalog.PointMark{
			{Service: "web", Point: "p0", Suspect: &catalog.Suspicion{Volume: "web/disk", Changed: 0.5, Cleared: "alice"}},
			{Service: "web", Point: "p2", Suspect: &catalog.Suspicion{Volume: "web/disk", Changed: 0.6}},
			{Service: "web", Point: "p1", Verified: &catalog.Verification{Result: catalog.VerifyOK}},
		},
	}
	members := []mesh.Member{
		{Name: "dc2-n1", State: mesh.StateAlive, Meta: mesh.Meta{Site: "dc2", Role: "node", QUIC: "q2"}},
		{Name: "dc1-n1", State: mesh.StateAlive, Meta: mesh.Meta{Site: "dc1", Role: "node", QUIC: "q1"}},
	}
	r := Raft{State: "Leader", Leader: "dc1-n1", Term: 4, Servers: []raft.Server{
		{ID: "dc2-n1", Suffrage: raft.Voter}, {ID: "dc1-n1", Suffrage: raft.Voter}, {ID: "dc3-n1", Suffrage: raft.Nonvoter}}}

	st := Build("dc1-n1", "dc1", r, cat, members, now)
	if st.PolicyVersion != 3 || st.Term != 4 || st.Leader != "dc1-n1" || len(st.Voters) != 2 || st.Voters[0] != "dc1-n1" {
		t.Errorf("status %+v", st)
	}
	if len(st.Nodes) != 3 || st.Nodes[0].Name != "dc1-n1" || st.Nodes[2].Name != "dc3-n1" {
		t.Fatalf("nodes %+v: want dc1-n1, dc2-n1, dc3-n1", st.Nodes)
	}
	if n := st.Nodes[2]; n.State != "dead" || n.Raft != "nonvoter" || n.Site != "dc3" {
		t.Errorf("dc3-n1 (in the catalog, not in the gossip) is %+v", n)
	}
	if n := st.Nodes[1]; n.State != "alive" || !n.Voter || n.QUIC != "q2" {
		t.Errorf("dc2-n1 is %+v", n)
	}
	sites := map[mesh.Site][2]int{}
	for _, s := range st.Sites {
		sites[s.Name] = [2]int{s.Nodes, s.Alive}
	}
	if sites["dc1"] != [2]int{1, 1} || sites["dc2"] != [2]int{1, 1} || sites["dc3"] != [2]int{1, 0} {
		t.Errorf("sites %v", sites)
	}
	if len(st.Services) != 1 || len(st.Services[0].Copies) != 2 {
		t.Fatalf("services %+v", st.Services)
	}
	web := st.Services[0]
	if web.Primary != "dc1" || web.RPOTarget != 30 || web.Holders["dc2"] != "dc2-n1" {
		t.Errorf("web %+v", web)
	}
	if len(web.Suspect) != 1 || web.Suspect[0].Point != "p2" {
		t.Errorf("suspect %+v: want p2 alone (p0 was cleared)", web.Suspect)
	}
	hot, warm := web.Copies[0], web.Copies[1]
	if hot.Site != "dc2" || hot.RPO != 10 || !hot.RPOMet || hot.Backlog != 4096 || hot.Sending != "p3" || hot.LinkRate != 12.5e6 || hot.LinkPolicy == "" {
		t.Errorf("hot copy %+v", hot)
	}
	if warm.Site != "dc3" || warm.RPO != 60 || warm.RPOMet || warm.LinkPolicy != "no link policy: unlimited" {
		t.Errorf("warm copy %+v: want RPO 60 s, not met, no link", warm)
	}
}
