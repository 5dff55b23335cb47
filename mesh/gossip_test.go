package mesh_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/mesh"
)

// startGossip starts a "test"-profile member on 127.0.0.1:0, shut down at
// cleanup.
func startGossip(t testing.TB, name mesh.NodeID, site mesh.Site, key []byte, nw mesh.Network, events chan mesh.Event) *mesh.Gossip {
	t.Helper()
	g, err := mesh.StartGossip(mesh.GossipOptions{
		Name:    name,
		Meta:    mesh.Meta{Site: site, QUIC: "127.0.0.1:9" + string(name[len(name)-1]), Role: mesh.RoleNode},
		Bind:    "127.0.0.1:0",
		Key:     key,
		Network: nw,
		Profile: mesh.ProfileTest,
		Events:  events,
		Logger:  testLogger(t).With("self", string(name)),
	})
	if err != nil {
		t.Fatalf("start gossip %s: %v", name, err)
	}
	t.Cleanup(func() { g.Shutdown() })
	return g
}

func key(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

// stateOf returns name's state as g sees it ("" if unseen).
func stateOf(g *mesh.Gossip, name mesh.NodeID) mesh.MemberState {
	m, ok := g.Member(name)
	if !ok {
		return ""
	}
	return m.State
}

// threeMembers starts g1..g3 and joins g2 and g3 to g1.
func threeMembers(t *testing.T, nw func(mesh.NodeID) mesh.Network) []*mesh.Gossip {
	t.Helper()
	var gs []*mesh.Gossip
	for i, site := range []mesh.Site{"dc1", "dc1", "dc2"} {
		name := mesh.NodeID(fmt.Sprintf("g%d", i+1))
		var n mesh.Network
		if nw != nil {
			n = nw(name)
		}
		gs = append(gs, startGossip(t, name, site, key(7), n, nil))
	}
	for _, g := range gs[1:] {
		if n, err := g.Join([]string{gs[0].Addr()}); err != nil || n != 1 {
			t.Fatalf("join: n=%d err=%v", n, err)
		}
	}
	for _, g := range gs {
		eventually(t, 10*time.Second, "everyone alive", func() bool {
			ms := g.Members()
			if len(ms) != 3 {
				return false
			}
			for _, m := range ms {
				if m.State != mesh.StateAlive {
					return false
				}
			}
			return true
		})
	}
	return gs
}

func TestGossipMembersAndMeta(t *testing.T) {
	t.Parallel()
	gs := threeMembers(t, nil)
	ms := gs[2].Members()
	for i, m := range ms {
		wantName := mesh.NodeID(fmt.Sprintf("g%d", i+1))
		if m.Name != wantName {
			t.Errorf("member %d = %s, want %s (sorted)", i, m.Name, wantName)
		}
		wantSite := mesh.Site("dc1")
		if i == 2 {
			wantSite = "dc2"
		}
		want := mesh.Meta{Site: wantSite, QUIC: fmt.Sprintf("127.0.0.1:9%d", i+1), Role: mesh.RoleNode}
		if m.Meta != want {
			t.Errorf("%s meta = %+v, want %+v", m.Name, m.Meta, want)
		}
		if m.Addr != gs[i].Addr() {
			t.Errorf("%s addr = %s, want %s", m.Name, m.Addr, gs[i].Addr())
		}
	}
	if l := gs[0].Local(); l.Name != "g1" || l.State != mesh.StateAlive {
		t.Errorf("local = %+v", l)
	}

	// UpdateMeta propagates.
	nm := mesh.Meta{Site: "dc1", QUIC: "127.0.0.1:7777", Admin: "127.0.0.1:7948", Role: mesh.RoleWitness, Raft: true}
	if err := gs[0].UpdateMeta(nm); err != nil {
		t.Fatalf("update meta: %v", err)
	}
	for _, g := range gs[1:] {
		eventually(t, 10*time.Second, "new meta seen", func() bool {
			m, _ := g.Member("g1")
			return m.Meta == nm
		})
	}
}

func TestGossipEvents(t *testing.T) {
	t.Parallel()
	events := make(chan mesh.Event, 100)
	a := startGossip(t, "e1", "dc1", key(3), nil, events)
	b := startGossip(t, "e2", "dc1", key(3), nil, nil)
	if _, err := b.Join([]string{a.Addr()}); err != nil {
		t.Fatalf("join: %v", err)
	}
	got := map[mesh.NodeID]mesh.EventKind{}
	deadline := time.After(10 * time.Second)
	for got["e2"] != mesh.EventJoin {
		select {
		case ev := <-events:
			got[ev.Member.Name] = ev.Kind
		case <-deadline:
			t.Fatalf("no join event for e2; got %v", got)
		}
	}
	b.Shutdown()
	for got["e2"] != mesh.EventDead {
		select {
		case ev := <-events:
			got[ev.Member.Name] = ev.Kind
		case <-deadline:
			t.Fatalf("no dead event for e2; got %v", got)
		}
	}
}

func TestGossipWrongKey(t *testing.T) {
	t.Parallel()
	a := startGossip(t, "k1", "dc1", key(1), nil, nil)
	b := startGossip(t, "k2", "dc1", key(2), nil, nil)
	n, err := b.Join([]string{a.Addr()})
	if err == nil || n != 0 {
		t.Fatalf("join with wrong key: n=%d err=%v, want an error", n, err)
	}
	if !strings.Contains(err.Error(), a.Addr()) {
		t.Errorf("error %q does not name %s", err, a.Addr())
	}
	t.Logf("wrong key error: %v", err)
	if len(a.Members()) > 1 {
		t.Errorf("a sees %v", a.Members())
	}
}

func TestGossipDeadAndLeft(t *testing.T) {
	t.Parallel()
	gs := threeMembers(t, nil)
	if err := gs[1].Leave(2 * time.Second); err != nil {
		t.Fatalf("leave: %v", err)
	}
	gs[1].Shutdown()
	gs[2].Shutdown()
	eventually(t, 10*time.Second, "g2 left and g3 dead at g1", func() bool {
		return stateOf(gs[0], "g2") == mesh.StateLeft && stateOf(gs[0], "g3") == mesh.StateDead
	})
	if got := len(gs[0].Members()); got != 3 {
		t.Errorf("g1 lists %d members, want 3 (dead and left kept)", got)
	}
}

// TestGossipStop: a member that stops for now (a clean shutdown) is seen
// dead at once, from its message alone (it still runs and answers
// probes), not left: it keeps its place.
func TestGossipStop(t *testing.T) {
	t.Parallel()
	gs := threeMembers(t, nil)
	if err := gs[1].Stop(2 * time.Second); err != nil {
		t.Fatalf("stop: %v", err)
	}
	eventually(t, 10*time.Second, "g2 dead at g1 and g3", func() bool {
		return stateOf(gs[0], "g2") == mesh.StateDead && stateOf(gs[2], "g2") == mesh.StateDead
	})
}

func TestGossipFullEventsChannelNeverBlocks(t *testing.T) {
	t.Parallel()
	events := make(chan mesh.Event) // nobody reads
	a := startGossip(t, "f1", "dc1", key(4), nil, events)
	b := startGossip(t, "f2", "dc1", key(4), nil, nil)
	if _, err := b.Join([]string{a.Addr()}); err != nil {
		t.Fatalf("join: %v", err)
	}
	eventually(t, 10*time.Second, "f1 to see f2 alive", func() bool { return stateOf(a, "f2") == mesh.StateAlive })
	if a.Dropped() == 0 {
		t.Error("no events counted as dropped")
	}
}
