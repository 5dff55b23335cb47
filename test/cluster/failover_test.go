package cluster

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node"
	"github.com/lifeboat-dr/lifeboat/test/testbin"
)

// The failover tests run the real binary: node processes at dc1 and dc2
// and a witness at dc3, an agent process scanning a volume that a writer
// changes all the time, and the failover, failback and drill commands.

type pnode struct {
	name, site, role, admin, quic, gossip, data string
	args                                        []string
	p                                           *testbin.Proc
}

type pcluster struct {
	t     testing.TB
	bin   string
	dir   string
	ca    string
	nodes map[string]*pnode
	// Operator certificate directories for the CLI, one per role, each
	// used for what needs that role: the admin applies policies, the
	// operator fails over, drills, fails back and reads images, the
	// viewer reads status, points and metrics.
	tlsAdmin, tlsOperator, tlsViewer string
	viewer                           *mesh.Creds
}

// newPCluster starts the nodes named in specs ({name, site, role}); the
// first one bootstraps the cluster.
func newPCluster(t testing.TB, specs ...[3]string) *pcluster {
	c := &pcluster{t: t, bin: testbin.Build(t), dir: t.TempDir(), nodes: map[string]*pnode{}}
	c.ca = filepath.Join(c.dir, "ca")
	c.lb(0, "ca", "init", "--dir", c.ca)
	for _, r := range []struct {
		role string
		dir  *string
	}{{"admin", &c.tlsAdmin}, {"operator", &c.tlsOperator}, {"viewer", &c.tlsViewer}} {
		*r.dir = filepath.Join(c.dir, r.role+"-tls")
		c.lb(0, "ca", "issue", "--dir", c.ca, "--operator", "test-"+r.role, "--role", r.role, "--out", *r.dir)
	}
	c.viewer = loadCreds(t, c.tlsViewer)
	var first *pnode
	for _, s := range specs {
		n := &pnode{name: s[0], site: s[1], role: s[2], admin: testbin.FreePort(t), quic: testbin.FreePort(t), gossip: testbin.FreePort(t),
			data: filepath.Join(c.dir, s[0])}
		tls := filepath.Join(c.dir, s[0]+"-tls")
		c.lb(0, "ca", "issue", "--dir", c.ca, "--name", n.name, "--site", n.site, "--out", tls)
		n.args = []string{"node", "run", "--name", n.name, "--site", n.site, "--role", n.role, "--data-dir", n.data,
			"--listen-gossip", n.gossip, "--listen-quic", n.quic, "--listen-admin", n.admin, "--tls-dir", tls,
			"--gossip-profile", "test"}
		if first != nil {
			n.args = append(n.args, "--join", first.gossip, "--bootstrap-expect", "1")
		}
		c.nodes[n.name] = n
		if first == nil {
			first = n
			c.start(n)
			testbin.WaitLeader(t, c.bin, n.admin, c.tlsViewer, n.name)
			continue
		}
		c.start(n)
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			n.p.Stop()
			if t.Failed() {
				t.Logf("=== %s ===\n%s", n.name, n.p.Tail(30))
			}
		}
	})
	return c
}

func (c *pcluster) start(n *pnode, extra ...string) {
	n.p = testbin.Start(c.t, n.name, filepath.Join(c.dir, n.name+".log"), c.bin, append(append([]string(nil), n.args...), extra...)...)
}

func (c *pcluster) lb(want int, args ...string) string {
	c.t.Helper()
	return testbin.Run(c.t, c.bin, want, args...)
}

// agent starts a scan agent for service web on the volume at path,
// shipping to the node at quic.
func (c *pcluster) agent(name, site, path, quic string) *testbin.Proc {
	tls := filepath.Join(c.dir, name+"-"+site+"-tls")
	if _, err := os.Stat(tls); err != nil {
		c.lb(0, "ca", "issue", "--dir", c.ca, "--agent", "--name", name, "--site", site, "--service", "web", "--out", tls)
	}
	p := testbin.Start(c.t, name, filepath.Join(c.dir, name+"-"+site+".log"), c.bin, "agent", "run", "--name", name, "--service", "web",
		"--volume", "disk="+path, "--node", quic, "--tls-dir", tls, "--mode", "scan", "--interval", "500ms",
		"--spool", filepath.Join(c.dir, name+"-"+site+"-spool"))
	c.t.Cleanup(p.Stop)
	return p
}

func (c *pcluster) status(admin string) (*node.Status, error) {
	return testbin.Status(c.bin, admin, c.tlsViewer)
}

// service returns web's status as the node at admin sees it.
func (c *pcluster) service(admin string) (node.ServiceStatus, error) {
	st, err := c.status(admin)
	if err != nil {
		return node.ServiceStatus{}, err
	}
	for _, s := range st.Services {
		if s.Name == "web" {
			return s, nil
		}
	}
	return node.ServiceStatus{}, fmt.Errorf("no service web in the status")
}

func (c *pcluster) copyAt(admin, site string) (node.CopyStatus, error) {
	s, err := c.service(admin)
	if err != nil {
		return node.CopyStatus{}, err
	}
	for _, cp := range s.Copies {
		if cp.Site == site {
			return cp, nil
		}
	}
	return node.CopyStatus{}, fmt.Errorf("no copy of web at %s", site)
}

// failoverPolicy is web at dc1 with a hot copy at dc2; the hooks record
// what they were given in hooks/, and the drill hook writes into the
// drill's images (which must not reach production).
func failoverPolicy(size int64, img, hooks, link string) []byte {
	return []byte(sites("dc1", "dc2", "dc3") + "[[link]]\nbetween = [\"dc1\", \"dc2\"]\n" + link + "\n" +
		service("web", "dc1", fmt.Sprintf(`rpo = "10s"
  [service.hooks]
  start = 'sha256sum "$LIFEBOAT_IMAGE_DISK" | cut -d" " -f1 > "%[1]s/started-$LIFEBOAT_EPOCH"; env | grep ^LIFEBOAT_ | sort > "%[1]s/env-$LIFEBOAT_EPOCH"'
  health = 'test -s "%[1]s/started-$LIFEBOAT_EPOCH"'
  stop = 'touch "%[1]s/stop"; while [ ! -e "%[1]s/stopped" ]; do sleep 0.05; done'
  drill = 'sha256sum "$LIFEBOAT_IMAGE_DISK" && test -n "$LIFEBOAT_DRILL" && dd if=/dev/urandom of="$LIFEBOAT_IMAGE_DISK" bs=4096 count=16 conv=notrunc 2>/dev/null && echo drill-ok'
  timeout = "30s"
`, hooks), server("web1", "disk", img, fmt.Sprintf("%dB", size), `    block_size = "4KiB"
`)+copyAt("dc2", `tier = "hot"`)))
}

// failoverSites starts dc1-n1, dc2-n1 and the witness dc3-w1, applies
// failoverPolicy for a random image of size bytes and waits until dc2-n1
// holds web at dc2. It returns the image and the hooks directory.
func failoverSites(t *testing.T, size int64, seed uint64, link string) (c *pcluster, dc1, dc2 *pnode, img, hooks string) {
	c = newPCluster(t, [3]string{"dc1-n1", "dc1", "node"}, [3]string{"dc2-n1", "dc2", "node"}, [3]string{"dc3-w1", "dc3", "witness"})
	dc1, dc2 = c.nodes["dc1-n1"], c.nodes["dc2-n1"]
	hooks = filepath.Join(c.dir, "hooks")
	os.MkdirAll(hooks, 0o755)
	img = randomImage(t, size, seed)
	policy := filepath.Join(c.dir, "cluster.toml")
	os.WriteFile(policy, failoverPolicy(size, img, hooks, link), 0o644)
	c.lb(0, "policy", "apply", "--admin", dc1.admin, "--tls-dir", c.tlsAdmin, policy)
	testbin.Eventually(t, "holder at dc2", 30*time.Second, func() error {
		cp, err := c.copyAt(dc1.admin, "dc2")
		if err == nil && cp.Holder != dc2.name {
			err = fmt.Errorf("holder %q", cp.Holder)
		}
		return err
	})
	return c, dc1, dc2, img, hooks
}

// writer changes random 4 KiB blocks of the image until the stop hook asks
// it to stop (file hooks/stop), then syncs and answers (hooks/stopped).
type writer struct {
	path, hooks string
	done        chan struct{}
	mu          sync.Mutex
	writes      int
}

func startWriter(t *testing.T, path, hooks string, seed uint64) *writer {
	w := &writer{path: path, hooks: hooks, done: make(chan struct{})}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	go func() {
		defer close(w.done)
		defer f.Close()
		r := rand.New(rand.NewPCG(seed, 1))
		buf := make([]byte, 4096)
		// One write every 20ms: an application's pace, not a wait.
		pace := time.NewTicker(20 * time.Millisecond)
		defer pace.Stop()
		for ; ; <-pace.C {
			if _, err := os.Stat(filepath.Join(hooks, "stop")); err == nil {
				f.Sync()
				os.WriteFile(filepath.Join(hooks, "stopped"), nil, 0o644)
				return
			}
			for i := range buf {
				buf[i] = byte(r.Uint32())
			}
			f.WriteAt(buf, r.Int64N(st.Size()/4096)*4096)
			w.mu.Lock()
			w.writes++
			w.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		os.WriteFile(filepath.Join(hooks, "stop"), nil, 0o644)
		<-w.done
	})
	return w
}

func fileSHA(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func readTrim(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestFailoverPlannedAndDrill: a drill at dc2 while dc1 writes and
// replicates changes nothing in production; then a planned failover to
// dc2 loses nothing: the image the start hook gets at dc2 is the image
// dc1's servers left when the stop hook stopped them. The agent at dc1 is
// fenced afterwards.
func TestFailoverPlannedAndDrill(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("-short: this test builds the lifeboat binary and runs five processes for about 40 s; it runs without -short (as CI does)")
	}
	const size = 16 << 20
	c, dc1, dc2, img, hooks := failoverSites(t, size, 21, `rate = "200Mbit"`)
	startWriter(t, img, hooks, 1)
	agent := c.agent("web1", "dc1", img, dc1.quic)
	testbin.Eventually(t, "dc2's standby at a point", 60*time.Second, func() error {
		cp, err := c.copyAt(dc1.admin, "dc2")
		if err == nil && cp.Standby == "" {
			err = fmt.Errorf("no standby yet (point %q)", cp.Point)
		}
		return err
	})

	// (4) A drill while replication goes on.
	before, err := c.copyAt(dc1.admin, "dc2")
	if err != nil {
		t.Fatal(err)
	}
	standbyImg := filepath.Join(dc2.data, "standby", "web", "disk.img")
	// The node runs the policy's drill hook (failoverPolicy), which writes
	// into the drill's copy of the image.
	out := c.lb(0, "drill", "web", "--admin", dc2.admin, "--tls-dir", c.tlsOperator)
	t.Logf("lifeboat drill:\n%s", out)
	if !strings.Contains(out, "PASSED") || !strings.Contains(out, "drill-ok") {
		t.Fatalf("drill did not pass:\n%s", out)
	}
	testbin.Eventually(t, "replication goes on after the drill", 30*time.Second, func() error {
		cp, err := c.copyAt(dc1.admin, "dc2")
		if err == nil && !cp.PointTime.After(before.PointTime) {
			err = fmt.Errorf("dc2 still at %s", cp.PointTime)
		}
		return err
	})
	svc, err := c.service(dc1.admin)
	if err != nil {
		t.Fatal(err)
	}
	if svc.Epoch != 1 || svc.Primary != "dc1" || svc.Failover != nil || svc.Drill == nil || !svc.Drill.Passed || svc.Drill.Dir != "" {
		t.Fatalf("after the drill: epoch %d, primary %s, failover %+v, drill %+v", svc.Epoch, svc.Primary, svc.Failover, svc.Drill)
	}
	if ents, _ := os.ReadDir(filepath.Join(dc2.data, "drills", "web")); len(ents) != 0 {
		t.Fatalf("the drill left %d directories behind", len(ents))
	}
	if _, err := os.Stat(standbyImg); err != nil {
		t.Fatalf("standby image after the drill: %v", err)
	}
	// A kept drill's images stay, listed as not in use, until images rm
	// (admin only: a viewer and an operator are refused, exit 7).
	out = c.lb(0, "drill", "web", "--keep", "--admin", dc2.admin, "--tls-dir", c.tlsOperator)
	ims := c.images(dc2.admin)
	if len(ims) != 1 || ims[0].Kind != "drill" || ims[0].InUse || ims[0].Size <= 0 || !strings.Contains(out, ims[0].Ref()) {
		t.Fatalf("images after drill --keep: %+v; want one drill, not in use, named in the drill's output:\n%s", ims, out)
	}
	c.lb(7, "images", "rm", "--admin", dc2.admin, "--tls-dir", c.tlsViewer, ims[0].Ref())
	c.lb(7, "images", "rm", "--admin", dc2.admin, "--tls-dir", c.tlsOperator, ims[0].Ref())
	if _, err := os.Stat(ims[0].Path); err != nil {
		t.Fatalf("kept drill images after refused removals: %v", err)
	}
	c.lb(0, "images", "rm", "--admin", dc2.admin, "--tls-dir", c.tlsAdmin, ims[0].Ref())
	if _, err := os.Stat(ims[0].Path); !os.IsNotExist(err) {
		t.Fatalf("kept drill images after images rm: %v", err)
	}
	if ims := c.images(dc2.admin); len(ims) != 0 {
		t.Fatalf("images after images rm: %+v", ims)
	}

	// Instant recovery: a point served over NBD straight from dc2's store
	// reads the same as its restored image.
	if q := testbin.Tool(t, "qemu-img", "qemu-utils"); q != "" {
		cp, err := c.copyAt(dc2.admin, "dc2")
		if err != nil {
			t.Fatal(err)
		}
		addr := testbin.FreePort(t)
		srv := testbin.Start(t, "serve-nbd", filepath.Join(c.dir, "serve-nbd.log"), c.bin, "serve-nbd", "--admin", dc2.admin, "--tls-dir", c.tlsOperator,
			"--volume", "web/disk", "--at", cp.Point, "--listen", addr)
		viaNBD := filepath.Join(c.dir, "via-nbd.img")
		testbin.Eventually(t, "qemu-img reads the point over NBD", 10*time.Second, func() error {
			out, err := exec.Command(q, append(append([]string{"convert"}, nbdTLSArgs(c.tlsOperator, addr, "web/disk")...), "-O", "raw", viaNBD)...).CombinedOutput()
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		})
		srv.Stop()
		restored := filepath.Join(c.dir, "restored.img")
		c.lb(0, "restore", "--admin", dc2.admin, "--tls-dir", c.tlsOperator, "--volume", "web/disk", "--at", cp.Point, "--out", restored)
		if fileSHA(t, viaNBD) != fileSHA(t, restored) {
			t.Fatal("the point read over NBD differs from its restored image")
		}
	}

	// (1) Planned failover.
	out = c.lb(0, "failover", "web", "--admin", dc2.admin, "--tls-dir", c.tlsOperator, "--planned", "--yes")
	t.Logf("lifeboat failover --planned:\n%s", out)
	final := fileSHA(t, img) // the writer stopped for good in the stop hook
	if got := readTrim(t, filepath.Join(hooks, "started-2")); got != final {
		t.Fatalf("the start hook at dc2 got an image with sha256 %s; dc1's servers left %s: writes were lost", got, final)
	}
	env := readTrim(t, filepath.Join(hooks, "env-2"))
	for _, want := range []string{"LIFEBOAT_SITE=dc2", "LIFEBOAT_EPOCH=2", "LIFEBOAT_PHASE=start", "LIFEBOAT_PLANNED=true",
		"LIFEBOAT_IMAGE_DISK=" + filepath.Join(dc2.data, "failover", "web")} {
		if !strings.Contains(env, want) {
			t.Errorf("start hook environment lacks %q:\n%s", want, env)
		}
	}
	if !strings.Contains(out, "RPO 0s") {
		t.Errorf("planned failover did not report RPO 0:\n%s", out)
	}
	svc, err = c.service(dc1.admin)
	if err != nil {
		t.Fatal(err)
	}
	if f := svc.Failover; svc.Epoch != 2 || svc.Primary != "dc2" || f == nil || !f.Done || !f.Planned || f.RPO != 0 || f.RTO <= 0 {
		t.Fatalf("after the failover: epoch %d, primary %s, record %+v", svc.Epoch, svc.Primary, svc.Failover)
	}
	t.Logf("planned failover: RPO %.3fs, RTO %.3fs", svc.Failover.RPO, svc.Failover.RTO)
	// Fenced: the agent at dc1 is refused from now on.
	os.Remove(filepath.Join(hooks, "stop"))
	testbin.Eventually(t, "dc1 refuses the agent", 20*time.Second, func() error {
		if b, _ := os.ReadFile(agent.Log); !bytes.Contains(b, []byte("fenced")) {
			return fmt.Errorf("agent log does not say fenced yet")
		}
		return nil
	})
	// The images web runs on at dc2 are in use: images rm refuses them
	// (exit 8) and they stay.
	ims = c.images(dc2.admin)
	if len(ims) != 1 || ims[0].Kind != "failover" || !ims[0].InUse {
		t.Fatalf("images after the failover: %+v; want web's failover images in use", ims)
	}
	if _, errOut, code := testbin.RunCode(c.bin, "images", "rm", "--admin", dc2.admin, "--tls-dir", c.tlsAdmin, ims[0].Ref()); code != 8 || !strings.Contains(errOut, "in use") {
		t.Fatalf("images rm of the images web runs on: exit %d, want 8 saying in use: %s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(ims[0].Path, "disk.img")); err != nil {
		t.Fatalf("failover image after a refused images rm: %v", err)
	}
	// Running it again is refused: the service runs at dc2.
	if _, errOut, code := testbin.RunCode(c.bin, "failover", "web", "--admin", dc2.admin, "--tls-dir", c.tlsOperator, "--yes"); code == 0 || !strings.Contains(errOut, "already runs at site dc2") {
		t.Fatalf("a second failover: exit %d: %s", code, errOut)
	}
}

// TestFailoverUnplannedForceFailback: dc1 and the witness die under
// continuous writes, so dc2 alone has no catalog quorum. failover without
// --force refuses; with --force it recovers the catalog on dc2 and brings
// web up from dc2's newest point, with an RPO within the target. dc1 comes
// back: it is fenced, keeps the points dc2 never got as a divergent branch,
// and its image at the failover point is the one dc2 started. After
// failback dc1 receives only the blocks written at dc2 since.
func TestFailoverUnplannedForceFailback(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("-short: this test builds the lifeboat binary and runs six processes for about 60 s; it runs without -short (as CI does)")
	}
	const size = 16 << 20
	// dc2 gets at most one point every 3 s: dc1 is always a little ahead.
	c, dc1, dc2, img, hooks := failoverSites(t, size, 22, `coalesce = "3s"`)
	w := c.nodes["dc3-w1"]
	wr := startWriter(t, img, hooks, 2)
	agent := c.agent("web1", "dc1", img, dc1.quic)
	var first node.CopyStatus
	testbin.Eventually(t, "dc2's standby at its second point", 60*time.Second, func() error {
		cp, err := c.copyAt(dc1.admin, "dc2")
		if err == nil && (cp.Standby == "" || cp.Standby != cp.Point) {
			err = fmt.Errorf("no standby yet (point %q, standby %q)", cp.Point, cp.Standby)
		}
		first = cp
		return err
	})
	testbin.Eventually(t, "more points at both sites, dc1's newer than dc2's", 30*time.Second, func() error {
		s, err := c.service(dc1.admin)
		if err != nil {
			return err
		}
		at := map[string]time.Time{}
		for _, wm := range s.Watermarks {
			at[wm.Site] = wm.Time
		}
		if !at["dc2"].After(first.PointTime) || !at["dc1"].After(at["dc2"]) {
			return fmt.Errorf("dc1 at %s, dc2 at %s (was %s)", at["dc1"], at["dc2"], first.PointTime)
		}
		return nil
	})

	// dc1 is lost, and the witness with it.
	dc1.p.Kill()
	agent.Kill()
	w.p.Kill()
	os.WriteFile(filepath.Join(hooks, "stop"), nil, 0o644)
	<-wr.done
	t.Logf("dc1-n1, its agent and dc3-w1 killed with SIGKILL")
	testbin.Eventually(t, "dc2 sees no leader", 30*time.Second, func() error {
		st, err := c.status(dc2.admin)
		if err == nil && st.Leader != "" {
			err = fmt.Errorf("leader %s", st.Leader)
		}
		return err
	})
	_, errOut, code := testbin.RunCode(c.bin, "failover", "web", "--admin", dc2.admin, "--tls-dir", c.tlsOperator, "--yes")
	if code != 6 || !strings.Contains(errOut, "--force") {
		t.Fatalf("failover without quorum and without --force: exit %d, want 6 and a hint at --force: %s", code, errOut)
	}
	out := c.lb(0, "failover", "web", "--admin", dc2.admin, "--tls-dir", c.tlsOperator, "--force", "--yes")
	t.Logf("lifeboat failover --force:\n%s", out)
	svc, err := c.service(dc2.admin)
	if err != nil {
		t.Fatal(err)
	}
	f := svc.Failover
	if svc.Epoch != 2 || f == nil || !f.Done || !f.Forced || f.Planned {
		t.Fatalf("after the failover: epoch %d, record %+v", svc.Epoch, f)
	}
	if f.RPO > 10 {
		t.Errorf("RPO %.3fs is over the 10s target", f.RPO)
	}
	t.Logf("unplanned failover: RPO %.3fs (target 10s), RTO %.3fs, point %s", f.RPO, f.RTO, f.Point)
	started := readTrim(t, filepath.Join(hooks, "started-2"))

	// dc1 and the witness come back. Their Raft state predates the forced
	// recovery, so they rejoin as new members.
	c.start(dc1, "--reset-raft", "--join", dc2.gossip)
	c.start(w, "--reset-raft", "--join", dc2.gossip)
	var branch node.Branch
	testbin.Eventually(t, "dc1 lists its divergent branch", 60*time.Second, func() error {
		s, err := c.service(dc2.admin)
		if err != nil {
			return err
		}
		if len(s.Branches) == 0 {
			return fmt.Errorf("no branch yet")
		}
		branch = s.Branches[0]
		return nil
	})
	t.Logf("branch %s on %s: %d points from %s to %s", branch.Name, branch.Node, len(branch.Points), branch.First, branch.Last)
	if string(branch.Node) != dc1.name || branch.Epoch != 1 || !branch.First.After(f.PointTime) {
		t.Fatalf("branch %+v after failover point at %s", branch, f.PointTime)
	}
	// The branch can be exported, here as qcow2 through dc1's admin API.
	if q := testbin.Tool(t, "qemu-img", "qemu-utils"); q != "" {
		exp := filepath.Join(c.dir, "branch.qcow2")
		c.lb(0, "restore", "--admin", dc1.admin, "--tls-dir", c.tlsOperator, "--volume", "web/disk", "--at", branch.Points[len(branch.Points)-1], "--format", "qcow2", "--out", exp)
		if b, err := exec.Command(q, "check", exp).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img check of the exported branch: %v\n%s", err, b)
		}
	}
	// The primary's image at the chosen point is the one dc2 started.
	restored := filepath.Join(c.dir, "dc1-at-failover.img")
	c.lb(0, "restore", "--admin", dc1.admin, "--tls-dir", c.tlsOperator, "--volume", "web/disk", "--at", f.Point, "--out", restored)
	if got := fileSHA(t, restored); got != started {
		t.Fatalf("dc2 started an image with sha256 %s; dc1's image at point %s is %s", started, f.Point, got)
	}
	// Fenced: dc1 refuses its agent.
	agent = c.agent("web1", "dc1", img, dc1.quic)
	testbin.Eventually(t, "dc1 refuses the agent", 30*time.Second, func() error {
		if b, _ := os.ReadFile(agent.Log); !bytes.Contains(b, []byte("fenced")) {
			return fmt.Errorf("agent log does not say fenced yet")
		}
		return nil
	})
	agent.Stop()

	// The service runs at dc2 now: an agent there protects the started
	// image, and 1 MiB of it changes.
	started2 := filepath.Join(dc2.data, "failover", "web", f.Point[:12], "disk.img")
	c.agent("web1", "dc2", started2, dc2.quic)
	fw, err := os.OpenFile(started2, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 3))
	blk := make([]byte, 4096)
	for i := range 256 {
		for j := range blk {
			blk[j] = byte(r.Uint32())
		}
		fw.WriteAt(blk, int64(i*16)*4096)
	}
	fw.Close()
	changed := time.Now()
	want := fileSHA(t, started2)
	// A point from a scan that began after the changes holds them all.
	var newest node.Watermark
	testbin.Eventually(t, "dc2 holds a point taken after the changes", 30*time.Second, func() error {
		s, err := c.service(dc2.admin)
		if err != nil {
			return err
		}
		for _, wm := range s.Watermarks {
			if wm.Site == "dc2" && wm.Time.After(changed) {
				newest = wm
				return nil
			}
		}
		return fmt.Errorf("no point at dc2 since %s", changed)
	})
	out = c.lb(0, "failback", "web", "--admin", dc2.admin, "--tls-dir", c.tlsOperator)
	t.Logf("lifeboat failback: %s", out)
	// dc2's agent goes on making points; dc1 gets one per coalescing
	// window. Any point from after newest holds the changes.
	var atDC1 node.CopyStatus
	testbin.Eventually(t, "dc1 catches up", 60*time.Second, func() error {
		cp, err := c.copyAt(dc2.admin, "dc1")
		if err != nil {
			return err
		}
		if cp.Point == "" || cp.PointTime.Before(newest.Time) {
			return fmt.Errorf("dc1 at %q (%s), dc2's point with the changes is from %s", cp.Point, cp.PointTime, newest.Time)
		}
		atDC1 = cp
		return nil
	})
	newest.Point = atDC1.Point
	back := filepath.Join(c.dir, "dc1-after-failback.img")
	c.lb(0, "restore", "--admin", dc1.admin, "--tls-dir", c.tlsOperator, "--volume", "web/disk", "--at", newest.Point, "--out", back)
	if got := fileSHA(t, back); got != want {
		t.Fatalf("dc1's copy after failback differs from dc2's image")
	}
	sent, err := metric(c.viewer, dc2.admin, "lifeboat_replication_sent_bytes_total", `link="dc2-dc1"`)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("failback sent %.2f MB to dc1 for 1 MiB of changed blocks in a %d MiB volume", sent/1e6, size>>20)
	if sent > 3<<20 {
		t.Errorf("failback sent %.2f MB: more than the blocks that differ", sent/1e6)
	}
	// The branch's points are still at dc1.
	pts := c.lb(0, "points", "--admin", dc1.admin, "--tls-dir", c.tlsViewer, "--service", "web")
	for _, id := range branch.Points {
		if !strings.Contains(pts, id[:12]) {
			t.Errorf("branch point %s is gone from dc1", id)
		}
	}

	// Home again: a planned failover to dc1 loses nothing, and dc2's hot
	// standby comes back.
	out = c.lb(0, "failover", "web", "--admin", dc1.admin, "--tls-dir", c.tlsOperator, "--planned", "--yes")
	t.Logf("lifeboat failover --planned (home):\n%s", out)
	if got := readTrim(t, filepath.Join(hooks, "started-3")); got != want {
		t.Fatalf("dc1 started an image with sha256 %s; dc2's servers left %s", got, want)
	}
	svc, err = c.service(dc1.admin)
	if err != nil {
		t.Fatal(err)
	}
	if svc.Epoch != 3 || svc.Primary != "dc1" || !svc.Failover.Done || svc.Failover.RPO != 0 {
		t.Fatalf("back home: epoch %d, primary %s, record %+v", svc.Epoch, svc.Primary, svc.Failover)
	}
	testbin.Eventually(t, "dc2's hot standby rebuilt", 60*time.Second, func() error {
		cp, err := c.copyAt(dc1.admin, "dc2")
		if err == nil && (cp.Standby == "" || cp.Standby != cp.Point) {
			err = fmt.Errorf("dc2 at %q, standby at %q", cp.Point, cp.Standby)
		}
		return err
	})
	// Failed back: dc2's failover images go by themselves; the ones web
	// now runs on at dc1 stay, in use.
	testbin.Eventually(t, "dc2's failover images removed after the failback", 20*time.Second, func() error {
		if ims := c.images(dc2.admin); len(ims) != 0 {
			return fmt.Errorf("dc2 still has %+v", ims)
		}
		return nil
	})
	if _, err := os.Stat(filepath.Dir(started2)); !os.IsNotExist(err) {
		t.Errorf("%s after the failback: %v", filepath.Dir(started2), err)
	}
	if ims := c.images(dc1.admin); len(ims) != 1 || !ims[0].InUse || ims[0].Kind != "failover" {
		t.Errorf("dc1's images after coming home: %+v; want the failback's images, in use", ims)
	}
}

// images lists the failover and drill images of the node at admin.
func (c *pcluster) images(admin string) []node.Image {
	c.t.Helper()
	var ims []node.Image
	out := c.lb(0, "images", "list", "--json", "--admin", admin, "--tls-dir", c.tlsViewer)
	if err := json.Unmarshal([]byte(out), &ims); err != nil {
		c.t.Fatalf("images list --json: %v\n%s", err, out)
	}
	return ims
}

// nbdTLSArgs are the qemu-img/qemu-io arguments that open export at addr
// over NBD with TLS, with the operator certificate in dir (the image
// argument is the --image-opts spec).
func nbdTLSArgs(dir, addr, export string) []string {
	host, port, _ := net.SplitHostPort(addr)
	return []string{"--object", "tls-creds-x509,id=tls0,endpoint=client,dir=" + dir,
		"--image-opts", "driver=nbd,server.type=inet,server.host=" + host + ",server.port=" + port + ",export=" + export + ",tls-creds=tls0"}
}
