package placement

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-dr/lifeboat/mesh"
)

// nodes builds candidates from "site:count" pairs, named site-n1, site-n2...
func nodes(spec ...string) []Candidate {
	var out []Candidate
	for _, s := range spec {
		var site string
		var k int
		fmt.Sscanf(s, "%3s:%d", &site, &k)
		for i := 1; i <= k; i++ {
			out = append(out, Candidate{ID: mesh.NodeID(fmt.Sprintf("%s-n%d", site, i)), Site: mesh.Site(site)})
		}
	}
	return out
}

func perSite(ids []mesh.NodeID) map[string]int {
	m := map[string]int{}
	for _, id := range ids {
		m[string(id[:3])]++
	}
	return m
}

func TestPlaceVoters(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		alive []Candidate
		want  map[string]int // voters per site
	}{
		{"one node", nodes("dc1:1"), map[string]int{"dc1": 1}},
		{"two nodes one site", nodes("dc1:2"), map[string]int{"dc1": 1}},
		{"three nodes one site", nodes("dc1:3"), map[string]int{"dc1": 3}},
		{"seven nodes one site", nodes("dc1:7"), map[string]int{"dc1": 5}},
		{"two sites 2+2", nodes("dc1:2", "dc2:2"), map[string]int{"dc1": 2, "dc2": 1}},
		{"two sites and a witness", nodes("dc1:2", "dc2:2", "dc3:1"), map[string]int{"dc1": 2, "dc2": 2, "dc3": 1}},
		{"big sites and a witness", nodes("dc1:4", "dc2:4", "dc3:1"), map[string]int{"dc1": 2, "dc2": 2, "dc3": 1}},
		{"lopsided three sites", nodes("dc1:4", "dc2:1", "dc3:1"), map[string]int{"dc1": 1, "dc2": 1, "dc3": 1}},
		{"four sites", nodes("dc1:2", "dc2:2", "dc3:2", "dc4:2"), map[string]int{"dc1": 2, "dc2": 1, "dc3": 1, "dc4": 1}},
		{"witness site lost", nodes("dc2:2", "dc3:1"), map[string]int{"dc2": 2, "dc3": 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := PlaceVoters(tc.alive, MaxVoters)
			if len(got)%2 == 0 {
				t.Errorf("PlaceVoters = %v: an even number of voters", got)
			}
			if g := perSite(got); !mapsEqual(g, tc.want) {
				t.Errorf("voters per site = %v, want %v (voters %v)", g, tc.want, got)
			}
			sites := map[mesh.Site]bool{}
			for _, c := range tc.alive {
				sites[c.Site] = true
			}
			if len(sites) >= 3 {
				for s, k := range perSite(got) {
					if k > (len(got)-1)/2 {
						t.Errorf("site %s holds %d of %d votes: a majority", s, k, len(got))
					}
				}
			}
		})
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestPlaceVotersKeepsCurrentVoters(t *testing.T) {
	t.Parallel()
	alive := nodes("dc1:3", "dc2:3", "dc3:1")
	// The current voters are the highest-named nodes of dc1 and dc2.
	for i := range alive {
		if alive[i].ID == "dc1-n3" || alive[i].ID == "dc2-n3" || alive[i].ID == "dc1-n2" {
			alive[i].Voter = true
		}
	}
	got := PlaceVoters(alive, MaxVoters)
	for _, id := range []mesh.NodeID{"dc1-n3", "dc2-n3", "dc1-n2"} {
		if !slices.Contains(got, id) {
			t.Errorf("PlaceVoters = %v: dropped current voter %s", got, id)
		}
	}
}

// view builds a membership view: servers "id=voter|nonvoter", members
// "id@site=state[,noraft]".
func view(servers, members []string) View {
	v := View{Self: "dc1-n1", GoneSince: map[mesh.NodeID]time.Time{}, Now: time.Unix(1000, 0), DeadTimeout: time.Minute}
	for _, s := range servers {
		var id, kind string
		fmt.Sscanf(s, "%6s=%s", &id, &kind)
		suf := raft.Voter
		if kind == "nonvoter" {
			suf = raft.Nonvoter
		}
		v.Servers = append(v.Servers, raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(id + ":1"), Suffrage: suf})
	}
	for _, m := range members {
		var id, site, state string
		fmt.Sscanf(m, "%6s@%3s=%s", &id, &site, &state)
		hasRaft := true
		if s, ok := cutSuffix(state, ",noraft"); ok {
			state, hasRaft = s, false
		}
		v.Members = append(v.Members, mesh.Member{Name: mesh.NodeID(id), State: mesh.MemberState(state),
			Meta: mesh.Meta{Site: mesh.Site(site), QUIC: id + ":1", Raft: hasRaft}})
	}
	return v
}

func cutSuffix(s, suf string) (string, bool) {
	if len(s) >= len(suf) && s[len(s)-len(suf):] == suf {
		return s[:len(s)-len(suf)], true
	}
	return s, false
}

func TestPlanChange(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		servers []string
		members []string
		gone    map[mesh.NodeID]time.Duration // gone for this long
		want    string                        // "kind id" or "none"
	}{
		{"new node joins as nonvoter",
			[]string{"dc1-n1=voter"}, []string{"dc1-n1@dc1=alive", "dc2-n1@dc2=alive,noraft"}, nil, "add_nonvoter dc2-n1"},
		{"nonvoter without raft state is not promoted",
			[]string{"dc1-n1=voter", "dc2-n1=nonvoter"}, []string{"dc1-n1@dc1=alive", "dc2-n1@dc2=alive,noraft"}, nil, "none"},
		{"nonvoter with state is promoted",
			[]string{"dc1-n1=voter", "dc2-n1=nonvoter", "dc3-n1=nonvoter"},
			[]string{"dc1-n1@dc1=alive", "dc2-n1@dc2=alive", "dc3-n1@dc3=alive"}, nil, "promote dc2-n1"},
		{"voter that lost its state is demoted",
			[]string{"dc1-n1=voter", "dc2-n1=voter", "dc3-n1=voter"},
			[]string{"dc1-n1@dc1=alive", "dc2-n1@dc2=alive,noraft", "dc3-n1@dc3=alive"}, nil, "demote dc2-n1"},
		{"surplus voter demoted once placed voters vote",
			[]string{"dc1-n1=voter", "dc1-n2=voter", "dc1-n3=voter", "dc2-n1=voter", "dc3-n1=voter", "dc1-n4=voter"},
			[]string{"dc1-n1@dc1=alive", "dc1-n2@dc1=alive", "dc1-n3@dc1=alive", "dc1-n4@dc1=alive", "dc2-n1@dc2=alive", "dc3-n1@dc3=alive"},
			nil, "demote dc1-n2"},
		{"dead voter kept before the timeout",
			[]string{"dc1-n1=voter", "dc2-n1=voter", "dc3-n1=voter"},
			[]string{"dc1-n1@dc1=alive", "dc2-n1@dc2=dead", "dc3-n1@dc3=alive"},
			map[mesh.NodeID]time.Duration{"dc2-n1": 30 * time.Second}, "none"},
		{"dead voter removed after the timeout",
			[]string{"dc1-n1=voter", "dc2-n1=voter", "dc3-n1=voter"},
			[]string{"dc1-n1@dc1=alive", "dc2-n1@dc2=dead", "dc3-n1@dc3=alive"},
			map[mesh.NodeID]time.Duration{"dc2-n1": 2 * time.Minute}, "remove dc2-n1"},
		{"left node removed at once",
			[]string{"dc1-n1=voter", "dc2-n1=nonvoter"},
			[]string{"dc1-n1@dc1=alive", "dc2-n1@dc2=left"}, nil, "remove dc2-n1"},
		{"no removal that loses the quorum",
			// 2 of 3 voters dead: removing one leaves 2 voters with 1 alive.
			[]string{"dc1-n1=voter", "dc2-n1=voter", "dc3-n1=voter"},
			[]string{"dc1-n1@dc1=alive", "dc2-n1@dc2=dead", "dc3-n1@dc3=dead"},
			map[mesh.NodeID]time.Duration{"dc2-n1": time.Hour, "dc3-n1": time.Hour}, "none"},
		{"settled cluster",
			[]string{"dc1-n1=voter", "dc2-n1=voter", "dc3-n1=voter"},
			[]string{"dc1-n1@dc1=alive", "dc2-n1@dc2=alive", "dc3-n1@dc3=alive"}, nil, "none"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := view(tc.servers, tc.members)
			for id, d := range tc.gone {
				v.GoneSince[id] = v.Now.Add(-d)
			}
			got := "none"
			if c, ok := Plan(v); ok {
				got = c.Kind.String() + " " + string(c.ID)
			}
			if got != tc.want {
				t.Errorf("Plan = %q, want %q", got, tc.want)
			}
		})
	}
}
