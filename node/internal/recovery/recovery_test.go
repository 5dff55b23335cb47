package recovery

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/internal/testpolicy"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// The engine runs here alone: a real store and a real catalog state
// machine, with commands applied to it directly in place of Raft.

var policy = testpolicy.Sites("dc1", "dc2") + testpolicy.Service("web", "dc1", "1MiB", `rpo = "1m"
  [service.hooks]
  start = "echo started > \"$LIFEBOAT_IMAGE_DIR/started\"; cat \"$LIFEBOAT_IMAGE_DISK\" | cmp - \"$WANT\""
  health = "test -f \"$LIFEBOAT_IMAGE_DIR/started\""
  drill = "cmp \"$LIFEBOAT_IMAGE_DISK\" \"$WANT\" && test -n \"$LIFEBOAT_DRILL\""`,
	testpolicy.Copy("dc2", "warm", ""))

type fixture struct {
	e      *Engine
	fsm    *catalog.FSM
	store  *blockstore.Store
	quorum atomic.Bool
	index  atomic.Uint64
	point  blockstore.Point
	want   string // the image file the point holds
}

func (f *fixture) propose(_ context.Context, c *catalog.Command) error {
	b, err := catalog.EncodeCommand(c)
	if err != nil {
		return err
	}
	res := f.fsm.Apply(&raft.Log{Index: f.index.Add(1), Type: raft.LogCommand, Data: b}).(catalog.ApplyResult)
	return res.Err
}

// newFixture: the engine at dc2-n1, the holder of web's warm copy at dc2,
// with one point of web in its store.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	if err := blockstore.Init(filepath.Join(dir, "store"), blockstore.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	s, err := blockstore.Open(filepath.Join(dir, "store"), blockstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	f := &fixture{fsm: catalog.NewFSM(), store: s}
	f.quorum.Store(true)

	img := make([]byte, 1<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range img[:len(img)/2] {
		img[i] = byte(r.Uint32())
	}
	f.want = filepath.Join(dir, "want.img")
	if err := os.WriteFile(f.want, img, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("WANT", f.want)
	src, err := blockstore.OpenSource(f.want)
	if err != nil {
		t.Fatal(err)
	}
	snap, _, err := s.Snapshot(t.Context(), src, blockstore.SnapshotOptions{Volume: "web/disk", BlockSize: 4096})
	src.Close()
	if err != nil {
		t.Fatal(err)
	}
	f.point, err = s.CommitPoint(t.Context(), blockstore.Point{Group: "web", Volumes: snap.Volumes, Time: time.Now().Add(-time.Second)})
	if err != nil {
		t.Fatal(err)
	}

	pol, err := config.ParseCluster("p.toml", []byte(policy))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*catalog.Command{
		{Op: catalog.OpPolicy, Policy: &catalog.PolicyRecord{Cluster: pol}},
		{Op: catalog.OpNodeUpsert, Node: &catalog.NodeInfo{Name: "dc1-n1", Site: "dc1"}},
		{Op: catalog.OpNodeUpsert, Node: &catalog.NodeInfo{Name: "dc2-n1", Site: "dc2"}},
		{Op: catalog.OpHolders, Holders: []catalog.Holder{{Service: "web", Site: "dc1", Node: "dc1-n1"}, {Service: "web", Site: "dc2", Node: "dc2-n1"}}},
		{Op: catalog.OpWatermarks, Watermarks: []catalog.Watermark{{Service: "web", Site: "dc1", Point: f.point.ID, Time: f.point.Time.Add(2 * time.Second)}}},
	} {
		if err := f.propose(t.Context(), c); err != nil {
			t.Fatal(err)
		}
	}
	f.e = New(Options{Name: "dc2-n1", Site: "dc2", DataDir: dir, Store: s, Catalog: f.fsm, Propose: f.propose,
		Quorum: f.quorum.Load,
		RecoverRaft: func(context.Context, string, bool) (*catalog.RecoveryRecord, error) {
			return nil, errors.New("not in this test")
		},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	return f
}

func noEvents(api.FailoverEvent) {}

// TestFailover: a dry run plans and changes nothing; without a quorum the
// failover is refused naming --force; the failover materializes the point
// byte-exact, starts a new epoch, runs the hooks against the image and
// records RPO and RTO; a second one is refused; failback makes dc1 a warm
// copy.
func TestFailover(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	var plan *api.FailoverPlan
	if _, err := f.e.Failover(ctx, api.FailoverRequest{Service: "web", DryRun: true}, func(e api.FailoverEvent) {
		if e.Plan != nil {
			plan = e.Plan
		}
	}); err != nil {
		t.Fatalf("dry run: %v", err)
	}
	if plan == nil || plan.Point != f.point.ID || plan.Epoch != 2 || plan.From != "dc1" || plan.To != "dc2" {
		t.Fatalf("plan %+v, want point %s, epoch 2, dc1 to dc2", plan, f.point.ID)
	}
	if st := f.fsm.Catalog().Services["web"]; st.Epoch != 1 || st.Active != "" {
		t.Fatalf("the dry run changed the catalog: %+v", st)
	}

	f.quorum.Store(false)
	if _, err := f.e.Failover(ctx, api.FailoverRequest{Service: "web"}, noEvents); !errors.Is(err, api.ErrNoQuorum) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("failover without a quorum: %v, want ErrNoQuorum naming --force", err)
	}
	f.quorum.Store(true)

	rec, err := f.e.Failover(ctx, api.FailoverRequest{Service: "web", By: "olga"}, noEvents)
	if err != nil {
		t.Fatalf("failover: %v", err)
	}
	if !rec.Done || rec.Error != "" || rec.Epoch != 2 || rec.Point != f.point.ID || rec.By != "olga" {
		t.Errorf("record %+v, want done at epoch 2 on the point, by olga", rec)
	}
	if rec.RPO < 1.5 || rec.RPO > 2.5 {
		t.Errorf("RPO %.2f s, want the 2 s between the point and the primary's newest", rec.RPO)
	}
	st := f.fsm.Catalog().Services["web"]
	if st.Epoch != 2 || st.Active != "dc2" {
		t.Errorf("catalog after failover: epoch %d, active %q; want 2, dc2", st.Epoch, st.Active)
	}
	dir := failoverDir(f.e.o.DataDir, "web", f.point)
	if b, err := os.ReadFile(filepath.Join(dir, "started")); err != nil || !bytes.Contains(b, []byte("started")) {
		t.Errorf("start hook did not run against the images: %v", err)
	}

	if _, err := f.e.Failover(ctx, api.FailoverRequest{Service: "web"}, noEvents); !errors.Is(err, catalog.ErrBadCommand) {
		t.Errorf("second failover: %v, want ErrBadCommand (already runs here)", err)
	}
	if _, err := f.e.Failback(ctx, "web", "olga"); err != nil {
		t.Fatalf("failback: %v", err)
	}
	if v := f.fsm.Catalog().Service("web"); v.Primary != "dc2" || v.Copy("dc1") == nil || v.Copy("dc1").Tier != config.TierWarm {
		t.Errorf("after failback the service view is %+v, want primary dc2 and a warm copy at dc1", v)
	}
}

// TestFailoverResumesAfterHookFailure: a failing start hook leaves the
// epoch started but not done; the rerun finishes it with the same point.
func TestFailoverResumesAfterHookFailure(t *testing.T) {
	f := newFixture(t)
	t.Setenv("WANT", "/nonexistent")
	if _, err := f.e.Failover(t.Context(), api.FailoverRequest{Service: "web"}, noEvents); err == nil {
		t.Fatal("failover with a failing start hook succeeded")
	}
	st := f.fsm.Catalog().Services["web"]
	if last := st.LastFailover(); st.Epoch != 2 || last == nil || last.Done {
		t.Fatalf("after the failing hook: epoch %d, last %+v; want epoch 2 not done", st.Epoch, last)
	}
	t.Setenv("WANT", f.want)
	rec, err := f.e.Failover(t.Context(), api.FailoverRequest{Service: "web"}, noEvents)
	if err != nil || !rec.Done || rec.Epoch != 2 || rec.Point != f.point.ID {
		t.Fatalf("rerun: %+v, %v; want epoch 2 done on the same point", rec, err)
	}
}

// TestDrill: a drill materializes the point, runs the policy's drill hook
// and records the result without touching the epoch; kept images go with
// cleanup; an operator's drill is recorded as run on their machine.
func TestDrill(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	d, err := f.e.Drill(ctx, api.DrillRequest{Service: "web", Keep: true, By: "olga"}, noEvents)
	if err != nil {
		t.Fatalf("drill: %v", err)
	}
	if !d.Passed || d.Point != f.point.ID || d.Where != "node" || !strings.Contains(d.HookCommand, "cmp") || d.Dir == "" {
		t.Errorf("drill %+v: want passed at the point, the policy's hook, kept images", d)
	}
	if st := f.fsm.Catalog().Services["web"]; st.Epoch != 1 || st.Active != "" || len(st.Drills) != 1 {
		t.Errorf("catalog after a drill: %+v; want epoch 1, not failed over, one drill", st)
	}
	cleaned, err := f.e.CleanupDrills(ctx, "web")
	if err != nil || len(cleaned) != 1 {
		t.Fatalf("cleanup: %v, %v", cleaned, err)
	}
	if _, err := os.Stat(d.Dir); !os.IsNotExist(err) {
		t.Errorf("kept drill images at %s after cleanup: %v", d.Dir, err)
	}

	od, err := f.e.RecordDrill(ctx, api.OperatorDrill{Service: "web", Point: f.point.ID, HookCommand: "fsck", Passed: false, Error: "exit 1"}, "olga")
	if err != nil {
		t.Fatal(err)
	}
	if od.Where != "operator" || od.Passed || od.By != "olga" {
		t.Errorf("operator drill %+v", od)
	}
	if _, err := f.e.RecordDrill(ctx, api.OperatorDrill{Service: "web", Point: "ffffffffffff"}, "olga"); err == nil {
		t.Errorf("an operator drill of a point this node does not hold was recorded")
	}
}

// TestNoStore: a witness has nothing to recover from.
func TestNoStore(t *testing.T) {
	e := New(Options{Name: "w", Site: "dc3", Catalog: catalog.NewFSM()})
	if _, err := e.Failover(t.Context(), api.FailoverRequest{Service: "web"}, noEvents); !errors.Is(err, api.ErrNoStore) {
		t.Errorf("failover on a witness: %v", err)
	}
	if _, err := e.Points(t.Context(), "", ""); !errors.Is(err, api.ErrNoStore) {
		t.Errorf("points on a witness: %v", err)
	}
}
