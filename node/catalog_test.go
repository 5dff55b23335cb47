package node

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/mesh"
)

func applyCmd(t *testing.T, f *fsm, index uint64, c *Command) error {
	t.Helper()
	b, err := encodeCommand(c)
	if err != nil {
		t.Fatal(err)
	}
	res, ok := f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: b}).(applyResult)
	if !ok {
		t.Fatalf("Apply returned %T", res)
	}
	return res.err
}

func TestCatalogApplyAndSnapshot(t *testing.T) {
	t.Parallel()
	f := newFSM()
	at := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	steps := []*Command{
		{Op: opNodeUpsert, Node: &NodeInfo{Name: "dc1-n1", Site: "dc1", Role: RoleNode, QUIC: "10.0.0.1:7947", Added: at}},
		{Op: opNodeUpsert, Node: &NodeInfo{Name: "dc2-n1", Site: "dc2", Role: RoleNode, QUIC: "10.0.1.1:7947", Added: at}},
		{Op: opWatermarks, Watermarks: []Watermark{{Service: "erp", Site: "dc2", Point: "p1", Time: at}}},
		{Op: opWatermarks, Watermarks: []Watermark{{Service: "erp", Site: "dc2", Point: "p0", Time: at.Add(-time.Minute)}}},
		{Op: opRecovery, Recovery: &RecoveryRecord{By: "op@host", At: at, Node: "dc2-n1", Before: []mesh.NodeID{"dc1-n1", "dc2-n1"}, After: []mesh.NodeID{"dc2-n1"}}},
		{Op: opNote, Key: "k", Value: "v"},
	}
	for i, c := range steps {
		if err := applyCmd(t, f, uint64(i+1), c); err != nil {
			t.Fatalf("step %d (%s): %v", i, c.Op, err)
		}
	}
	cat := f.cat
	if got := cat.Services["erp"].Watermarks["dc2"].Point; got != "p1" {
		t.Errorf("watermark = %q, want p1 (an older watermark must not win)", got)
	}
	if got := cat.Sites["dc1"].Nodes; !reflect.DeepEqual(got, []mesh.NodeID{"dc1-n1"}) {
		t.Errorf("site dc1 nodes = %v", got)
	}
	if cat.Index != uint64(len(steps)) {
		t.Errorf("index = %d, want %d", cat.Index, len(steps))
	}

	// A bad command changes nothing.
	before := f.cat.clone()
	for _, c := range []*Command{{Op: "nope"}, {Op: opNodeRemove, Name: "ghost"}, {Op: opNodeUpsert}, {Op: opPolicy}} {
		if err := applyCmd(t, f, 99, c); !errors.Is(err, ErrBadCommand) {
			t.Errorf("%s: err = %v, want ErrBadCommand", c.Op, err)
		}
	}
	before.Index = f.cat.Index // a refused command still uses its index
	if !reflect.DeepEqual(before, f.cat) {
		t.Errorf("a refused command changed the catalog")
	}

	// Snapshot and restore into a fresh FSM.
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	g := newFSM()
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f.cat, g.cat) {
		t.Errorf("restored catalog differs:\n got %+v\nwant %+v", g.cat, f.cat)
	}
	// A damaged snapshot is refused.
	bad := append([]byte(nil), sink.Bytes()...)
	bad[0] ^= 0xff
	if err := newFSM().Restore(io.NopCloser(bytes.NewReader(bad))); err == nil {
		t.Errorf("Restore accepted a snapshot with a bad header")
	}
}

func TestDecodeCommandRefuses(t *testing.T) {
	t.Parallel()
	for name, b := range map[string][]byte{
		"empty":         {},
		"version 2":     append([]byte{2}, `{"op":"note"}`...),
		"not json":      append([]byte{1}, `{op`...),
		"unknown field": append([]byte{1}, `{"op":"note","zzz":1}`...),
	} {
		if _, err := decodeCommand(b); !errors.Is(err, ErrBadCommand) {
			t.Errorf("%s: err = %v, want ErrBadCommand", name, err)
		}
	}
}

type memSink struct{ bytes.Buffer }

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { return nil }
func (s *memSink) Close() error  { return nil }

func FuzzDecodeCommand(f *testing.F) {
	for _, c := range []*Command{
		{Op: opNote, Key: "a", Value: "b"},
		{Op: opNodeUpsert, Node: &NodeInfo{Name: "n", Site: "s"}},
		{Op: opWatermarks, Watermarks: []Watermark{{Service: "s", Site: "x", Point: "p"}}},
		{Op: opFailover, Failover: &FailoverRecord{Service: "s", Epoch: 2, From: "a", To: "b", Point: "p"}},
		{Op: opFailedOver, Failover: &FailoverRecord{Service: "s", Epoch: 2, To: "b", Point: "p", Done: true}},
		{Op: opReprotect, Service: "s", On: true},
		{Op: opBranch, Branch: &Branch{Name: "s@a-epoch1", Service: "s", Node: "n", Points: []string{"p"}}},
		{Op: opDrill, Drill: &DrillRecord{ID: "d", Service: "s"}},
		{Op: opAudit, Audit: []AuditEntry{{Who: "alice", Kind: "operator", Action: "POST /v1/drill", Result: "refused"}}},
		{Op: opRevoke, Revoke: []Revocation{{Serial: "abc", Name: "mallory"}}},
		{Op: opPolicyPropose, Policy: &PolicyRecord{File: "p.toml", Cluster: &config.Cluster{}}},
	} {
		b, _ := encodeCommand(c)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeCommand(b)
		if err != nil {
			return
		}
		// A decoded command applies or is refused; it never panics, and a
		// refused one leaves the catalog as it was.
		cat := newCatalog()
		before := cat.clone()
		if err := cat.apply(c, 1); err != nil && !reflect.DeepEqual(before, cat) {
			t.Fatalf("refused command %+v changed the catalog", c)
		}
		if _, err := encodeCommand(c); err != nil && !errors.Is(err, ErrBadCommand) {
			t.Fatalf("re-encode: %v", err)
		}
	})
}

func FuzzDecodeSnapshot(f *testing.F) {
	cat := newCatalog()
	cat.apply(&Command{Op: opNodeUpsert, Node: &NodeInfo{Name: "n", Site: "s"}}, 1)
	s, _ := (&fsm{cat: cat}).Snapshot()
	sink := &memSink{}
	s.Persist(sink)
	f.Add(sink.Bytes())
	f.Add(snapshotMagic)
	f.Fuzz(func(t *testing.T, b []byte) {
		c, _, err := decodeSnapshot(b)
		if err != nil {
			return
		}
		c.clone()
	})
}

// TestCatalogFailover: a failover starts the next epoch only; the service
// view then has the new primary without its own copy, and with Reprotect
// the old primary as a warm copy; refused commands change nothing.
func TestCatalogFailover(t *testing.T) {
	t.Parallel()
	f := newFSM()
	src := []byte(`[[site]]
name = "dc1"
[[site]]
name = "dc2"
[[site]]
name = "dc3"
[[service]]
name = "web"
primary = "dc1"
  [[service.server]]
  name = "s1"
    [[service.server.volume]]
    name = "disk"
    path = "/dev/x"
    size = "1MiB"
  [[service.copy]]
  site = "dc2"
  tier = "hot"
  [[service.copy]]
  site = "dc3"
  tier = "warm"
`)
	pc, err := config.ParseCluster("c.toml", src)
	if err != nil {
		t.Fatal(err)
	}
	if err := applyCmd(t, f, 1, &Command{Op: opPolicy, Policy: &PolicyRecord{Cluster: pc}}); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	rec := &FailoverRecord{Service: "web", Epoch: 2, From: "dc1", To: "dc2", Node: "dc2-n1", Point: "p1", PointTime: at}
	before := f.cat.clone()
	for _, c := range []*Command{
		{Op: opFailover, Failover: &FailoverRecord{Service: "web", Epoch: 3, From: "dc1", To: "dc2", Point: "p1"}}, // skips an epoch
		{Op: opFailover, Failover: &FailoverRecord{Service: "web", Epoch: 2, To: "dc2"}},                           // no point
		{Op: opFailedOver, Failover: rec},                // no such failover yet
		{Op: opReprotect, Service: "web", On: true},      // has not failed over
		{Op: opBranch, Branch: &Branch{Service: "web"}},  // no node, no points
		{Op: opDrill, Drill: &DrillRecord{Service: "x"}}, // no ID
	} {
		if err := applyCmd(t, f, 2, c); !errors.Is(err, ErrBadCommand) {
			t.Fatalf("%s %+v: err %v, want ErrBadCommand", c.Op, c.Failover, err)
		}
	}
	before.Index = f.cat.Index
	if !reflect.DeepEqual(before, f.cat) {
		t.Fatal("refused commands changed the catalog")
	}
	if err := applyCmd(t, f, 3, &Command{Op: opFailover, Failover: rec}); err != nil {
		t.Fatal(err)
	}
	if err := applyCmd(t, f, 4, &Command{Op: opFailover, Failover: rec}); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("the same failover twice: %v", err)
	}
	v := f.cat.Service("web")
	if v.Primary != "dc2" || v.Copy("dc2") != nil || v.Copy("dc3") == nil || v.Copy("dc1") != nil {
		t.Fatalf("view after failover: primary %s, copies %+v", v.Primary, v.Copies)
	}
	if pc.Service("web").Primary != "dc1" || len(f.cat.Policy.Cluster.Service("web").Copies) != 2 {
		t.Fatal("the view changed the applied policy")
	}
	if err := applyCmd(t, f, 5, &Command{Op: opReprotect, Service: "web", On: true}); err != nil {
		t.Fatal(err)
	}
	v = f.cat.Service("web")
	if c := v.Copy("dc1"); c == nil || c.Tier != config.TierWarm {
		t.Fatalf("view with reprotect: copies %+v", v.Copies)
	}
	done := *rec
	done.Done, done.RPO, done.RTO = true, 1.5, 3
	if err := applyCmd(t, f, 6, &Command{Op: opFailedOver, Failover: &done}); err != nil {
		t.Fatal(err)
	}
	st := f.cat.Services["web"]
	if st.Epoch != 2 || st.Active != "dc2" || !st.LastFailover().Done || st.LastFailover().RTO != 3 {
		t.Fatalf("state %+v", st)
	}
	// Home again: the view is the policy.
	home := &FailoverRecord{Service: "web", Epoch: 3, From: "dc2", To: "dc1", Point: "p2", PointTime: at.Add(time.Hour)}
	if err := applyCmd(t, f, 7, &Command{Op: opFailover, Failover: home}); err != nil {
		t.Fatal(err)
	}
	if v := f.cat.Service("web"); v.Primary != "dc1" || len(v.Copies) != 2 || f.cat.Services["web"].Reprotect {
		t.Fatalf("view back home: %+v", v)
	}
}
