package blockstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore/blockstoretest"
)

// poolBlock is block j of a shared pool: images built from the pool
// deduplicate against each other (and against dead blocks of deleted
// points, which is the GC's hard case).
func poolBlock(j uint64) []byte {
	b := make([]byte, 4096)
	r := rand.New(rand.NewPCG(j, 99))
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b
}

// poolImage is an image of n 4 KiB blocks: most from a pool of pool
// blocks, some unique to seed, some holes.
func poolImage(seed uint64, n, pool int) []byte {
	r := rand.New(rand.NewPCG(seed, 3))
	img := make([]byte, n*4096)
	for i := range n {
		switch x := r.IntN(10); {
		case x == 0: // hole
		case x < 3:
			copy(img[i*4096:], poolBlock(1<<40+seed<<16+uint64(i)))
		default:
			copy(img[i*4096:], poolBlock(uint64(r.IntN(pool))))
		}
	}
	return img
}

func snapshot(t *testing.T, s *Store, vol string, img []byte) Point {
	t.Helper()
	p, _, err := s.Snapshot(t.Context(), blockstoretest.Image(img), SnapshotOptions{Volume: vol, BlockSize: 4096, Name: vol + "-" + fmt.Sprint(len(img))})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func verifyClean(t *testing.T, s *Store) {
	t.Helper()
	vr, err := s.Maintenance().Verify(t.Context(), VerifyOptions{})
	if err != nil || len(vr.Damage) > 0 {
		t.Fatalf("verify: %v %v", err, vr.Damage)
	}
}

func TestDeletePointsRefusesLockedAndPinned(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	dir := filepath.Join(t.TempDir(), "store")
	if err := Init(dir, InitOptions{}); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, Options{Logger: testLogger(t), Now: func() time.Time { return now },
		LockFor: func(p Point) time.Time {
			if p.Name == "locked" {
				return now.Add(time.Hour)
			}
			return time.Time{}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	commit := func(name string, seed uint64) Point {
		p, _, err := s.Snapshot(t.Context(), blockstoretest.Image(poolImage(seed, 16, 8)), SnapshotOptions{Volume: "v" + name, BlockSize: 4096, Name: name})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	locked, pinned, free := commit("locked", 1), commit("pinned", 2), commit("free", 3)
	release, err := s.Holds().Pin(pinned.ID)
	if err != nil {
		t.Fatal(err)
	}
	release2, err := s.Holds().Pin(pinned.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Holds().Pin("0123456789abcdef"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Pin of an unknown point: %v, want ErrNotFound", err)
	}
	if got := s.Holds().Pinned(); len(got) != 1 || got[0] != pinned.ID {
		t.Errorf("Pinned() = %v, want [%s]", got, pinned.ID)
	}
	rep, err := s.Maintenance().DeletePoints(t.Context(), []string{locked.ID, pinned.ID, free.ID, "0123456789abcdef"})
	if err != nil {
		t.Fatal(err)
	}
	want := DeleteReport{Deleted: []string{free.ID}, Refused: []Refusal{
		{locked.ID, "locked until " + now.Add(time.Hour).Format(time.RFC3339)},
		{pinned.ID, "in use"},
		{"0123456789abcdef", "not found"},
	}}
	if fmt.Sprint(rep) != fmt.Sprint(want) {
		t.Errorf("DeletePoints = %+v, want %+v", rep, want)
	}
	// One release of two pins: still in use.
	release()
	release() // a second call of the same release is a no-op
	if rep, _ := s.Maintenance().DeletePoints(t.Context(), []string{pinned.ID}); len(rep.Deleted) != 0 {
		t.Errorf("deleted a point still pinned once: %+v", rep)
	}
	release2()
	if rep, _ := s.Maintenance().DeletePoints(t.Context(), []string{pinned.ID}); len(rep.Deleted) != 1 {
		t.Errorf("pinned point not deleted after both releases: %+v", rep)
	}
	// Prune refuses the locked point too, and GC keeps its blocks.
	pr, err := s.Maintenance().Prune(t.Context(), Retention{Last: 1}, PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Maintenance().GC(t.Context(), GCOptions{Threshold: 0.01}); err != nil {
		t.Fatal(err)
	}
	pts, _ := s.Points(t.Context(), "")
	if len(pts) != 1 || pts[0].ID != locked.ID {
		t.Fatalf("points after prune: %v, want only the locked one (report %+v)", pts, pr)
	}
	v, _ := locked.Volume("vlocked")
	if !bytes.Equal(restoreBytes(t, s, v), poolImage(1, 16, 8)) {
		t.Error("locked point differs after GC")
	}
	// The lock expires by the store's clock.
	now = now.Add(2 * time.Hour)
	if rep, _ := s.Maintenance().DeletePoints(t.Context(), []string{locked.ID}); len(rep.Deleted) != 1 {
		t.Errorf("expired lock still refuses: %+v", rep)
	}
	if locks, _ := s.Holds().Locks(t.Context()); len(locks) != 0 {
		t.Errorf("locks of deleted points remain: %v", locks)
	}
}

func TestLockNeverLowers(t *testing.T) {
	s, dir := newTestStore(t)
	p := snapshot(t, s, "v", poolImage(1, 8, 4))
	t1 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := s.Holds().LockPoint(p.ID, t1); err != nil {
		t.Fatal(err)
	}
	if err := s.Holds().LockPoint(p.ID, t1.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.Holds().LockPoint("0123456789abcdef", t1); !errors.Is(err, ErrNotFound) {
		t.Errorf("LockPoint of unknown point: %v, want ErrNotFound", err)
	}
	s.Close()
	s, err := Open(dir, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	locks, err := s.Holds().Locks(t.Context())
	if err != nil || !locks[p.ID].Equal(t1) || len(locks) != 1 {
		t.Fatalf("Locks after lowering and reopen = %v, %v; want %s", locks, err, t1)
	}
	if err := s.Holds().LockPoint(p.ID, t1.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if locks, _ := s.Holds().Locks(t.Context()); !locks[p.ID].Equal(t1.Add(time.Hour)) {
		t.Errorf("lock not raised: %v", locks)
	}
}

// TestLockForStoredWithPoint checks that the lock LockFor gives is there
// with the point, after a reopen, and that the point cannot be deleted.
func TestLockForStoredWithPoint(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	if err := Init(dir, InitOptions{KEK: testKEK(t, 7)}); err != nil {
		t.Fatal(err)
	}
	until := time.Now().Add(24 * time.Hour).UTC().Round(0)
	var seen []string
	o := Options{Logger: testLogger(t), KEK: testKEK(t, 7), LockFor: func(p Point) time.Time {
		seen = append(seen, p.ID)
		return until
	}}
	s, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	p := snapshot(t, s, "v", poolImage(5, 8, 4))
	if len(seen) != 1 || seen[0] != p.ID {
		t.Errorf("LockFor saw %v, want [%s]", seen, p.ID)
	}
	s.Close()
	s, err = Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	locks, err := s.Holds().Locks(t.Context())
	if err != nil || !locks[p.ID].Equal(until) {
		t.Fatalf("Locks = %v, %v; want %s for %s", locks, err, until, p.ID)
	}
	rep, err := s.Maintenance().DeletePoints(t.Context(), []string{p.ID})
	if err != nil || len(rep.Deleted) != 0 || len(rep.Refused) != 1 || !strings.HasPrefix(rep.Refused[0].Reason, "locked until ") {
		t.Fatalf("DeletePoints of a locked point = %+v, %v", rep, err)
	}
}

// TestGCReclaims deletes points whose blocks no other point shares and
// checks that pack bytes drop, the rest restores and verify is clean;
// a dry run before changes nothing.
func TestGCReclaims(t *testing.T) {
	s, _ := newTestStore(t)
	var pts []Point
	var imgs [][]byte
	for i := range 4 {
		img := genImage(uint64(40+i), 2<<20)
		imgs = append(imgs, img)
		pts = append(pts, snapshot(t, s, fmt.Sprintf("v%d", i), img))
	}
	if _, err := s.Maintenance().DeletePoints(t.Context(), []string{pts[0].ID, pts[2].ID}); err != nil {
		t.Fatal(err)
	}
	before, _ := s.Stats(t.Context())
	dry, err := s.Maintenance().GC(t.Context(), GCOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	mid, _ := s.Stats(t.Context())
	if mid.StoredBytes != before.StoredBytes || mid.Blocks != before.Blocks || dry.Dead == 0 || dry.BlocksDeleted == 0 {
		t.Fatalf("dry run changed the store (%+v -> %+v) or found nothing: %+v", before, mid, dry)
	}
	rep, err := s.Maintenance().GC(t.Context(), GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	after, _ := s.Stats(t.Context())
	if after.StoredBytes >= before.StoredBytes*3/4 || rep.BlocksDeleted != dry.BlocksDeleted || rep.BytesAfter >= rep.BytesBefore {
		t.Errorf("GC: %d -> %d stored bytes; report %+v, dry run %+v", before.StoredBytes, after.StoredBytes, rep, dry)
	}
	for _, i := range []int{1, 3} {
		v, _ := pts[i].Volume(fmt.Sprintf("v%d", i))
		if !bytes.Equal(restoreBytes(t, s, v), imgs[i]) {
			t.Errorf("point %d differs after GC", i)
		}
	}
	verifyClean(t, s)
	// Nothing left to collect.
	again, err := s.Maintenance().GC(t.Context(), GCOptions{})
	if err != nil || again.Dead != 0 || again.PacksDeleted+again.PacksRewritten != 0 {
		t.Errorf("second GC: %+v, %v", again, err)
	}
}

// TestImageIsGCRoot deletes the point of an open image and collects: the
// image still reads right; after Close the blocks go.
func TestImageIsGCRoot(t *testing.T) {
	s, _ := newTestStore(t)
	img := genImage(50, 1<<20)
	p := snapshot(t, s, "v", img)
	v, _ := p.Volume("v")
	im, err := s.OpenImage(t.Context(), v)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Maintenance().DeletePoints(t.Context(), []string{p.ID}); err != nil {
		t.Fatal(err)
	}
	if rep, err := s.Maintenance().GC(t.Context(), GCOptions{}); err != nil || rep.Dead > 1 {
		t.Fatalf("GC with an open image: %+v, %v (only the point copy may go)", rep, err)
	}
	got := make([]byte, len(img))
	if _, err := im.ReadAt(got, 0); err != nil || !bytes.Equal(got, img) {
		t.Fatalf("image of a deleted point after GC: %v", err)
	}
	im.Close()
	if rep, err := s.Maintenance().GC(t.Context(), GCOptions{}); err != nil || rep.BlocksDeleted == 0 {
		t.Fatalf("GC after Close: %+v, %v", rep, err)
	}
}

// TestGCConcurrentWriters runs GC and DeletePoints in a loop while writers
// commit points that reuse blocks of deleted points (dedup hits on dead
// blocks); afterwards every point left restores byte-exact. Run it with
// -race too.
func TestGCConcurrentWriters(t *testing.T) {
	s, _ := newTestStore(t)
	seed := uint64(blockstoretest.Seed(t))
	ctx, cancel := context.WithCancel(t.Context())
	var (
		mu      sync.Mutex
		want    = map[string][]byte{} // point ID -> content
		byVol   = map[string][]string{}
		wg      sync.WaitGroup
		failure = make(chan error, 8)
	)
	fail := func(err error) {
		select {
		case failure <- err:
		default:
		}
		cancel()
	}
	const writers, rounds = 3, 40
	for w := range writers {
		wg.Go(func() {
			vol := fmt.Sprintf("w%d", w)
			for i := range rounds {
				img := poolImage(seed+uint64(w*1000+i), 128, 600)
				p, _, err := s.Snapshot(ctx, blockstoretest.Image(img), SnapshotOptions{Volume: vol, BlockSize: 4096})
				if err != nil {
					if ctx.Err() == nil {
						fail(fmt.Errorf("writer %d: %w", w, err))
					}
					return
				}
				mu.Lock()
				want[p.ID] = img
				byVol[vol] = append(byVol[vol], p.ID)
				mu.Unlock()
			}
		})
	}
	done := make(chan struct{})
	var gcs int
	var maxHold time.Duration
	var gwg sync.WaitGroup
	gwg.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			default:
			}
			// Delete all but the newest point of each volume.
			var drop []string
			mu.Lock()
			for _, ids := range byVol {
				if len(ids) > 1 {
					drop = append(drop, ids[:len(ids)-1]...)
				}
			}
			mu.Unlock()
			rep, err := s.Maintenance().DeletePoints(ctx, drop)
			if err == nil {
				mu.Lock()
				for _, id := range rep.Deleted {
					delete(want, id)
				}
				for vol, ids := range byVol {
					byVol[vol] = slicesDelete(ids, rep.Deleted)
				}
				mu.Unlock()
				var g GCReport
				g, err = s.Maintenance().GC(ctx, GCOptions{Threshold: 0.01})
				maxHold = max(maxHold, g.MaxHold)
				gcs++
			}
			if err != nil && ctx.Err() == nil {
				fail(fmt.Errorf("gc: %w", err))
				return
			}
		}
	})
	wg.Wait()
	close(done)
	gwg.Wait()
	select {
	case err := <-failure:
		t.Fatal(err)
	default:
	}
	if _, err := s.Maintenance().GC(t.Context(), GCOptions{Threshold: 0.01}); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d GC runs, longest hold %v", gcs, maxHold)
	pts, err := s.Points(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(pts) != len(want) {
		t.Errorf("%d points, want %d", len(pts), len(want))
	}
	for _, p := range pts {
		img, ok := want[p.ID]
		if !ok {
			t.Errorf("point %s should be deleted", p.ID)
			continue
		}
		if !bytes.Equal(restoreBytes(t, s, p.Volumes[0]), img) {
			t.Errorf("point %s of %s differs after concurrent GC", p.ID, p.Group)
		}
	}
	verifyClean(t, s)
}

func slicesDelete(ids, gone []string) []string {
	var out []string
	for _, id := range ids {
		if !containsString(gone, id) {
			out = append(out, id)
		}
	}
	return out
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func FuzzDecodeLock(f *testing.F) {
	f.Add(encodeLock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		until, err := decodeLock(b)
		if err != nil {
			return
		}
		if got := encodeLock(until); !bytes.Equal(got, b) {
			t.Fatalf("round trip %x -> %x", b, got)
		}
	})
}

func TestLiveFilterNoFalseNegatives(t *testing.T) {
	f := newLiveFilter(10000, 42)
	r := rand.New(rand.NewPCG(1, 2))
	var ids []ID
	for range 10000 {
		var id ID
		for i := 0; i < IDSize; i += 8 {
			binary.LittleEndian.PutUint64(id[i:], r.Uint64())
		}
		ids = append(ids, id)
		f.add(id)
	}
	for _, id := range ids {
		if !f.has(id) {
			t.Fatalf("added ID %s not found", id.Short())
		}
	}
	fp := 0
	for range 10000 {
		var id ID
		binary.LittleEndian.PutUint64(id[:], r.Uint64())
		binary.LittleEndian.PutUint64(id[8:], r.Uint64())
		if f.has(id) {
			fp++
		}
	}
	if fp > 300 {
		t.Errorf("%d false positives in 10000, want about 1%%", fp)
	}
}
