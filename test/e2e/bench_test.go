package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent"
	"github.com/lifeboat-dr/lifeboat/internal/workload"
	"github.com/lifeboat-dr/lifeboat/test/testbin"
)

// BenchmarkInterceptLag: one agent in intercept mode protects 20 volumes,
// each written at 500 KiB/s through its FUSE file (no fsync: the shipper
// makes the points), shipping to a node on loopback, for 20 s. It reports
// the replication lag (write acknowledged to committed at the node) p50
// and p99 from the agent, and the agent's CPU per MB/s written (percent of
// one core). Targets: p99 under 500 ms; under 5% of a core per MB/s.
//
//	go test ./test/e2e -run '^$' -bench InterceptLag -benchtime=1x
func BenchmarkInterceptLag(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root for FUSE")
	}
	const volumes = 20
	const window = 20 * time.Second
	for b.Loop() {
		var names, images []string
		for i := range volumes {
			img, _ := makeImage(b)
			names = append(names, fmt.Sprintf("disk%02d", i))
			images = append(images, img)
		}
		s := startSiteVolumes(b, names, images)
		mount, spool := filepath.Join(s.dir, "mnt"), filepath.Join(s.dir, "agent")
		args := []string{"agent", "run", "--name", "web1", "--service", "web", "--node", s.quic,
			"--tls-dir", s.agentTLS, "--spool", spool, "--mode", "intercept", "--mount", mount, "--interval", "5s"}
		if p := os.Getenv("LIFEBOAT_AGENT_CPUPROFILE"); p != "" {
			args = append(args, "--cpuprofile", p)
		}
		for i := range names {
			args = append(args, "--volume", names[i]+"="+images[i])
		}
		ag := testbin.Start(b, "agent", filepath.Join(s.dir, "agent.log"), s.bin, args...)
		b.Cleanup(ag.Stop)
		var st *agent.Status
		testbin.Eventually(b, "first full sync", 120*time.Second, func() error {
			var err error
			if st, err = agent.ReadStatus(spool); err != nil {
				return err
			}
			if st.State != "idle" || st.Seq == 0 {
				return fmt.Errorf("state %s seq %d", st.State, st.Seq)
			}
			return nil
		})
		cpu0 := cpuTicks(b, st.PID)
		// The writers stop once they have written window's worth of bytes
		// at writeRate, all volumes together.
		var written atomic.Int64
		budget := int64(volumes * writeRate * window.Seconds())
		stop := make(chan struct{})
		var stopOnce sync.Once
		done := make(chan struct{}, volumes)
		for i := range names {
			go func() {
				defer func() { done <- struct{}{} }()
				f, err := os.OpenFile(filepath.Join(mount, names[i]), os.O_WRONLY, 0)
				if err != nil {
					b.Error(err)
					return
				}
				defer f.Close()
				gen := workload.NewWriter(volSize, int64(100+i))
				next := time.Now()
				for {
					select {
					case <-stop:
						return
					case <-time.After(time.Until(next)):
					}
					wr := gen.Next()
					if _, err := f.WriteAt(wr.Data, wr.Off); err != nil {
						b.Error(err)
						return
					}
					if written.Add(int64(len(wr.Data))) >= budget {
						stopOnce.Do(func() { close(stop) })
					}
					next = next.Add(time.Duration(float64(len(wr.Data)) / writeRate * float64(time.Second)))
				}
			}()
		}
		start := time.Now()
		for range volumes {
			<-done
		}
		stopped := time.Now()
		elapsed := stopped.Sub(start)
		cpu := cpuTicks(b, st.PID) - cpu0
		// The last writes are committed once a status written after them
		// says nothing spooled is left to ship (the backlog falls as the
		// node commits); then the lag quantiles count them.
		testbin.Eventually(b, "the last writes committed", 60*time.Second, func() error {
			var err error
			if st, err = agent.ReadStatus(spool); err != nil {
				return err
			}
			if st.Backlog != 0 || !st.Updated.After(stopped) {
				return fmt.Errorf("backlog %d bytes in the status of %s", st.Backlog, st.Updated.Format(time.RFC3339Nano))
			}
			return nil
		})
		out := testbin.Run(b, s.bin, 0, "agent", "status", "--spool", spool, "--json")
		var fresh agent.Status
		json.Unmarshal([]byte(out), &fresh)
		mbps := float64(written.Load()) / 1e6 / elapsed.Seconds()
		cpuPct := float64(cpu) / 100 / elapsed.Seconds() * 100 // clock ticks are 1/100 s
		b.ReportMetric(fresh.LagP50, "lag-p50-ms")
		b.ReportMetric(fresh.LagP99, "lag-p99-ms")
		b.ReportMetric(mbps, "MB/s-written")
		b.ReportMetric(cpuPct, "agent-cpu-%")
		b.ReportMetric(cpuPct/mbps, "cpu-%-per-MB/s")
		b.Logf("%d volumes, %.2f MB/s written for %s; lag p50 %.0f ms p99 %.0f ms over %d writes; agent CPU %.1f%% of a core (%.2f%% per MB/s); status %s",
			volumes, mbps, elapsed.Round(time.Second), fresh.LagP50, fresh.LagP99, fresh.LagWrites, cpuPct, cpuPct/mbps, st.State)
	}
}

// cpuTicks returns a process's user+system CPU time in clock ticks.
func cpuTicks(b *testing.B, pid int) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name (which is in parentheses).
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return ut + st
}
