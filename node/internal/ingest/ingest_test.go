package ingest

import (
	"errors"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/internal/clock"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/streams"
)

func TestPointName(t *testing.T) {
	for _, tc := range []struct {
		name  string
		agent string
		seq   uint64
		ok    bool
	}{
		{"agent-a/7", "agent-a", 7, true},
		{"barrier/3", "barrier", 3, true},
		{"plain", "", 0, false},
		{"agent/x", "agent", 0, false},
	} {
		a, seq, ok := ParsePointName(tc.name)
		if ok != tc.ok || (ok && (a != tc.agent || seq != tc.seq)) {
			t.Errorf("ParsePointName(%q) = %q, %d, %v; want %q, %d, %v", tc.name, a, seq, ok, tc.agent, tc.seq, tc.ok)
		}
	}
	if got := PointName("agent-a", 42); got != "agent-a/42" {
		t.Errorf("PointName = %q, want agent-a/42", got)
	}
}

func TestServicesHold(t *testing.T) {
	var ss Services
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st := ss.Get("db")
	if p, _ := st.Newest(); p != nil {
		t.Fatalf("new service: newest = %v, want none", p)
	}
	_, changed := st.Newest()
	hold := func(name string, at time.Time) {
		st.Lock()
		st.Hold(&blockstore.Point{Group: "db", Name: name, ID: name, Time: at})
		st.Unlock()
	}
	hold("a/5", t0)
	select {
	case <-changed:
	default:
		t.Fatal("holding the first point did not close the change channel")
	}
	hold("b/9", t0.Add(time.Second))
	hold("a/3", t0.Add(-time.Second)) // older: not the newest, seq not lowered
	if p, _ := st.Newest(); p == nil || p.ID != "b/9" {
		t.Errorf("newest = %v, want b/9", p)
	}
	if got := st.Seq("a"); got != 5 {
		t.Errorf("seq of a = %d, want 5", got)
	}
	if got := st.Seq("b"); got != 9 {
		t.Errorf("seq of b = %d, want 9", got)
	}
	if ss.Get("db") != st {
		t.Error("Get returned another state for the same service")
	}
	ss.Get("app")
	if got := ss.Names(); len(got) != 2 || got[0] != "app" || got[1] != "db" {
		t.Errorf("names = %v, want [app db]", got)
	}
}

type fixedCatalog struct{ c *catalog.Catalog }

func (f fixedCatalog) Catalog() *catalog.Catalog { return f.c }

func TestFencedAndStopped(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	cat := &catalog.Catalog{Services: map[string]*catalog.ServiceState{
		"db":    {Epoch: 2, Active: "dc1"},
		"moved": {Epoch: 3, Active: "dc2"},
	}}
	e := New(Options{Name: "n1", Site: "dc1", Catalog: fixedCatalog{cat}, Clock: clk})
	code := func(service string) mesh.ErrCode {
		t.Helper()
		err := e.fenced(service)
		if err == nil {
			return 0
		}
		var r *streams.Refusal
		if !errors.As(err, &r) {
			t.Fatalf("fenced(%s) = %v, not a refusal", service, err)
		}
		return r.Code
	}
	if got := code("db"); got != 0 {
		t.Errorf("db before the stop: code %v, want none", got)
	}
	if got := code("moved"); got != mesh.CodeFenced {
		t.Errorf("moved: code %v, want fenced", got)
	}
	e.Stop("db", 2)
	if got := code("db"); got != mesh.CodeHeld {
		t.Errorf("db stopped: code %v, want held", got)
	}
	clk.Advance(StopHold + time.Second)
	if got := code("db"); got != 0 {
		t.Errorf("db after the hold: code %v, want none", got)
	}
	e.Stop("db", 2)
	cat.Services["db"] = &catalog.ServiceState{Epoch: 3, Active: "dc1"}
	if got := code("db"); got != 0 {
		t.Errorf("db at the next epoch: code %v, want none", got)
	}
	if got := code("new"); got != 0 {
		t.Errorf("service without a record: code %v, want none", got)
	}
}
