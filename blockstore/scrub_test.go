package blockstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2"

	"github.com/lifeboat-dr/lifeboat/blockstore/blockstoretest"
)

// blocksOf maps the IDs of img's 4 KiB blocks to their data.
func blocksOf(t *testing.T, s *Store, imgs ...[]byte) map[ID][]byte {
	t.Helper()
	out := map[ID][]byte{}
	for _, img := range imgs {
		for off := 0; off < len(img); off += 4096 {
			b := img[off:min(off+4096, len(img))]
			if !isZero(b) {
				out[s.h.sum(b)] = b
			}
		}
	}
	return out
}

// someBlock returns the ID of a non-zero block of img, the n-th one.
func someBlock(t *testing.T, s *Store, img []byte, n int) ID {
	t.Helper()
	for off := 0; off < len(img); off += 4096 {
		if b := img[off : off+4096]; !isZero(b) {
			if n == 0 {
				return s.h.sum(b)
			}
			n--
		}
	}
	t.Fatal("no such block")
	return ZeroID
}

// flipRecord flips a payload byte of the record that holds block id (its
// CRC then fails) and returns the pack path and record offset.
func flipRecord(t *testing.T, s *Store, id ID) (string, int64) {
	t.Helper()
	if err := s.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	loc, err := s.w.locate(ref{kindBlock, id})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(s.dir, packsDir, packName(loc.pack))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	at := int64(loc.offset) + int64(loc.recLen) - frameTrailerSize - 1
	var b [1]byte
	if _, err := f.ReadAt(b[:], at); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x55
	if _, err := f.WriteAt(b[:], at); err != nil {
		t.Fatal(err)
	}
	return path, int64(loc.offset)
}

// scrubAll runs whole cycles until one ends and returns its findings.
func scrubAll(t *testing.T, s *Store) ScrubReport {
	t.Helper()
	rep, err := s.Scrub(t.Context(), ScrubOptions{})
	if err != nil || !rep.Cycle || rep.Next != (ScrubCursor{}) {
		t.Fatalf("scrub: %+v, %v", rep, err)
	}
	return rep
}

func badIDs(bad []BadBlock) map[ID]BadBlock {
	m := map[ID]BadBlock{}
	for _, b := range bad {
		m[b.ID] = b
	}
	return m
}

func TestScrubFindsDamageAndRepairMendsIt(t *testing.T) {
	s, _ := newTestStore(t)
	imgA, imgB := genImage(1, 1<<20), genImage(2, 1<<20)
	pa, pb := snapshot(t, s, "a", imgA), snapshot(t, s, "b", imgB)
	data := blocksOf(t, s, imgA, imgB)

	clean := scrubAll(t, s)
	if len(clean.Bad) != 0 || clean.Frames == 0 || clean.Blocks < int64(len(data)) || clean.Bytes == 0 {
		t.Fatalf("clean store: %+v", clean)
	}

	id := someBlock(t, s, imgA, 3)
	path, off := flipRecord(t, s, id)
	rep := scrubAll(t, s)
	bad := badIDs(rep.Bad)
	b, ok := bad[id]
	if !ok || b.Path != path || b.Offset != off || b.Missing || b.Page {
		t.Fatalf("scrub after a flipped byte: %v (want block %s at %s@%d)", rep.Bad, id.Short(), path, off)
	}
	var ce *CorruptError
	if !errors.As(b.Err, &ce) {
		t.Errorf("bad block error %v is no CorruptError", b.Err)
	}
	if _, err := s.Get(t.Context(), id); !errors.As(err, &ce) || ce.Block != id {
		t.Errorf("get of the damaged block: %v", err)
	}

	// Wrong data is refused.
	other := someBlock(t, s, imgB, 0)
	if err := s.Repair(t.Context(), id, data[other]); err == nil {
		t.Fatal("repair with another block's data accepted")
	}
	if err := s.Repair(t.Context(), ZeroID, data[other]); err == nil {
		t.Fatal("repair of the zero block accepted")
	}
	for bid := range bad {
		if err := s.Repair(t.Context(), bid, data[bid]); err != nil {
			t.Fatal(err)
		}
	}
	if rep := scrubAll(t, s); len(rep.Bad) != 0 {
		t.Fatalf("scrub after repair: %v", rep.Bad)
	}
	if got, err := s.Get(t.Context(), id); err != nil || !bytes.Equal(got, data[id]) {
		t.Fatalf("get after repair: %v", err)
	}
	va, _ := pa.Volume("a")
	if !bytes.Equal(restoreBytes(t, s, va), imgA) {
		t.Fatal("restore after repair differs")
	}
	st, err := s.Stats(t.Context())
	if err != nil || st.Repaired != int64(len(bad)) {
		t.Errorf("stats repaired %d, want %d (%v)", st.Repaired, len(bad), err)
	}

	// The damaged record is garbage: GC rewrites its pack past it.
	if _, err := s.Maintenance().DeletePoints(t.Context(), []string{pb.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Maintenance().GC(t.Context(), GCOptions{Threshold: 0.01}); err != nil {
		t.Fatalf("gc over a repaired record: %v", err)
	}
	verifyClean(t, s)
	if !bytes.Equal(restoreBytes(t, s, va), imgA) {
		t.Fatal("restore after GC differs")
	}
}

func TestScrubMissingAndUsers(t *testing.T) {
	s, dir := newTestStore(t)
	img := genImage(3, 1<<20)
	// The same block at least twice, at blocks 5 and 9.
	img[5*4096] ^= 1
	copy(img[9*4096:10*4096], img[5*4096:6*4096])
	p := snapshot(t, s, "vol", img)
	id := s.h.sum(img[5*4096 : 6*4096])
	data := blocksOf(t, s, img)

	if err := s.idx.db.Delete(ref{kindBlock, id}.key(), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	rep := scrubAll(t, s)
	b, ok := badIDs(rep.Bad)[id]
	if len(rep.Bad) != 1 || !ok || !b.Missing || b.Path != filepath.Join(dir, indexDir) {
		t.Fatalf("scrub of a block gone from the index: %v", rep.Bad)
	}
	uses, err := s.Users(t.Context(), []ID{id, ZeroID})
	if err != nil {
		t.Fatal(err)
	}
	var want []BlockUse
	for off := 0; off < len(img); off += 4096 {
		if s.h.sum(img[off:off+4096]) == id {
			want = append(want, BlockUse{id, p.ID, "vol", int64(off), 4096})
		}
	}
	if len(want) < 2 {
		t.Fatalf("block used %d times", len(want))
	}
	if fmt.Sprint(uses) != fmt.Sprint(want) {
		t.Errorf("users: %v, want %v", uses, want)
	}
	if err := s.Repair(t.Context(), id, data[id]); err != nil {
		t.Fatal(err)
	}
	if rep := scrubAll(t, s); len(rep.Bad) != 0 {
		t.Fatalf("after repair: %v", rep.Bad)
	}

	// A pack cut short: the index names records that are gone.
	s.Close()
	pack := filepath.Join(dir, packsDir, packName(0))
	fi, err := os.Stat(pack)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(pack, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rep = scrubAll(t, s)
	missing := 0
	for _, b := range rep.Bad {
		if b.Missing && b.Path == pack && b.Offset >= 0 {
			missing++
		}
	}
	if missing == 0 || missing != len(rep.Bad) {
		t.Fatalf("scrub of a cut pack: %d missing of %v", missing, rep.Bad)
	}
}

func openWith(t *testing.T, dir string, o Options) *Store {
	t.Helper()
	o.Logger = testLogger(t)
	s, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestReadsRepairTransparently(t *testing.T) {
	s, dir := newTestStore(t)
	img := genImage(4, 1<<20)
	p := snapshot(t, s, "vol", img)
	data := blocksOf(t, s, img)
	id := someBlock(t, s, img, 2)
	flipRecord(t, s, id)
	s.Close()

	// Fetch fails: the read fails with the CorruptError, OnDamage says so.
	var mu sync.Mutex
	var seen []BadBlock
	var fixed []bool
	onDamage := func(b BadBlock, repaired bool) {
		mu.Lock()
		seen, fixed = append(seen, b), append(fixed, repaired)
		mu.Unlock()
	}
	s = openWith(t, dir, Options{OnDamage: onDamage, Fetch: func(ctx context.Context, id ID) ([]byte, error) {
		return nil, errors.New("no other site")
	}})
	var ce *CorruptError
	if _, err := s.Get(t.Context(), id); !errors.As(err, &ce) || ce.Block != id {
		t.Fatalf("get with a failing fetch: %v", err)
	}
	if len(seen) != 1 || seen[0].ID != id || fixed[0] {
		t.Fatalf("on damage: %v %v", seen, fixed)
	}
	if st, _ := s.Stats(t.Context()); st.Unrepaired != 1 || st.Repaired != 0 {
		t.Errorf("stats: repaired %d unrepaired %d", st.Repaired, st.Unrepaired)
	}
	s.Close()

	// Fetch returns wrong data: refused.
	s = openWith(t, dir, Options{OnDamage: onDamage, Fetch: func(ctx context.Context, id ID) ([]byte, error) {
		return []byte("not the block"), nil
	}})
	if _, err := s.Get(t.Context(), id); !errors.As(err, &ce) {
		t.Fatalf("get with a lying fetch: %v", err)
	}
	s.Close()

	// Fetch works: reads are served and the store repaired.
	seen, fixed = nil, nil
	var fetched int
	s = openWith(t, dir, Options{OnDamage: onDamage, Fetch: func(ctx context.Context, id ID) ([]byte, error) {
		mu.Lock()
		fetched++
		mu.Unlock()
		if b, ok := data[id]; ok {
			return b, nil
		}
		return nil, ErrNotFound
	}})
	if got, err := s.Get(t.Context(), id); err != nil || !bytes.Equal(got, data[id]) {
		t.Fatalf("get with fetch: %v", err)
	}
	if len(seen) != 1 || seen[0].ID != id || !fixed[0] || seen[0].Missing {
		t.Fatalf("on damage: %v %v", seen, fixed)
	}
	v, _ := p.Volume("vol")
	if !bytes.Equal(restoreBytes(t, s, v), img) {
		t.Fatal("restore with fetch differs")
	}
	im, err := s.OpenImage(t.Context(), v)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(img))
	if _, err := im.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, img) {
		t.Fatalf("image read: %v", err)
	}
	im.Close()
	for _, r := range fixed {
		if !r {
			t.Fatal("a read could not repair")
		}
	}
	st, _ := s.Stats(t.Context())
	if st.Repaired == 0 || st.Repaired != int64(fetched) || st.Repaired != int64(len(seen)) || st.Unrepaired != 0 {
		t.Errorf("stats: repaired %d unrepaired %d, fetched %d, seen %d", st.Repaired, st.Unrepaired, fetched, len(seen))
	}
	if rep := scrubAll(t, s); len(rep.Bad) != 0 {
		t.Fatalf("scrub after transparent repairs: %v", rep.Bad)
	}
	n := fetched
	if !bytes.Equal(restoreBytes(t, s, v), img) || fetched != n {
		t.Fatal("second restore differs or fetched again")
	}
}

func TestScrubInSlices(t *testing.T) {
	s, _ := newTestStore(t)
	var imgs [][]byte
	for i := range 3 {
		img := genImage(uint64(10+i), 3<<20)
		imgs = append(imgs, img)
		snapshot(t, s, fmt.Sprintf("v%d", i), img)
	}
	flipRecord(t, s, someBlock(t, s, imgs[1], 7))
	id := someBlock(t, s, imgs[2], 11)
	if err := s.idx.db.Delete(ref{kindBlock, id}.key(), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	whole := scrubAll(t, s)
	if len(whole.Bad) < 2 {
		t.Fatalf("one call found %v", whole.Bad)
	}

	var waited int64
	o := ScrubOptions{Bytes: 8 << 10, Wait: func(ctx context.Context, n int) error {
		waited += int64(n)
		return nil
	}}
	var sum ScrubReport
	bad := map[ID]BadBlock{}
	phases := map[int]int{}
	for calls := 0; ; calls++ {
		if calls > 100000 || (calls > 5000 && calls%1000 == 0) {
			t.Logf("cursor %+v", o.From)
		}
		if calls > 100000 {
			t.Fatal("scrub in slices does not end")
		}
		rep, err := s.Scrub(t.Context(), o)
		if err != nil {
			t.Fatal(err)
		}
		sum.Bytes += rep.Bytes
		sum.Frames += rep.Frames
		sum.Blocks += rep.Blocks
		for _, b := range rep.Bad {
			bad[b.ID] = b
		}
		phases[o.From.Phase]++
		if rep.Cycle {
			break
		}
		if rep.Bytes > o.Bytes+int64(maxFramePlain) {
			t.Fatalf("slice read %d bytes, bound %d", rep.Bytes, o.Bytes)
		}
		// The caller persists the cursor: JSON.
		j, err := json.Marshal(rep.Next)
		if err != nil {
			t.Fatal(err)
		}
		o.From = ScrubCursor{}
		if err := json.Unmarshal(j, &o.From); err != nil {
			t.Fatal(err)
		}
	}
	if phases[scrubPacks] < 3 || phases[scrubIndex] < 2 || phases[scrubMaps] < 2 {
		t.Errorf("slices per phase: %v", phases)
	}
	if sum.Frames != whole.Frames || sum.Blocks != whole.Blocks {
		t.Errorf("slices: %d frames %d blocks, one call: %d, %d", sum.Frames, sum.Blocks, whole.Frames, whole.Blocks)
	}
	if waited != sum.Bytes {
		t.Errorf("waited for %d bytes, read %d", waited, sum.Bytes)
	}
	if len(bad) != len(whole.Bad) {
		t.Errorf("slices found %d bad blocks, one call %d", len(bad), len(whole.Bad))
	}
	for _, b := range whole.Bad {
		if got, ok := bad[b.ID]; !ok || got.Path != b.Path || got.Offset != b.Offset || got.Missing != b.Missing {
			t.Errorf("slices: %v, one call: %v", got, b)
		}
	}
}

// TestScrubBesideWritersAndGC scrubs in small slices while a writer
// commits and deletes points and GC collects: nothing is reported.
func TestScrubBesideWritersAndGC(t *testing.T) {
	s, _ := newTestStore(t)
	snapshot(t, s, "base", genImage(20, 1<<20))
	done := make(chan error, 1)
	go func() {
		var last string
		for i := range 12 {
			p, _, err := s.Snapshot(context.Background(), blockstoretest.Image(genImage(uint64(30+i), 512<<10)), SnapshotOptions{Volume: "w", BlockSize: 4096})
			if err != nil {
				done <- err
				return
			}
			if last != "" {
				if _, err := s.Maintenance().DeletePoints(context.Background(), []string{last}); err != nil {
					done <- err
					return
				}
			}
			last = p.ID
			if _, err := s.Maintenance().GC(context.Background(), GCOptions{Threshold: 0.01}); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	o := ScrubOptions{Bytes: 16 << 10}
	cycles := 0
	writing := true
	for writing || cycles < 2 {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			writing = false
		default:
		}
		rep, err := s.Scrub(t.Context(), o)
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Bad) != 0 {
			t.Fatalf("scrub beside writers and GC: %v", rep.Bad)
		}
		if rep.Cycle {
			cycles++
		}
		o.From = rep.Next
	}
	verifyClean(t, s)
}
