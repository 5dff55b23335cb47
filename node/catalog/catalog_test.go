package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/internal/testpolicy"
	"github.com/lifeboat-dr/lifeboat/mesh"
)

func applyCmd(t *testing.T, f *FSM, index uint64, c *Command) error {
	t.Helper()
	b, err := EncodeCommand(c)
	if err != nil {
		t.Fatal(err)
	}
	res, ok := f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: b}).(ApplyResult)
	if !ok {
		t.Fatalf("Apply returned %T", res)
	}
	return res.Err
}

func TestCatalogApplyAndSnapshot(t *testing.T) {
	t.Parallel()
	f := NewFSM()
	at := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	steps := []*Command{
		{Op: OpNodeUpsert, Node: &NodeInfo{Name: "dc1-n1", Site: "dc1", Role: "node", QUIC: "10.0.0.1:7947", Added: at}},
		{Op: OpNodeUpsert, Node: &NodeInfo{Name: "dc2-n1", Site: "dc2", Role: "node", QUIC: "10.0.1.1:7947", Added: at}},
		{Op: OpWatermarks, Watermarks: []Watermark{{Service: "erp", Site: "dc2", Point: "p1", Time: at}}},
		{Op: OpWatermarks, Watermarks: []Watermark{{Service: "erp", Site: "dc2", Point: "p0", Time: at.Add(-time.Minute)}}},
		{Op: OpRecovery, Recovery: &RecoveryRecord{By: "op@host", At: at, Node: "dc2-n1", Before: []mesh.NodeID{"dc1-n1", "dc2-n1"}, After: []mesh.NodeID{"dc2-n1"}}},
		{Op: OpNote, Key: "k", Value: "v"},
	}
	for i, c := range steps {
		if err := applyCmd(t, f, uint64(i+1), c); err != nil {
			t.Fatalf("step %d (%s): %v", i, c.Op, err)
		}
	}
	cat := f.Catalog()
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
	before := jsonClone(t, f.Catalog())
	for _, c := range []*Command{{Op: "nope"}, {Op: OpNodeRemove, Name: "ghost"}, {Op: OpNodeUpsert}, {Op: OpPolicy}} {
		if err := applyCmd(t, f, 99, c); !errors.Is(err, ErrBadCommand) {
			t.Errorf("%s: err = %v, want ErrBadCommand", c.Op, err)
		}
	}
	before.Index = f.Catalog().Index // a refused command still uses its index
	if !reflect.DeepEqual(before, f.Catalog()) {
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
	g := NewFSM()
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f.Catalog(), g.Catalog()) {
		t.Errorf("restored catalog differs:\n got %+v\nwant %+v", g.Catalog(), f.Catalog())
	}
	// A damaged snapshot is refused.
	bad := append([]byte(nil), sink.Bytes()...)
	bad[0] ^= 0xff
	if err := NewFSM().Restore(io.NopCloser(bytes.NewReader(bad))); err == nil {
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
		if _, err := DecodeCommand(b); !errors.Is(err, ErrBadCommand) {
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
		{Op: OpNote, Key: "a", Value: "b"},
		{Op: OpNodeUpsert, Node: &NodeInfo{Name: "n", Site: "s"}},
		{Op: OpWatermarks, Watermarks: []Watermark{{Service: "s", Site: "x", Point: "p"}}},
		{Op: OpFailover, Failover: &FailoverRecord{Service: "s", Epoch: 2, From: "a", To: "b", Point: "p"}},
		{Op: OpFailedOver, Failover: &FailoverRecord{Service: "s", Epoch: 2, To: "b", Point: "p", Done: true}},
		{Op: OpReprotect, Service: "s", On: true},
		{Op: OpBranch, Branch: &Branch{Name: "s@a-epoch1", Service: "s", Node: "n", Points: []string{"p"}}},
		{Op: OpDrill, Drill: &DrillRecord{ID: "d", Service: "s"}},
		{Op: OpAudit, Audit: []AuditEntry{{Who: "alice", Kind: "operator", Action: "POST /v1/drill", Result: "refused"}}},
		{Op: OpRevoke, Revoke: []Revocation{{Serial: "abc", Name: "mallory"}}},
		{Op: OpPolicyPropose, Policy: &PolicyRecord{File: "p.toml", Cluster: &config.Cluster{}}},
		// Changes to the records of fuzzBase's service web.
		{Op: OpWatermarks, Watermarks: []Watermark{{Service: "web", Site: "dc2", Point: "p9", Time: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)}}},
		{Op: OpHolders, Holders: []Holder{{Service: "web", Site: "dc1", Node: "dc1-n2"}, {Service: "web", Site: "dc2"}}},
		{Op: OpProgress, Progress: []Progress{{Service: "web", Site: "dc2", Sending: "p9"}}},
		{Op: OpFailedOver, Failover: &FailoverRecord{Service: "web", Epoch: 2, To: "dc2", Point: "p1", Done: true}},
		{Op: OpFailover, Failover: &FailoverRecord{Service: "web", Epoch: 3, From: "dc2", To: "dc1", Point: "p1"}},
		{Op: OpReprotect, Service: "web", On: true},
		{Op: OpBranch, Branch: &Branch{Name: "b", Service: "web", Node: "dc1-n1", Points: []string{"p3"}}},
		{Op: OpDrill, Drill: &DrillRecord{ID: "d1", Service: "web", Passed: true}},
		{Op: OpRevoke, Revoke: []Revocation{{Serial: "cd"}}},
		{Op: OpNote, Key: "k", Value: "w"},
		{Op: OpNodeUpsert, Node: &NodeInfo{Name: "dc1-n1", Site: "dc1", QUIC: "x"}},
		{Op: OpNodeRemove, Name: "dc1-n1"},
		{Op: OpRecovery, Recovery: &RecoveryRecord{By: "y"}},
	} {
		b, _ := EncodeCommand(c)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b)
		if err != nil {
			return
		}
		// A decoded command applies or is refused; it never panics, and
		// either way the catalog it applied to is as it was (readers hold
		// it).
		cat := fuzzBase(t)
		before := jsonClone(t, cat)
		next, err := cat.apply(c, 9)
		if !reflect.DeepEqual(before, jsonClone(t, cat)) {
			t.Fatalf("command %+v (err %v) changed the catalog it applied to", c, err)
		}
		if err == nil && next.Index != 9 {
			t.Fatalf("applied command: index %d, want 9", next.Index)
		}
		if _, err := EncodeCommand(c); err != nil && !errors.Is(err, ErrBadCommand) {
			t.Fatalf("re-encode: %v", err)
		}
	})
}

func FuzzDecodeSnapshot(f *testing.F) {
	fs := NewFSM()
	b, _ := EncodeCommand(&Command{Op: OpNodeUpsert, Node: &NodeInfo{Name: "n", Site: "s"}})
	fs.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: b})
	s, _ := fs.Snapshot()
	sink := &memSink{}
	s.Persist(sink)
	f.Add(sink.Bytes())
	f.Add(snapshotMagic)
	f.Fuzz(func(t *testing.T, b []byte) {
		c, _, err := DecodeSnapshot(b)
		if err != nil {
			return
		}
		jsonClone(t, c)
	})
}

// TestCatalogFailover: a failover starts the next epoch only; the service
// view then has the new primary without its own copy, and with Reprotect
// the old primary as a warm copy; refused commands change nothing.
func TestCatalogFailover(t *testing.T) {
	t.Parallel()
	f := NewFSM()
	src := []byte(testPolicy)
	pc, err := config.ParseCluster("c.toml", src)
	if err != nil {
		t.Fatal(err)
	}
	if err := applyCmd(t, f, 1, &Command{Op: OpPolicy, Policy: &PolicyRecord{Cluster: pc}}); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	rec := &FailoverRecord{Service: "web", Epoch: 2, From: "dc1", To: "dc2", Node: "dc2-n1", Point: "p1", PointTime: at}
	before := jsonClone(t, f.Catalog())
	for _, c := range []*Command{
		{Op: OpFailover, Failover: &FailoverRecord{Service: "web", Epoch: 3, From: "dc1", To: "dc2", Point: "p1"}}, // skips an epoch
		{Op: OpFailover, Failover: &FailoverRecord{Service: "web", Epoch: 2, To: "dc2"}},                           // no point
		{Op: OpFailedOver, Failover: rec},                // no such failover yet
		{Op: OpReprotect, Service: "web", On: true},      // has not failed over
		{Op: OpBranch, Branch: &Branch{Service: "web"}},  // no node, no points
		{Op: OpDrill, Drill: &DrillRecord{Service: "x"}}, // no ID
	} {
		if err := applyCmd(t, f, 2, c); !errors.Is(err, ErrBadCommand) {
			t.Fatalf("%s %+v: err %v, want ErrBadCommand", c.Op, c.Failover, err)
		}
	}
	before.Index = f.Catalog().Index
	if !reflect.DeepEqual(before, f.Catalog()) {
		t.Fatal("refused commands changed the catalog")
	}
	if err := applyCmd(t, f, 3, &Command{Op: OpFailover, Failover: rec}); err != nil {
		t.Fatal(err)
	}
	if err := applyCmd(t, f, 4, &Command{Op: OpFailover, Failover: rec}); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("the same failover twice: %v", err)
	}
	v := f.Catalog().Service("web")
	if v.Primary != "dc2" || v.Copy("dc2") != nil || v.Copy("dc3") == nil || v.Copy("dc1") != nil {
		t.Fatalf("view after failover: primary %s, copies %+v", v.Primary, v.Copies)
	}
	if pc.Service("web").Primary != "dc1" || len(f.Catalog().Policy.Cluster.Service("web").Copies) != 2 {
		t.Fatal("the view changed the applied policy")
	}
	if err := applyCmd(t, f, 5, &Command{Op: OpReprotect, Service: "web", On: true}); err != nil {
		t.Fatal(err)
	}
	v = f.Catalog().Service("web")
	if c := v.Copy("dc1"); c == nil || c.Tier != config.TierWarm {
		t.Fatalf("view with reprotect: copies %+v", v.Copies)
	}
	done := *rec
	done.Done, done.RPO, done.RTO = true, 1.5, 3
	if err := applyCmd(t, f, 6, &Command{Op: OpFailedOver, Failover: &done}); err != nil {
		t.Fatal(err)
	}
	st := f.Catalog().Services["web"]
	if st.Epoch != 2 || st.Active != "dc2" || !st.LastFailover().Done || st.LastFailover().RTO != 3 {
		t.Fatalf("state %+v", st)
	}
	// Home again: the view is the policy.
	home := &FailoverRecord{Service: "web", Epoch: 3, From: "dc2", To: "dc1", Point: "p2", PointTime: at.Add(time.Hour)}
	if err := applyCmd(t, f, 7, &Command{Op: OpFailover, Failover: home}); err != nil {
		t.Fatal(err)
	}
	if v := f.Catalog().Service("web"); v.Primary != "dc1" || len(v.Copies) != 2 || f.Catalog().Services["web"].Reprotect {
		t.Fatalf("view back home: %+v", v)
	}
}

func TestAuditLogTrims(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var l []AuditEntry
	pol := &config.Audit{Keep: config.Duration(48 * time.Hour), MaxEntries: 3}
	var states [][]AuditEntry
	for i := range 5 {
		l = auditAdd(l, []AuditEntry{{Time: t0.Add(time.Duration(i) * time.Hour), Who: string(rune('a' + i))}}, pol)
		states = append(states, l)
	}
	if got := len(l); got != 3 || l[0].Who != "c" {
		t.Fatalf("after 5 entries with max 3: %d entries from %q", got, l[0].Who)
	}
	l = auditAdd(l, []AuditEntry{{Time: t0.Add(100 * time.Hour), Who: "z"}}, pol)
	if len(l) != 1 || l[0].Who != "z" {
		t.Fatalf("entries older than keep remain: %+v", l)
	}
	// Older states share the array but never see a change.
	for i, st := range states {
		if last := st[len(st)-1].Who; last != string(rune('a'+i)) {
			t.Errorf("state %d ends with %q after later adds, want %q", i, last, string(rune('a'+i)))
		}
	}
}

// TestSnapshotKeepsAuditAndRevocations: a snapshot carries the audit log
// and the revocations; a version 1 snapshot (catalog only) still restores.
func TestSnapshotKeepsAuditAndRevocations(t *testing.T) {
	f := NewFSM()
	for i, c := range []*Command{
		{Op: OpRevoke, Revoke: []Revocation{{Serial: "ab12", Name: "mallory"}}},
		{Op: OpAudit, Audit: []AuditEntry{{Time: time.Now(), Who: "alice", Action: "POST /v1/revoke", Result: "ok"}}},
	} {
		b, err := EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		if r := f.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: b}).(ApplyResult); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	s, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	s.Persist(sink)
	cat, audit, err := DecodeSnapshot(sink.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cat.Revoked["ab12"]; !ok || len(audit) != 1 || audit[0].Who != "alice" {
		t.Fatalf("restored revoked %v, audit %+v", cat.Revoked, audit)
	}
	v1 := append(append([]byte{}, snapshotMagicV1...), `{"nodes":{},"services":{}}`...)
	if _, _, err := DecodeSnapshot(v1); err != nil {
		t.Fatalf("version 1 snapshot: %v", err)
	}
}

// jsonClone returns a deep copy of c through JSON.
func jsonClone(t testing.TB, c *Catalog) *Catalog {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	out := New()
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// fuzzBase returns a catalog with a node, a policy and a service that has
// watermarks, holders, a failover and a drill: every kind of record a
// command may change in place if copy-on-write were broken.
func fuzzBase(t testing.TB) *Catalog {
	t.Helper()
	pol, err := config.ParseCluster("p.toml", []byte(testPolicy))
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	c := New()
	for i, cmd := range []*Command{
		{Op: OpNodeUpsert, Node: &NodeInfo{Name: "dc1-n1", Site: "dc1"}},
		{Op: OpPolicy, Policy: &PolicyRecord{Cluster: pol}},
		{Op: OpWatermarks, Watermarks: []Watermark{{Service: "web", Site: "dc2", Point: "p1", Time: at}}},
		{Op: OpHolders, Holders: []Holder{{Service: "web", Site: "dc1", Node: "dc1-n1"}}},
		{Op: OpProgress, Progress: []Progress{{Service: "web", Site: "dc2", From: "dc1-n1"}}},
		{Op: OpFailover, Failover: &FailoverRecord{Service: "web", Epoch: 2, From: "dc1", To: "dc2", Point: "p1"}},
		{Op: OpDrill, Drill: &DrillRecord{ID: "d1", Service: "web"}},
		{Op: OpBranch, Branch: &Branch{Name: "b", Service: "web", Node: "dc1-n1", Points: []string{"p2"}}},
		{Op: OpRevoke, Revoke: []Revocation{{Serial: "ab"}}},
		{Op: OpNote, Key: "k", Value: "v"},
		{Op: OpRecovery, Recovery: &RecoveryRecord{By: "x"}},
	} {
		next, err := c.apply(cmd, uint64(i+1))
		if err != nil {
			t.Fatalf("base step %d (%s): %v", i, cmd.Op, err)
		}
		c = next
	}
	return c
}

// testPolicy: three sites, service web at dc1 with a hot copy at dc2 and a
// warm one at dc3.
var testPolicy = testpolicy.Sites("dc1", "dc2", "dc3") +
	testpolicy.Service("web", "dc1", "1MiB", "", testpolicy.Copy("dc2", "hot", ""), testpolicy.Copy("dc3", "warm", ""))
