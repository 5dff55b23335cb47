package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-dr/lifeboat/internal/workload"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node"
)

// demoCmd runs lifeboat's whole job on loopback: two sites and a witness
// as real node processes, a protected service under continuous writes,
// the loss of the primary site, and the failover at the other.
func (c *cli) demoCmd() *cobra.Command {
	var (
		keep string
		size = sizeFlag(64 << 20)
	)
	cmd := &cobra.Command{
		Use:   "demo [--keep DIR] [--size SIZE]",
		Short: "Run two sites and a witness on this host, lose one site, fail over at the other",
		Long: `demo shows lifeboat's whole job on this host, with no config and no root:
it creates a cluster CA, starts five node processes on loopback ports it
picks itself (dc1: 2 nodes, dc2: 2 nodes, dc3: a witness), applies a policy
protecting the service "web" (one volume, the generated workload, under
continuous writes) with a hot copy at dc2, and starts an agent shipping the
volume to dc1. It shows the initial sync and then the RPO and link rate
live, kills every dc1 process (SIGKILL), fails the service over at dc2,
checks that the image the start hook got equals the chosen point, and
prints the RPO and RTO achieved. It stops everything and removes its files
at the end and on Ctrl-C; --keep DIR leaves the configs, certificates, data
directories and logs in DIR (which must not exist or be empty).`,
		Args: noArgs,
		RunE: c.runE(func(cmd *cobra.Command, _ []string) error {
			return c.demo(cmd.Context(), keep, int64(size))
		}),
	}
	cmd.Flags().StringVar(&keep, "keep", "", "keep configs, certificates, data and logs in `DIR` (must not exist or be empty)")
	cmd.Flags().Var(&size, "size", "size of the protected volume, e.g. 64MiB or 1GiB")
	return cmd
}

// demoProc is one process the demo runs.
type demoProc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *demoProc) stop(sig syscall.Signal) {
	if p == nil || p.cmd.Process == nil {
		return
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(3 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

type demoNode struct {
	name, site, role         string
	admin, quic, gossip, dir string
	proc                     *demoProc
}

func (c *cli) demo(ctx context.Context, keep string, size int64) (err error) {
	if size < 1<<20 || size%(64<<10) != 0 {
		return usagef("--size %d: want at least 1MiB, a multiple of 64KiB", size)
	}
	start := time.Now()
	say := func(format string, a ...any) {
		fmt.Fprintf(c.stdout, "[%4.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, a...))
	}
	dir := keep
	if dir == "" {
		d, err := os.MkdirTemp("", "lifeboat-demo-")
		if err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		defer os.RemoveAll(d)
		dir = d
	} else {
		if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
			return usagef("--keep %s: the directory is not empty", dir)
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("demo: find the lifeboat binary: %w", err)
	}
	var (
		procsMu sync.Mutex
		procs   []*demoProc
		nodes   []*demoNode
	)
	run := func(name string, args ...string) (*demoProc, error) {
		log, err := os.Create(filepath.Join(dir, name+".log"))
		if err != nil {
			return nil, err
		}
		p := &demoProc{name: name, cmd: exec.Command(bin, args...), done: make(chan struct{})}
		p.cmd.Stdout, p.cmd.Stderr = log, log
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // Ctrl-C reaches the demo, which stops them in order
		if err := p.cmd.Start(); err != nil {
			log.Close()
			return nil, fmt.Errorf("demo: start %s: %w", name, err)
		}
		go func() { p.cmd.Wait(); log.Close(); close(p.done) }()
		procsMu.Lock()
		procs = append(procs, p)
		procsMu.Unlock()
		return p, nil
	}
	defer func() {
		procsMu.Lock()
		defer procsMu.Unlock()
		var wg sync.WaitGroup
		for _, p := range procs {
			wg.Go(func() { p.stop(syscall.SIGTERM) })
		}
		wg.Wait()
		if keep != "" {
			if err := writeDemoScripts(dir, nodes); err != nil {
				fmt.Fprintf(c.stderr, "lifeboat: demo: %v\n", err)
			}
			fmt.Fprintf(c.stdout, "kept configs, certificates, data directories and logs in %s (the processes are stopped);\n", dir)
			fmt.Fprintf(c.stdout, "start the five nodes again with: sh %s/start-nodes.sh   (then . %s/env.sh for $DC1_ADMIN, $DC2_ADMIN, ...)\n", dir, dir)
		}
	}()

	// The cluster's identity.
	ca := filepath.Join(dir, "ca")
	if err := mesh.InitCA(ca); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	for _, s := range [][3]string{{"dc1-n1", "dc1", node.RoleNode}, {"dc1-n2", "dc1", node.RoleNode}, {"dc2-n1", "dc2", node.RoleNode},
		{"dc2-n2", "dc2", node.RoleNode}, {"dc3-w1", "dc3", node.RoleWitness}} {
		n := &demoNode{name: s[0], site: s[1], role: s[2], dir: filepath.Join(dir, s[0])}
		for _, p := range []*string{&n.admin, &n.quic, &n.gossip} {
			if *p, err = freeLoopbackPort(); err != nil {
				return err
			}
		}
		// 127.0.0.1 in the certificate: clients that check host names (curl,
		// qemu, nbdinfo) reach the demo's nodes by that address.
		if err := mesh.Issue(ca, mesh.IssueRequest{Name: n.name, Site: n.site, Hosts: []string{"127.0.0.1", "localhost"}}, filepath.Join(dir, n.name+"-tls")); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		nodes = append(nodes, n)
	}
	// The demo's own operator: an admin certificate for the admin API,
	// which takes no call without one (loopback included).
	opTLS := filepath.Join(dir, "operator-tls")
	if err := mesh.Issue(ca, mesh.IssueRequest{Name: "demo-admin", Operator: true, Role: mesh.RoleAdmin}, opTLS); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	opCreds, err := mesh.LoadCreds(opTLS)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	client := func(addr string) *node.Client {
		cl, _ := node.NewClient(addr, opCreds)
		return cl
	}
	say("cluster CA and certificates for 5 nodes and an admin operator in %s", dir)
	startNode := func(n *demoNode) error {
		args := []string{"node", "run", "--name", n.name, "--site", n.site, "--role", n.role, "--data-dir", n.dir,
			"--listen-gossip", n.gossip, "--listen-quic", n.quic, "--listen-admin", n.admin,
			"--tls-dir", filepath.Join(dir, n.name+"-tls"), "--gossip-profile", "test"}
		if n != nodes[0] {
			args = append(args, "--join", nodes[0].gossip, "--bootstrap-expect", "1")
		}
		p, err := run(n.name, args...)
		n.proc = p
		return err
	}
	if err := startNode(nodes[0]); err != nil {
		return err
	}
	dc1 := client(nodes[0].admin)
	if err := waitFor(ctx, 30*time.Second, "the first node to lead", func() error {
		st, err := dc1.Status(ctx)
		if err == nil && st.Leader == "" {
			err = errors.New("no leader yet")
		}
		return err
	}); err != nil {
		return err
	}
	for _, n := range nodes[1:] {
		if err := startNode(n); err != nil {
			return err
		}
	}
	say("5 node processes started: dc1-n1 dc1-n2 | dc2-n1 dc2-n2 | witness dc3-w1 (logs: %s/*.log)", dir)

	// The protected service.
	img := filepath.Join(dir, "web-disk.img")
	if err := makeDemoImage(img, size, 1); err != nil {
		return err
	}
	hooks := filepath.Join(dir, "hooks")
	os.MkdirAll(hooks, 0o700)
	policy := fmt.Sprintf(`# The demo's cluster policy.
[[site]]
name = "dc1"
[[site]]
name = "dc2"
[[site]]
name = "dc3"
[[link]]
between = ["dc1", "dc2"]
rate = "400Mbit"
[[service]]
name = "web"
primary = "dc1"
rpo = "10s"
  [service.hooks]
  start = 'sha256sum "$LIFEBOAT_IMAGE_DISK" | cut -d" " -f1 > %[1]q/started.sha256'
  health = 'test -s %[1]q/started.sha256'
  [[service.server]]
  name = "web1"
    [[service.server.volume]]
    name = "disk"
    path = %[2]q
    size = "%[3]dB"
  [[service.copy]]
  site = "dc2"
  tier = "hot"
`, hooks, img, size)
	if err := os.WriteFile(filepath.Join(dir, "cluster.toml"), []byte(policy), 0o600); err != nil {
		return err
	}
	if err := waitFor(ctx, 30*time.Second, "the policy to apply", func() error {
		_, err := dc1.ApplyPolicy(ctx, "cluster.toml", []byte(policy))
		return err
	}); err != nil {
		return err
	}
	say("policy applied: service web at dc1, hot copy at dc2, RPO target 10s, link dc1-dc2 400Mbit")
	agentTLS := filepath.Join(dir, "agent-web1-tls")
	if err := mesh.Issue(ca, mesh.IssueRequest{Name: "web1", Site: "dc1", Agent: true, Service: "web"}, agentTLS); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	wctx, stopWriter := context.WithCancel(ctx)
	defer stopWriter()
	writes, err := startDemoWriter(wctx, img, size)
	if err != nil {
		return err
	}
	agent, err := run("agent-web1", "agent", "run", "--name", "web1", "--service", "web", "--volume", "disk="+img,
		"--node", nodes[0].quic, "--tls-dir", agentTLS, "--spool", filepath.Join(dir, "agent-spool"), "--mode", "scan", "--interval", "1s")
	if err != nil {
		return err
	}
	say("agent web1 scans %s (%s, the workload mix) every second while a writer changes it", filepath.Base(img), formatBytes(size))

	// Initial sync, then steady state.
	synced := time.Time{}
	err = waitFor(ctx, 60*time.Second, "the hot copy at dc2", func() error {
		cp, err := demoCopy(ctx, dc1)
		if err != nil {
			return err
		}
		if synced.IsZero() {
			if cp.Point == "" || cp.Standby != cp.Point {
				say("initial sync: dc2 holder %s, point %s, backlog %s, link now %s", orNone(cp.Holder), orNone(cp.Point), formatBytes(cp.Backlog), rateText(cp.LinkRate))
				return errors.New("syncing")
			}
			synced = time.Now()
			say("initial sync done: dc2 holds point %s with its standby image at it", cp.Point)
		}
		say("replicating: dc2 RPO %s (target 10s), backlog %s, link now %s, %d writes so far", secs(cp.RPO), formatBytes(cp.Backlog), rateText(cp.LinkRate), writes())
		if time.Since(synced) < 4*time.Second {
			return errors.New("steady state")
		}
		return nil
	}, time.Second)
	if err != nil {
		return err
	}

	// The loss of dc1: first make sure the catalog keeps its majority
	// without it (the leader spreads the voters 2 + 2 + 1 over the sites).
	if err := waitFor(ctx, 30*time.Second, "the voters to spread over the three sites", func() error {
		st, err := dc1.Status(ctx)
		if err != nil {
			return err
		}
		out, all := 0, 0
		for _, n := range st.Nodes {
			if n.Voter {
				all++
				if n.Site != "dc1" {
					out++
				}
			}
		}
		if out <= all/2 || all < 5 {
			return fmt.Errorf("%d voters, %d outside dc1", all, out)
		}
		return nil
	}); err != nil {
		return err
	}
	say("dc1 is lost: killing dc1-n1, dc1-n2 and the agent with SIGKILL")
	stopWriter()
	for _, p := range []*demoProc{nodes[0].proc, nodes[1].proc, agent} {
		p.stop(syscall.SIGKILL)
	}
	dc2 := client(nodes[2].admin)
	say("lifeboat failover web --admin %s --yes", nodes[2].admin)
	var rec *node.FailoverRecord
	for attempt := 0; ; attempt++ {
		rec, err = dc2.Failover(ctx, node.FailoverRequest{Service: "web"}, func(e node.FailoverEvent) {
			switch {
			case e.Plan != nil:
				say("plan: point %s (%s old), RPO %s, %d image(s) from %s", e.Plan.Point, secs(e.Plan.PointAge), secs(e.Plan.RPO), len(e.Plan.Images), e.Plan.Images[0].Source)
			default:
				say("  [%s] %s", e.Step, e.Message)
			}
		})
		var nh *node.NotHolderError
		if errors.As(err, &nh) && nh.Admin != "" && attempt == 0 {
			say("  the holder of web at dc2 runs it: %s", nh.Admin)
			dc2 = client(nh.Admin)
			continue
		}
		break
	}
	if err != nil {
		return fmt.Errorf("demo: failover: %w", err)
	}
	// The started image is the chosen point: compare with the point as
	// dc2's store holds it.
	got, err := os.ReadFile(filepath.Join(hooks, "started.sha256"))
	if err != nil {
		return fmt.Errorf("demo: the start hook did not run: %w", err)
	}
	want, err := pointSHA(ctx, dc2, rec.Point, filepath.Join(dir, "check.img"))
	if err != nil {
		return fmt.Errorf("demo: read point %s back: %w", rec.Point, err)
	}
	if strings.TrimSpace(string(got)) != want {
		return fmt.Errorf("demo: the started image (sha256 %s) differs from point %s (%s)", strings.TrimSpace(string(got)), rec.Point, want)
	}
	fmt.Fprintf(c.stdout, "demo ok: web is up at dc2 (epoch %d) from point %s: RPO %s (at most %s: the point's age at the failover; target 10s), RTO %s; the started image equals the point; total %s\n",
		rec.Epoch, rec.Point, secs(rec.RPO), secs(rec.PointAge), secs(rec.RTO), time.Since(start).Round(100*time.Millisecond))
	return nil
}

// writeDemoScripts writes start-nodes.sh, stop-nodes.sh and env.sh into a
// kept demo directory: the nodes again, with the same names, ports and
// data, for exploring with the other commands.
func writeDemoScripts(dir string, nodes []*demoNode) error {
	var start, env strings.Builder
	start.WriteString("#!/bin/sh\n# Starts the demo's five nodes again (made by lifeboat demo --keep).\n# LIFEBOAT names the binary (default: lifeboat on the PATH).\nset -e\nbin=${LIFEBOAT:-lifeboat}\n")
	var gossips []string
	for _, n := range nodes {
		gossips = append(gossips, n.gossip)
	}
	for _, n := range nodes {
		var join []string
		for _, g := range gossips {
			if g != n.gossip {
				join = append(join, "--join "+g)
			}
		}
		fmt.Fprintf(&start, "$bin node run --name %s --site %s --role %s --data-dir %q --listen-gossip %s --listen-quic %s --listen-admin %s --tls-dir %q --gossip-profile test %s >>%q 2>&1 &\necho $! >%q\n",
			n.name, n.site, n.role, n.dir, n.gossip, n.quic, n.admin, filepath.Join(dir, n.name+"-tls"), strings.Join(join, " "),
			filepath.Join(dir, n.name+".log"), filepath.Join(dir, n.name+".pid"))
		fmt.Fprintf(&env, "%s_ADMIN=%s\n", strings.ToUpper(strings.ReplaceAll(n.name, "-", "_")), n.admin)
	}
	fmt.Fprintf(&env, "DC1_ADMIN=%s\nDC2_ADMIN=%s\nexport DC1_N1_ADMIN DC1_N2_ADMIN DC2_N1_ADMIN DC2_N2_ADMIN DC3_W1_ADMIN DC1_ADMIN DC2_ADMIN\n", nodes[0].admin, nodes[2].admin)
	// The demo's admin certificate, for every cluster command.
	fmt.Fprintf(&env, "LIFEBOAT_TLS_DIR=%q\nexport LIFEBOAT_TLS_DIR\n", filepath.Join(dir, "operator-tls"))
	start.WriteString("echo \"nodes started; logs in " + dir + "/*.log\"\n")
	stop := "#!/bin/sh\n# Stops the nodes start-nodes.sh started.\nfor f in " + filepath.Join(dir, "*.pid") + "; do kill $(cat \"$f\") 2>/dev/null; rm -f \"$f\"; done\n"
	for name, body := range map[string]string{"start-nodes.sh": start.String(), "stop-nodes.sh": stop, "env.sh": env.String()} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o755); err != nil {
			return err
		}
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "none yet"
	}
	return s
}

func rateText(r float64) string {
	if r <= 0 {
		return "unlimited"
	}
	return formatBytes(int64(r)) + "/s"
}

// demoCopy returns web's copy at dc2 as the node sees it.
func demoCopy(ctx context.Context, cl *node.Client) (node.CopyStatus, error) {
	st, err := cl.Status(ctx)
	if err != nil {
		return node.CopyStatus{}, err
	}
	for _, s := range st.Services {
		for _, cp := range s.Copies {
			if s.Name == "web" && cp.Site == "dc2" {
				return cp, nil
			}
		}
	}
	return node.CopyStatus{}, errors.New("no copy of web at dc2 yet")
}

// pointSHA reads volume web/disk at point id from the node into path and
// returns its SHA-256.
func pointSHA(ctx context.Context, cl *node.Client, id, path string) (string, error) {
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer os.Remove(path)
	defer f.Close()
	_, size, err := cl.Image(ctx, "web/disk", id, "", f)
	if err != nil {
		return "", err
	}
	if err := f.Truncate(size); err != nil {
		return "", err
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, size)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// startDemoWriter writes the workload's stream of writes into the image
// (about 50 a second) until ctx ends; the returned func counts them.
func startDemoWriter(ctx context.Context, path string, size int64) (func() int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	var mu sync.Mutex
	var n int64
	go func() {
		defer f.Close()
		w := workload.NewWriter(size, 7)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			wr := w.Next()
			f.WriteAt(wr.Data, wr.Off)
			mu.Lock()
			n++
			mu.Unlock()
		}
	}()
	return func() int64 { mu.Lock(); defer mu.Unlock(); return n }, nil
}

// waitFor calls cond every interval (default 200ms) until it returns nil,
// ctx ends or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() error, interval ...time.Duration) error {
	every := 200 * time.Millisecond
	if len(interval) > 0 {
		every = interval[0]
	}
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: waiting for %s: %w (see the logs)", what, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
}

// freeLoopbackPort returns 127.0.0.1:PORT with a port free right now (TCP
// and UDP).
func freeLoopbackPort() (string, error) {
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", fmt.Errorf("demo: find a free port: %w", err)
		}
		addr := l.Addr().String()
		u, err := net.ListenPacket("udp", addr)
		l.Close()
		if err == nil {
			u.Close()
			return addr, nil
		}
	}
	return "", errors.New("demo: no free loopback port found")
}

func makeDemoImage(path string, size, seed int64) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer f.Close()
	if err := workload.Image(f, size, seed); err != nil {
		return fmt.Errorf("demo: generate image: %w", err)
	}
	return f.Close()
}

// sizeFlag is a byte count given as "256MiB", "2GiB" or "1048576".
type sizeFlag int64

func (f *sizeFlag) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	*f = sizeFlag(n)
	return nil
}

func (f *sizeFlag) String() string { return formatSize(int64(*f)) }
func (f *sizeFlag) Type() string   { return "size" }
