package spool

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// dirtyList returns every dirty block of b.
func dirtyList(b *Bitmap) []int64 {
	var out []int64
	for i, ok := b.Next(0); ok; i, ok = b.Next(i + 1) {
		out = append(out, i)
	}
	return out
}

func span(first, n int64) []int64 {
	var out []int64
	for i := range n {
		out = append(out, first+i)
	}
	return out
}

func TestDirtyPersists(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	if err := s.MarkDirty("root", 1000, 10, 3); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkDirty("root", 1000, 62, 4); err != nil { // spans a word
		t.Fatal(err)
	}
	if err := s.MarkDirty("data/db", 70, 69, 1); err != nil {
		t.Fatal(err)
	}
	bm, err := s.Dirty("root")
	if err != nil {
		t.Fatal(err)
	}
	if err := bm.Clear(11, 1); err != nil {
		t.Fatal(err)
	}
	want := append([]int64{10, 12}, span(62, 4)...)
	if got := dirtyList(bm); !slices.Equal(got, want) || bm.Count() != int64(len(want)) {
		t.Fatalf("dirty %v count %d, want %v", got, bm.Count(), want)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := bm.Clear(0, 1000); !errors.Is(err, ErrClosed) {
		t.Errorf("Clear on a bitmap of a closed spool: %v, want ErrClosed", err)
	}

	s = open(t, dir, Options{})
	defer s.Close()
	if got := s.DirtyVolumes(); !slices.Equal(got, []string{"data/db", "root"}) {
		t.Errorf("DirtyVolumes = %q", got)
	}
	bm, err = s.Dirty("root")
	if err != nil {
		t.Fatal(err)
	}
	if got := dirtyList(bm); !slices.Equal(got, want) {
		t.Errorf("after reopen dirty %v, want %v", got, want)
	}
	if bm.Blocks() != 1000 {
		t.Errorf("Blocks = %d, want 1000", bm.Blocks())
	}
	db, _ := s.Dirty("data/db")
	if got := dirtyList(db); !slices.Equal(got, []int64{69}) {
		t.Errorf("data/db dirty %v", got)
	}
	none, err := s.Dirty("never")
	if err != nil || none.Count() != 0 || none.Clear(0, 10) != nil {
		t.Errorf("unmarked volume: %v count %d", err, none.Count())
	}
	if _, ok := none.Next(0); ok {
		t.Error("unmarked volume has a dirty block")
	}
}

func TestDirtyRejectsBadRange(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	cases := []struct {
		name               string
		volume             string
		blocks, first, num int64
	}{
		{"no volume", "", 10, 0, 1},
		{"no blocks", "v", 0, 0, 1},
		{"negative first", "v", 10, -1, 1},
		{"empty range", "v", 10, 0, 0},
		{"past the end", "v", 10, 8, 3},
		{"too many blocks", "v", maxDirtyBlocks + 1, 0, 1},
	}
	for _, c := range cases {
		if err := s.MarkDirty(c.volume, c.blocks, c.first, c.num); err == nil {
			t.Errorf("%s: MarkDirty accepted it", c.name)
		}
	}
}

func TestDirtyClearIfUnchanged(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	if err := s.MarkDirty("v", 1000, 0, 1000); err != nil {
		t.Fatal(err)
	}
	bm, _ := s.Dirty("v")
	tok := bm.Token()
	// A write lands in block 300 while blocks 0..511 are being resynced.
	if err := s.MarkDirty("v", 1000, 300, 1); err != nil {
		t.Fatal(err)
	}
	if err := bm.ClearIfUnchanged(tok, 0, 512); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(dirtyList(bm), 300) {
		t.Error("block marked after the token was cleared")
	}
	// Its word (256..319) stays; everything else below 512 is clean.
	if got, want := bm.Count(), int64(64+488); got != want {
		t.Errorf("Count = %d, want %d", got, want)
	}
	if err := bm.Clear(0, 1000); err != nil {
		t.Fatal(err)
	}
	if bm.Count() != 0 {
		t.Errorf("Count = %d after clearing all", bm.Count())
	}
}

func TestDirtyCompactsAndResizes(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	for i := range int64(5000) {
		if err := s.MarkDirty("v", 100, i%100, 1); err != nil {
			t.Fatal(err)
		}
		if i%100 == 99 {
			bm, _ := s.Dirty("v")
			if err := bm.Clear(0, 100); err != nil {
				t.Fatal(err)
			}
		}
	}
	path := filepath.Join(dir, dirtyFileName("v"))
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > 200<<10 {
		t.Errorf("bitmap file is %d bytes after 10000 changes to 100 blocks: not compacted", fi.Size())
	}
	if err := s.MarkDirty("v", 100, 50, 2); err != nil {
		t.Fatal(err)
	}
	// The volume grew.
	if err := s.MarkDirty("v", 300, 250, 50); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dir, Options{})
	defer s.Close()
	bm, _ := s.Dirty("v")
	if got, want := dirtyList(bm), append([]int64{50, 51}, span(250, 50)...); !slices.Equal(got, want) || bm.Blocks() != 300 {
		t.Errorf("after resize and reopen: %v of %d blocks, want %v of 300", got, bm.Blocks(), want)
	}
}

func TestDirtyTornTail(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	if err := s.MarkDirty("v", 100, 1, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkDirty("v", 100, 5, 1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	path := filepath.Join(dir, dirtyFileName("v"))
	fi, _ := os.Stat(path)
	// The last MarkDirty was cut short: it never returned, so block 5 may
	// be lost but block 1 must stay.
	truncate(t, path, fi.Size()-3)
	log, h := testLogger(t)
	s = open(t, dir, Options{Logger: log})
	bm, _ := s.Dirty("v")
	if got := dirtyList(bm); !slices.Equal(got, []int64{1}) {
		t.Errorf("dirty %v after a torn tail, want [1]", got)
	}
	if h.count("spool_dirty_torn_tail_truncated") != 1 {
		t.Error("repair not logged")
	}
	if err := s.MarkDirty("v", 100, 7, 1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// A damaged record that is not the last one is refused.
	flip(t, path, fi.Size()-40)
	var ce *CorruptError
	if _, err := Open(dir, Options{}); !errors.As(err, &ce) {
		t.Errorf("open with a damaged bitmap record: %v, want a CorruptError", err)
	}
}

// TestDirtyCountAfterReopen: a bitmap file whose snapshot has blocks set,
// followed by range records, counts its blocks right when reopened (it
// used to add the records' changes to the snapshot's count twice, so a
// clear after a compaction could make a dirty volume look clean and its
// blocks were never resynced).
func TestDirtyCountAfterReopen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	if err := s.MarkDirty("v", 1000, 0, 100); err != nil {
		t.Fatal(err)
	}
	// A new block count rewrites the file as header and snapshot.
	if err := s.MarkDirty("v", 2000, 1500, 1); err != nil {
		t.Fatal(err)
	}
	bm, err := s.Dirty("v")
	if err != nil {
		t.Fatal(err)
	}
	if err := bm.Clear(0, 60); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, Options{})
	defer s.Close()
	if got := s.DirtyVolumes(); !slices.Equal(got, []string{"v"}) {
		t.Fatalf("DirtyVolumes = %v after reopen, want [v]", got)
	}
	bm, err = s.Dirty("v")
	if err != nil {
		t.Fatal(err)
	}
	want := append(span(60, 40), 1500)
	if got := dirtyList(bm); !slices.Equal(got, want) || bm.Count() != int64(len(want)) {
		t.Fatalf("dirty %v count %d after reopen, want %d blocks", got, bm.Count(), len(want))
	}
}
