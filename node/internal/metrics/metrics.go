// Package metrics is the node's Prometheus registry: the counters the
// engines keep, and gauges read from the catalog and the link throttles at
// scrape time.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lifeboat-dr/lifeboat/mesh/throttle"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// Metrics are the node's Prometheus metrics, served on the admin API at
// /metrics. Counters are kept by the engines that count; the RPO, backlog
// and link gauges are read from the catalog and the throttles at scrape
// time.
type Metrics struct {
	reg                                                 *prometheus.Registry
	ReplSent, ReplLogical, ReplDedup, ReplCompressSaved *prometheus.CounterVec // link, tier
	ReplPoints, ReplErrors                              *prometheus.CounterVec // service, site
	ReplReceived                                        *prometheus.CounterVec // service
	StandbyApplied, Exports, TierErrors                 *prometheus.CounterVec // service
}

// Sources are what the gauges read at scrape time.
type Sources struct {
	Catalog interface{ Catalog() *catalog.Catalog }
	// Links returns the link throttles' state (nil on a witness).
	Links func() []throttle.Stats
	// Space returns the node's disk space (nil on a witness, or nil func).
	Space func() *api.SpaceStatus
	// Scrub returns the node's scrub (nil on a witness, or nil func).
	Scrub func() *api.ScrubStatus
	Now   func() time.Time
}

// New returns the registry with its counters, and gauges over src.
func New(src Sources) *Metrics {
	lt := []string{"link", "tier"}
	ss := []string{"service", "site"}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		ReplSent: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lifeboat_replication_sent_bytes_total",
			Help: "Bytes of replication frames sent, per link and tier (before QUIC framing)."}, lt),
		ReplLogical: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lifeboat_replication_changed_bytes_total",
			Help: "Logical bytes of changed non-zero blocks replicated, per link and tier."}, lt),
		ReplDedup: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lifeboat_replication_dedup_saved_bytes_total",
			Help: "Logical bytes not sent because the receiver already held the block."}, lt),
		ReplCompressSaved: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lifeboat_replication_compression_saved_bytes_total",
			Help: "Bytes saved by compressing the blocks that were sent."}, lt),
		ReplPoints: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lifeboat_replication_points_total",
			Help: "Points replicated, per service and recovery site."}, ss),
		ReplErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lifeboat_replication_errors_total",
			Help: "Replication sessions that ended in an error."}, ss),
		ReplReceived: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lifeboat_replication_received_bytes_total",
			Help: "Raw bytes of blocks received and stored from other sites, per service."}, []string{"service"}),
		StandbyApplied: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lifeboat_standby_points_applied_total",
			Help: "Points applied to hot standby images, per service."}, []string{"service"}),
		Exports: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lifeboat_cold_exports_total",
			Help: "Points exported as disk images into the archive directory, per service."}, []string{"service"}),
		TierErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lifeboat_tier_errors_total",
			Help: "Failed standby applies and exports, per service (retried)."}, []string{"service"}),
	}
	m.reg.MustRegister(m.StandbyApplied, m.Exports, m.TierErrors, m.ReplSent, m.ReplLogical, m.ReplDedup, m.ReplCompressSaved,
		m.ReplPoints, m.ReplErrors, m.ReplReceived,
		&catalogCollector{src: src},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// catalogCollector turns the catalog's watermarks and progress reports and
// this node's link throttles into gauges at scrape time.
type catalogCollector struct{ src Sources }

var (
	descRPO = prometheus.NewDesc("lifeboat_rpo_seconds",
		"Age of the newest point a site holds, per service and site.", []string{"service", "site"}, nil)
	descRPOTarget = prometheus.NewDesc("lifeboat_rpo_target_seconds",
		"The service's RPO target from the policy.", []string{"service"}, nil)
	descBacklog = prometheus.NewDesc("lifeboat_replication_backlog_bytes",
		"Changed bytes the primary has that a recovery site does not, as last reported by the sender.", []string{"service", "site"}, nil)
	descLinkRate = prometheus.NewDesc("lifeboat_link_rate_bytes_per_second",
		"The rate this node may send on a link now (0 = unlimited).", []string{"link"}, nil)
	descThrottleWait = prometheus.NewDesc("lifeboat_replication_throttle_wait_seconds_total",
		"Time senders waited for the link's bandwidth policy.", []string{"link", "tier"}, nil)
	descEpoch = prometheus.NewDesc("lifeboat_service_epoch",
		"The service's epoch: 1 plus its failovers.", []string{"service"}, nil)
	descFailoverRPO = prometheus.NewDesc("lifeboat_failover_rpo_seconds",
		"The data-loss window of the service's last failover.", []string{"service", "site"}, nil)
	descFailoverRTO = prometheus.NewDesc("lifeboat_failover_rto_seconds",
		"Command to servers up in the service's last finished failover.", []string{"service", "site"}, nil)
	descLinkWaiters = prometheus.NewDesc("lifeboat_link_waiters",
		"Senders waiting for the link's bandwidth, per tier.", []string{"link", "tier"}, nil)
	descStoreFree = prometheus.NewDesc("lifeboat_store_free_bytes",
		"Bytes free for the node on a file system holding its data (the block store, the data dir).", []string{"path"}, nil)
	descStoreSize = prometheus.NewDesc("lifeboat_store_size_bytes",
		"Size of a file system holding the node's data.", []string{"path"}, nil)
	descSpaceState = prometheus.NewDesc("lifeboat_space_state",
		"The node's disk space state: 0 ok, 1 low (under 20% free), 2 critical (refusing new points).", nil, nil)
	descSpaceRefused = prometheus.NewDesc("lifeboat_space_refused_services",
		"Services whose new points this node refuses for lack of disk space.", nil, nil)
	descSuspect = prometheus.NewDesc("lifeboat_suspect_points",
		"Points of the service the ransomware signal flagged and nobody cleared (an alert: check the servers).", []string{"service"}, nil)
	descSpaceRefusedSvc = prometheus.NewDesc("lifeboat_space_refused",
		"1 for each service whose new points this node refuses for lack of disk space.", []string{"service"}, nil)
	descVerified = prometheus.NewDesc("lifeboat_verified",
		"The service's most recent point verification: 1 passed, 0 failed or no check ran.", []string{"service", "site"}, nil)
	descVerifiedAge = prometheus.NewDesc("lifeboat_verified_age_seconds",
		"Time since the service's most recent point verification ran.", []string{"service", "site"}, nil)
)

func (c *catalogCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRPO
	ch <- descRPOTarget
	ch <- descBacklog
	ch <- descLinkRate
	ch <- descLinkWaiters
	ch <- descThrottleWait
	ch <- descEpoch
	ch <- descFailoverRPO
	ch <- descFailoverRTO
	ch <- descStoreFree
	ch <- descStoreSize
	ch <- descSpaceState
	for _, d := range scrubDescs {
		ch <- d
	}
	ch <- descSpaceRefused
	ch <- descSpaceRefusedSvc
	ch <- descSuspect
	ch <- descVerified
	ch <- descVerifiedAge
}

func (c *catalogCollector) Collect(ch chan<- prometheus.Metric) {
	cat := c.src.Catalog.Catalog()
	now := c.src.Now()
	for name, s := range cat.Services {
		ch <- prometheus.MustNewConstMetric(descEpoch, prometheus.GaugeValue, float64(s.Epoch), name)
		if f := s.LastFailover(); f != nil && f.Done {
			ch <- prometheus.MustNewConstMetric(descFailoverRPO, prometheus.GaugeValue, f.RPO, name, f.To)
			ch <- prometheus.MustNewConstMetric(descFailoverRTO, prometheus.GaugeValue, f.RTO, name, f.To)
		}
		for site, w := range s.Watermarks {
			ch <- prometheus.MustNewConstMetric(descRPO, prometheus.GaugeValue, now.Sub(w.Time).Seconds(), name, site)
		}
		for site, p := range s.Progress {
			ch <- prometheus.MustNewConstMetric(descBacklog, prometheus.GaugeValue, float64(p.Backlog), name, site)
		}
		suspect := 0
		for _, m := range s.Marks {
			if m.IsSuspect() {
				suspect++
			}
		}
		ch <- prometheus.MustNewConstMetric(descSuspect, prometheus.GaugeValue, float64(suspect), name)
		if m := s.LastVerified(); m != nil {
			ok := 0.0
			if m.Verified.Result == catalog.VerifyOK {
				ok = 1
			}
			ch <- prometheus.MustNewConstMetric(descVerified, prometheus.GaugeValue, ok, name, m.Verified.Site)
			ch <- prometheus.MustNewConstMetric(descVerifiedAge, prometheus.GaugeValue, now.Sub(m.Verified.At).Seconds(), name, m.Verified.Site)
		}
	}
	if cat.Policy != nil && cat.Policy.Cluster != nil {
		for _, s := range cat.Policy.Cluster.Services {
			ch <- prometheus.MustNewConstMetric(descRPOTarget, prometheus.GaugeValue, time.Duration(s.RPO).Seconds(), s.Name)
		}
	}
	c.collectSpace(ch)
	c.collectScrub(ch)
	if c.src.Links == nil {
		return
	}
	for _, st := range c.src.Links() {
		ch <- prometheus.MustNewConstMetric(descLinkRate, prometheus.GaugeValue, st.Rate, st.Name)
		for tier, ts := range st.Tiers {
			ch <- prometheus.MustNewConstMetric(descLinkWaiters, prometheus.GaugeValue, float64(ts.Waiters), st.Name, throttle.Tier(tier).String())
			ch <- prometheus.MustNewConstMetric(descThrottleWait, prometheus.CounterValue, ts.Waited.Seconds(), st.Name, throttle.Tier(tier).String())
		}
	}
}

// collectSpace turns the node's disk space into gauges (issue 15 item 5).
func (c *catalogCollector) collectSpace(ch chan<- prometheus.Metric) {
	if c.src.Space == nil {
		return
	}
	sp := c.src.Space()
	if sp == nil {
		return
	}
	for _, st := range sp.Stores {
		ch <- prometheus.MustNewConstMetric(descStoreFree, prometheus.GaugeValue, float64(st.Free), st.Path)
		ch <- prometheus.MustNewConstMetric(descStoreSize, prometheus.GaugeValue, float64(st.Size), st.Path)
	}
	state := 0.0
	switch sp.State {
	case "low":
		state = 1
	case "critical":
		state = 2
	}
	ch <- prometheus.MustNewConstMetric(descSpaceState, prometheus.GaugeValue, state)
	ch <- prometheus.MustNewConstMetric(descSpaceRefused, prometheus.GaugeValue, float64(len(sp.Refused)))
	for _, svc := range sp.Refused {
		ch <- prometheus.MustNewConstMetric(descSpaceRefusedSvc, prometheus.GaugeValue, 1, svc)
	}
}

var (
	descScrubProgress = prometheus.NewDesc("lifeboat_scrub_progress_ratio",
		"How far the node's current scrub cycle is, 0 to 1.", nil, nil)
	descScrubCycles = prometheus.NewDesc("lifeboat_scrub_cycles_total",
		"Full scrub cycles the node finished.", nil, nil)
	descScrubLast = prometheus.NewDesc("lifeboat_scrub_last_cycle_timestamp_seconds",
		"When the node's last full scrub cycle ended (0 = none yet).", nil, nil)
	descScrubBlocks = prometheus.NewDesc("lifeboat_scrub_blocks_total",
		"Damaged or missing blocks found by scrubs and reads, by outcome: found, repaired (from another node), lost (no node had it).", []string{"outcome"}, nil)
	scrubDescs = []*prometheus.Desc{descScrubProgress, descScrubCycles, descScrubLast, descScrubBlocks}
)

// collectScrub turns the node's scrub status into metrics (issue 16 item 1).
func (c *catalogCollector) collectScrub(ch chan<- prometheus.Metric) {
	if c.src.Scrub == nil {
		return
	}
	st := c.src.Scrub()
	if st == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(descScrubProgress, prometheus.GaugeValue, st.Progress)
	ch <- prometheus.MustNewConstMetric(descScrubCycles, prometheus.CounterValue, float64(st.Cycles))
	last := 0.0
	if !st.LastCycle.IsZero() {
		last = float64(st.LastCycle.Unix())
	}
	ch <- prometheus.MustNewConstMetric(descScrubLast, prometheus.GaugeValue, last)
	ch <- prometheus.MustNewConstMetric(descScrubBlocks, prometheus.CounterValue, float64(st.Found), "found")
	ch <- prometheus.MustNewConstMetric(descScrubBlocks, prometheus.CounterValue, float64(st.Repaired), "repaired")
	ch <- prometheus.MustNewConstMetric(descScrubBlocks, prometheus.CounterValue, float64(st.Lost), "lost")
}
