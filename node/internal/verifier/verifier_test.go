package verifier

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/internal/bootimg"
	"github.com/lifeboat-dr/lifeboat/internal/clock"
	"github.com/lifeboat-dr/lifeboat/internal/testlog"
	"github.com/lifeboat-dr/lifeboat/internal/testpolicy"
	"github.com/lifeboat-dr/lifeboat/internal/testwait"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// The engine runs alone: a real store and a real catalog state machine,
// commands applied to it directly in place of Raft.

var policy = testpolicy.Sites("dc1", "dc2") + testpolicy.Service("web", "dc1", "8MiB", `  [service.verify]
  every = "1h"
  checks = ["fsck", "hook"]
  hook = "test -s \"$LIFEBOAT_IMAGE_DISK\" && echo probe-ok"`,
	testpolicy.Copy("dc2", "warm", ""))

type fixture struct {
	fsm   *catalog.FSM
	index atomic.Uint64
	store *blockstore.Store
	dir   string
	clk   *clock.Fake
}

func (f *fixture) propose(_ context.Context, c *catalog.Command) error {
	b, err := catalog.EncodeCommand(c)
	if err != nil {
		return err
	}
	return f.fsm.Apply(&raft.Log{Index: f.index.Add(1), Type: raft.LogCommand, Data: b}).(catalog.ApplyResult).Err
}

func (f *fixture) engine(t *testing.T) *Engine {
	return New(Options{Name: "dc2-n1", Site: "dc2", DataDir: f.dir, Store: f.store, Catalog: f.fsm, Propose: f.propose,
		Clock: f.clk, Logger: testlog.New(t)})
}

// commit snapshots image as a point of web.
func (f *fixture) commit(t *testing.T, image string) blockstore.Point {
	t.Helper()
	src, err := blockstore.OpenSource(image)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	snap, _, err := f.store.Snapshot(t.Context(), src, blockstore.SnapshotOptions{Volume: "web/disk", BlockSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	p, err := f.store.CommitPoint(t.Context(), blockstore.Point{Group: "web", Volumes: snap.Volumes, Time: f.clk.Now()})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil && os.Getenv("CI") != "true" {
		t.Skip("needs mkfs.ext4 and e2fsck (e2fsprogs)")
	}
	f := &fixture{fsm: catalog.NewFSM(), dir: t.TempDir(), clk: clock.NewFake(time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC))}
	sd := filepath.Join(f.dir, "store")
	if err := blockstore.Init(sd, blockstore.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	s, err := blockstore.Open(sd, blockstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	f.store = s
	pol, err := config.ParseCluster("p.toml", []byte(policy))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*catalog.Command{
		{Op: catalog.OpPolicy, Policy: &catalog.PolicyRecord{Cluster: pol}},
		{Op: catalog.OpNodeUpsert, Node: &catalog.NodeInfo{Name: "dc1-n1", Site: "dc1"}},
		{Op: catalog.OpNodeUpsert, Node: &catalog.NodeInfo{Name: "dc2-n1", Site: "dc2"}},
		{Op: catalog.OpHolders, Holders: []catalog.Holder{{Service: "web", Site: "dc1", Node: "dc1-n1"}, {Service: "web", Site: "dc2", Node: "dc2-n1"}}},
	} {
		if err := f.propose(t.Context(), c); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// TestVerifier: the recovery site's holder verifies the newest point and
// records it; a passed point is not checked again; a new point waits for
// every; a point with a damaged file system is recorded failed, with the
// evidence; the primary's holder leaves it to the recovery site.
func TestVerifier(t *testing.T) {
	f := newFixture(t)
	img := filepath.Join(f.dir, "disk.raw")
	if err := bootimg.Write(t.Context(), img, bootimg.Options{Size: 8 << 20, Line: "BOOTED", FS: "ext4"}); err != nil {
		t.Fatal(err)
	}
	p1 := f.commit(t, img)
	if got := Verifier(f.fsm.Catalog(), f.fsm.Catalog().Service("web")); got != "dc2-n1" {
		t.Fatalf("verifier: got %s, want dc2-n1 (the recovery site's holder)", got)
	}
	e := f.engine(t)
	ms := e.Pass(t.Context())
	if len(ms) != 1 || ms[0].Point != p1.ID || ms[0].Verified.Result != catalog.VerifyOK {
		t.Fatalf("first pass: %+v", ms)
	}
	m, ok := f.fsm.Catalog().Services["web"].Mark(p1.ID)
	if !ok || m.Verified == nil || m.Verified.Result != catalog.VerifyOK || len(m.Verified.Checks) != 2 ||
		!strings.Contains(m.Verified.Checks[1].Detail, "probe-ok") || m.Verified.Site != "dc2" {
		t.Fatalf("the catalog's mark: %+v", m)
	}
	for _, c := range m.Verified.Checks {
		for _, ev := range c.Evidence {
			if _, err := os.Stat(ev); err != nil {
				t.Errorf("evidence %s: %v", ev, err)
			}
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(f.dir, "verify", ".tmp")); len(ents) != 0 {
		t.Errorf("restored images left behind: %d", len(ents))
	}
	if ms := e.Pass(t.Context()); len(ms) != 0 {
		t.Fatalf("a passed point was checked again: %+v", ms)
	}

	// A new point whose superblock is damaged (its magic kept).
	b, _ := os.ReadFile(img)
	copy(b[bootimg.PartitionStart+1024:], bytes.Repeat([]byte{0xA5}, 0x30))
	os.WriteFile(img, b, 0o600)
	f.clk.Advance(time.Minute)
	p2 := f.commit(t, img)
	if ms := e.Pass(t.Context()); len(ms) != 0 {
		t.Fatalf("verified before every: %+v", ms)
	}
	f.clk.Advance(time.Hour)
	primary := New(Options{Name: "dc1-n1", Site: "dc1", DataDir: t.TempDir(), Store: f.store, Catalog: f.fsm, Propose: f.propose, Clock: f.clk, Logger: testlog.New(t)})
	if ms := primary.Pass(t.Context()); len(ms) != 0 {
		t.Fatalf("the primary's holder verified: %+v", ms)
	}
	ms = e.Pass(t.Context())
	if len(ms) != 1 || ms[0].Point != p2.ID || ms[0].Verified.Result != catalog.VerifyFailed || !strings.Contains(ms[0].Verified.Checks[0].Detail, "e2fsck -n exit code") {
		t.Fatalf("damaged point: %+v", ms)
	}
	st := f.fsm.Catalog().Services["web"]
	if last := st.LastVerified(); last == nil || last.Point != p2.ID {
		t.Fatalf("last verified: %+v", last)
	}
}

// TestRunVerifiesWhenItBecomesTheVerifier: Run, its clock standing still,
// verifies the newest point as soon as the catalog makes this node the
// service's verifier.
func TestRunVerifiesWhenItBecomesTheVerifier(t *testing.T) {
	f := newFixture(t)
	// dc2's holder is another node at first.
	if err := f.propose(t.Context(), &catalog.Command{Op: catalog.OpHolders, Holders: []catalog.Holder{{Service: "web", Site: "dc2", Node: "dc2-n2"}}}); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(f.dir, "disk.raw")
	if err := bootimg.Write(t.Context(), img, bootimg.Options{Size: 8 << 20, Line: "BOOTED", FS: "ext4"}); err != nil {
		t.Fatal(err)
	}
	p := f.commit(t, img)
	e := New(Options{Name: "dc2-n1", Site: "dc2", DataDir: f.dir, Store: f.store, Catalog: f.fsm, Propose: f.propose,
		Interval: 24 * time.Hour, Clock: f.clk, Logger: testlog.New(t)})
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(t.Context())
	go func() { done <- e.Run(ctx) }()
	defer func() { cancel(); <-done }()
	// Run has passed once (nothing to do) and waits on its clock.
	if err := f.clk.WaitFor(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.fsm.Catalog().Services["web"].Mark(p.ID); ok {
		t.Fatal("verified by a node that is not the verifier")
	}
	if err := f.propose(t.Context(), &catalog.Command{Op: catalog.OpHolders, Holders: []catalog.Holder{{Service: "web", Site: "dc2", Node: "dc2-n1"}}}); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the verification", 30*time.Second, func() error {
		m, ok := f.fsm.Catalog().Services["web"].Mark(p.ID)
		if !ok || m.Verified == nil || m.Verified.Result != catalog.VerifyOK {
			return fmt.Errorf("mark %+v", m)
		}
		return nil
	})
}

// TestRoomFor: a point whose data would leave under a tenth of DATA_DIR's
// file system free is not restored.
func TestRoomFor(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	free, size, err := blockstore.DiskSpace(dir)
	if err != nil {
		t.Fatal(err)
	}
	small := blockstore.Point{Volumes: []blockstore.VolumeState{{Used: 1, BlockSize: 4096}}}
	if why := roomFor(dir, small); why != "" && free > size/5 {
		t.Errorf("4 KiB refused with %d of %d bytes free: %s", free, size, why)
	}
	big := blockstore.Point{Volumes: []blockstore.VolumeState{{Used: free/4096 + 1, BlockSize: 4096}}}
	if why := roomFor(dir, big); !strings.Contains(why, "not enough free space") {
		t.Errorf("more than the free space: %q", why)
	}
}
