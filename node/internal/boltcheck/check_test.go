package boltcheck

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.etcd.io/bbolt"
)

const testPage = 4096

var (
	sampleOnce sync.Once
	sample     []byte
	sampleErr  error
)

// sampleDB returns a bbolt file with a branch-page bucket of a few hundred
// keys, a nested bucket, an inline bucket and some free pages.
func sampleDB(t testing.TB) []byte {
	t.Helper()
	sampleOnce.Do(func() {
		dir, err := os.MkdirTemp("", "boltcheck")
		if err != nil {
			sampleErr = err
			return
		}
		defer os.RemoveAll(dir)
		path := filepath.Join(dir, "db")
		db, err := bbolt.Open(path, 0o600, &bbolt.Options{PageSize: testPage, NoSync: true})
		if err != nil {
			sampleErr = err
			return
		}
		rng := rand.New(rand.NewPCG(3, 4))
		err = db.Update(func(tx *bbolt.Tx) error {
			b, err := tx.CreateBucket([]byte("logs"))
			if err != nil {
				return err
			}
			for i := range 400 {
				v := make([]byte, 100+rng.IntN(300))
				for j := range v {
					v[j] = byte(rng.Uint32())
				}
				if err := b.Put(binary.BigEndian.AppendUint64(nil, uint64(i+1)), v); err != nil {
					return err
				}
			}
			if err := b.Put([]byte("big"), make([]byte, 3*testPage)); err != nil { // overflow pages
				return err
			}
			n, err := b.CreateBucket([]byte("nested"))
			if err != nil {
				return err
			}
			for i := range 100 {
				if err := n.Put(fmt.Appendf(nil, "key-%04d", i), bytes.Repeat([]byte{byte(i)}, 80)); err != nil {
					return err
				}
			}
			in, err := tx.CreateBucket([]byte("conf"))
			if err != nil {
				return err
			}
			return in.Put([]byte("CurrentTerm"), make([]byte, 8))
		})
		if err == nil {
			err = db.Update(func(tx *bbolt.Tx) error { // free some pages
				b := tx.Bucket([]byte("logs"))
				for i := range 100 {
					if err := b.Delete(binary.BigEndian.AppendUint64(nil, uint64(i+1))); err != nil {
						return err
					}
				}
				return nil
			})
		}
		if cerr := db.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			sampleErr = err
			return
		}
		sample, sampleErr = os.ReadFile(path)
	})
	if sampleErr != nil {
		t.Fatal(sampleErr)
	}
	return sample
}

// bboltWalk opens path with bbolt and touches everything a reader can:
// its consistency check and every key and value of every bucket. After
// Check passed, it must not crash (a fault would end the test binary).
func bboltWalk(t testing.TB, path string) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Logf("bbolt panicked after Check passed (recovered): %v", p)
		}
	}()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
	if err != nil {
		return
	}
	defer db.Close()
	db.View(func(tx *bbolt.Tx) error {
		for range tx.Check() {
		}
		var walk func(b *bbolt.Bucket, depth int)
		walk = func(b *bbolt.Bucket, depth int) {
			c := b.Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if v == nil && depth < 8 {
					if nb := b.Bucket(k); nb != nil {
						walk(nb, depth+1)
					}
				}
			}
		}
		return tx.ForEach(func(_ []byte, b *bbolt.Bucket) error { walk(b, 0); return nil })
	})
}

func checkBytes(t testing.TB, b []byte) error {
	t.Helper()
	path := filepath.Join(t.TempDir(), "db")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	err := Check(path)
	if err != nil && !errors.Is(err, ErrDamaged) {
		t.Fatalf("Check: %v: not ErrDamaged", err)
	}
	if err == nil {
		bboltWalk(t, path)
	}
	return err
}

func TestCheckPristine(t *testing.T) {
	t.Parallel()
	if err := checkBytes(t, sampleDB(t)); err != nil {
		t.Fatal(err)
	}
}

// setPage overwrites bytes at off inside page id.
func setPage(b []byte, id, off int, v ...byte) []byte {
	copy(b[id*testPage+off:], v)
	return b
}

// leafWithBranchParent finds a branch page of the sample and returns its
// number.
func branchPage(t *testing.T, b []byte) int {
	for id := 2; id < len(b)/testPage; id++ {
		p := b[id*testPage:]
		if binary.LittleEndian.Uint64(p) == uint64(id) && binary.LittleEndian.Uint16(p[8:]) == flagBranch {
			return id
		}
	}
	t.Fatal("no branch page in the sample")
	return 0
}

func TestCheckDamage(t *testing.T) {
	t.Parallel()
	orig := sampleDB(t)
	br := branchPage(t, orig)
	u64 := func(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
	u32 := func(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
	cases := []struct {
		name string
		b    func([]byte) []byte
		want string
	}{
		{"empty", func([]byte) []byte { return nil }, "empty file"},
		{"short", func(b []byte) []byte { return b[:100] }, "shorter than its two meta pages"},
		{"both metas zero", func(b []byte) []byte { clear(b[:2*testPage]); return b }, "no valid meta page 1"},
		{"meta0 header", func(b []byte) []byte { return setPage(b, 0, 0, 9) }, "meta page 0: header says page 9"},
		{"truncated", func(b []byte) []byte { return b[:5*testPage] }, "truncated"},
		{"branch points at itself", func(b []byte) []byte { return setPage(b, br, 16+8, u64(uint64(br))...) }, "referenced twice"},
		{"branch points past the end", func(b []byte) []byte { return setPage(b, br, 16+8, u64(1<<40)...) }, "outside"},
		{"branch key past the page", func(b []byte) []byte { return setPage(b, br, 16+4, u32(1<<30)...) }, "runs past the page end"},
		{"branch count", func(b []byte) []byte { return setPage(b, br, 10, 0xff, 0xff) }, "do not fit"},
		{"branch without elements", func(b []byte) []byte { return setPage(b, br, 10, 0, 0) }, "without elements"},
		{"branch overflow", func(b []byte) []byte { return setPage(b, br, 12, 0xff, 0xff, 0xff, 0xff) }, "outside"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := checkBytes(t, tc.b(bytes.Clone(orig)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestCheckRandomDamage: after any of a few thousand seeded random
// changes, Check passes or says the file is damaged, and when it passes
// bbolt reads the whole file without crashing.
func TestCheckRandomDamage(t *testing.T) {
	t.Parallel()
	orig := sampleDB(t)
	rng := rand.New(rand.NewPCG(11, 12))
	passed := 0
	for i := range 1500 {
		b := bytes.Clone(orig)
		for range 1 + rng.IntN(3) {
			off := rng.IntN(len(b))
			switch rng.IntN(3) {
			case 0:
				b[off] ^= byte(1 + rng.IntN(255))
			case 1:
				b[off] = 0xff
			default:
				end := min(len(b), off+1+rng.IntN(64))
				clear(b[off:end])
			}
		}
		if i%10 == 0 {
			b = b[:rng.IntN(len(b))]
		}
		if err := CheckReader(bytes.NewReader(b), int64(len(b))); err == nil {
			passed++
			checkBytes(t, b)
		} else if !errors.Is(err, ErrDamaged) {
			t.Fatalf("Check: %v: not ErrDamaged", err)
		}
	}
	t.Logf("%d of 1500 damaged files passed the structural check", passed)
}

// FuzzCheck: no panic; a file Check passes is read whole by bbolt without
// a crash.
func FuzzCheck(f *testing.F) {
	orig := sampleDB(f)
	f.Add(uint32(0), []byte{0xff})
	f.Add(uint32(2*testPage+10), []byte{0xff, 0xff})
	f.Add(uint32(3*testPage+16), []byte{0, 0, 0, 0x40})
	f.Add(uint32(len(orig)-10), []byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, off uint32, patch []byte) {
		b := bytes.Clone(orig)
		copy(b[int(off)%len(b):], patch)
		if err := CheckReader(bytes.NewReader(b), int64(len(b))); err == nil {
			checkBytes(t, b)
		} else if !errors.Is(err, ErrDamaged) {
			t.Fatalf("Check: %v: not ErrDamaged", err)
		}
	})
}
