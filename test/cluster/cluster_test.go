// Package cluster tests the control plane as a whole: real QUIC with
// mutual TLS, real memberlist, real Raft with its logs on disk, several
// sites in one process (and, in process_test.go, as separate processes of
// the lifeboat binary).
package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-dr/lifeboat/internal/testwait"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node"
)

// examplePolicy is the cluster policy from config/examples.
func examplePolicy(t *testing.T) []byte {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "config", "examples", "cluster.toml"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// threeSites starts dc1: 2 nodes, dc2: 2 nodes, dc3: 1 witness and waits
// until all five vote.
func threeSites(t *testing.T) (*harness, mesh.NodeID) {
	h := newHarness(t)
	h.first("dc1-n1", "dc1")
	h.add("dc1-n2", "dc1", node.RoleNode)
	h.add("dc2-n1", "dc2", node.RoleNode)
	h.add("dc2-n2", "dc2", node.RoleNode)
	h.add("dc3-w1", "dc3", node.RoleWitness)
	leader := h.settled(60*time.Second, 5)
	return h, leader
}

// note writes a key through the node's Raft path.
func note(ctx context.Context, n *node.Node, k, v string) error {
	return n.Apply(ctx, &node.Command{Op: "note", Key: k, Value: v})
}

// hasNote waits until every running node's catalog holds k=v.
func (h *harness) hasNote(k, v string) {
	h.t.Helper()
	h.eventually("catalog replicates "+k, 20*time.Second, func() error {
		for _, m := range h.running() {
			if got := m.node.Catalog().Notes[k]; got != v {
				return fmt.Errorf("%s: note %s = %q, want %q", m.name, k, got, v)
			}
		}
		return nil
	})
}

func TestFiveNodesThreeSites(t *testing.T) {
	t.Parallel()
	h, leader := threeSites(t)
	st := h.node(leader).Status()
	got := votersBySite(st)
	if got["dc1"] != 2 || got["dc2"] != 2 || got["dc3"] != 1 {
		t.Errorf("voters per site = %v, want dc1:2 dc2:2 dc3:1", got)
	}
	if len(st.Sites) != 3 {
		t.Errorf("sites = %+v, want 3", st.Sites)
	}

	// A policy applied through a follower goes through the leader and
	// reaches every node.
	var follower mesh.NodeID
	for _, m := range h.running() {
		if m.name != leader {
			follower = m.name
			break
		}
	}
	p, err := h.node(follower).ApplyPolicy(t.Context(), "cluster.toml", examplePolicy(t), "test")
	if err != nil {
		t.Fatalf("apply policy through follower %s: %v", follower, err)
	}
	if p.Version != 1 {
		t.Errorf("policy version = %d, want 1", p.Version)
	}
	h.eventually("policy on every node", 20*time.Second, func() error {
		for _, m := range h.running() {
			if c := m.node.Catalog(); c.Policy == nil || c.Policy.Version != 1 || len(c.Policy.Cluster.Services) == 0 {
				return fmt.Errorf("%s has no policy v1", m.name)
			}
		}
		return nil
	})
	// A bad policy is refused and changes nothing.
	if _, err := h.node(follower).ApplyPolicy(t.Context(), "bad.toml", []byte("[[site]]\nname = 7\n"), "test"); err == nil {
		t.Errorf("a bad policy was accepted")
	}
	if v := h.node(leader).Catalog().Policy.Version; v != 1 {
		t.Errorf("policy version after a refused apply = %d, want 1", v)
	}

	// A killed node misses writes, restarts, rejoins and catches up.
	victim := mesh.NodeID("dc2-n2")
	if victim == leader {
		victim = "dc2-n1"
	}
	h.kill(victim)
	for i := range 20 {
		if err := note(t.Context(), h.node(leader), fmt.Sprintf("k%d", i), "while-down"); err != nil {
			t.Fatalf("write %d with %s down: %v", i, victim, err)
		}
	}
	h.restart(victim)
	h.hasNote("k19", "while-down")
	h.eventually(string(victim)+" votes again", 30*time.Second, func() error {
		for _, n := range h.node(leader).Status().Nodes {
			if n.Name == victim && n.Voter && n.State == "alive" {
				return nil
			}
		}
		return fmt.Errorf("%s is not an alive voter", victim)
	})
}

func TestPartitionedSiteIsReadOnly(t *testing.T) {
	t.Parallel()
	h, _ := threeSites(t)
	if err := note(t.Context(), h.node("dc2-n1"), "before", "1"); err != nil {
		t.Fatal(err)
	}
	h.hasNote("before", "1")

	h.net.Isolate("dc1")
	// The majority side (dc2 + dc3: 3 of 5 voters) elects or keeps a leader
	// and takes writes.
	h.eventually("majority side writable", 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		return note(ctx, h.node("dc3-w1"), "during", "majority")
	})
	if err := note(t.Context(), h.node("dc2-n2"), "during2", "majority"); err != nil {
		t.Errorf("write on the majority side: %v", err)
	}
	// The minority side refuses writes with ErrNoQuorum but still answers
	// reads from its copy.
	for _, name := range []mesh.NodeID{"dc1-n1", "dc1-n2"} {
		err := note(t.Context(), h.node(name), "during", "minority")
		if !errors.Is(err, node.ErrNoQuorum) {
			t.Errorf("%s: write in the minority: err = %v, want ErrNoQuorum", name, err)
		}
		if got := h.node(name).Catalog().Notes["before"]; got != "1" {
			t.Errorf("%s: read in the minority: before = %q, want 1", name, got)
		}
	}
	h.net.Heal()
	h.hasNote("during", "majority")
	h.hasNote("during2", "majority")
	// The gossip heals too: every node sees every other alive again.
	h.eventually("gossip heals", 30*time.Second, func() error {
		for _, m := range h.running() {
			for _, n := range m.node.Status().Nodes {
				if n.State != "alive" {
					return fmt.Errorf("%s sees %s %s", m.name, n.Name, n.State)
				}
			}
		}
		return nil
	})
}

func TestForcedRecoveryAfterLosingTwoSites(t *testing.T) {
	t.Parallel()
	h, _ := threeSites(t)
	if err := note(t.Context(), h.node("dc2-n1"), "before", "1"); err != nil {
		t.Fatal(err)
	}
	h.hasNote("before", "1")
	// dc1 and the witness site are lost for good: dc2 holds 2 of 5 votes.
	for _, n := range []mesh.NodeID{"dc1-n1", "dc1-n2", "dc3-w1"} {
		h.kill(n)
	}
	survivor := h.node("dc2-n1")
	if err := note(t.Context(), survivor, "lost", "x"); !errors.Is(err, node.ErrNoQuorum) {
		t.Fatalf("write without quorum: err = %v, want ErrNoQuorum", err)
	}
	if _, err := survivor.RecoverRaft(t.Context(), "test-operator", false); !errors.Is(err, node.ErrNeedForce) {
		t.Fatalf("recover without force: err = %v, want ErrNeedForce", err)
	}
	if got := survivor.Catalog().Notes["lost"]; got != "" {
		t.Fatalf("a refused write is in the catalog: %q", got)
	}
	rec, err := survivor.RecoverRaft(t.Context(), "test-operator", true)
	if err != nil {
		t.Fatalf("forced recovery: %v", err)
	}
	if len(rec.Before) != 5 || len(rec.After) != 1 {
		t.Errorf("recovery record = %+v, want 5 voters before, 1 after", rec)
	}
	if err := note(t.Context(), survivor, "after", "1"); err != nil {
		t.Fatalf("write after recovery: %v", err)
	}
	// The other survivor is added back (as a non-voter: with two nodes
	// alive, one voter is as safe as two) and sees every write.
	h.eventually("dc2-n2 back in raft", 30*time.Second, func() error {
		for _, n := range survivor.Status().Nodes {
			if n.Name == "dc2-n2" && n.Raft != "none" {
				return nil
			}
		}
		return errors.New("dc2-n2 is not in the raft configuration")
	})
	if err := note(t.Context(), h.node("dc2-n2"), "after2", "1"); err != nil {
		t.Fatalf("write through dc2-n2 after recovery: %v", err)
	}
	h.hasNote("before", "1")
	h.hasNote("after2", "1")
	recs := survivor.Catalog().Recoveries
	if len(recs) != 1 || recs[0].By != "test-operator" {
		t.Errorf("catalog recoveries = %+v, want one by test-operator", recs)
	}
}

func TestRefusesForeignCertificateAndWrongGossipKey(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.first("dc1-n1", "dc1")
	h.add("dc2-n1", "dc2", node.RoleNode)
	h.settled(30*time.Second, 1)

	// An intruder with the gossip key but a certificate from another CA
	// gets into the gossip, never into Raft or the catalog.
	intruder := h.ca.Foreign("dc9-x", "dc9")
	intruder.GossipKey = h.ca.GossipKey()
	h.opts = func(o *node.Options) {
		if o.Name == "dc9-x" {
			o.Creds = intruder
		}
		if o.Name == "dc9-y" {
			o.Creds.GossipKey = make([]byte, 32) // a wrong key
		}
	}
	h.add("dc9-x", "dc9", node.RoleNode)
	h.add("dc9-y", "dc9", node.RoleNode)
	if err := note(t.Context(), h.node("dc1-n1"), "secret", "s"); err != nil {
		t.Fatal(err)
	}
	h.eventually("dc2-n1 has the write", 20*time.Second, func() error {
		if h.node("dc2-n1").Catalog().Notes["secret"] != "s" {
			return errors.New("not yet")
		}
		return nil
	})
	// Give the leader several reconcile rounds to (wrongly) admit them.
	testwait.Holds(t, "the intruders stay out", 3*time.Second, func() error {
		for _, n := range h.node("dc1-n1").Status().Nodes {
			if (n.Name == "dc9-x" || n.Name == "dc9-y") && n.Raft != "none" {
				return fmt.Errorf("%s got into raft as %s", n.Name, n.Raft)
			}
			if n.Name == "dc9-y" {
				return fmt.Errorf("dc9-y with the wrong gossip key is in the membership: %+v", n)
			}
		}
		return nil
	})
	for _, name := range []mesh.NodeID{"dc9-x", "dc9-y"} {
		if got := h.node(name).Catalog().Notes["secret"]; got != "" {
			t.Errorf("%s received the catalog", name)
		}
	}
}

// threeNodesWith starts a three-node, three-site cluster and waits for it.
func threeNodesWith(t *testing.T, opts func(*node.Options)) (*harness, mesh.NodeID) {
	h := newHarness(t)
	h.opts = opts
	h.first("dc1-n1", "dc1")
	h.add("dc2-n1", "dc2", node.RoleNode)
	h.add("dc3-n1", "dc3", node.RoleNode)
	return h, h.settled(60*time.Second, 3)
}

func TestNodeRejoinsAfterLosingItsState(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		damage func(t *testing.T, raftDir string)
		reset  bool // the node refuses to start until --reset-raft
	}{
		{"data dir lost", func(t *testing.T, raftDir string) {
			if err := os.RemoveAll(filepath.Dir(raftDir)); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"raft log corrupt", func(t *testing.T, raftDir string) {
			f, err := os.OpenFile(filepath.Join(raftDir, "raft.db"), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			// Both bolt meta pages: no valid root is left.
			junk := make([]byte, 8192)
			for i := range junk {
				junk[i] = byte(i*7 + 3)
			}
			if _, err := f.WriteAt(junk, 0); err != nil {
				t.Fatal(err)
			}
		}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// Snapshot often and keep few logs, so that the rejoining node
			// must receive the catalog as a snapshot over the wire.
			h, leader := threeNodesWith(t, func(o *node.Options) {
				o.RaftConfig = func(c *raft.Config) {
					fastRaft(c)
					c.SnapshotThreshold = 8
					c.SnapshotInterval = 200 * time.Millisecond
					c.TrailingLogs = 4
				}
			})
			victim := mesh.NodeID("dc3-n1")
			if victim == leader {
				victim = "dc2-n1"
			}
			if err := note(t.Context(), h.node(leader), "before", "1"); err != nil {
				t.Fatal(err)
			}
			h.hasNote("before", "1")
			h.kill(victim)
			tc.damage(t, filepath.Join(h.nodes[victim].dir, "raft"))
			for i := range 40 {
				if err := note(t.Context(), h.node(leader), fmt.Sprintf("filler%d", i), "x"); err != nil {
					t.Fatal(err)
				}
			}
			if err := note(t.Context(), h.node(leader), "while-down", "1"); err != nil {
				t.Fatal(err)
			}
			if tc.reset {
				_, err := node.New(h.options(h.nodes[victim]))
				var rse *node.RaftStateError
				if !errors.As(err, &rse) {
					t.Fatalf("start on a corrupt raft log: err = %v, want RaftStateError", err)
				}
				if !strings.Contains(rse.Hint(), "--reset-raft") {
					t.Errorf("hint %q does not say how to rejoin", rse.Hint())
				}
				t.Logf("refused as it should: %v; %s", err, rse.Hint())
				prev := h.opts
				h.opts = func(o *node.Options) {
					prev(o)
					if o.Name == victim {
						o.ResetRaft = true
					}
				}
				defer func() { h.opts = prev }()
			}
			h.restart(victim)
			h.hasNote("while-down", "1")
			h.hasNote("before", "1")
			h.eventually(string(victim)+" votes again", 30*time.Second, func() error {
				for _, n := range h.node(leader).Status().Nodes {
					if n.Name == victim && n.Voter {
						return nil
					}
				}
				return fmt.Errorf("%s is not a voter", victim)
			})
			if err := note(t.Context(), h.node(victim), "after", "1"); err != nil {
				t.Fatalf("write through the rejoined node: %v", err)
			}
		})
	}
}

func TestDeadNodeRemovedAfterTimeout(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.opts = func(o *node.Options) { o.DeadNodeTimeout = 2 * time.Second }
	h.first("dc1-n1", "dc1")
	h.add("dc1-n2", "dc1", node.RoleNode)
	h.add("dc2-n1", "dc2", node.RoleNode)
	h.add("dc3-n1", "dc3", node.RoleNode)
	// dc1 has two nodes, dc2 and dc3 one each: three voters, one per site.
	h.settled(60*time.Second, 3)
	h.kill("dc3-n1")
	// The dead voter is replaced by the spare node first (never below
	// quorum), then removed from raft and from the catalog.
	h.eventually("dc3-n1 removed", 30*time.Second, func() error {
		st := h.node("dc1-n1").Status()
		if len(st.Voters) != 3 {
			return fmt.Errorf("voters %v", st.Voters)
		}
		for _, n := range st.Nodes {
			if n.Name == "dc3-n1" && n.Raft != "none" {
				return fmt.Errorf("dc3-n1 still in raft as %s", n.Raft)
			}
		}
		if _, ok := h.node("dc1-n1").Catalog().Nodes["dc3-n1"]; ok {
			return errors.New("dc3-n1 still in the catalog")
		}
		return nil
	})
	if err := note(t.Context(), h.node("dc2-n1"), "after", "1"); err != nil {
		t.Fatal(err)
	}
}

// TestAdminAPIWithClientCertificates: the admin API is HTTPS with mutual
// TLS on loopback too. Plain HTTP gets no status, a client with no
// certificate is refused (401), a certificate from another CA fails the
// handshake, an agent certificate is refused (403); a node certificate
// reads the status as a viewer but cannot apply a policy, nor can an
// operator with role viewer or operator; an admin can, and the policy is
// recorded as applied by the certificate's name.
func TestAdminAPIWithClientCertificates(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	m := h.add("dc1-n1", "dc1", node.RoleNode)
	addr := m.node.AdminAddr()
	ctx := t.Context()
	dial := func(c *mesh.Creds) *node.Client {
		t.Helper()
		cl, err := node.NewClient(addr, c)
		if err != nil {
			t.Fatal(err)
		}
		return cl
	}

	// Plain HTTP: the server speaks only TLS.
	hc := &http.Client{Timeout: 10 * time.Second}
	if resp, err := hc.Get("http://" + addr + "/v1/status"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plain HTTP: status %s, want no answer from an HTTPS-only API", resp.Status)
		}
	}
	// No certificate: the handshake passes, the request is refused.
	if _, err := dial(nil).Status(ctx); !errors.Is(err, node.ErrForbidden) {
		t.Errorf("no certificate: err = %v, want node.ErrForbidden", err)
	}
	// A certificate of another CA, from a client that does not check the
	// node (so that the refusal is the server's): the handshake fails.
	foreign := h.ca.Foreign("dc1-x", "dc1")
	tc := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{foreign.Cert}, InsecureSkipVerify: true}
	fc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	if resp, err := fc.Get("https://" + addr + "/v1/status"); err == nil {
		resp.Body.Close()
		t.Errorf("a certificate of another CA: status %s, want a failed handshake", resp.Status)
	}
	fc.CloseIdleConnections()
	// A client holding another CA's credentials does not trust this node.
	if _, err := dial(foreign).Status(ctx); err == nil || errors.Is(err, node.ErrForbidden) {
		t.Errorf("foreign credentials: err = %v, want a TLS failure", err)
	}
	// An agent certificate: no admin role at all.
	if _, err := dial(h.ca.Agent("erp-agent", "dc1", "erp")).Status(ctx); !errors.Is(err, node.ErrForbidden) {
		t.Errorf("an agent certificate: err = %v, want node.ErrForbidden", err)
	}

	// A node certificate reads as a viewer.
	peer := dial(h.ca.Node("dc1-n9", "dc1"))
	h.eventually("status over mutual TLS", 20*time.Second, func() error {
		st, err := peer.Status(ctx)
		if err != nil {
			return err
		}
		if st.Leader != "dc1-n1" {
			return fmt.Errorf("leader %q", st.Leader)
		}
		return nil
	})
	viewer := dial(h.ca.Operator("vera", mesh.RoleViewer))
	if _, err := viewer.Status(ctx); err != nil {
		t.Errorf("an operator with role viewer reads the status: %v", err)
	}
	for _, c := range []struct {
		name string
		cl   *node.Client
	}{
		{"a node certificate", peer},
		{"an operator with role viewer", viewer},
		{"an operator with role operator", dial(h.ca.Operator("olga", mesh.RoleOperator))},
	} {
		if _, err := c.cl.ApplyPolicy(ctx, "cluster.toml", examplePolicy(t)); !errors.Is(err, node.ErrForbidden) {
			t.Errorf("%s applies a policy: err = %v, want node.ErrForbidden", c.name, err)
		}
	}
	if got := m.node.Status().PolicyVersion; got != 0 {
		t.Fatalf("policy version after refused applies: got %d, want 0", got)
	}

	admin := dial(h.ca.Operator("ada", mesh.RoleAdmin))
	p, err := admin.ApplyPolicy(ctx, "cluster.toml", examplePolicy(t))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p.AppliedBy, "ada"; got != want {
		t.Errorf("applied by: got %q, want the certificate's name %q", got, want)
	}
	if _, err := admin.ApplyPolicy(ctx, "bad.toml", []byte("[[service]]\nname = \"x\"\nprimary = \"nowhere\"\n")); !node.IsBadRequest(err) {
		t.Errorf("bad policy: err = %v, want a bad request", err)
	}
}
