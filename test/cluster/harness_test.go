package cluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-dr/lifeboat/internal/testwait"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/mesh/meshtest"
	"github.com/lifeboat-dr/lifeboat/node"
	"github.com/lifeboat-dr/lifeboat/test/testbin"
)

// harness runs a whole multi-site cluster in one test process: real QUIC
// with mutual TLS, real memberlist, real Raft with bolt logs on disk, all on
// 127.0.0.1, with the network seam in between so that links can be cut.
type harness struct {
	t     testing.TB
	level slog.Level
	ca    *meshtest.TestCA
	net   *meshtest.Net
	mu    sync.Mutex
	nodes map[mesh.NodeID]*member
	seeds []string // gossip addresses of the first nodes, for joining
	opts  func(*node.Options)
	out   *gatedWriter
}

// gatedWriter passes log lines to the test's output until the test ends:
// memberlist's timers may still log a line after Shutdown returns, and a
// write to a finished test's output panics.
type gatedWriter struct {
	mu     sync.Mutex
	w      io.Writer
	closed bool
}

func (g *gatedWriter) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return len(p), nil
	}
	return g.w.Write(p)
}

func (g *gatedWriter) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

type member struct {
	name   mesh.NodeID
	site   mesh.Site
	role   string
	dir    string
	gossip string // fixed once known, so restarts keep their addresses
	quic   string
	node   *node.Node
	cancel context.CancelFunc
	done   chan error
}

// fastRaft shortens Raft's timeouts for loopback.
func fastRaft(c *raft.Config) {
	c.HeartbeatTimeout = 500 * time.Millisecond
	c.ElectionTimeout = 500 * time.Millisecond
	c.LeaderLeaseTimeout = 250 * time.Millisecond
	c.CommitTimeout = 10 * time.Millisecond
}

func newHarness(t testing.TB) *harness {
	h := &harness{t: t, ca: meshtest.CA(t), net: meshtest.NewNet(), nodes: map[mesh.NodeID]*member{},
		out: &gatedWriter{w: t.Output()}}
	t.Cleanup(h.out.close) // runs after stopAll
	t.Cleanup(h.stopAll)
	return h
}

// add creates and starts a node; the first nodes started become the seeds
// others join through.
func (h *harness) add(name mesh.NodeID, site mesh.Site, role string) *member {
	h.t.Helper()
	m := &member{name: name, site: site, role: role, dir: filepath.Join(h.t.TempDir(), string(name)),
		gossip: testbin.FreePort(h.t), quic: "127.0.0.1:0"}
	h.mu.Lock()
	h.nodes[name] = m
	h.mu.Unlock()
	h.start(m)
	return m
}

func (h *harness) options(m *member) node.Options {
	h.mu.Lock()
	join := slices.DeleteFunc(slices.Clone(h.seeds), func(s string) bool { return s == m.gossip })
	h.mu.Unlock()
	o := node.Options{
		Name: m.name, Site: m.site, Role: m.role, DataDir: m.dir,
		Creds:   h.ca.Node(m.name, m.site),
		Network: h.net.Node(m.name, m.site),
		Gossip:  m.gossip, QUIC: m.quic, Admin: "127.0.0.1:0",
		Join: join, BootstrapExpect: 1, GossipProfile: "test",
		DeadNodeTimeout:   time.Hour,
		RaftConfig:        fastRaft,
		RaftTimeout:       2 * time.Second,
		ReconcileInterval: 200 * time.Millisecond,
		ReconnectInterval: time.Second,
		WriteTimeout:      3 * time.Second,
		Logger:            h.logger(string(m.name)),
	}
	if h.opts != nil {
		h.opts(&o)
	}
	return o
}

// logger logs to the test's output, marked with who logs.
func (h *harness) logger(who string) *slog.Logger {
	return slog.New(slog.NewTextHandler(h.out, &slog.HandlerOptions{Level: h.level})).With("test_node", who)
}

func (h *harness) start(m *member) {
	h.t.Helper()
	n, err := node.New(h.options(m))
	if err != nil {
		h.t.Fatalf("start %s: %v", m.name, err)
	}
	m.node = n
	m.quic = n.QUICAddr()
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	m.done = make(chan error, 1)
	go func() { m.done <- n.Run(ctx) }()
	h.mu.Lock()
	if len(h.seeds) < 3 {
		h.seeds = append(h.seeds, m.gossip)
	}
	h.mu.Unlock()
}

// first starts the cluster's first node and waits until it leads.
func (h *harness) first(name mesh.NodeID, site mesh.Site) *member {
	h.t.Helper()
	m := h.add(name, site, node.RoleNode)
	h.eventually(string(name)+" leads", 30*time.Second, func() error {
		if l := m.node.Status().Leader; l != name {
			return fmt.Errorf("leader %q", l)
		}
		return nil
	})
	return m
}

// kill stops a node without a graceful leave, as a crash would (the files
// are closed: the process-level kill -9 is the multi-process test's job).
func (h *harness) kill(name mesh.NodeID) {
	h.t.Helper()
	m := h.nodes[name]
	if m.node == nil {
		return
	}
	m.cancel()
	select {
	case err := <-m.done:
		if err != nil {
			h.t.Logf("%s stopped: %v", name, err)
		}
	case <-time.After(30 * time.Second):
		h.t.Fatalf("%s did not stop within 30s", name)
	}
	m.node = nil
}

func (h *harness) restart(name mesh.NodeID) {
	h.t.Helper()
	h.start(h.nodes[name])
}

func (h *harness) stopAll() {
	for name, m := range h.nodes {
		if m.node != nil {
			h.kill(name)
		}
	}
}

func (h *harness) node(name mesh.NodeID) *node.Node { return h.nodes[name].node }

// eventually polls cond every 50ms until it returns nil or the timeout
// passes.
func (h *harness) eventually(what string, timeout time.Duration, cond func() error) {
	h.t.Helper()
	testwait.ForEvery(h.t, what, timeout, 50*time.Millisecond, cond)
}

// running returns the running members.
func (h *harness) running() []*member {
	var out []*member
	for _, m := range h.nodes {
		if m.node != nil {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b *member) int { return strings.Compare(string(a.name), string(b.name)) })
	return out
}

// settled waits until every running node agrees on one leader and sees
// the given voters.
func (h *harness) settled(timeout time.Duration, wantVoters int) mesh.NodeID {
	h.t.Helper()
	var leader mesh.NodeID
	h.eventually("cluster settles", timeout, func() error {
		leader = ""
		for _, m := range h.running() {
			st := m.node.Status()
			if st.Leader == "" {
				return fmt.Errorf("%s sees no leader", m.name)
			}
			if leader != "" && st.Leader != leader {
				return fmt.Errorf("%s sees leader %s, others %s", m.name, st.Leader, leader)
			}
			leader = st.Leader
			if len(st.Voters) != wantVoters {
				return fmt.Errorf("%s sees voters %v, want %d", m.name, st.Voters, wantVoters)
			}
		}
		return nil
	})
	return leader
}

// votersBySite counts the voters of a status per site.
func votersBySite(st node.Status) map[mesh.Site]int {
	out := map[mesh.Site]int{}
	for _, n := range st.Nodes {
		if n.Voter {
			out[n.Site]++
		}
	}
	return out
}
