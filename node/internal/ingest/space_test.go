package ingest

import (
	"bytes"
	"errors"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/internal/clock"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/streams"
)

// TestSpaceStage: the refusal stage by percent free, with hysteresis: it
// only rises under the resume mark and drops to none at it.
func TestSpaceStage(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		prev int
		pct  float64
		want int
	}{
		{"plenty", stageNone, 50, stageNone},
		{"low is not refusing", stageNone, 10, stageNone},
		{"just over critical", stageNone, 5, stageNone},
		{"under critical", stageNone, 4.9, stageLowest},
		{"under severe", stageNone, 2.9, stageSevere},
		{"under the floor", stageNone, 0.5, stageAll},
		{"recovering to 6%: still refusing", stageLowest, 6, stageLowest},
		{"recovering from severe to 4%: stays severe", stageSevere, 4, stageSevere},
		{"worse again", stageLowest, 2, stageSevere},
		{"at the resume mark", stageAll, SpaceResumePercent, stageNone},
		{"over the resume mark", stageSevere, 30, stageNone},
	}
	for _, tc := range cases {
		if got := spaceStage(tc.prev, tc.pct); got != tc.want {
			t.Errorf("%s: spaceStage(%d, %v) = %d, want %d", tc.name, tc.prev, tc.pct, got, tc.want)
		}
	}
}

// TestRefusedBelow: which priority groups each stage refuses.
func TestRefusedBelow(t *testing.T) {
	t.Parallel()
	three := map[string]int{"logs": -1, "web": 0, "web2": 0, "erp": 10}
	one := map[string]int{"a": 0, "b": 0}
	two := map[string]int{"a": 0, "b": 5}
	cases := []struct {
		name  string
		stage int
		prios map[string]int
		want  int
		any   bool
	}{
		{"none", stageNone, three, 0, false},
		{"lowest of three", stageLowest, three, -1, true},
		{"severe of three: all but the highest", stageSevere, three, 0, true},
		{"all of three", stageAll, three, 10, true},
		{"one group: lowest is all", stageLowest, one, 0, true},
		{"two groups, severe: the lower", stageSevere, two, 0, true},
		{"two groups, all", stageAll, two, 5, true},
		{"no services", stageAll, map[string]int{}, 0, false},
	}
	for _, tc := range cases {
		got, any := refusedBelow(tc.stage, tc.prios)
		if got != tc.want || any != tc.any {
			t.Errorf("%s: refusedBelow = %d, %v; want %d, %v", tc.name, got, any, tc.want, tc.any)
		}
	}
}

// fakeDisk is a file system whose free space the test sets.
type fakeDisk struct {
	mu    sync.Mutex
	free  int64
	size  int64
	reads int
}

func (d *fakeDisk) statfs(string) (int64, int64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.reads++
	return d.free, d.size, nil
}

func (d *fakeDisk) set(pct float64) {
	d.mu.Lock()
	d.free = int64(pct * float64(d.size) / 100)
	d.mu.Unlock()
}

func spaceCatalog(prios map[string]int) *catalog.Catalog {
	c := &config.Cluster{}
	for name, p := range prios {
		c.Services = append(c.Services, config.Service{Name: name, Primary: "dc1", Priority: p})
	}
	c.Services = append(c.Services, config.Service{Name: "elsewhere", Primary: "dc2", Priority: -5})
	return &catalog.Catalog{Policy: &catalog.PolicyRecord{Version: 1, Cluster: c}}
}

// TestSpaceGuard: the guard reads the disk at most once per interval on
// the injected clock; under 20% it says low and warns once; under 5% it
// refuses the lowest-priority services with CodeNoSpace, under 3% the
// next group, and at 7% it resumes all by itself.
func TestSpaceGuard(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	disk := &fakeDisk{size: 1 << 30}
	disk.set(50)
	var buf bytes.Buffer
	var logMu sync.Mutex
	log := slog.New(slog.NewTextHandler(&lockedWriter{w: &buf, mu: &logMu}, nil))
	s := NewSpace(SpaceOptions{Name: "dc1-n1", Site: "dc1", Paths: []string{"/data/store"}, Statfs: disk.statfs,
		Catalog: fixedCatalog{spaceCatalog(map[string]int{"logs": 0, "web": 5, "erp": 10})}, Clock: clk, Logger: log})
	refused := func() []string {
		t.Helper()
		var out []string
		for _, svc := range []string{"erp", "logs", "web", "elsewhere"} {
			err := s.Check(svc)
			if err == nil {
				continue
			}
			var r *streams.Refusal
			if !errors.As(err, &r) || r.Code != mesh.CodeNoSpace {
				t.Fatalf("Check(%s) = %v: want a refusal with code no space", svc, err)
			}
			if !strings.Contains(r.Msg, "node dc1-n1 refuses new points of service "+svc) || !strings.Contains(r.Msg, "free space on the node") {
				t.Errorf("refusal message %q does not say who refuses what and what to do", r.Msg)
			}
			out = append(out, svc)
		}
		slices.Sort(out)
		return out
	}
	step := func(pct float64, wantState string, want ...string) {
		t.Helper()
		disk.set(pct)
		clk.Advance(DefaultSpaceInterval)
		got := refused()
		if !slices.Equal(got, want) {
			t.Errorf("at %v%% free: refused %v, want %v", pct, got, want)
		}
		st := s.Status()
		if st.State != wantState {
			t.Errorf("at %v%% free: state %s, want %s (%s)", pct, st.State, wantState, st.Detail)
		}
		if !slices.Equal(st.Refused, want) {
			t.Errorf("at %v%% free: status refuses %v, want %v", pct, st.Refused, want)
		}
		if len(st.Stores) != 1 || st.Stores[0].Size != 1<<30 || math.Abs(st.Stores[0].FreePercent-pct) > 0.01 {
			t.Errorf("at %v%% free: stores %+v", pct, st.Stores)
		}
	}
	step(50, "ok")
	// Cached: many checks within the interval read the disk once.
	before := disk.reads
	for range 100 {
		s.Check("logs")
	}
	if disk.reads != before {
		t.Errorf("%d statfs calls within one interval, want 0 more", disk.reads-before)
	}
	step(15, "low")
	step(14, "low")
	step(4.5, "critical", "logs")
	step(6, "critical", "logs") // hysteresis: not yet back
	step(2.5, "critical", "logs", "web")
	step(4, "critical", "logs", "web")
	step(0.5, "critical", "erp", "logs", "web")
	step(7.5, "low")
	step(30, "ok")

	logMu.Lock()
	out := buf.String()
	logMu.Unlock()
	if n := strings.Count(out, `msg="disk space low"`); n != 1 {
		// Once on the way down; the low state lasts through the
		// refusals until 30% (within the summary interval).
		t.Errorf("%d WARN lines say low, want 1:\n%s", n, out)
	}
	if strings.Contains(out, "level=ERROR") {
		t.Errorf("the guard logged at ERROR:\n%s", out)
	}
	for _, want := range []string{"refusing new points", "services=[logs]", "services=\"[logs web]\"", "new points are taken again", "msg=recovered"} {
		if !strings.Contains(out, want) {
			t.Errorf("the log lacks %q:\n%s", want, out)
		}
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
