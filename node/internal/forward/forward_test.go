package forward

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-dr/lifeboat/internal/testlog"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/mesh/meshtest"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/rafttest"
	"github.com/lifeboat-dr/lifeboat/node/internal/streams"
)

// The engines run here on in-memory Rafts (rafttest) with real QUIC
// endpoints and certificates of a test CA between them.

// frameEcho is a request type served by a handler of the test's.
const frameEcho, frameEchoed mesh.FrameType = 50, 51

type peer struct {
	m   *rafttest.Member
	ep  *mesh.Endpoint
	e   *Engine
	got chan []byte // payloads frameEcho brought
}

// cluster runs an engine per Raft member of ms, each serving on its own
// endpoint until the test ends (Run is joined before the endpoints close).
func cluster(t *testing.T, ms []*rafttest.Member, mutate func(*Options)) map[string]*peer {
	t.Helper()
	ca := meshtest.CA(t)
	peers := map[string]*peer{}
	var members []mesh.Member
	for _, m := range ms {
		p := &peer{m: m, ep: meshtest.Endpoint(t, ca.Node(mesh.NodeID(m.ID), "dc1")), got: make(chan []byte, 1)}
		peers[m.ID] = p
		members = append(members, mesh.Member{Name: mesh.NodeID(m.ID), State: mesh.StateAlive, Meta: mesh.Meta{QUIC: p.ep.Addr().String()}})
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	t.Cleanup(cancel)
	for _, p := range peers {
		o := Options{Raft: func() *raft.Raft { return p.m.Raft }, Dial: p.ep.Dial, Accept: p.ep.Accept,
			Members: func() []mesh.Member { return members }, Catalog: p.m.FSM, Logger: testlog.New(t),
			Handlers: map[mesh.FrameType]Handler{frameEcho: func(_ context.Context, s *mesh.Stream, b []byte) {
				p.got <- b
				mesh.WriteFrame(s, frameEchoed, b)
			}}}
		if mutate != nil {
			mutate(&o)
		}
		p.e = New(o)
		done := make(chan error, 1)
		go func() { done <- p.e.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run of %s: %v", p.m.ID, err)
			}
		})
	}
	return peers
}

func note(k, v string) *catalog.Command {
	return &catalog.Command{Op: catalog.OpNote, Key: k, Value: v}
}

// TestApplyFromFollowerAndLeader: a write applied on the leader or
// forwarded by a follower is in both catalogs; the follower's is updated
// before Apply returns (read your writes).
func TestApplyFromFollowerAndLeader(t *testing.T) {
	ms := rafttest.Cluster(t, "n1", "n2")
	peers := cluster(t, ms, nil)
	leader, follower := peers[rafttest.Leader(ms).ID], peers[rafttest.Follower(ms).ID]
	for _, tt := range []struct {
		name string
		from *peer
	}{{"on the leader", leader}, {"forwarded by a follower", follower}} {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.from.e.Apply(t.Context(), note("k", tt.name)); err != nil {
				t.Fatal(err)
			}
			if got := tt.from.m.FSM.Catalog().Notes["k"]; got != tt.name {
				t.Errorf("note k at the writer after Apply = %q, want %q", got, tt.name)
			}
		})
	}
}

// TestApplyRefusedStops: a command the state machine refuses comes back
// as ErrBadCommand at once, from the leader and forwarded alike, not
// retried until ErrNoQuorum.
func TestApplyRefusedStops(t *testing.T) {
	ms := rafttest.Cluster(t, "n1", "n2")
	peers := cluster(t, ms, func(o *Options) { o.WriteTimeout = time.Minute })
	bad := &catalog.Command{Op: catalog.OpDrill, Drill: &catalog.DrillRecord{Service: "erp"}} // no ID
	for _, m := range ms {
		err := peers[m.ID].e.Apply(t.Context(), bad)
		if !errors.Is(err, catalog.ErrBadCommand) || errors.Is(err, api.ErrNoQuorum) {
			t.Errorf("Apply of a refused command on %s (%s) = %v, want ErrBadCommand", m.ID, m.Raft.State(), err)
		}
	}
}

// TestApplyWithoutLeader: with no leader to reach, Apply gives up after
// the write timeout with ErrNoQuorum naming the last failure.
func TestApplyWithoutLeader(t *testing.T) {
	m := rafttest.Alone(t, "n1")
	e := New(Options{Raft: func() *raft.Raft { return m.Raft }, Catalog: m.FSM, WriteTimeout: 100 * time.Millisecond, Logger: testlog.New(t)})
	err := e.Apply(t.Context(), note("k", "v"))
	if !errors.Is(err, api.ErrNoQuorum) || !strings.Contains(err.Error(), "no leader known") {
		t.Errorf("Apply without a leader = %v, want ErrNoQuorum after 'no leader known'", err)
	}
}

// TestServeAnswers: what the admin stream answers each request with.
func TestServeAnswers(t *testing.T) {
	ms := rafttest.Cluster(t, "n1", "n2")
	peers := cluster(t, ms, nil)
	leader, follower := peers[rafttest.Leader(ms).ID], peers[rafttest.Follower(ms).ID]
	good, err := catalog.EncodeCommand(note("k", "v"))
	if err != nil {
		t.Fatal(err)
	}
	bad, err := catalog.EncodeCommand(&catalog.Command{Op: catalog.OpDrill, Drill: &catalog.DrillRecord{Service: "erp"}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		to       *peer
		frame    mesh.FrameType
		payload  []byte
		wantCode mesh.ErrCode // CodeOK: an answer of wantType
		wantType mesh.FrameType
	}{
		{"unknown type", leader, 99, nil, mesh.CodeBadRequest, 0},
		{"command that does not decode", leader, FrameApply, []byte("{"), mesh.CodeBadRequest, 0},
		{"command the catalog refuses", leader, FrameApply, bad, mesh.CodeBadRequest, 0},
		{"write to a follower", follower, FrameApply, good, mesh.CodeNotLeader, 0},
		{"write to the leader", leader, FrameApply, good, mesh.CodeOK, FrameApplied},
		{"raft state", follower, FrameRaftState, nil, mesh.CodeOK, FrameRaftStateIs},
		{"a handler's type", follower, frameEcho, []byte("hi"), mesh.CodeOK, frameEchoed},
	}
	from := meshtest.Endpoint(t, meshtest.CA(t).Node("n3", "dc1")) // another CA: refused
	if _, _, err := streams.Request(t.Context(), from.Dial, leader.ep.Addr().String(), mesh.KindAdmin, FrameRaftState, nil, 3*time.Second); err == nil {
		t.Error("a node of another CA was answered")
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			asker := follower // the other node asks
			if tt.to == follower {
				asker = leader
			}
			typ, p, err := streams.Request(t.Context(), asker.ep.Dial, tt.to.ep.Addr().String(), mesh.KindAdmin, tt.frame, tt.payload, 3*time.Second)
			if tt.wantCode != mesh.CodeOK {
				var re *mesh.RemoteError
				if typ != mesh.FrameTypeError || !errors.As(err, &re) || re.Code != tt.wantCode {
					t.Fatalf("answer type %d, %v; want an error frame with %s", typ, err, tt.wantCode)
				}
				return
			}
			if err != nil || typ != tt.wantType {
				t.Fatalf("answer type %d, %v; want type %d", typ, err, tt.wantType)
			}
			switch tt.wantType {
			case FrameApplied, FrameRaftStateIs:
				if len(p) != 8 || binary.BigEndian.Uint64(p) == 0 {
					t.Errorf("answer %x: want a Raft index of 8 bytes", p)
				}
			case frameEchoed:
				if string(p) != "hi" || string(<-tt.to.got) != "hi" {
					t.Errorf("echo %q, want the payload back", p)
				}
			}
		})
	}
}

// TestLastIndexAndVerifyPeer: the Raft state query reads the peer's last
// index; peer verification accepts the certificate of the node named
// and refuses another's.
func TestLastIndexAndVerifyPeer(t *testing.T) {
	ms := rafttest.Cluster(t, "n1", "n2")
	peers := cluster(t, ms, nil)
	a, b := peers["n1"], peers["n2"]
	idx, err := a.e.LastIndex(t.Context(), b.ep.Addr().String())
	if err != nil || idx == 0 || idx > b.m.Raft.LastIndex() {
		t.Errorf("LastIndex of n2 = %d, %v; want 1..%d", idx, err, b.m.Raft.LastIndex())
	}
	if err := a.e.VerifyPeer(t.Context(), "n2", b.ep.Addr().String()); err != nil {
		t.Errorf("VerifyPeer of n2 at its address: %v", err)
	}
	err = a.e.VerifyPeer(t.Context(), "n3", b.ep.Addr().String())
	if err == nil || !strings.Contains(err.Error(), "certificate there is for node n2") {
		t.Errorf("VerifyPeer of n3 at n2's address: %v, want a refusal naming n2", err)
	}
}

// TestRunJoinsRequests: Run returns only after a request it is serving
// has ended (the stream is aborted when ctx ends).
func TestRunJoinsRequests(t *testing.T) {
	ms := rafttest.Cluster(t, "n1")
	ca := meshtest.CA(t)
	ep, from := meshtest.Endpoint(t, ca.Node("n1", "dc1")), meshtest.Endpoint(t, ca.Node("n2", "dc1"))
	started, ended := make(chan struct{}), make(chan struct{})
	e := New(Options{Raft: func() *raft.Raft { return ms[0].Raft }, Dial: ep.Dial, Accept: ep.Accept, Catalog: ms[0].FSM, Logger: testlog.New(t),
		Handlers: map[mesh.FrameType]Handler{frameEcho: func(ctx context.Context, _ *mesh.Stream, _ []byte) {
			close(started)
			<-ctx.Done()
			close(ended)
		}}})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	go streams.Request(t.Context(), from.Dial, ep.Addr().String(), mesh.KindAdmin, frameEcho, nil, 3*time.Second)
	<-started
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	select {
	case <-ended:
	default:
		t.Fatal("Run returned while a request was being served")
	}
}
