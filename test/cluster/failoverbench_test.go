package cluster

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/internal/testwait"
	"github.com/lifeboat-dr/lifeboat/internal/workload"
	"github.com/lifeboat-dr/lifeboat/test/testbin"
)

// rtoPolicy protects two images (IMG-hot and IMG-warm, different data) as
// two services: "hot" with a hot copy at dc2 and "warm" with a warm one.
// Their start hooks write the time they started.
func rtoPolicy(size int64, img, hooks string) []byte {
	svc := func(name, tier string) string {
		return service(name, "dc1", fmt.Sprintf("  [service.hooks]\n  start = 'date +%%s.%%N > \"%s/start-$LIFEBOAT_SERVICE\"'\n", hooks),
			server("s1", "disk", img+"-"+name, fmt.Sprintf("%dB", size), "")+copyAt("dc2", fmt.Sprintf("tier = %q", tier)))
	}
	return []byte(sites("dc1", "dc2", "dc3") + svc("hot", "hot") + svc("warm", "warm"))
}

// BenchmarkFailoverRTO measures recovery time for a 2 GiB volume of the
// workload (LIFEBOAT_RTO_SIZE overrides), with node and agent processes:
// the hot tier from the failover command to the start hook running; the
// warm tier the same, against cp (and cp plus fsync) of the image on the
// same file system. Run it with -benchtime 1x.
func BenchmarkFailoverRTO(b *testing.B) {
	size := int64(2 << 30)
	if s := os.Getenv("LIFEBOAT_RTO_SIZE"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		size = n
	}
	c := newPCluster(b, [3]string{"dc1-n1", "dc1", "node"}, [3]string{"dc2-n1", "dc2", "node"}, [3]string{"dc3-w1", "dc3", "witness"})
	dc1, dc2 := c.nodes["dc1-n1"], c.nodes["dc2-n1"]
	hooks := filepath.Join(c.dir, "hooks")
	os.MkdirAll(hooks, 0o755)
	img := filepath.Join(c.dir, "disk.img")
	for i, svc := range []string{"hot", "warm"} {
		f, err := os.Create(img + "-" + svc)
		if err != nil {
			b.Fatal(err)
		}
		if err := workload.Image(f, size, int64(i+1)); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
	policy := filepath.Join(c.dir, "cluster.toml")
	os.WriteFile(policy, rtoPolicy(size, img, hooks), 0o644)
	c.lb(0, "policy", "apply", "--admin", dc1.admin, "--tls-dir", c.tlsAdmin, policy)
	for _, svc := range []string{"hot", "warm"} {
		tls := filepath.Join(c.dir, svc+"-agent-tls")
		c.lb(0, "ca", "issue", "--dir", c.ca, "--agent", "--name", "s1", "--site", "dc1", "--service", svc, "--out", tls)
		p := testbin.Start(b, svc+"-agent", filepath.Join(c.dir, svc+"-agent.log"), c.bin, "agent", "run", "--name", "s1", "--service", svc,
			"--volume", "disk="+img+"-"+svc, "--node", dc1.quic, "--tls-dir", tls, "--mode", "scan", "--interval", "1h",
			"--spool", filepath.Join(c.dir, svc+"-spool"))
		b.Cleanup(p.Stop)
	}
	t0 := time.Now()
	testbin.Eventually(b, "both copies at dc2 (hot: standby at the point)", 15*time.Minute, func() error {
		st, err := c.status(dc1.admin)
		if err != nil {
			return err
		}
		ready := 0
		for _, s := range st.Services {
			for _, cp := range s.Copies {
				if cp.Point != "" && (cp.Tier != "hot" || cp.Standby == cp.Point) {
					ready++
				}
			}
		}
		if ready < 2 {
			return fmt.Errorf("%d of 2 copies ready", ready)
		}
		return nil
	})
	b.Logf("%d MiB volume: both copies ready at dc2 %s after the agents started", size>>20, time.Since(t0).Round(time.Second))
	// Let the writeback of what replication wrote finish, so that it does
	// not compete with what is measured (cp below gets the same).
	exec.Command("sync").Run()

	// Instant recovery: from starting serve-nbd against dc2's node to the
	// first block read by a client (qemu-io, started again every 20 ms
	// until it reads; its own start-up counts).
	var nbdFirst time.Duration
	if qemuIO := testbin.Tool(b, "qemu-io", "qemu-utils"); qemuIO != "" {
		addr := testbin.FreePort(b)
		s := time.Now()
		srv := testbin.Start(b, "serve-nbd", filepath.Join(c.dir, "serve-nbd.log"), c.bin, "serve-nbd", "--admin", dc2.admin, "--tls-dir", c.tlsOperator,
			"--volume", "warm/disk", "--listen", addr)
		if err := testwait.Until(time.Minute, 20*time.Millisecond, func() error {
			return exec.Command(qemuIO, append(append([]string{"-r"}, nbdTLSArgs(c.tlsOperator, addr, "warm/disk")...), "-c", "read 0 4096")...).Run()
		}); err != nil {
			b.Fatalf("no block served over NBD within a minute: %v:\n%s", err, srv.Tail(20))
		}
		nbdFirst = time.Since(s)
		srv.Stop()
	} else {
		b.Log("qemu-io not found (apt-get install qemu-utils): instant recovery not measured")
	}

	var outs []string
	rto := func(svc string) (cmd, reported time.Duration) {
		start := time.Now()
		out := c.lb(0, "failover", svc, "--admin", dc2.admin, "--tls-dir", c.tlsOperator, "--yes")
		hook := readTrim(b, filepath.Join(hooks, "start-"+svc))
		sec, err := strconv.ParseFloat(hook, 64)
		if err != nil {
			b.Fatalf("start hook time %q: %v", hook, err)
		}
		running := time.Unix(0, int64(sec*1e9))
		var rep time.Duration
		if i := strings.Index(out, "; RTO "); i >= 0 {
			line, _, _ := strings.Cut(out[i+6:], "\n")
			rep, _ = time.ParseDuration(strings.TrimSpace(line))
		}
		outs = append(outs, out)
		return running.Sub(start), rep
	}
	hot, hotRep := rto("hot")
	warm, warmRep := rto("warm")

	// cp of the image on the same file system, and cp then fsync: three
	// rounds each after a warm-up, medians.
	dst := filepath.Join(dc2.data, "cp-test.img")
	timeCmd := func(script string) time.Duration {
		os.Remove(dst)
		s := time.Now()
		if out, err := exec.Command("sh", "-c", script, img+"-warm", dst).CombinedOutput(); err != nil {
			b.Fatalf("%s: %v %s", script, err, out)
		}
		d := time.Since(s)
		os.Remove(dst)
		exec.Command("sync").Run()
		return d
	}
	timeCmd(`cp "$0" "$1" && sync "$1"`)
	var cps, cpSyncs []time.Duration
	for range 3 {
		cps = append(cps, timeCmd(`cp "$0" "$1"`))
		cpSyncs = append(cpSyncs, timeCmd(`cp "$0" "$1" && sync "$1"`))
	}
	slices.Sort(cps)
	slices.Sort(cpSyncs)
	cpTime, cpSync := cps[1], cpSyncs[1]
	for _, o := range outs {
		if i := strings.Index(o, "materialized "); i >= 0 {
			l, _, _ := strings.Cut(o[i:], "\n")
			b.Logf("warm: %s", l)
		}
	}
	b.Logf("instant recovery over NBD: %.3fs from starting serve-nbd --admin to the first block read; target < 1s", nbdFirst.Seconds())
	b.Logf("RTO hot: %.2fs from the command to the start hook running (lifeboat reports %s); target < 5s", hot.Seconds(), hotRep)
	b.Logf("RTO warm: %.2fs (lifeboat reports %s); cp of the image %.2fs, cp+fsync %.2fs: %.2fx cp, %.2fx cp+fsync; target < 2x cp",
		warm.Seconds(), warmRep, cpTime.Seconds(), cpSync.Seconds(), warm.Seconds()/cpTime.Seconds(), warm.Seconds()/cpSync.Seconds())
	for _, o := range outs {
		for _, l := range strings.Split(o, "\n") {
			if strings.Contains(l, "[images]") || strings.Contains(l, "failover done") {
				b.Logf("%s", strings.TrimSpace(l))
			}
		}
	}
	b.ReportMetric(nbdFirst.Seconds(), "nbd-first-block-s")
	b.ReportMetric(hot.Seconds(), "hot-rto-s")
	b.ReportMetric(warm.Seconds(), "warm-rto-s")
	b.ReportMetric(warm.Seconds()/cpTime.Seconds(), "warm/cp")
	for range b.N {
	}
}
