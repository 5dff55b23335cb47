package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/internal/testwait"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node"
)

// nodeState returns how n's status lists who: its gossip state and Raft
// place ("" when not listed).
func nodeState(n *node.Node, who mesh.NodeID) (state, raft string) {
	for _, s := range n.Status().Nodes {
		if s.Name == who {
			return s.State, s.Raft
		}
	}
	return "", ""
}

// TestNodeLeave: node leave is refused, and changes nothing, when it would
// lose the Raft quorum (one of three voters dead); a viewer cannot ask it
// (forbidden). With the quorum back, the leader leaves: its peers see it
// "left" within seconds, not dead or suspect, a new leader removes it from
// Raft and their status lists it left and out of Raft, the node stops by
// itself, refuses to start again on its old state, and the cluster takes
// writes.
func TestNodeLeave(t *testing.T) {
	t.Parallel()
	h, leader := threeNodesWith(t, nil)
	ctx := t.Context()
	client := func(who mesh.NodeID, c *mesh.Creds) *node.Client {
		t.Helper()
		cl, err := node.NewClient(h.node(who).AdminAddr(), c)
		if err != nil {
			t.Fatal(err)
		}
		return cl
	}
	adm := h.ca.Operator("ada", mesh.RoleAdmin)
	var victim, dead mesh.NodeID
	for _, m := range h.running() {
		switch {
		case m.name == leader:
		case victim == "":
			victim = m.name
		default:
			dead = m.name
		}
	}
	if _, err := client(victim, h.ca.Operator("vera", mesh.RoleViewer)).Leave(ctx, node.LeaveRequest{}); !errors.Is(err, node.ErrForbidden) {
		t.Errorf("a viewer's node leave: %v, want ErrForbidden", err)
	}

	h.kill(dead)
	h.eventually(string(dead)+" dead at "+string(victim), 20*time.Second, func() error {
		if s, _ := nodeState(h.node(victim), dead); s != "dead" {
			return fmt.Errorf("state %q", s)
		}
		return nil
	})
	_, err := client(victim, adm).Leave(ctx, node.LeaveRequest{})
	if !errors.Is(err, node.ErrUnsafe) || !strings.Contains(err.Error(), "quorum") || !strings.Contains(err.Error(), string(dead)+" gone") {
		t.Fatalf("leave of a voter with another voter dead: %v, want ErrUnsafe naming the quorum and %s", err, dead)
	}
	testwait.Holds(t, "a refused leave changes nothing", time.Second, func() error {
		if s, r := nodeState(h.node(leader), victim); s != "alive" || r != "voter" {
			return fmt.Errorf("%s at the leader: %s, %s", victim, s, r)
		}
		if _, err := os.Stat(filepath.Join(h.nodes[victim].dir, "LEFT")); !os.IsNotExist(err) {
			return fmt.Errorf("LEFT marker: %v", err)
		}
		return nil
	})

	h.restart(dead)
	leader = h.settled(60*time.Second, 3)
	res, err := client(leader, adm).Leave(ctx, node.LeaveRequest{})
	if err != nil {
		t.Fatalf("leave of the leader with all voters alive: %v", err)
	}
	if res.Node != leader || res.Raft != "voter" || !res.Transferred || len(res.Warnings) != 0 {
		t.Errorf("leave result %+v: want %s, a voter handing leadership on, no warnings", res, leader)
	}
	m := h.nodes[leader]
	select {
	case err := <-m.done:
		if err != nil {
			t.Errorf("the leaving node's Run: %v", err)
		}
	case <-time.After(45 * time.Second):
		t.Fatal("the leaving node did not stop")
	}
	m.node = nil
	h.eventually("peers see "+string(leader)+" left and out of raft", 15*time.Second, func() error {
		for _, o := range h.running() {
			st := o.node.Status()
			if st.Leader == "" || st.Leader == leader {
				return fmt.Errorf("%s sees leader %q", o.name, st.Leader)
			}
			if s, r := nodeState(o.node, leader); s != "left" || (r != "none" && r != "") {
				return fmt.Errorf("%s lists %s as %s, raft %s", o.name, leader, s, r)
			}
		}
		return nil
	})
	if err := note(ctx, h.running()[0].node, "after-leave", "1"); err != nil {
		t.Fatalf("write after the leave: %v", err)
	}
	if _, err := node.New(h.options(m)); err == nil || !strings.Contains(err.Error(), "--reset-raft") {
		t.Errorf("restart of a node that left: %v, want a refusal naming --reset-raft", err)
	}
}

// TestCleanStopAnnounced: a node stopped with AnnounceStop (node run on
// SIGTERM) is seen dead by its peers and keeps its Raft place: it is not
// taken for a node that left. (That the announcement alone marks it dead,
// without probes, is mesh's TestGossipStop.)
func TestCleanStopAnnounced(t *testing.T) {
	t.Parallel()
	h, leader := threeNodesWith(t, func(o *node.Options) { o.AnnounceStop = true })
	var victim mesh.NodeID
	for _, m := range h.running() {
		if m.name != leader {
			victim = m.name
		}
	}
	h.kill(victim)
	h.eventually(string(victim)+" dead at the leader", 5*time.Second, func() error {
		if s, r := nodeState(h.node(leader), victim); s != "dead" || r != "voter" {
			return fmt.Errorf("%s: %s, raft %s", victim, s, r)
		}
		return nil
	})
	testwait.Holds(t, "the stopped node keeps its raft place", 2*time.Second, func() error {
		if s, r := nodeState(h.node(leader), victim); s != "dead" || r != "voter" {
			return fmt.Errorf("%s: %s, raft %s", victim, s, r)
		}
		return nil
	})
}
