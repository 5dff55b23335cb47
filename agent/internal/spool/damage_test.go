package spool

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// damageTemplate writes a spool of 30 synced records in three segments, an
// acknowledgement and a dirty bitmap into dir, and returns the records.
func damageTemplate(t *testing.T, dir string) []Record {
	t.Helper()
	rec := int64(blockRecordSize("v", 512))
	s := open(t, dir, Options{SegmentSize: segHeaderSize + 10*rec})
	for i := range 30 {
		var err error
		if i%7 == 6 {
			_, err = s.Mark(time.Unix(int64(i), 0))
		} else {
			_, err = s.AppendBlocks("v", int64(i), [][]byte{content(uint64(i), 512)})
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Sync(); err != nil { // every record's successor says it was durable
			t.Fatal(err)
		}
	}
	if err := s.Ack(3); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkDirty("v", 1000, 10, 20); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkDirty("v", 1000, 500, 3); err != nil {
		t.Fatal(err)
	}
	bm, err := s.Dirty("v")
	if err != nil {
		t.Fatal(err)
	}
	if err := bm.Clear(12, 2); err != nil {
		t.Fatal(err)
	}
	recs := readAll(t, s, 0)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return recs
}

type spoolDamage struct {
	name string
	file string // base name in the spool directory
	edit func(b []byte) []byte
}

// spoolDamages lists damage to every kind of spool file in dir.
func spoolDamages(t *testing.T, dir string) []spoolDamage {
	t.Helper()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	dirty, _ := filepath.Glob(filepath.Join(dir, dirtyPrefix+"*"+dirtySuffix))
	if len(segs) != 3 || len(dirty) != 1 {
		t.Fatalf("template: %d segments and %d bitmaps, want 3 and 1", len(segs), len(dirty))
	}
	slices.Sort(segs)
	files := append(slices.Clone(segs), filepath.Join(dir, ackedName), dirty[0])
	var ds []spoolDamage
	add := func(file, name string, edit func(b []byte) []byte) {
		ds = append(ds, spoolDamage{fmt.Sprintf("%s/%s", kindOf(file), name), filepath.Base(file), edit})
	}
	rng := rand.New(rand.NewPCG(5, 6))
	rec := blockRecordSize("v", 512)
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		size := int(fi.Size())
		// Every byte of the file header and of the first record header.
		for off := range min(size, segHeaderSize+recHeaderSize) {
			add(f, fmt.Sprintf("flip-%d", off), func(b []byte) []byte { b[off] ^= 0x10; return b })
		}
		for range 25 {
			off, x := rng.IntN(size), byte(1+rng.IntN(255))
			add(f, fmt.Sprintf("flip-%d-%02x", off, x), func(b []byte) []byte { b[off] ^= x; return b })
		}
		for _, n := range []int{0, 1, 8, 23, 24, 31, 32, 33, segHeaderSize + rec/2, size / 2, size - 1} {
			if n < size {
				add(f, fmt.Sprintf("truncate-%d", n), func(b []byte) []byte { return b[:n] })
			}
		}
		add(f, "garbage-header", func(b []byte) []byte { copy(b, content(77, 32)); return b })
		add(f, "garbage-file", func(b []byte) []byte { return content(78, len(b)) })
		add(f, "zero-file", func(b []byte) []byte { return make([]byte, len(b)) })
		add(f, "garbage-appended", func(b []byte) []byte { return append(b, content(79, 3000)...) })
	}
	return ds
}

func kindOf(file string) string {
	switch b := filepath.Base(file); {
	case strings.HasSuffix(b, segSuffix):
		return "segment" + strings.TrimLeft(strings.TrimSuffix(b, segSuffix), "0")
	case b == ackedName:
		return "acked"
	default:
		return "dirty"
	}
}

// TestOpenDamagedSpool damages every kind of spool file in many ways: Open
// never panics, and either refuses with a *CorruptError naming the file and
// what to do, or opens a spool whose records are the ones written (a torn
// tail may be cut: a record whose successor does not vouch for it is
// indistinguishable from an interrupted append).
func TestOpenDamagedSpool(t *testing.T) {
	t.Parallel()
	tmpl := t.TempDir()
	want := damageTemplate(t, tmpl)
	names, err := os.ReadDir(tmpl)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, e := range names {
		if e.Name() == lockName {
			continue
		}
		b, err := os.ReadFile(filepath.Join(tmpl, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = b
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var (
		mu     sync.Mutex
		counts = map[string]map[string]int{}
	)
	t.Run("patterns", func(t *testing.T) {
		for _, d := range spoolDamages(t, tmpl) {
			t.Run(d.name, func(t *testing.T) {
				t.Parallel()
				dir := t.TempDir()
				for name, b := range files {
					if name == d.file {
						b = d.edit(bytes.Clone(b))
					}
					if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
						t.Fatal(err)
					}
				}
				outcome := openDamagedSpool(t, dir, d.file, want, log)
				kind := d.name[:strings.Index(d.name, "/")]
				mu.Lock()
				if counts[kind] == nil {
					counts[kind] = map[string]int{}
				}
				counts[kind][outcome]++
				mu.Unlock()
			})
		}
	})
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		t.Logf("%-10s %v", k, counts[k])
	}
}

// openDamagedSpool opens dir, in which file was damaged, and checks the
// outcome: "refused", "intact", or "tail cut".
func openDamagedSpool(t *testing.T, dir, file string, want []Record, log *slog.Logger) string {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("panic: %v", p)
		}
	}()
	s, err := Open(dir, Options{SegmentSize: 1 << 20, Logger: log})
	if err != nil {
		var ce *CorruptError
		if !errors.As(err, &ce) {
			t.Fatalf("open: %v (%T), want a CorruptError", err, err)
		}
		if filepath.Dir(ce.Path) != dir || !strings.Contains(err.Error(), filepath.Base(ce.Path)) {
			t.Fatalf("open: %v: does not name a file of the spool %s", err, dir)
		}
		if !strings.Contains(err.Error(), "move the directory aside") {
			t.Fatalf("open: %v: does not say what to do", err)
		}
		t.Logf("refused: %v", err)
		return "refused"
	}
	defer s.Close()
	var got []Record
	for after := s.Acked(); after < s.Last(); {
		recs, err := s.Read(t.Context(), after, 100)
		if err != nil {
			t.Fatalf("read after %d: %v", after, err)
		}
		got = append(got, recs...)
		after = recs[len(recs)-1].Seq
	}
	for _, r := range got {
		if r.Seq < 1 || int(r.Seq) > len(want) || !sameRecord(r, want[r.Seq-1]) {
			t.Fatalf("record %d reads back different", r.Seq)
		}
	}
	if bm, err := s.Dirty("v"); err != nil {
		t.Fatalf("dirty bitmap: %v", err)
	} else if n, list := bm.Count(), dirtyList(bm); int(n) != len(list) || (n != 21 && n != 23) {
		// 21 dirty, or 23 when the last record (the Clear) was cut as torn.
		t.Fatalf("dirty bitmap counts %d blocks and lists %d, want 21 (or 23 with the clear cut off)", n, len(list))
	}
	if _, err := s.Mark(time.Unix(99, 0)); err != nil {
		t.Fatalf("mark after open: %v", err)
	}
	if s.Last()-1 < uint64(len(want)) {
		t.Logf("opened, tail cut at %d of %d (%s)", s.Last()-1, len(want), file)
		return "tail cut"
	}
	t.Logf("opened intact (%s)", file)
	return "intact"
}
