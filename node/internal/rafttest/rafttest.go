// Package rafttest runs in-memory Raft clusters over the catalog's state
// machine for the node engines' unit tests: raft's own in-memory stores
// and transport, heartbeats of 300 ms, no files and no network. Only tests
// import it.
package rafttest

import (
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-dr/lifeboat/internal/testwait"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// Member is one server of a test cluster.
type Member struct {
	ID   string
	Raft *raft.Raft
	FSM  *catalog.FSM
}

// Cluster starts one voter per id, connected to each other, bootstraps
// them as one cluster and waits (up to 10 s) until one leads and every
// other knows it. The rafts shut down when the test ends.
func Cluster(t testing.TB, ids ...string) []*Member {
	t.Helper()
	ms := make([]*Member, len(ids))
	transports := make([]*raft.InmemTransport, len(ids))
	var cf raft.Configuration
	for i, id := range ids {
		_, transports[i] = raft.NewInmemTransport(raft.ServerAddress(id))
		cf.Servers = append(cf.Servers, raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(id)})
	}
	for i := range transports {
		for j := range transports {
			if i != j {
				transports[i].Connect(transports[j].LocalAddr(), transports[j])
			}
		}
	}
	for i, id := range ids {
		ms[i] = start(t, id, transports[i])
		if err := ms[i].Raft.BootstrapCluster(cf).Error(); err != nil {
			t.Fatalf("bootstrap %s: %v", id, err)
		}
	}
	testwait.For(t, "a raft leader known to all", 10*time.Second, func() error {
		if Leader(ms) == nil {
			return errors.New("no leader")
		}
		for _, m := range ms {
			if _, id := m.Raft.LeaderWithID(); id == "" {
				return fmt.Errorf("%s knows no leader", m.ID)
			}
		}
		return nil
	})
	return ms
}

// Alone starts one server that is in no cluster: it never leads.
func Alone(t testing.TB, id string) *Member {
	t.Helper()
	_, trans := raft.NewInmemTransport(raft.ServerAddress(id))
	return start(t, id, trans)
}

func start(t testing.TB, id string, trans raft.Transport) *Member {
	t.Helper()
	conf := raft.DefaultConfig()
	conf.LocalID = raft.ServerID(id)
	conf.HeartbeatTimeout, conf.ElectionTimeout, conf.LeaderLeaseTimeout = 300*time.Millisecond, 300*time.Millisecond, 150*time.Millisecond
	conf.CommitTimeout = 5 * time.Millisecond
	conf.LogOutput = io.Discard
	store := raft.NewInmemStore()
	fsm := catalog.NewFSM()
	r, err := raft.NewRaft(conf, fsm, store, store, raft.NewInmemSnapshotStore(), trans)
	if err != nil {
		t.Fatalf("start raft %s: %v", id, err)
	}
	t.Cleanup(func() { r.Shutdown().Error() })
	return &Member{ID: id, Raft: r, FSM: fsm}
}

// Leader returns the member that leads, or nil.
func Leader(ms []*Member) *Member {
	for _, m := range ms {
		if m.Raft.State() == raft.Leader {
			return m
		}
	}
	return nil
}

// Follower returns a member that does not lead, or nil.
func Follower(ms []*Member) *Member {
	for _, m := range ms {
		if m.Raft.State() != raft.Leader {
			return m
		}
	}
	return nil
}
