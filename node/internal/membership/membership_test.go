package membership

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-dr/lifeboat/internal/clock"
	"github.com/lifeboat-dr/lifeboat/internal/logpolicy"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// The engine runs here on one in-memory Raft of its own (a leader alone)
// and a gossip that says what the test wants.

type fakeGossip struct {
	mu      sync.Mutex
	members []mesh.Member
	metas   int
}

func (g *fakeGossip) Members() []mesh.Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]mesh.Member(nil), g.members...)
}
func (g *fakeGossip) Join([]string) (int, error) { return 0, errors.New("no peers here") }
func (g *fakeGossip) UpdateMeta(mesh.Meta) error {
	g.mu.Lock()
	g.metas++
	g.mu.Unlock()
	return nil
}

func member(name, site, quic string, state mesh.MemberState) mesh.Member {
	return mesh.Member{Name: mesh.NodeID(name), Addr: name + ":7946", State: state, Meta: mesh.Meta{Site: mesh.Site(site), Role: "node", QUIC: quic}}
}

// leader starts a one-server in-memory Raft over a catalog state machine
// and waits for it to lead.
func leader(t *testing.T) (*raft.Raft, *catalog.FSM) {
	t.Helper()
	fsm := catalog.NewFSM()
	conf := raft.DefaultConfig()
	conf.LocalID = "dc1-n1"
	conf.HeartbeatTimeout, conf.ElectionTimeout, conf.LeaderLeaseTimeout = 50*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond
	conf.Logger = nil
	conf.LogOutput = io.Discard
	store := raft.NewInmemStore()
	_, trans := raft.NewInmemTransport("dc1-n1:1")
	r, err := raft.NewRaft(conf, fsm, store, store, raft.NewInmemSnapshotStore(), trans)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Shutdown().Error() })
	if err := r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: "dc1-n1", Address: "dc1-n1:1"}}}).Error(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.LeaderCh():
	case <-time.After(10 * time.Second):
		t.Fatal("no leader in 10 s")
	}
	for r.State() != raft.Leader {
		<-r.LeaderCh()
	}
	return r, fsm
}

type fixture struct {
	e        *Engine
	r        *raft.Raft
	fsm      *catalog.FSM
	gossip   *fakeGossip
	clk      *clock.Fake
	mu       sync.Mutex
	verified []mesh.NodeID
	refuse   map[mesh.NodeID]bool
}

func newFixture(t *testing.T) *fixture {
	r, fsm := leader(t)
	f := &fixture{r: r, fsm: fsm, gossip: &fakeGossip{}, clk: clock.NewFake(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)), refuse: map[mesh.NodeID]bool{}}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f.e = New(Options{Name: "dc1-n1", QUIC: "dc1-n1:1", BootstrapExpect: 1, DeadNodeTimeout: time.Hour, HolderTimeout: time.Minute,
		ReconcileInterval: time.Second, ReconnectInterval: time.Minute,
		Raft: func() *raft.Raft { return r }, Gossip: f.gossip, Events: make(chan mesh.Event), Catalog: fsm, State: NewRaftState(true),
		Meta: func() mesh.Meta { return mesh.Meta{} },
		VerifyPeer: func(_ context.Context, id mesh.NodeID, _ string) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.verified = append(f.verified, id)
			if f.refuse[id] {
				return errors.New("the certificate there is for someone else")
			}
			return nil
		},
		LastIndex: func(context.Context, string) (uint64, error) { return 0, nil },
		Clock:     f.clk, Logs: logpolicy.New(logpolicy.Options{Log: log}), Logger: log})
	return f
}

func (f *fixture) servers(t *testing.T) map[raft.ServerID]raft.ServerSuffrage {
	t.Helper()
	cf := f.r.GetConfiguration()
	if err := cf.Error(); err != nil {
		t.Fatal(err)
	}
	out := map[raft.ServerID]raft.ServerSuffrage{}
	for _, s := range cf.Configuration().Servers {
		out[s.ID] = s.Suffrage
	}
	return out
}

// TestReconcileRegistersAndAdds: the leader registers the alive members
// in the catalog and gives a verified new node a place in Raft as a
// non-voter; a node whose endpoint does not prove its name gets none.
func TestReconcileRegistersAndAdds(t *testing.T) {
	f := newFixture(t)
	f.gossip.members = []mesh.Member{
		member("dc1-n1", "dc1", "dc1-n1:1", mesh.StateAlive),
		member("dc2-n1", "dc2", "dc2-n1:1", mesh.StateAlive),
		member("dc3-n1", "dc3", "dc3-n1:1", mesh.StateAlive),
	}
	f.refuse["dc3-n1"] = true
	err := f.e.reconcile(t.Context())
	if err == nil {
		t.Fatal("reconcile added a node whose certificate does not match, or did not say so")
	}
	cat := f.fsm.Catalog()
	for _, n := range []mesh.NodeID{"dc1-n1", "dc2-n1", "dc3-n1"} {
		if _, ok := cat.Nodes[n]; !ok {
			t.Errorf("catalog has no node %s", n)
		}
	}
	if ni := cat.Nodes["dc2-n1"]; ni.Site != "dc2" || ni.QUIC != "dc2-n1:1" || ni.Gossip != "dc2-n1:7946" || !ni.Added.Equal(f.clk.Now()) {
		t.Errorf("dc2-n1 registered as %+v", ni)
	}
	srv := f.servers(t)
	if s, ok := srv["dc2-n1"]; !ok || s != raft.Nonvoter {
		t.Errorf("raft servers %v: want dc2-n1 added as a non-voter", srv)
	}
	if _, ok := srv["dc3-n1"]; ok {
		t.Errorf("raft servers %v: dc3-n1 got a place without proving its name", srv)
	}
	// Once dc3-n1 proves its name it gets its place; registered nodes
	// keep the time they were added.
	f.refuse["dc3-n1"] = false
	added := f.clk.Now()
	f.clk.Advance(time.Minute)
	if err := f.e.reconcile(t.Context()); err != nil {
		t.Fatal(err)
	}
	if srv := f.servers(t); len(srv) != 3 {
		t.Errorf("second pass: raft servers %v, want dc3-n1 added", srv)
	}
	if got := f.fsm.Catalog().Nodes["dc2-n1"].Added; !got.Equal(added) {
		t.Errorf("dc2-n1 added at %v after the second pass, want %v", got, added)
	}
}

// TestDeadNodeRemoved: a server gone longer than the dead timeout (by the
// engine's clock) leaves Raft and the catalog; one gone less stays.
func TestDeadNodeRemoved(t *testing.T) {
	f := newFixture(t)
	f.gossip.members = []mesh.Member{member("dc1-n1", "dc1", "dc1-n1:1", mesh.StateAlive), member("dc2-n1", "dc2", "dc2-n1:1", mesh.StateAlive)}
	if err := f.e.reconcile(t.Context()); err != nil {
		t.Fatal(err)
	}
	f.gossip.members[1].State = mesh.StateDead
	if err := f.e.reconcile(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.servers(t)["dc2-n1"]; !ok {
		t.Fatal("a node dead for no time at all left Raft")
	}
	f.clk.Advance(2 * time.Hour)
	if err := f.e.reconcile(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.servers(t)["dc2-n1"]; ok {
		t.Errorf("dc2-n1 dead for 2 h (timeout 1 h) is still a raft server")
	}
	if _, ok := f.fsm.Catalog().Nodes["dc2-n1"]; ok {
		t.Errorf("dc2-n1 dead for 2 h is still in the catalog")
	}
}

// TestTrackGone: a node is gone since gossip's own time for it, or since
// it was first seen gone; seen again, it is forgotten.
func TestTrackGone(t *testing.T) {
	f := newFixture(t)
	t0 := f.clk.Now()
	dead := member("b", "dc1", "", mesh.StateDead)
	dead.Since = t0.Add(-time.Minute)
	members := []mesh.Member{member("a", "dc1", "", mesh.StateAlive), dead}
	got := f.e.trackGone([]mesh.NodeID{"a", "b", "c"}, members, t0)
	if _, ok := got["a"]; ok || !got["b"].Equal(t0.Add(-time.Minute)) || !got["c"].Equal(t0) {
		t.Fatalf("gone %v: want b since a minute ago, c since now, not a", got)
	}
	got = f.e.trackGone([]mesh.NodeID{"c"}, members, t0.Add(time.Hour))
	if !got["c"].Equal(t0) {
		t.Errorf("c's gone time moved to %v", got["c"])
	}
	members = append(members, member("c", "dc1", "", mesh.StateSuspect))
	if got := f.e.trackGone([]mesh.NodeID{"c"}, members, t0.Add(2*time.Hour)); len(got) != 0 {
		t.Errorf("a suspect node counts as gone: %v", got)
	}
	if got := f.e.trackGone([]mesh.NodeID{"c"}, members[:2], t0.Add(3*time.Hour)); !got["c"].Equal(t0.Add(3 * time.Hour)) {
		t.Errorf("after being seen again, c is gone since %v, want the new time", got["c"])
	}
}

// TestRunEnds: Run returns once its context ends, its join loop included.
func TestRunEnds(t *testing.T) {
	f := newFixture(t)
	f.e.o.Join = []string{"nowhere:1"}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- f.e.Run(ctx) }()
	if err := f.clk.WaitFor(ctx, 3); err != nil { // the loops' tickers
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10 s of its context ending")
	}
}
