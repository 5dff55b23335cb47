package raftnode

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-dr/lifeboat/internal/clock"
	"github.com/lifeboat-dr/lifeboat/internal/testlog"
	"github.com/lifeboat-dr/lifeboat/internal/testwait"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/mesh/meshtest"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/raftstore"
)

// The Raft runs here on real stores in a temporary directory and a real
// QUIC endpoint's raft streams, with short timeouts.

var t0 = time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)

// newRaft starts name's Raft on a new endpoint with credentials of ca and
// returns it with its address.
func newRaft(t *testing.T, ca *meshtest.TestCA, name mesh.NodeID) (*Raft, string) {
	t.Helper()
	ep := meshtest.Endpoint(t, ca.Node(name, "dc1"))
	stores, err := raftstore.Open(t.TempDir(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stores.Close() })
	adjusted := false
	n, err := Start(Options{Name: name, Addr: ep.Addr().String(), Layer: ep.RaftLayer, FSM: catalog.NewFSM(), Stores: stores,
		Timeout: time.Second, Clock: clock.NewFake(t0), Logger: testlog.New(t),
		Adjust: func(c *raft.Config) {
			adjusted = true
			c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 200*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Current().Shutdown().Error() })
	if !adjusted {
		t.Error("Start did not call Adjust")
	}
	return n, ep.Addr().String()
}

// start starts n1's Raft and bootstraps it with voters (n1 at its own
// address, the others at ports nobody answers).
func start(t *testing.T, ca *meshtest.TestCA, voters ...string) *Raft {
	t.Helper()
	n, self := newRaft(t, ca, "n1")
	var cf raft.Configuration
	for i, v := range voters {
		addr := "127.0.0.1:" + strconv.Itoa(i+1)
		if v == "n1" {
			addr = self
		}
		cf.Servers = append(cf.Servers, raft.Server{ID: raft.ServerID(v), Address: raft.ServerAddress(addr)})
	}
	if err := n.Current().BootstrapCluster(cf).Error(); err != nil {
		t.Fatal(err)
	}
	return n
}

func waitLeader(t *testing.T, n *Raft) {
	t.Helper()
	testwait.For(t, "n1 leads", 10*time.Second, func() error {
		if n.Current().State() != raft.Leader {
			return errors.New(n.Current().State().String())
		}
		return nil
	})
}

// TestAloneLeads: a one-voter cluster leads and has a quorum; a recovery
// is refused without force, and while there is a leader.
func TestAloneLeads(t *testing.T) {
	n := start(t, meshtest.CA(t), "n1")
	waitLeader(t, n)
	if !n.HasQuorum() {
		t.Error("HasQuorum is false on the leader")
	}
	if _, err := n.Recover("ada", false); !errors.Is(err, api.ErrNeedForce) {
		t.Errorf("Recover without force = %v, want ErrNeedForce", err)
	}
	if _, err := n.Recover("ada", true); !errors.Is(err, api.ErrHasLeader) {
		t.Errorf("Recover with a leader = %v, want ErrHasLeader", err)
	}
}

// TestRecoverLostMajority: with two of three voters gone for good there
// is no quorum; the forced recovery makes this node the only voter of a
// new instance that leads, and its record says who did it, when, and the
// voters before and after. The new instance takes peers' streams: a node
// added afterwards can lead it.
func TestRecoverLostMajority(t *testing.T) {
	ca := meshtest.CA(t)
	n := start(t, ca, "n1", "n2", "n3")
	old := n.Current()
	testwait.Holds(t, "no quorum without the other voters", 500*time.Millisecond, func() error {
		if n.HasQuorum() {
			return errors.New("HasQuorum is true")
		}
		return nil
	})
	rec, err := n.Recover("ada", true)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(rec.Before)
	if rec.By != "ada" || !rec.At.Equal(t0) || rec.Node != "n1" || !slices.Equal(rec.Before, []mesh.NodeID{"n1", "n2", "n3"}) || !slices.Equal(rec.After, []mesh.NodeID{"n1"}) {
		t.Errorf("record %+v: want ada at the clock's time, voters n1..n3 before, n1 after", rec)
	}
	if n.Current() == old {
		t.Fatal("the recovery kept the old instance")
	}
	waitLeader(t, n)
	cf := n.Current().GetConfiguration()
	if err := cf.Error(); err != nil {
		t.Fatal(err)
	}
	if s := cf.Configuration().Servers; len(s) != 1 || s[0].ID != "n1" || s[0].Suffrage != raft.Voter {
		t.Errorf("configuration after the recovery %v, want n1 the only voter", s)
	}
	// n4 joins and takes the lead: n1 hears of it only over a stream n4
	// opens to it.
	n4, addr := newRaft(t, ca, "n4")
	if err := n.Current().AddVoter("n4", raft.ServerAddress(addr), 0, 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "n4 takes the lead", 10*time.Second, func() error {
		if n4.Current().State() == raft.Leader {
			return nil
		}
		if a, b := n4.Current().AppliedIndex(), n.Current().AppliedIndex(); a < b {
			return fmt.Errorf("n4 at index %d of %d", a, b)
		}
		if n.Current().State() == raft.Leader {
			n.Current().LeadershipTransferToServer("n4", raft.ServerAddress(addr)) // asked again until n4 leads
		}
		return errors.New("n4 does not lead yet")
	})
	testwait.For(t, "n1 follows n4", 10*time.Second, func() error {
		if _, id := n.Current().LeaderWithID(); id != "n4" || n4.Current().State() != raft.Leader || !n.HasQuorum() {
			return fmt.Errorf("n1 sees leader %q, n4 is %s", id, n4.Current().State())
		}
		return nil
	})
}
