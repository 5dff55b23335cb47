package replicate

import (
	"io"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/mesh/throttle"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// quicOverhead is charged to a link on top of the frame bytes for QUIC's
// packet headers, authentication tags and acknowledgements: measured on
// the wire (BenchmarkReplicationThrottle), about 3%.
const quicOverhead = 1.0 / 32

// linkState is the throttle of the link to one site and the policy it
// reads, refreshed by the replicator loop.
type linkState struct {
	name   string // "dc1-dc2"
	t      *throttle.Link
	policy atomic.Pointer[config.Link] // nil = no policy: unlimited
	share  atomic.Int64                // this node's share divisor: nodes of this site sending on the link
}

// distinctSenders counts the nodes of site from that hold a service with a
// copy at site to.
func distinctSenders(cat *catalog.Catalog, from mesh.Site, to mesh.Site) int {
	if cat == nil || cat.Policy == nil || cat.Policy.Cluster == nil {
		return 0
	}
	seen := map[mesh.NodeID]bool{}
	for _, svc := range cat.ServiceList() {
		if svc.Primary != string(from) || svc.Copy(string(to)) == nil {
			continue
		}
		if h := cat.Holder(svc.Name, svc.Primary); h != "" {
			seen[h] = true
		}
	}
	return len(seen)
}

// refreshLink sets a link's policy and share from the catalog sync last
// read; e.mu must be held. Distinct holders of this site sending on the
// link share it evenly: every node enforces its part without talking to
// the others.
func (e *Engine) refreshLink(l *linkState, site mesh.Site) {
	l.share.Store(int64(max(1, distinctSenders(e.cat, e.o.Site, site))))
	if e.cat != nil && e.cat.Policy != nil && e.cat.Policy.Cluster != nil {
		l.policy.Store(e.cat.Policy.Cluster.Link(string(e.o.Site), string(site)))
	}
}

// link returns the throttle of the link to site; e.mu must be held.
func (e *Engine) link(site mesh.Site) *linkState {
	if l := e.links[site]; l != nil {
		return l
	}
	l := &linkState{name: string(e.o.Site) + "-" + string(site)}
	e.refreshLink(l, site)
	l.t = throttle.New(throttle.Options{
		Name: l.name,
		Rate: func(t time.Time) float64 {
			p := l.policy.Load()
			if p == nil {
				return 0
			}
			return float64(p.RateAt(t)) / float64(l.share.Load())
		},
		Overhead: quicOverhead,
		Now:      e.o.Clock.Now,
	})
	e.links[site] = l
	return l
}

// sentCounter counts the bytes written to a stream.
type sentCounter struct {
	w io.Writer
	c prometheus.Counter
}

func (s sentCounter) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	s.c.Add(float64(n))
	return n, err
}
