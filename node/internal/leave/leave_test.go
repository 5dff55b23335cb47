package leave

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/internal/testlog"
	"github.com/lifeboat-dr/lifeboat/internal/testwait"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/mesh/meshtest"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/rafttest"
	"github.com/lifeboat-dr/lifeboat/node/internal/streams"
)

// The engine runs here on in-memory Rafts (rafttest), a gossip that says
// what the test wants, and, where a leader is asked, real QUIC endpoints.

type fakeGossip struct {
	mu      sync.Mutex
	members []mesh.Member
	calls   []string
}

func (g *fakeGossip) Members() []mesh.Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.members)
}

func (g *fakeGossip) AnnounceLeaving(time.Duration) error { g.call("announce"); return nil }
func (g *fakeGossip) Leave(time.Duration) error           { g.call("leave"); return nil }

func (g *fakeGossip) call(what string) {
	g.mu.Lock()
	g.calls = append(g.calls, what)
	g.mu.Unlock()
}

// alive lists ids as alive members, but those in dead.
func alive(ids []string, dead ...string) []mesh.Member {
	var ms []mesh.Member
	for _, id := range ids {
		st := mesh.StateAlive
		if slices.Contains(dead, id) {
			st = mesh.StateDead
		}
		ms = append(ms, mesh.Member{Name: mesh.NodeID(id), State: st})
	}
	return ms
}

type fixedCatalog struct{ c *catalog.Catalog }

func (f fixedCatalog) Catalog() *catalog.Catalog { return f.c }

func TestCheckLeft(t *testing.T) {
	tests := []struct {
		name     string
		left     bool
		reset    bool
		wantErr  bool
		wantFile bool
	}{
		{"never left", false, false, false, false},
		{"left", true, false, true, true},
		{"left, raft reset", true, true, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.left {
				if err := os.WriteFile(filepath.Join(dir, File), []byte("left at 2026-12-07T09:00:00Z, by ada\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			err := CheckLeft(dir, tt.reset)
			if got := err != nil; got != tt.wantErr {
				t.Fatalf("CheckLeft = %v, want an error: %v", err, tt.wantErr)
			}
			if err != nil && (!errors.Is(err, ErrLeft) || !strings.Contains(err.Error(), "--reset-raft") || !strings.Contains(err.Error(), "by ada")) {
				t.Errorf("CheckLeft = %v, want ErrLeft naming the marker's text and --reset-raft", err)
			}
			_, serr := os.Stat(filepath.Join(dir, File))
			if got := serr == nil; got != tt.wantFile {
				t.Errorf("marker there after CheckLeft: %v, want %v", got, tt.wantFile)
			}
		})
	}
}

// TestLeaveChecks: what speaks against a leave, the refusal it makes
// (ErrUnsafe, nothing started) and what --force and --dry-run do.
func TestLeaveChecks(t *testing.T) {
	three := rafttest.Cluster(t, "n1", "n2", "n3")
	one := rafttest.Cluster(t, "s1")
	ids := []string{"n1", "n2", "n3"}
	holds := &catalog.Catalog{
		Nodes: map[mesh.NodeID]catalog.NodeInfo{
			"n1": {Name: "n1", Site: "dc1"}, "n2": {Name: "n2", Site: "dc1"}, "n3": {Name: "n3", Site: "dc1", Role: "witness"},
		},
		Services: map[string]*catalog.ServiceState{
			"erp":  {Holders: map[string]mesh.NodeID{"dc1": "n1"}},
			"mail": {Holders: map[string]mesh.NodeID{"dc1": "n1"}},
			"web":  {Holders: map[string]mesh.NodeID{"dc1": "n2"}},
		},
	}
	member := func(ms []*rafttest.Member, id string) *rafttest.Member {
		i := slices.IndexFunc(ms, func(m *rafttest.Member) bool { return m.ID == id })
		return ms[i]
	}
	tests := []struct {
		name     string
		raft     *rafttest.Member
		members  []mesh.Member
		noQuorum bool
		cat      *catalog.Catalog
		points   bool // the node keeps points of erp
		req      api.LeaveRequest
		want     []string // in the refusal, or the warnings when forced; none = allowed
		wantRes  api.LeaveResult
	}{
		{name: "all voters alive", raft: member(three, "n1"), members: alive(ids),
			wantRes: api.LeaveResult{Raft: "voter", Holds: nil}},
		{name: "another voter dead", raft: member(three, "n1"), members: alive(ids, "n3"),
			want: []string{"lose the Raft quorum", "1 of the 2 other voters are alive, 2 are needed", "n3 gone"}},
		{name: "another voter dead, forced", raft: member(three, "n1"), members: alive(ids, "n3"), req: api.LeaveRequest{Force: true, DryRun: true},
			want: []string{"lose the Raft quorum"}, wantRes: api.LeaveResult{Raft: "voter", DryRun: true}},
		{name: "no leader reachable", raft: member(three, "n2"), members: alive(ids), noQuorum: true,
			want: []string{"no Raft leader is reachable"}},
		{name: "the only voter", raft: one[0], members: alive([]string{"s1"}),
			want: []string{"only Raft voter"}},
		{name: "holder without points", raft: member(three, "n1"), members: alive(ids), cat: holds,
			wantRes: api.LeaveResult{Raft: "voter", Holds: []string{"erp", "mail"}}},
		{name: "only holder of points", raft: member(three, "n1"), members: alive(ids), cat: holds, points: true,
			want: []string{"only holder of the points of erp at site dc1", "n2 take the services over"}},
		{name: "only holder of points, nobody to take them", raft: member(three, "n1"), members: alive(ids, "n2"), cat: holds, points: true,
			want: []string{"no other data node of dc1 is alive"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cat := tt.cat
			if cat == nil {
				cat = &catalog.Catalog{}
			}
			o := Options{Name: mesh.NodeID(tt.raft.ID), Site: "dc1", DataDir: t.TempDir(), Raft: func() *raft.Raft { return tt.raft.Raft },
				Quorum: func() bool { return !tt.noQuorum }, Gossip: &fakeGossip{members: tt.members}, Catalog: fixedCatalog{cat}, Logger: testlog.New(t)}
			if tt.points {
				o.Points = func(_ context.Context, service, _ string) ([]blockstore.Point, error) {
					if service == "erp" {
						return []blockstore.Point{{}}, nil
					}
					return nil, nil
				}
			}
			e := New(o)
			res, start, err := e.Leave(t.Context(), tt.req, "ada")
			if len(tt.want) > 0 && !tt.req.Force {
				if !errors.Is(err, api.ErrUnsafe) || start != nil {
					t.Fatalf("Leave = %v (start %v), want ErrUnsafe and nothing to start", err, start != nil)
				}
				for _, w := range tt.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("refusal %q does not say %q", err, w)
					}
				}
				if e.Leaving() {
					t.Error("a refused leave marks the node leaving")
				}
				return
			}
			if err != nil {
				t.Fatalf("Leave: %v", err)
			}
			if res.Raft != tt.wantRes.Raft || res.DryRun != tt.wantRes.DryRun || !slices.Equal(res.Holds, tt.wantRes.Holds) {
				t.Errorf("result %+v, want raft %s, dry run %v, holds %v", res, tt.wantRes.Raft, tt.wantRes.DryRun, tt.wantRes.Holds)
			}
			if got := strings.Join(res.Warnings, "; "); len(tt.want) > 0 && !strings.Contains(got, tt.want[0]) {
				t.Errorf("warnings %q, want %q", got, tt.want[0])
			}
			if tt.req.DryRun != (start == nil) || e.Leaving() == tt.req.DryRun {
				t.Errorf("dry run %v: start %v, leaving %v", tt.req.DryRun, start != nil, e.Leaving())
			}
			if !tt.req.DryRun {
				if _, _, err := e.Leave(t.Context(), tt.req, "bob"); !errors.Is(err, api.ErrUnsafe) || !strings.Contains(err.Error(), "leaving already") {
					t.Errorf("a second leave: %v, want ErrUnsafe: leaving already", err)
				}
			}
		})
	}
}

// peers gives each member an engine, a gossip and a QUIC endpoint that
// serves leave requests (Dial maps Raft addresses to the endpoints').
type peers struct {
	engines map[string]*Engine
	gossip  map[string]*fakeGossip
	dirs    map[string]string
}

func newPeers(t *testing.T, ms []*rafttest.Member) *peers {
	t.Helper()
	ca := meshtest.CA(t)
	p := &peers{engines: map[string]*Engine{}, gossip: map[string]*fakeGossip{}, dirs: map[string]string{}}
	eps := map[string]*mesh.Endpoint{}
	var ids []string
	for _, m := range ms {
		ids = append(ids, m.ID)
		eps[m.ID] = meshtest.Endpoint(t, ca.Node(mesh.NodeID(m.ID), "dc1"))
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for _, m := range ms {
		ep := eps[m.ID]
		p.gossip[m.ID] = &fakeGossip{members: alive(ids)}
		p.dirs[m.ID] = t.TempDir()
		e := New(Options{Name: mesh.NodeID(m.ID), Site: "dc1", DataDir: p.dirs[m.ID], Raft: func() *raft.Raft { return m.Raft },
			Quorum: func() bool { return true }, Gossip: p.gossip[m.ID], Catalog: m.FSM, Wait: 2 * time.Second,
			Dial: func(ctx context.Context, addr string, kind mesh.StreamKind) (*mesh.Stream, error) {
				return ep.Dial(ctx, eps[addr].Addr().String(), kind)
			}, Logger: testlog.New(t)})
		p.engines[m.ID] = e
		wg.Go(func() {
			streams.Serve(ctx, streams.Options{Accept: ep.Accept, Logger: testlog.New(t)}, mesh.KindAdmin, "admin", func(ctx context.Context, s *mesh.Stream) error {
				t, b, err := mesh.NewFrameReader(s, 4096).Next()
				if err != nil || t != FrameLeave {
					return streams.Refuse(mesh.CodeBadRequest, "frame %d, %v", t, err)
				}
				e.ServeLeave(ctx, s, b)
				return nil
			})
		})
	}
	return p
}

func configured(r *raft.Raft, id string) bool { return inConfiguration(r, mesh.NodeID(id)) }

// leaveAndWait runs e, has ada's leave accepted and started, and waits
// for Run to end with ErrLeft.
func leaveAndWait(t *testing.T, e *Engine) *api.LeaveResult {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- e.Run(t.Context()) }()
	res, start, err := e.Leave(t.Context(), api.LeaveRequest{}, "ada")
	if err != nil {
		t.Fatal(err)
	}
	start()
	select {
	case err := <-done:
		if !errors.Is(err, ErrLeft) {
			t.Fatalf("Run = %v, want ErrLeft", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not end within 30 s of the leave")
	}
	return res
}

// TestLeaveRun: a follower's accepted leave marks its data dir, tells the
// gossip (the leaving flag before the leave), has the leader remove it
// from the catalog and Raft, and ends Run with ErrLeft.
func TestLeaveRun(t *testing.T) {
	ms := rafttest.Cluster(t, "n1", "n2", "n3")
	leader := rafttest.Leader(ms)
	var who *rafttest.Member
	for _, m := range ms {
		if m != leader {
			who = m
		}
	}
	up, err := catalog.EncodeCommand(&catalog.Command{Op: catalog.OpNodeUpsert, Node: &catalog.NodeInfo{Name: mesh.NodeID(who.ID), Site: "dc1"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := leader.Raft.Apply(up, 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	p := newPeers(t, ms)
	leaveAndWait(t, p.engines[who.ID])
	b, err := os.ReadFile(filepath.Join(p.dirs[who.ID], File))
	if err != nil || !strings.Contains(string(b), "by ada") {
		t.Errorf("LEFT marker %q, %v: want one naming ada", b, err)
	}
	if got := p.gossip[who.ID].calls; !slices.Equal(got, []string{"announce", "leave"}) {
		t.Errorf("gossip calls %v, want the leaving flag, then the leave", got)
	}
	testwait.For(t, who.ID+" out of the leader's raft and catalog", 10*time.Second, func() error {
		if configured(leader.Raft, who.ID) {
			return errors.New("still in raft")
		}
		if _, ok := leader.FSM.Catalog().Nodes[mesh.NodeID(who.ID)]; ok {
			return errors.New("still in the catalog")
		}
		return nil
	})
}

// TestLeaveRunLeader: a leader hands leadership on before it leaves and
// is removed by the next leader.
func TestLeaveRunLeader(t *testing.T) {
	ms := rafttest.Cluster(t, "n1", "n2", "n3")
	leader := rafttest.Leader(ms)
	p := newPeers(t, ms)
	if res := leaveAndWait(t, p.engines[leader.ID]); !res.Transferred {
		t.Errorf("result %+v: want the leadership handed on", res)
	}
	testwait.For(t, leader.ID+" out of the new leader's raft", 10*time.Second, func() error {
		next := rafttest.Leader(ms)
		if next == nil || next == leader {
			return errors.New("no new leader")
		}
		if configured(next.Raft, leader.ID) {
			return errors.New("still in raft")
		}
		return nil
	})
}

// TestRunEndsWithContext: without a leave, Run returns nil when ctx ends.
func TestRunEndsWithContext(t *testing.T) {
	e := New(Options{Name: "n1", Logger: testlog.New(t)})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := e.Run(ctx); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
}

// TestServeLeaveRefusals: a node that does not lead refuses to remove.
func TestServeLeaveRefusals(t *testing.T) {
	ms := rafttest.Cluster(t, "n1", "n2")
	follower := rafttest.Follower(ms)
	leader := rafttest.Leader(ms)
	p := newPeers(t, ms)
	ask := p.engines[leader.ID]
	// The leader asks the follower, as if it were the leader.
	_, _, err := streams.Request(t.Context(), ask.o.Dial, follower.ID, mesh.KindAdmin, FrameLeave, nil, 3*time.Second)
	var re *mesh.RemoteError
	if !errors.As(err, &re) || re.Code != mesh.CodeNotLeader {
		t.Errorf("a follower asked to remove: %v, want %s", err, mesh.CodeNotLeader)
	}
	if !configured(leader.Raft, leader.ID) {
		t.Error("a refused removal changed the configuration")
	}
}
