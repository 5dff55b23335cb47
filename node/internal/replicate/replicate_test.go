package replicate

import (
	"cmp"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

const testPolicy = `[[site]]
name = "dc1"
[[site]]
name = "dc2"
[[site]]
name = "dc3"
[[link]]
between = ["dc1", "dc2"]
coalesce = "30s"
[[link]]
between = ["dc1", "dc3"]
[[service]]
name = "web"
primary = "dc1"
  [[service.server]]
  name = "s1"
    [[service.server.volume]]
    name = "disk"
    path = "/dev/x"
    size = "256KiB"
  [[service.copy]]
  site = "dc2"
  tier = "warm"
  [[service.copy]]
  site = "dc3"
  tier = "cold"
  schedule = "daily 02:00"
[[service]]
name = "db"
primary = "dc2"
  [[service.server]]
  name = "s2"
    [[service.server.volume]]
    name = "disk"
    path = "/dev/y"
    size = "256KiB"
  [[service.copy]]
  site = "dc1"
  tier = "hot"
`

// testCatalog returns the catalog after the test policy (unless noPolicy)
// and the holders given.
func testCatalog(t *testing.T, noPolicy bool, holders ...catalog.Holder) *catalog.Catalog {
	t.Helper()
	fsm := catalog.NewFSM()
	var cmds []*catalog.Command
	if !noPolicy {
		pol, err := config.ParseCluster("p.toml", []byte(testPolicy))
		if err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, &catalog.Command{Op: catalog.OpPolicy, Policy: &catalog.PolicyRecord{Cluster: pol}})
	}
	if len(holders) > 0 {
		cmds = append(cmds, &catalog.Command{Op: catalog.OpHolders, Holders: holders})
	}
	for i, c := range cmds {
		b, err := catalog.EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		if res := fsm.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: b}).(catalog.ApplyResult); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	return fsm.Catalog()
}

func TestWantedSenders(t *testing.T) {
	all := []catalog.Holder{
		{Service: "web", Site: "dc1", Node: "dc1-n1"},
		{Service: "web", Site: "dc2", Node: "dc2-n1"},
		{Service: "web", Site: "dc3", Node: "dc3-n1"},
		{Service: "db", Site: "dc2", Node: "dc2-n1"},
		{Service: "db", Site: "dc1", Node: "dc1-n2"},
	}
	tests := []struct {
		name     string
		noPolicy bool
		holders  []catalog.Holder
		node     mesh.NodeID
		site     mesh.Site
		want     []replKey
	}{
		{"primary's holder sends to every copy", false, all, "dc1-n1", "dc1", []replKey{{"web", "dc2"}, {"web", "dc3"}}},
		{"another node of the primary site sends nothing", false, all, "dc1-n2", "dc1", nil},
		{"a recovery site's holder sends its own primary's service only", false, all, "dc2-n1", "dc2", []replKey{{"db", "dc1"}}},
		{"no sender to a copy without a holder", false, all[:2], "dc1-n1", "dc1", []replKey{{"web", "dc2"}}},
		{"no holder at the primary", false, all[1:3], "dc1-n1", "dc1", nil},
		{"no policy", true, nil, "dc1-n1", "dc1", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := wantedSenders(testCatalog(t, tt.noPolicy, tt.holders...), tt.node, tt.site)
			keys := slices.SortedFunc(maps.Keys(got), func(a, b replKey) int {
				return cmp.Or(strings.Compare(a.service, b.service), strings.Compare(a.site, b.site))
			})
			if !slices.Equal(keys, tt.want) {
				t.Fatalf("senders = %v, want %v", keys, tt.want)
			}
		})
	}
}

func TestWantedSenderSettings(t *testing.T) {
	cat := testCatalog(t, false,
		catalog.Holder{Service: "web", Site: "dc1", Node: "dc1-n1"},
		catalog.Holder{Service: "web", Site: "dc2", Node: "dc2-n1"},
		catalog.Holder{Service: "web", Site: "dc3", Node: "dc3-n1"})
	got := wantedSenders(cat, "dc1-n1", "dc1")
	warm, cold := got[replKey{"web", "dc2"}], got[replKey{"web", "dc3"}]
	if warm.dest != "dc2-n1" || warm.tier != "warm" || warm.coalesce != 30*time.Second || !warm.cadence.IsZero() {
		t.Errorf("warm sender = %+v, want dest dc2-n1, tier warm, coalesce 30s, no cadence", warm)
	}
	if cold.dest != "dc3-n1" || cold.tier != "cold" || cold.coalesce != 0 || cold.cadence.IsZero() {
		t.Errorf("cold sender = %+v, want dest dc3-n1, tier cold, no coalescing, a cadence", cold)
	}
	// A sender whose holder moved is not the one wanted any more.
	s := &sender{dest: warm.dest, tierName: string(warm.tier), coalesce: warm.coalesce, cadence: warm.cadence}
	if !warm.same(s) {
		t.Errorf("same(%+v) = false for the sender it describes", warm)
	}
	s.dest = "dc2-n2"
	if warm.same(s) {
		t.Errorf("same = true for a sender to another holder")
	}
}

func TestDistinctSenders(t *testing.T) {
	cat := testCatalog(t, false,
		catalog.Holder{Service: "web", Site: "dc1", Node: "dc1-n1"},
		catalog.Holder{Service: "db", Site: "dc2", Node: "dc2-n1"})
	for _, tt := range []struct {
		from, to mesh.Site
		want     int
	}{{"dc1", "dc2", 1}, {"dc1", "dc3", 1}, {"dc2", "dc1", 1}, {"dc2", "dc3", 0}, {"dc3", "dc1", 0}} {
		if got := distinctSenders(cat, tt.from, tt.to); got != tt.want {
			t.Errorf("distinctSenders(%s, %s) = %d, want %d", tt.from, tt.to, got, tt.want)
		}
	}
	if got := distinctSenders(nil, "dc1", "dc2"); got != 0 {
		t.Errorf("distinctSenders(nil) = %d, want 0", got)
	}
}
