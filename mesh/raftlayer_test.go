package mesh_test

import (
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/mesh/meshtest"
)

// logFSM records applied commands.
type logFSM struct {
	mu  sync.Mutex
	log []string
}

func (f *logFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log = append(f.log, string(l.Data))
	return len(f.log)
}

func (f *logFSM) applied() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.log...)
}

func (f *logFSM) Snapshot() (raft.FSMSnapshot, error) { return nopSnapshot{}, nil }
func (f *logFSM) Restore(rc io.ReadCloser) error      { return rc.Close() }

type nopSnapshot struct{}

func (nopSnapshot) Persist(s raft.SnapshotSink) error { return s.Close() }
func (nopSnapshot) Release()                          {}

func TestRaftOverEndpoints(t *testing.T) {
	t.Parallel()
	ca := meshtest.CA(t)
	log := testLogger(t)
	type member struct {
		r   *raft.Raft
		fsm *logFSM
	}
	var members []member
	var servers []raft.Server
	var eps []*mesh.Endpoint
	for i := range 3 {
		e := newEndpoint(t, ca.Node(mesh.NodeID(fmt.Sprintf("n%d", i)), "dc1"), nil, "")
		eps = append(eps, e)
		servers = append(servers, raft.Server{
			ID:      raft.ServerID(fmt.Sprintf("n%d", i)),
			Address: raft.ServerAddress(e.Addr().String()),
		})
	}
	for i, e := range eps {
		conf := raft.DefaultConfig()
		conf.LocalID = servers[i].ID
		conf.HeartbeatTimeout = 200 * time.Millisecond
		conf.ElectionTimeout = 200 * time.Millisecond
		conf.LeaderLeaseTimeout = 100 * time.Millisecond
		conf.Logger = mesh.HCLogger(log.With("node", string(servers[i].ID)), "raft")
		trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream:  e.RaftLayer(),
			MaxPool: 3,
			Timeout: 2 * time.Second,
			Logger:  mesh.HCLogger(log, "raft-net"),
		})
		store := raft.NewInmemStore()
		snaps := raft.NewInmemSnapshotStore()
		if err := raft.BootstrapCluster(conf, store, store, snaps, trans, raft.Configuration{Servers: servers}); err != nil {
			t.Fatalf("bootstrap: %v", err)
		}
		fsm := &logFSM{}
		r, err := raft.NewRaft(conf, fsm, store, store, snaps, trans)
		if err != nil {
			t.Fatalf("new raft: %v", err)
		}
		t.Cleanup(func() {
			r.Shutdown().Error()
			trans.Close()
		})
		members = append(members, member{r, fsm})
	}
	var leader *raft.Raft
	eventually(t, 15*time.Second, "a leader elected", func() bool {
		for _, m := range members {
			if m.r.State() == raft.Leader {
				leader = m.r
				return true
			}
		}
		return false
	})
	for i := range 5 {
		if err := leader.Apply(fmt.Appendf(nil, "cmd-%d", i), 5*time.Second).Error(); err != nil {
			t.Fatalf("apply %d: %v", i, err)
		}
	}
	for i, m := range members {
		eventually(t, 10*time.Second, fmt.Sprintf("n%d applied 5 commands", i), func() bool {
			return len(m.fsm.applied()) == 5
		})
		if got := m.fsm.applied(); got[4] != "cmd-4" {
			t.Errorf("n%d: last applied %q, want cmd-4", i, got[4])
		}
	}
}
