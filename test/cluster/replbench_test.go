package cluster

import (
	"bytes"
	"fmt"
	"os"
	"runtime/pprof"
	"syscall"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkReplicationThroughput replicates a volume of new unique
// (random) data from dc1 to dc2 over an unlimited link, both nodes in this
// process on the operating system's network (QUIC with GSO), and reports
// MB/s of new data and CPU seconds per GB for both nodes together:
//
//	go test -run '^$' -bench ReplicationThroughput -benchtime 1x ./test/cluster
//
// LIFEBOAT_REPL_CPUPROFILE=FILE profiles the timed part only.
// The agent ships the volume to dc1 before the copy at dc2 is added to
// the policy, so only replication is timed.
func BenchmarkReplicationThroughput(b *testing.B) {
	const size = 512 << 20
	for range b.N {
		h := newHarness(b)
		h.opts = func(o *node.Options) { o.Network = mesh.OS() }
		h.first("dc1-n1", "dc1")
		h.add("dc2-n1", "dc2", node.RoleNode)
		h.add("dc3-w1", "dc3", node.RoleWitness)
		noCopy := replPolicy("warm", "")
		noCopy = noCopy[:len(noCopy)-len("  [[service.copy]]\n  site = \"dc2\"\n  tier = \"warm\"\n")]
		grow := func(p []byte) []byte {
			return bytes.Replace(p, []byte(`size = "8MiB"`), fmt.Appendf(nil, `size = "%dB"`, size), 1)
		}
		if _, err := h.node("dc1-n1").ApplyPolicy(b.Context(), "cluster.toml", grow(noCopy), "test"); err != nil {
			b.Fatal(err)
		}
		h.eventually("holder at dc1", 20*time.Second, func() error {
			if h.node("dc1-n1").Catalog().Holder("web", "dc1") == "" {
				return fmt.Errorf("not placed")
			}
			return nil
		})
		startAgent(b, h, randomImage(b, size, 8), time.Hour)
		h.eventually("the point at dc1", 2*time.Minute, func() error {
			_, err := newestTB(b, h.node("dc1-n1"))
			return err
		})
		b.ResetTimer()
		if path := os.Getenv("LIFEBOAT_REPL_CPUPROFILE"); path != "" {
			f, err := os.Create(path)
			if err != nil {
				b.Fatal(err)
			}
			pprof.StartCPUProfile(f)
			defer func() { pprof.StopCPUProfile(); f.Close() }()
		}
		c0, t0 := cpuTime(), time.Now()
		if _, err := h.node("dc1-n1").ApplyPolicy(b.Context(), "cluster.toml", grow(replPolicy("warm", "")), "test"); err != nil {
			b.Fatal(err)
		}
		h.eventually("the point at dc2", 5*time.Minute, func() error {
			p, err := newestTB(b, h.node("dc1-n1"))
			if err != nil {
				return err
			}
			if w := watermark(h, "dc1-n1", "dc2"); w.Point != p.ID {
				return fmt.Errorf("not yet")
			}
			return nil
		})
		el, cpu := time.Since(t0), cpuTime()-c0
		b.StopTimer()
		b.ReportMetric(float64(size)/1e6/el.Seconds(), "MB/s")
		b.ReportMetric(cpu.Seconds()/(float64(size)/1e9), "CPU-s/GB")
		h.stopAll()
	}
}
