package cluster

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/node"
	"github.com/lifeboat-dr/lifeboat/test/testbin"
)

type proc struct {
	name, site, cfg, admin, log string
	cmd                         *exec.Cmd
}

func (p *proc) start(t *testing.T, bin string, extra ...string) {
	t.Helper()
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"node", "run", "--config", p.cfg, "--gossip-profile", "test"}, extra...)
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); logf.Close() }()
}

func (p *proc) kill9() {
	if p.cmd != nil && p.cmd.Process != nil {
		p.cmd.Process.Signal(syscall.SIGKILL)
		p.cmd.Process.Wait()
	}
}

// TestProcessesFormKillRestart runs five `lifeboat node run` processes over
// three sites from node files, as an operator would: the cluster forms by
// itself (bootstrap_expect = 3), a policy goes in with `lifeboat policy
// apply`, the leader is killed with SIGKILL, the others go on, and the
// killed node restarts, rejoins and catches up. The CLI presents operator
// certificates: an admin's applies, a viewer's is refused (exit 7).
func TestProcessesFormKillRestart(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("-short: this test builds the lifeboat binary and runs five processes; it runs without -short (as CI does)")
	}
	bin := testbin.Build(t)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca")
	testbin.Run(t, bin, 0, "ca", "init", "--dir", ca)
	// The operator's certificates: an admin applies policies and recovers
	// raft, a viewer reads status and the policy.
	adminTLS, viewerTLS := filepath.Join(dir, "admin-tls"), filepath.Join(dir, "viewer-tls")
	testbin.Run(t, bin, 0, "ca", "issue", "--dir", ca, "--operator", "ops-admin", "--role", "admin", "--out", adminTLS)
	testbin.Run(t, bin, 0, "ca", "issue", "--dir", ca, "--operator", "ops-viewer", "--role", "viewer", "--out", viewerTLS)

	specs := []struct{ name, site, role string }{
		{"dc1-n1", "dc1", "node"}, {"dc1-n2", "dc1", "node"},
		{"dc2-n1", "dc2", "node"}, {"dc2-n2", "dc2", "node"},
		{"dc3-w1", "dc3", "witness"},
	}
	gossip := make([]string, len(specs))
	for i := range specs {
		gossip[i] = testbin.FreePort(t)
	}
	var procs []*proc
	for i, s := range specs {
		tls := filepath.Join(dir, s.name, "tls")
		testbin.Run(t, bin, 0, "ca", "issue", "--dir", ca, "--name", s.name, "--site", s.site, "--out", tls)
		p := &proc{name: s.name, site: s.site, admin: testbin.FreePort(t), cfg: filepath.Join(dir, s.name+".toml"), log: filepath.Join(dir, s.name+".log")}
		cfg := fmt.Sprintf(`name = %q
site = %q
role = %q
data_dir = %q
join = [%q, %q, %q]
bootstrap_expect = 3
dead_node_timeout = "1h"

[listen]
gossip = %q
quic = %q
admin = %q

[tls]
dir = %q
`, s.name, s.site, s.role, filepath.Join(dir, s.name, "data"), gossip[0], gossip[2], gossip[4], gossip[i], testbin.FreePort(t), p.admin, tls)
		if err := os.WriteFile(p.cfg, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		testbin.Run(t, bin, 0, "config", "check", p.cfg)
		procs = append(procs, p)
	}
	t.Cleanup(func() {
		for _, p := range procs {
			p.kill9()
		}
		if t.Failed() {
			for _, p := range procs {
				b, _ := os.ReadFile(p.log)
				t.Logf("=== %s log ===\n%s", p.name, tail(b, 40))
			}
		}
	})
	for _, p := range procs {
		p.start(t, bin)
	}

	status := func(p *proc) (*node.Status, error) { return testbin.Status(bin, p.admin, viewerTLS) }
	h := &harness{t: t}
	var leader string
	h.eventually("five processes form one cluster with five voters", 90*time.Second, func() error {
		leader = ""
		for _, p := range procs {
			st, err := status(p)
			if err != nil {
				return fmt.Errorf("%s: %v", p.name, err)
			}
			if st.Leader == "" || len(st.Voters) != 5 {
				return fmt.Errorf("%s: leader %q voters %v", p.name, st.Leader, st.Voters)
			}
			if leader != "" && string(st.Leader) != leader {
				return fmt.Errorf("two leaders: %s and %s", leader, st.Leader)
			}
			leader = string(st.Leader)
		}
		return nil
	})

	policy := filepath.Join(dir, "cluster.toml")
	if err := os.WriteFile(policy, examplePolicy(t), 0o644); err != nil {
		t.Fatal(err)
	}
	out := testbin.Run(t, bin, 0, "policy", "apply", "--admin", procs[1].admin, "--tls-dir", adminTLS, policy)
	if !strings.Contains(out, "policy version 1 applied") {
		t.Errorf("policy apply said %q", out)
	}

	// SIGKILL the leader; the others elect a new one and take a write.
	var victim *proc
	for _, p := range procs {
		if p.name == leader {
			victim = p
		}
	}
	victim.kill9()
	var other *proc
	for _, p := range procs {
		if p != victim {
			other = p
			break
		}
	}
	h.eventually("a policy write without the old leader", 60*time.Second, func() error {
		// The certificate from the environment, as env.sh gives it.
		cmd := exec.Command(bin, "policy", "apply", "--admin", other.admin, policy)
		cmd.Env = append(os.Environ(), "LIFEBOAT_TLS_DIR="+adminTLS)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	victim.start(t, bin)
	h.eventually("the killed node catches up", 60*time.Second, func() error {
		st, err := status(victim)
		if err != nil {
			return err
		}
		if st.PolicyVersion < 2 || st.Leader == "" {
			return fmt.Errorf("%s: policy version %d, leader %q", victim.name, st.PolicyVersion, st.Leader)
		}
		return nil
	})
	show := testbin.Run(t, bin, 0, "policy", "show", "--admin", victim.admin, "--tls-dir", viewerTLS)
	if !strings.Contains(show, "[[service]]") {
		t.Errorf("policy show does not print the policy source:\n%s", show)
	}
	// A viewer reads but changes nothing: the CLI exits 7 (refused).
	testbin.Run(t, bin, 7, "policy", "apply", "--admin", victim.admin, "--tls-dir", viewerTLS, policy)
	testbin.Run(t, bin, 7, "raft", "recover", "--admin", other.admin, "--tls-dir", viewerTLS, "--force")
	// Forced recovery refuses without --force, and with a leader around.
	testbin.Run(t, bin, 2, "raft", "recover", "--admin", other.admin, "--tls-dir", adminTLS)
	testbin.Run(t, bin, 1, "raft", "recover", "--admin", other.admin, "--tls-dir", adminTLS, "--force")

	// node leave retires dc2-n2: a viewer is refused (exit 7), without
	// --yes off a terminal it asks for it (exit 2); with --yes the node
	// stops, its peers list it left and out of raft, and it refuses to
	// start again on its old data dir (exit 2).
	leaving := procs[3]
	testbin.Run(t, bin, 7, "node", "leave", "--admin", leaving.admin, "--tls-dir", viewerTLS, "--yes")
	testbin.Run(t, bin, 2, "node", "leave", "--admin", leaving.admin, "--tls-dir", adminTLS)
	out = testbin.Run(t, bin, 0, "node", "leave", "--admin", leaving.admin, "--tls-dir", adminTLS, "--yes")
	if !strings.Contains(out, "dc2-n2 left the cluster and stopped") {
		t.Errorf("node leave said:\n%s", out)
	}
	h.eventually("peers list dc2-n2 left and out of raft", 20*time.Second, func() error {
		st, err := status(procs[0])
		if err != nil {
			return err
		}
		for _, n := range st.Nodes {
			// "left" from the gossip leave; a peer that heard the leave
			// before the leaving flag may say "dead" (known, in the note).
			if n.Name == "dc2-n2" && (n.State == "alive" || n.State == "suspect" || n.Raft != "none") {
				return fmt.Errorf("dc2-n2: %s, raft %s", n.State, n.Raft)
			}
		}
		if slices.Contains(st.Voters, "dc2-n2") || st.Leader == "" {
			return fmt.Errorf("voters %v, leader %q", st.Voters, st.Leader)
		}
		return nil
	})
	if _, errOut, code := testbin.RunCode(bin, "node", "run", "--config", leaving.cfg, "--gossip-profile", "test"); code != 2 || !strings.Contains(errOut, "--reset-raft") {
		t.Errorf("restart of the node that left: exit %d, want 2 naming --reset-raft: %s", code, errOut)
	}
}

func tail(b []byte, lines int) string {
	s := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(s) > lines {
		s = s[len(s)-lines:]
	}
	return strings.Join(s, "\n")
}
