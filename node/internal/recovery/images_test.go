package recovery

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/internal/testwait"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

func images(t *testing.T, f *fixture) []api.Image {
	t.Helper()
	ims, err := f.e.Images(t.Context())
	if err != nil {
		t.Fatalf("images: %v", err)
	}
	return ims
}

// TestDrillImagesGoUnlessKept: a drill without --keep leaves no image
// directory; a kept one is listed, not in use, and images rm removes it
// and clears the drill's record.
func TestDrillImagesGoUnlessKept(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	if _, err := f.e.Drill(ctx, api.DrillRequest{Service: "web"}, noEvents); err != nil {
		t.Fatalf("drill: %v", err)
	}
	if ents, _ := os.ReadDir(drillsDir(f.e.o.DataDir, "web")); len(ents) != 0 {
		t.Fatalf("a drill without --keep left %d directories in %s", len(ents), drillsDir(f.e.o.DataDir, "web"))
	}
	if ims := images(t, f); len(ims) != 0 {
		t.Fatalf("images after a drill without --keep: %+v", ims)
	}
	d, err := f.e.Drill(ctx, api.DrillRequest{Service: "web", Keep: true, By: "olga"}, noEvents)
	if err != nil || d.Dir == "" {
		t.Fatalf("kept drill: %+v, %v", d, err)
	}
	ims := images(t, f)
	if len(ims) != 1 || ims[0].Kind != api.ImageDrill || ims[0].Name != d.ID || ims[0].InUse || ims[0].Point != f.point.ID ||
		!strings.Contains(ims[0].Why, "kept") || ims[0].Size <= 0 || ims[0].Path != d.Dir {
		t.Fatalf("images after a kept drill: %+v; want the drill %s, kept, not in use, with its size", ims, d.ID)
	}
	if _, err := f.e.RemoveImages(ctx, []string{"web/drill/nosuch"}, "olga"); !errors.Is(err, blockstore.ErrNotFound) {
		t.Errorf("rm of an unknown image: %v, want ErrNotFound", err)
	}
	if _, err := f.e.RemoveImages(ctx, []string{"web/disk"}, "olga"); !errors.Is(err, catalog.ErrBadCommand) {
		t.Errorf("rm of a malformed name: %v, want ErrBadCommand", err)
	}
	rm, err := f.e.RemoveImages(ctx, []string{ims[0].Ref()}, "olga")
	if err != nil || len(rm) != 1 {
		t.Fatalf("rm %s: %+v, %v", ims[0].Ref(), rm, err)
	}
	if _, err := os.Stat(d.Dir); !os.IsNotExist(err) {
		t.Errorf("%s after images rm: %v", d.Dir, err)
	}
	st := f.fsm.Catalog().Services["web"]
	if got := st.Drills[len(st.Drills)-1]; got.ID != d.ID || got.Dir != "" {
		t.Errorf("drill record after images rm: %+v, want Dir cleared", got)
	}
}

// TestFailoverImagesGoAfterFailback: the images a service runs on are in
// use: images rm refuses them and keeps them, also after failback starts;
// once the failback's failover to the primary is done, the engine removes
// them by itself.
func TestFailoverImagesGoAfterFailback(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.e.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	rec, err := f.e.Failover(t.Context(), api.FailoverRequest{Service: "web", By: "olga"}, noEvents)
	if err != nil {
		t.Fatalf("failover: %v", err)
	}
	dir := failoverDir(f.e.o.DataDir, "web", f.point)
	ims := images(t, f)
	if len(ims) != 1 || ims[0].Kind != api.ImageFailover || !ims[0].InUse || ims[0].Path != dir || !strings.Contains(ims[0].Why, "runs at dc2") {
		t.Fatalf("images after the failover: %+v; want %s in use", ims, dir)
	}
	for _, ref := range []string{ims[0].Ref(), "web/failover/" + f.point.ID[:10]} {
		if _, err := f.e.RemoveImages(t.Context(), []string{ref}, "olga"); !errors.Is(err, api.ErrUnsafe) || !strings.Contains(err.Error(), "runs at dc2") {
			t.Errorf("rm %s of the images web runs on: %v, want ErrUnsafe saying why", ref, err)
		}
	}
	if _, err := f.e.Failback(t.Context(), "web", "olga"); err != nil {
		t.Fatal(err)
	}
	// The way home: a planned failover to dc1, run at dc1-n1.
	back := catalog.FailoverRecord{Service: "web", Epoch: rec.Epoch + 1, From: "dc2", To: "dc1", Node: "dc1-n1", Point: f.point.ID,
		PointTime: f.point.Time, Planned: true, By: "olga", Started: time.Now()}
	if err := f.propose(t.Context(), &catalog.Command{Op: catalog.OpFailover, Failover: &back}); err != nil {
		t.Fatal(err)
	}
	// Not done yet: the images stay (a failback that fails may come back
	// to them).
	testwait.Holds(t, "images stay while the failback is not done", 200*time.Millisecond, func() error {
		if _, err := os.Stat(dir); err != nil {
			return err
		}
		return nil
	})
	back.Done, back.Finished = true, time.Now()
	if err := f.propose(t.Context(), &catalog.Command{Op: catalog.OpFailedOver, Failover: &back}); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the failover images go after the failback", 5*time.Second, func() error {
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			return errors.New(dir + " still there")
		}
		return nil
	})
	if ents, _ := os.ReadDir(filepath.Join(f.e.o.DataDir, "failover", "web")); len(ents) != 0 {
		t.Errorf("failover images left: %v", ents)
	}
}
