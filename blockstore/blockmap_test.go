package blockstore

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/lifeboat-dr/lifeboat/blockstore/blockstoretest"
)

// TestUpdateMatchesSnapshot checks that updating a map with changed blocks
// gives the same root as snapshotting the changed volume: the map is a pure
// function of the block IDs.
func TestUpdateMatchesSnapshot(t *testing.T) {
	s, _ := newTestStore(t)
	img := genImage(8, 70000*4096+100) // two levels, short last block
	p, _, err := s.Snapshot(t.Context(), blockstoretest.Image(img), SnapshotOptions{Volume: "vol", BlockSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	base, _ := p.Volume("vol")
	img2 := bytes.Clone(img)
	r := rand.New(rand.NewPCG(9, 9))
	var blocks [][]byte
	var nums []int64
	for _, b := range []int64{0, 1, 255, 256, 65535, 65536, 69999, 70000} {
		nums = append(nums, b)
	}
	for range 200 {
		nums = append(nums, int64(r.IntN(70000)))
	}
	slices.Sort(nums)
	nums = slices.Compact(nums)
	var changes []Change
	for i, b := range nums {
		g := base.Geometry()
		blk := img2[b*4096 : b*4096+int64(g.BlockLen(b))]
		if i%5 == 0 {
			clear(blk) // becomes a hole
		} else {
			for j := range blk {
				blk[j] = byte(r.Uint32())
			}
		}
		blocks = append(blocks, blk)
		changes = append(changes, Change{Block: b})
	}
	ids, err := s.Put(t.Context(), blocks)
	if err != nil {
		t.Fatal(err)
	}
	for i := range changes {
		changes[i].New = ids[i]
	}
	upd, err := s.Update(t.Context(), base, changes)
	if err != nil {
		t.Fatal(err)
	}
	p2, _, err := s.Snapshot(t.Context(), blockstoretest.Image(img2), SnapshotOptions{Volume: "vol"})
	if err != nil {
		t.Fatal(err)
	}
	snap, _ := p2.Volume("vol")
	if upd.Root != snap.Root || upd.Used != snap.Used {
		t.Fatalf("update gave root %s used %d, snapshot root %s used %d", upd.Root.Short(), upd.Used, snap.Root.Short(), snap.Used)
	}
	if _, err := s.Update(t.Context(), base, []Change{{Block: 70001}}); err == nil {
		t.Error("update past the end succeeded")
	}
	if _, err := s.Update(t.Context(), base, []Change{{Block: 5}, {Block: 4}}); err == nil {
		t.Error("unsorted update succeeded")
	}
}

// syntheticID returns a deterministic non-zero ID for block n of version v.
func syntheticID(n int64, v uint64) ID {
	var id ID
	binary.LittleEndian.PutUint64(id[:], uint64(n)+1)
	binary.LittleEndian.PutUint64(id[8:], v)
	id[31] = 1
	return id
}

// BenchmarkDiff1TiB diffs two points of a 1 TiB volume with 64 KiB blocks
// (16M blocks) of which 1% changed: uniformly spread (every leaf touched) and
// clustered the way the shared workload writes (80% of changes in 4 hot
// regions). The maps are synthetic: pages only, no blocks.
func BenchmarkDiff1TiB(b *testing.B) {
	s, _ := newTestStore(&testing.T{})
	defer s.Close()
	const blocks = 1 << 24
	g := Geometry{Size: blocks * 64 << 10, BlockSize: 64 << 10}
	w := s.maps.newWriter(g)
	for n := int64(0); n < blocks; n++ {
		if err := w.add(syntheticID(n, 0)); err != nil {
			b.Fatal(err)
		}
	}
	root, err := w.finish()
	if err != nil {
		b.Fatal(err)
	}
	base := VolumeState{Name: "v", Root: root, Size: g.Size, BlockSize: g.BlockSize, Used: blocks}
	for _, layout := range []string{"uniform", "clustered"} {
		r := rand.New(rand.NewPCG(1, 1))
		set := map[int64]bool{}
		for len(set) < blocks/100 {
			n := int64(r.IntN(blocks))
			if layout == "clustered" && r.IntN(10) < 8 {
				hot := int64(r.IntN(4)) * (blocks / 4)
				n = hot + int64(r.IntN(blocks/100))
			}
			set[n] = true
		}
		var changes []Change
		for n := range set {
			changes = append(changes, Change{Block: n, New: syntheticID(n, 1)})
		}
		slices.SortFunc(changes, func(a, b Change) int { return int(a.Block - b.Block) })
		next, err := s.Update(b.Context(), base, changes)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(layout, func(b *testing.B) {
			for b.Loop() {
				var n int
				if err := s.Diff(b.Context(), base, next, func(Change) error { n++; return nil }); err != nil {
					b.Fatal(err)
				}
				if n != len(changes) {
					b.Fatalf("diff found %d changes, want %d", n, len(changes))
				}
			}
		})
	}
}
