// Package deploy tests the deployment files in deploy/: the Docker image
// and the compose example are built and run as a user would run them.
package deploy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/internal/workload"
	"github.com/lifeboat-dr/lifeboat/node"
	"github.com/lifeboat-dr/lifeboat/test/testbin"
)

// volumeSize is the protected volume's size: big enough that replication
// moves real data, small enough for a quick test.
const volumeSize = 32 << 20

// TestCompose builds the static binary and the image of
// deploy/docker/Dockerfile, makes certificates, the policy and a volume
// with deploy/docker/setup.sh, and starts deploy/docker/docker-compose.yml:
// nodes at dc1 and dc2 and a witness at dc3, each on its site's network
// and on the wan network, and a scan agent on dc1's network only. The
// cluster must form with three voters, the policy apply, the agent's
// volume reach dc1 and dc2's hot standby, and a failover at dc2 start
// epoch 2 with an image equal to the volume; the agent at dc1 is then
// fenced. The cluster commands present setup.sh's admin operator
// certificate; a node's own certificate reads status but cannot apply a
// policy, and the health check passes with it.
func TestCompose(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: this test builds a Docker image and runs a four-container cluster for about 40 s; it runs without -short (as CI does)")
	}
	ci := os.Getenv("CI") == "true"
	if out, err := exec.Command("docker", "info").CombinedOutput(); err != nil {
		t.Skipf("docker info fails, so there is no Docker daemon to run the compose example on: %v: %s", err, lastLine(out))
	}
	compose := composeCommand()
	if compose == nil {
		if ci {
			t.Fatal("CI=true: docker works but neither docker-compose nor `docker compose` is installed: install docker-compose")
		}
		t.Skip("docker works but neither docker-compose nor `docker compose` is installed: install docker-compose to run this test")
	}
	if os.Geteuid() != 0 {
		if ci {
			t.Fatal("CI=true: deploy/docker/setup.sh must run as root (it gives the certificates to uid 65532, the containers' user)")
		}
		t.Skip("deploy/docker/setup.sh must run as root (it gives the certificates to uid 65532, the containers' user)")
	}
	start := time.Now()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	deployDir := filepath.Join(root, "deploy", "docker")
	suffix := fmt.Sprintf("%08x", rand.Uint32())
	dir := t.TempDir()

	// The image, from a build context laid out as the Dockerfile says:
	// the static binary beside the Dockerfile and rootfs/.
	bctx := filepath.Join(dir, "image")
	copyTree(t, deployDir, bctx, "Dockerfile", ".dockerignore", "rootfs")
	bin := filepath.Join(bctx, "lifeboat")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/lifeboat")
	build.Dir, build.Env = root, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build: %v\n%s", err, out)
	}
	image := "lifeboat-deploy-test:" + suffix
	run(t, 5*time.Minute, nil, "docker", "build", "-q", "-t", image, bctx)
	t.Cleanup(func() { exec.Command("docker", "rmi", "-f", image).Run() })
	t.Logf("image %s built (%s)", image, time.Since(start).Round(time.Millisecond))

	// Certificates, policy and volume, as the README says.
	site := filepath.Join(dir, "site")
	if err := os.MkdirAll(site, 0o755); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(site, "web.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := workload.Image(f, volumeSize, 7); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	setup := exec.Command("sh", filepath.Join(deployDir, "setup.sh"), site)
	setup.Env = append(os.Environ(), "LIFEBOAT_BIN="+bin)
	if out, err := setup.CombinedOutput(); err != nil {
		t.Fatalf("setup.sh: %v\n%s", err, out)
	}

	project := "lbdeploy" + suffix
	wan := wanPrefix(t)
	env := append(os.Environ(), "LIFEBOAT_DIR="+site, "LIFEBOAT_IMAGE="+image, "LIFEBOAT_WAN="+wan, "LIFEBOAT_SCAN_INTERVAL=2s")
	composeCmd := func(args ...string) *exec.Cmd {
		full := append(append([]string(nil), compose...), "-p", project, "-f", filepath.Join(deployDir, "docker-compose.yml"))
		cmd := exec.Command(full[0], append(full[1:], args...)...)
		cmd.Env = env
		return cmd
	}
	dc := func(args ...string) string {
		t.Helper()
		cmd := composeCmd(args...)
		return run(t, 3*time.Minute, env, cmd.Path, cmd.Args[1:]...)
	}
	// Always down, also after a failure (with the containers' logs first).
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := composeCmd("logs", "--no-color", "--tail", "80").CombinedOutput()
			t.Logf("container logs:\n%s", out)
		}
		if out, err := composeCmd("down", "-v", "--remove-orphans", "-t", "30").CombinedOutput(); err != nil {
			t.Errorf("docker-compose down: %v\n%s", err, out)
		}
	})
	dc("up", "-d")
	t.Logf("project %s up, wan %s.0/24 (%s)", project, wan, time.Since(start).Round(time.Millisecond))
	ids := map[string]string{}
	for _, s := range []string{"dc1-n1", "dc2-n1", "dc3-w1", "web1"} {
		if ids[s] = strings.TrimSpace(dc("ps", "-q", s)); ids[s] == "" {
			t.Fatalf("no container for service %s", s)
		}
	}
	dc1, dc2 := ids["dc1-n1"], ids["dc2-n1"]

	// The cluster forms across the wan network: three alive nodes in
	// Raft, a leader, and at least two voters. (Placement wants all three
	// to vote, but a node's gossip update saying it has Raft state can take
	// until the next push/pull, 60 s with the wan profile, to reach the
	// leader; so the third voter is logged, not waited for.)
	var formed *node.Status
	testbin.Eventually(t, "three alive members of Raft and a leader", 60*time.Second, func() error {
		st, err := status(dc1)
		if err != nil {
			return err
		}
		var in []string
		for _, n := range st.Nodes {
			if n.State == "alive" && n.Raft != "none" {
				in = append(in, string(n.Name))
			}
		}
		if st.Leader == "" || len(in) != 3 || len(st.Voters) < 2 {
			return fmt.Errorf("leader %q, alive in raft %v, voters %v", st.Leader, in, st.Voters)
		}
		formed = st
		return nil
	})
	t.Logf("cluster formed: leader %s, voters %v (%s)", formed.Leader, formed.Voters, time.Since(start).Round(time.Millisecond))

	// The admin API wants an operator certificate even on loopback: the
	// node's own reads status as a viewer but cannot apply a policy; the
	// compose file's LIFEBOAT_TLS_DIR names setup.sh's admin certificate.
	if _, err := lbJSON[node.Status](dc1, "status", "--tls-dir", "/etc/lifeboat/tls", "--json"); err != nil {
		t.Errorf("status with the node's own certificate: %v", err)
	}
	if _, errOut, code := lbCode(dc1, "policy", "apply", "--tls-dir", "/etc/lifeboat/tls", "/etc/lifeboat/cluster.toml"); code != 7 {
		t.Errorf("policy apply with the node's own certificate: exit %d, want 7 (refused): %s", code, errOut)
	}
	out := lb(t, dc1, 0, "policy", "apply", "/etc/lifeboat/cluster.toml")
	if !strings.Contains(out, "policy version 1 applied") {
		t.Fatalf("policy apply said: %s", out)
	}

	// The agent's volume reaches dc1 and, replicated, dc2's standby.
	testbin.Eventually(t, "dc2's standby at dc1's newest point", 90*time.Second, func() error {
		st, err := status(dc1)
		if err != nil {
			return err
		}
		svc, err := service(st, "web")
		if err != nil {
			return err
		}
		var primary string
		for _, w := range svc.Watermarks {
			if w.Site == "dc1" {
				primary = w.Point
			}
		}
		for _, c := range svc.Copies {
			if c.Site == "dc2" {
				if primary == "" || c.Point == "" || c.Standby != c.Point || c.Holder != "dc2-n1" {
					return fmt.Errorf("dc1 at %q; dc2's copy: holder %q, point %q, standby %q, error %q", primary, c.Holder, c.Point, c.Standby, c.Error)
				}
				return nil
			}
		}
		return fmt.Errorf("no copy of web at dc2 in the status")
	})
	t.Logf("lifeboat status (%s):\n%s", time.Since(start).Round(time.Millisecond), lb(t, dc1, 0, "status"))

	// Failover to dc2 while everything is up: it starts epoch 2, and the
	// image it hands over is the volume.
	plan, rec := failover(t, dc2)
	t.Logf("lifeboat failover web --yes: epoch %d at %s from point %s, RPO %.3fs, RTO %.3fs, image %+v",
		rec.Epoch, rec.To, rec.Point, rec.RPO, rec.RTO, plan.Images)
	if plan.To != "dc2" || plan.Point != rec.Point || len(plan.Images) != 1 || rec.Epoch != 2 || !rec.Done {
		t.Fatalf("failover: plan to %s at %s with images %+v; record %+v", plan.To, plan.Point, plan.Images, rec)
	}
	for _, c := range []string{dc1, dc2} {
		st, err := status(c)
		if err != nil {
			t.Fatal(err)
		}
		svc, err := service(st, "web")
		if err != nil {
			t.Fatal(err)
		}
		if f := svc.Failover; svc.Epoch != 2 || svc.Primary != "dc2" || f == nil || !f.Done || f.To != "dc2" {
			t.Fatalf("%s after the failover: epoch %d, primary %s, record %+v", st.Node, svc.Epoch, svc.Primary, f)
		}
	}
	got := filepath.Join(dir, "failover.img")
	run(t, time.Minute, nil, "docker", "cp", dc2+":"+plan.Images[0].Path, got)
	if g, w := fileSHA(t, got), fileSHA(t, img); g != w {
		t.Fatalf("the failover image at dc2 has sha256 %s, the volume %s", g, w)
	}
	testbin.Eventually(t, "the agent at dc1 fenced", 30*time.Second, func() error {
		logs, err := exec.Command("docker", "logs", ids["web1"]).CombinedOutput() // the agent logs to stderr
		if err != nil {
			return fmt.Errorf("docker logs: %v", err)
		}
		if !bytes.Contains(logs, []byte("agent fenced")) {
			return errors.New("the agent's log does not say fenced yet")
		}
		return nil
	})
	if st, err := status(dc1); err == nil && len(st.Voters) != 3 {
		t.Logf("note: voters %v at the end; dc3-w1 or dc2-n1 is promoted at the next gossip push/pull", st.Voters)
	}
	// The health check (status with the node's own certificate) passes.
	testbin.Eventually(t, "the nodes healthy", 60*time.Second, func() error {
		for _, c := range []string{dc1, dc2, ids["dc3-w1"]} {
			out, errOut, code := testbin.RunCode("docker", "inspect", "-f", "{{.State.Health.Status}}", c)
			if h := strings.TrimSpace(out); code != 0 || h != "healthy" {
				return fmt.Errorf("container %.12s: health %q (exit %d) %s", c, h, code, errOut)
			}
		}
		return nil
	})
	t.Logf("TestCompose checks done in %s (cleanup follows)", time.Since(start).Round(time.Millisecond))
}

// composeCommand returns docker-compose, or `docker compose` when only the
// plugin is installed, or nil.
func composeCommand() []string {
	if p, err := exec.LookPath("docker-compose"); err == nil {
		return []string{p}
	}
	if exec.Command("docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}
	}
	return nil
}

// run runs a command and returns its stdout; it fails the test unless the
// command exits 0 within timeout. env nil means the test's environment.
func run(t testing.TB, timeout time.Duration, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// lbCode runs /lifeboat with args in a container and returns stdout, stderr
// and the exit code.
func lbCode(container string, args ...string) (string, string, int) {
	return testbin.RunCode("docker", append([]string{"exec", container, "/lifeboat"}, args...)...)
}

// lb runs /lifeboat in a container and fails the test unless it exits
// with want.
func lb(t testing.TB, container string, want int, args ...string) string {
	t.Helper()
	out, errOut, code := lbCode(container, args...)
	if code != want {
		t.Fatalf("docker exec %.12s /lifeboat %s: exit %d, want %d\nstdout: %s\nstderr: %s", container, strings.Join(args, " "), code, want, out, errOut)
	}
	return out
}

// status is `lifeboat status --json` in a node's container.
func status(container string) (*node.Status, error) {
	return lbJSON[node.Status](container, "status", "--json")
}

// lbJSON runs /lifeboat with args in a container and decodes its output.
func lbJSON[T any](container string, args ...string) (*T, error) {
	out, errOut, code := lbCode(container, args...)
	if code != 0 {
		return nil, fmt.Errorf("%s exit %d: %s", args[0], code, strings.TrimSpace(errOut))
	}
	var v T
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		return nil, fmt.Errorf("%s JSON: %v: %s", args[0], err, out)
	}
	return &v, nil
}

func service(st *node.Status, name string) (node.ServiceStatus, error) {
	for _, s := range st.Services {
		if s.Name == name {
			return s, nil
		}
	}
	return node.ServiceStatus{}, fmt.Errorf("no service %s in %s's status", name, st.Node)
}

// failover runs `lifeboat failover web --yes --json` in a node's container
// and returns the plan it acted on (the last one printed: a point may
// arrive between the plan shown first and the failover) and its record
// (the last value printed).
func failover(t testing.TB, container string) (*node.FailoverPlan, *node.FailoverRecord) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(lb(t, container, 0, "failover", "web", "--yes", "--json")))
	var (
		plan *node.FailoverPlan
		last json.RawMessage
	)
	for {
		var raw json.RawMessage
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("failover --json: %v", err)
		}
		var e node.FailoverEvent
		if json.Unmarshal(raw, &e) == nil && e.Plan != nil {
			plan = e.Plan
		}
		last = raw
	}
	var rec node.FailoverRecord
	if plan == nil || json.Unmarshal(last, &rec) != nil {
		t.Fatalf("failover --json printed no plan or no record; last: %s", last)
	}
	return plan, &rec
}

// wanPrefix picks the first three octets of a /24 in 10.0.0.0/8 that no
// Docker network and no host interface uses: the compose file gives the
// nodes fixed addresses there, and parallel runs must not clash.
func wanPrefix(t testing.TB) string {
	t.Helper()
	var used []*net.IPNet
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				used = append(used, n)
			}
		}
	}
	if ids := strings.Fields(run(t, time.Minute, nil, "docker", "network", "ls", "-q")); len(ids) > 0 {
		out := run(t, time.Minute, nil, "docker", append([]string{"network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}} {{end}}"}, ids...)...)
		for _, s := range strings.Fields(out) {
			if _, n, err := net.ParseCIDR(s); err == nil {
				used = append(used, n)
			}
		}
	}
	for range 100 {
		p := fmt.Sprintf("10.%d.%d", 100+rand.IntN(150), rand.IntN(256))
		_, n, _ := net.ParseCIDR(p + ".0/24")
		free := true
		for _, u := range used {
			if u.Contains(n.IP) || n.Contains(u.IP) {
				free = false
			}
		}
		if free {
			return p
		}
	}
	t.Fatal("no free /24 in 10.100.0.0-10.249.255.0 for the wan network")
	return ""
}

// copyTree copies the named files and directories of src into dst.
func copyTree(t testing.TB, src, dst string, names ...string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		err := filepath.Walk(filepath.Join(src, name), func(path string, fi os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(src, path)
			if err != nil {
				return err
			}
			to := filepath.Join(dst, rel)
			if fi.IsDir() {
				return os.MkdirAll(to, 0o755)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			return os.WriteFile(to, b, fi.Mode().Perm())
		})
		if err != nil {
			t.Fatalf("copy %s: %v", name, err)
		}
	}
}

func fileSHA(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func lastLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	return s[strings.LastIndexByte(s, '\n')+1:]
}
