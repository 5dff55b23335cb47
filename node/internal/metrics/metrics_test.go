package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/mesh/throttle"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

type fixedCatalog struct{ c *catalog.Catalog }

func (f fixedCatalog) Catalog() *catalog.Catalog { return f.c }

// TestScrape: the gauges come from the catalog and the links as they are
// at scrape time, beside the counters the engines keep.
func TestScrape(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	cat := catalog.New()
	cat.Services["web"] = &catalog.ServiceState{Epoch: 2,
		Watermarks: map[string]catalog.Watermark{"dc2": {Time: now.Add(-7 * time.Second)}},
		Progress:   map[string]catalog.Progress{"dc2": {Backlog: 4096}},
		Failovers:  []catalog.FailoverRecord{{Epoch: 2, To: "dc2", Done: true, RPO: 1.5, RTO: 3}},
		Marks: []catalog.PointMark{{Point: "p1", Suspect: &catalog.Suspicion{Changed: 0.6}, Verified: &catalog.Verification{Result: catalog.VerifyOK, Site: "dc2", At: now.Add(-time.Hour)}},
			{Point: "p2", Suspect: &catalog.Suspicion{Changed: 0.6, Cleared: "alice"}, Verified: &catalog.Verification{Result: catalog.VerifyFailed, Site: "dc2", At: now.Add(-time.Minute)}}},
	}
	m := New(Sources{Catalog: fixedCatalog{cat}, Now: func() time.Time { return now },
		Links: func() []throttle.Stats { return []throttle.Stats{{Name: "dc1-dc2", Rate: 1e6}} },
		Space: func() *api.SpaceStatus {
			return &api.SpaceStatus{State: "critical", Refused: []string{"logs"},
				Stores: []api.StoreSpace{{Path: "/data/store", Free: 3 << 20, Size: 100 << 20, FreePercent: 3}}}
		}})
	m.ReplPoints.WithLabelValues("web", "dc2").Add(3)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`lifeboat_service_epoch{service="web"} 2`,
		`lifeboat_rpo_seconds{service="web",site="dc2"} 7`,
		`lifeboat_replication_backlog_bytes{service="web",site="dc2"} 4096`,
		`lifeboat_failover_rpo_seconds{service="web",site="dc2"} 1.5`,
		`lifeboat_failover_rto_seconds{service="web",site="dc2"} 3`,
		`lifeboat_link_rate_bytes_per_second{link="dc1-dc2"} 1e+06`,
		`lifeboat_replication_points_total{service="web",site="dc2"} 3`,
		`lifeboat_store_free_bytes{path="/data/store"} 3.145728e+06`,
		`lifeboat_store_size_bytes{path="/data/store"} 1.048576e+08`,
		`lifeboat_space_state 2`,
		`lifeboat_suspect_points{service="web"} 1`,
		`lifeboat_space_refused_services 1`,
		`lifeboat_space_refused{service="logs"} 1`,
		`lifeboat_verified{service="web",site="dc2"} 0`,
		`lifeboat_verified_age_seconds{service="web",site="dc2"} 60`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("scrape lacks %s", want)
		}
	}
}
