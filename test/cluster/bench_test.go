package cluster

import (
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/node"
)

// BenchmarkCatalogWrite measures catalog write latency on a three-node
// loopback cluster with real QUIC, mutual TLS, Raft's default timings and
// fsynced bolt logs: through the leader, and from a follower (forwarded to
// the leader, then read back locally). It reports p50 and p99 in ms.
func BenchmarkCatalogWrite(b *testing.B) {
	for _, via := range []string{"leader", "follower"} {
		b.Run(via, func(b *testing.B) {
			h := newHarness(b)
			h.level = slog.LevelWarn
			h.opts = func(o *node.Options) { o.RaftConfig = nil }
			h.first("dc1-n1", "dc1")
			h.add("dc2-n1", "dc2", node.RoleNode)
			h.add("dc3-n1", "dc3", node.RoleNode)
			leader := h.settled(60*time.Second, 3)
			writer := h.node(leader)
			if via == "follower" {
				for _, m := range h.running() {
					if m.name != leader {
						writer = m.node
						break
					}
				}
			}
			var lat []time.Duration
			i := 0
			for b.Loop() {
				start := time.Now()
				if err := note(b.Context(), writer, "bench", fmt.Sprint(i)); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
				i++
			}
			slices.Sort(lat)
			ms := func(q float64) float64 {
				return float64(lat[int(q*float64(len(lat)-1))]) / float64(time.Millisecond)
			}
			b.ReportMetric(ms(0.50), "p50-ms")
			b.ReportMetric(ms(0.99), "p99-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}
