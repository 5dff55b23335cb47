package tiers

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/internal/logpolicy"
	"github.com/lifeboat-dr/lifeboat/internal/testpolicy"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// engine returns an engine at dc2-n1, the holder of web's copy at dc2
// with the tier given, a store holding one point of web, and the image
// the point holds.
func engine(t *testing.T, tier, extra string) (*Engine, blockstore.Point, []byte, string, *sync.Map) {
	t.Helper()
	dir := t.TempDir()
	store := filepath.Join(dir, "store")
	if err := blockstore.Init(store, blockstore.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	s, err := blockstore.Open(store, blockstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	img := make([]byte, 256<<10)
	r := rand.New(rand.NewPCG(3, 4))
	for i := range img {
		img[i] = byte(r.Uint32())
	}
	src := filepath.Join(dir, "src.img")
	if err := os.WriteFile(src, img, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := blockstore.OpenSource(src)
	if err != nil {
		t.Fatal(err)
	}
	snap, _, err := s.Snapshot(t.Context(), f, blockstore.SnapshotOptions{Volume: "web/disk", BlockSize: 4096})
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.CommitPoint(t.Context(), blockstore.Point{Group: "web", Volumes: snap.Volumes})
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(dir, "archive")
	src2 := testpolicy.Sites("dc1") + fmt.Sprintf("[[site]]\nname = \"dc2\"\narchive_dir = %q\n", archive) +
		testpolicy.Service("web", "dc1", "256KiB", "", testpolicy.Copy("dc2", tier, extra))
	pol, err := config.ParseCluster("p.toml", []byte(src2))
	if err != nil {
		t.Fatal(err)
	}
	fsm := catalog.NewFSM()
	for i, c := range []*catalog.Command{
		{Op: catalog.OpPolicy, Policy: &catalog.PolicyRecord{Cluster: pol}},
		{Op: catalog.OpHolders, Holders: []catalog.Holder{{Service: "web", Site: "dc2", Node: "dc2-n1"}}},
	} {
		b, _ := catalog.EncodeCommand(c)
		if res := fsm.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: b}).(catalog.ApplyResult); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	notes := &sync.Map{}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e := New(Options{Name: "dc2-n1", Site: "dc2", DataDir: dir, Store: s, Catalog: fsm,
		Services: func() []string { return []string{"web"} },
		Newest:   func(string) *blockstore.Point { return &p },
		NoteTier: func(service string, fn func(*catalog.Watermark)) {
			var w catalog.Watermark
			if v, ok := notes.Load(service); ok {
				w = v.(catalog.Watermark)
			}
			fn(&w)
			notes.Store(service, w)
		},
		Logs: logpolicy.New(logpolicy.Options{Log: log}), Logger: log})
	return e, p, img, archive, notes
}

// run runs the engine until cond holds (checked on a ticker), then stops
// it.
func run(t *testing.T, e *Engine, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- e.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(20 * time.Second)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("%s: not within 20 s", what)
		}
	}
}

func noted(notes *sync.Map) catalog.Watermark {
	v, _ := notes.Load("web")
	w, _ := v.(catalog.Watermark)
	return w
}

// TestHot: at start the engine brings the standby images to the newest
// point held (byte-exact) and notes it in the watermark; Take moves them
// away for a failover and notes that the standby is gone.
func TestHot(t *testing.T) {
	e, p, img, _, notes := engine(t, "hot", "")
	run(t, e, "standby at the point", func() bool { return noted(notes).Standby == p.ID })
	s, err := e.Set("web")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(s.Path("web/disk"))
	if err != nil || !bytes.Equal(got, img) {
		t.Fatalf("standby image: %v, byte-exact %v", err, bytes.Equal(got, img))
	}
	dst := filepath.Join(t.TempDir(), "failover")
	took, err := e.Take("web", p, dst)
	if err != nil || !took {
		t.Fatalf("take: %v %v", took, err)
	}
	if w := noted(notes); w.Standby != "" {
		t.Errorf("after take the watermark still names standby %s", w.Standby)
	}
	if took, err := e.Take("web", blockstore.Point{ID: "other"}, dst); err != nil || took {
		t.Errorf("take at a point the images are not at: %v %v, want false", took, err)
	}
}

// TestCold: a cold copy with an export format exports the point into the
// site's archive directory and notes it.
func TestCold(t *testing.T) {
	e, p, _, archive, notes := engine(t, "cold", "  export = \"raw\"\n  schedule = \"hourly\"\n")
	e.Arrived("web", p)
	run(t, e, "export of the point", func() bool { return noted(notes).Export == p.ID })
	m, err := filepath.Glob(filepath.Join(archive, "web", "2*"))
	if err != nil || len(m) != 1 {
		t.Errorf("archive holds %v (%v), want one export", m, err)
	}
}
