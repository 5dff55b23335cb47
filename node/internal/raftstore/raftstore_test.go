package raftstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
)

const raftTestPage = 4096

// buildRaftDB writes n log entries of a few hundred bytes and the stable
// store keys raft uses into dir through Open, and returns the
// bytes of the closed raft.db and the entries.
func buildRaftDB(t testing.TB, dir string, n int) ([]byte, []*raft.Log) {
	t.Helper()
	st, err := Open(dir, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var batch, all []*raft.Log
	for i := 1; i <= n; i++ {
		data := make([]byte, 200+rng.IntN(200))
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		l := &raft.Log{Index: uint64(i), Term: uint64(1 + i/100), Type: raft.LogCommand, Data: data}
		if i == 1 {
			l.Type, l.Data = raft.LogConfiguration, raft.EncodeConfiguration(raft.Configuration{Servers: []raft.Server{
				{Suffrage: raft.Voter, ID: "dc1-n1", Address: "10.0.0.1:7947"}}})
		}
		batch = append(batch, l)
		all = append(all, l)
		if len(batch) == 64 || i == n {
			if err := st.Bolt.StoreLogs(batch); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	for k, v := range map[string]uint64{"CurrentTerm": uint64(1 + n/100), "LastVoteTerm": uint64(1 + n/100)} {
		if err := st.Bolt.SetUint64([]byte(k), v); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Bolt.Set([]byte("LastVoteCand"), []byte("dc1-n1")); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "raft.db"))
	if err != nil {
		t.Fatal(err)
	}
	return b, all
}

// pristine is a raft.db as a node leaves it, and what it holds.
type pristine struct {
	db   []byte
	logs []*raft.Log
	hwm  int // pages in use
}

var (
	raftDBOnce sync.Once
	raftDB     pristine
	raftDBErr  error
)

// pristineRaftDB returns a raft.db of 300 entries (about 60 pages in use),
// built once per test binary.
func pristineRaftDB(t testing.TB) pristine {
	t.Helper()
	raftDBOnce.Do(func() {
		dir, err := os.MkdirTemp("", "raftdb")
		if err != nil {
			raftDBErr = err
			return
		}
		defer os.RemoveAll(dir)
		raftDB.db, raftDB.logs = buildRaftDB(t, dir, 300)
		// The high-water mark of the newer meta page (bbolt's layout).
		m0, m1 := raftDB.db[16:], raftDB.db[raftTestPage+16:]
		m := m0
		if binary.LittleEndian.Uint64(m1[48:]) > binary.LittleEndian.Uint64(m0[48:]) {
			m = m1
		}
		raftDB.hwm = int(binary.LittleEndian.Uint64(m[40:]))
	})
	if raftDBErr != nil {
		t.Fatal(raftDBErr)
	}
	return raftDB
}

// Outcomes of opening a damaged raft.db.
const (
	outcomeRefused  = "refused"          // a RaftStateError naming raft.db
	outcomeIntact   = "opened, intact"   // every entry and key as written
	outcomeReadErr  = "opened, read err" // an entry or key fails to read
	outcomeSilently = "opened, changed"  // an entry or key reads back different
)

// openDamaged writes db as DIR/raft/raft.db and opens it the way a node
// does. It fails t on a panic, or on an error that is not a RaftStateError
// naming raft.db. On success it reads every log entry and the stable keys
// (errors are fine, panics are not) and compares them with want.
func openDamaged(t testing.TB, db []byte, want []*raft.Log) (outcome string, err error) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "raft")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "raft.db"), db, 0o600); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("panic: %v", p)
		}
	}()
	st, err := Open(dir, io.Discard)
	if err != nil {
		var rse *RaftStateError
		if !errors.As(err, &rse) {
			t.Fatalf("open: %v (%T), want a RaftStateError", err, err)
		}
		if !strings.Contains(err.Error(), "raft.db") {
			t.Fatalf("open: %q does not name raft.db", err)
		}
		return outcomeRefused, err
	}
	defer st.Close()
	outcome = outcomeIntact
	worse := func(o string) {
		if outcome == outcomeIntact || o == outcomeSilently {
			outcome = o
		}
	}
	first, ferr := st.Bolt.FirstIndex()
	last, lerr := st.Bolt.LastIndex()
	if ferr != nil || lerr != nil {
		worse(outcomeReadErr)
	}
	if len(want) > 0 && (first != want[0].Index || last != want[len(want)-1].Index) {
		worse(outcomeSilently)
	}
	for i := first; i <= last && last != 0; i++ {
		var l raft.Log
		if err := st.Bolt.GetLog(i, &l); err != nil {
			worse(outcomeReadErr)
			continue
		}
		if k := int(i) - 1; k < len(want) && (l.Index != want[k].Index || l.Term != want[k].Term ||
			l.Type != want[k].Type || !bytes.Equal(l.Data, want[k].Data)) {
			worse(outcomeSilently)
		}
	}
	for _, k := range []string{"CurrentTerm", "LastVoteTerm"} {
		if v, err := st.Bolt.GetUint64([]byte(k)); err != nil {
			worse(outcomeReadErr)
		} else if len(want) > 0 && v != want[len(want)-1].Term {
			worse(outcomeSilently)
		}
	}
	if v, err := st.Bolt.Get([]byte("LastVoteCand")); err != nil {
		worse(outcomeReadErr)
	} else if string(v) != "dc1-n1" {
		worse(outcomeSilently)
	}
	if _, err := raft.HasExistingState(st.Bolt, st.Bolt, st.Snaps); err != nil {
		worse(outcomeReadErr)
	}
	return outcome, nil
}

type raftDamage struct {
	name string
	db   []byte
}

// raftDamages returns the damage patterns applied to a pristine raft.db
// whose first pages pages are in use.
func raftDamages(orig []byte, pages int) []raftDamage {
	var ds []raftDamage
	mut := func(name string, f func(b []byte) []byte) {
		ds = append(ds, raftDamage{name, f(bytes.Clone(orig))})
	}
	for p := range pages {
		off := p * raftTestPage
		mut(fmt.Sprintf("flip-page%d-start", p), func(b []byte) []byte { b[off] ^= 0xff; return b })
		mut(fmt.Sprintf("flip-page%d-flags", p), func(b []byte) []byte { b[off+8] ^= 0x03; return b })
		mut(fmt.Sprintf("flip-page%d-count", p), func(b []byte) []byte { b[off+11] ^= 0x40; return b })
		mut(fmt.Sprintf("flip-page%d-elem0-pos", p), func(b []byte) []byte { b[off+16+5] ^= 0x80; return b })
		mut(fmt.Sprintf("zero-page%d", p), func(b []byte) []byte { clear(b[off : off+raftTestPage]); return b })
	}
	rng := rand.New(rand.NewPCG(7, 7))
	for range 200 {
		off := rng.IntN(pages * raftTestPage)
		x := byte(1 + rng.IntN(255))
		mut(fmt.Sprintf("flip-%d-%02x", off, x), func(b []byte) []byte { b[off] ^= x; return b })
	}
	for _, n := range []int{0, 1, 100, raftTestPage, 2*raftTestPage - 1, 2 * raftTestPage, 3 * raftTestPage,
		pages / 2 * raftTestPage, (pages - 1) * raftTestPage, pages*raftTestPage - 1, len(orig) / 2, len(orig) - 1} {
		mut(fmt.Sprintf("truncate-%d", n), func(b []byte) []byte { return b[:n] })
	}
	garbage := func(b []byte, off int) {
		r := rand.New(rand.NewPCG(uint64(off), 3))
		for i := off; i < off+raftTestPage; i++ {
			b[i] = byte(r.Uint32())
		}
	}
	mut("garbage-meta0", func(b []byte) []byte { garbage(b, 0); return b })
	mut("garbage-meta1", func(b []byte) []byte { garbage(b, raftTestPage); return b })
	mut("garbage-both-metas", func(b []byte) []byte { garbage(b, 0); garbage(b, raftTestPage); return b })
	mut("zero-both-metas", func(b []byte) []byte { clear(b[:2*raftTestPage]); return b })
	mut("garbage-file", func(b []byte) []byte {
		for p := range len(b) / raftTestPage {
			garbage(b, p*raftTestPage)
		}
		return b
	})
	mut("extended-with-zeros", func(b []byte) []byte { return append(b, make([]byte, 3*raftTestPage)...) })
	return ds
}

// TestOpenRaftStoreDamaged damages a real raft.db in many ways: every
// open must either work or fail with a RaftStateError naming raft.db,
// never panic or crash (issue "Corrupt files are errors, not panics").
// bbolt keeps no checksum of data pages, so some damage inside a log entry
// goes unnoticed: the test counts those cases, it cannot refuse them.
func TestOpenRaftStoreDamaged(t *testing.T) {
	t.Parallel()
	p := pristineRaftDB(t)
	if p.hwm < 16 || p.hwm*raftTestPage > len(p.db) {
		t.Fatalf("raft.db has %d pages in use of %d bytes, want several", p.hwm, len(p.db))
	}
	if o, err := openDamaged(t, p.db, p.logs); o != outcomeIntact {
		t.Fatalf("pristine raft.db: %s %v", o, err)
	}
	var (
		mu     sync.Mutex
		counts = map[string]map[string]int{} // pattern kind -> outcome -> n
	)
	t.Run("patterns", func(t *testing.T) {
		for _, d := range raftDamages(p.db, p.hwm) {
			t.Run(d.name, func(t *testing.T) {
				t.Parallel()
				o, err := openDamaged(t, d.db, p.logs)
				t.Logf("%s: %v", o, err)
				kind := strings.TrimRight(strings.SplitN(d.name, "-", 2)[0], "0123456789")
				if strings.HasPrefix(d.name, "flip-page") {
					kind = "flip-page-" + d.name[strings.LastIndex(d.name, "-")+1:]
				}
				mu.Lock()
				if counts[kind] == nil {
					counts[kind] = map[string]int{}
				}
				counts[kind][o]++
				mu.Unlock()
			})
		}
	})
	kinds := slices.Sorted(maps.Keys(counts))
	for _, k := range kinds {
		t.Logf("%-22s %v", k, counts[k])
	}
}

// FuzzOpenRaftStore writes patch over a real raft.db at off (modulo its
// size) and opens it: no panic, and any error is a RaftStateError.
func FuzzOpenRaftStore(f *testing.F) {
	p := pristineRaftDB(f)
	f.Add(uint64(0), []byte{0xff})
	f.Add(uint64(raftTestPage+16), []byte{0, 0, 0, 0})
	f.Add(uint64(2*raftTestPage+10), []byte{0xff, 0xff})
	f.Add(uint64(3*raftTestPage+16), []byte{0xff, 0xff, 0xff, 0x7f})
	f.Add(uint64(10*raftTestPage+21), []byte{0x80})
	f.Add(uint64(p.hwm*raftTestPage-100), bytes.Repeat([]byte{0xaa}, 64))
	f.Fuzz(func(t *testing.T, off uint64, patch []byte) {
		if len(patch) > raftTestPage {
			patch = patch[:raftTestPage]
		}
		b := bytes.Clone(p.db)
		copy(b[int(off%uint64(p.hwm*raftTestPage)):], patch)
		openDamaged(t, b, p.logs)
	})
}

// TestOpenRaftStoreBadEntries: damage that leaves bbolt's structure intact
// but breaks what raft reads (an entry in the middle, a gap, a stable-store
// term) is refused at open, naming raft.db.
func TestOpenRaftStoreBadEntries(t *testing.T) {
	t.Parallel()
	p := pristineRaftDB(t)
	key := func(i uint64) []byte { return binary.BigEndian.AppendUint64(nil, i) }
	// Entry 299 as raft-boltdb encodes it, with term 1 instead of 3.
	dir := filepath.Join(t.TempDir(), "raft")
	st, err := Open(dir, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Bolt.StoreLog(&raft.Log{Index: 299, Term: 1, Type: raft.LogCommand, Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	var termOne []byte
	if db, err := bbolt.Open(filepath.Join(dir, "raft.db"), 0o600, &bbolt.Options{ReadOnly: true}); err != nil {
		t.Fatal(err)
	} else {
		db.View(func(tx *bbolt.Tx) error { termOne = bytes.Clone(tx.Bucket(boltLogs).Get(key(299))); return nil })
		db.Close()
	}
	cases := []struct {
		name string
		edit func(tx *bbolt.Tx) error
		want string
	}{
		{"garbage entry", func(tx *bbolt.Tx) error {
			return tx.Bucket(boltLogs).Put(key(150), []byte{0xc1, 0xc1, 0xc1})
		}, "raft log entry 150"},
		{"entry with a huge length", func(tx *bbolt.Tx) error {
			return tx.Bucket(boltLogs).Put(key(150), []byte{0x85, 0xa5, 'I', 'n', 'd', 'e', 'x', 0xc6, 0xff, 0xff, 0xff, 0xf0})
		}, "raft log entry 150"},
		{"entry moved", func(tx *bbolt.Tx) error {
			return tx.Bucket(boltLogs).Put(key(150), bytes.Clone(tx.Bucket(boltLogs).Get(key(149))))
		}, "raft log entry 150 says it is entry 149"},
		{"entry missing", func(tx *bbolt.Tx) error {
			return tx.Bucket(boltLogs).Delete(key(151))
		}, "log entries 151 to 151 are missing"},
		{"term goes down", func(tx *bbolt.Tx) error {
			return tx.Bucket(boltLogs).Put(key(299), termOne)
		}, "raft log entry 299 has term 1, below the 3 of the entry before"},
		{"short log key", func(tx *bbolt.Tx) error {
			return tx.Bucket(boltLogs).Put([]byte{1}, []byte{0x80})
		}, "log key 01"},
		{"bad configuration entry", func(tx *bbolt.Tx) error {
			v := bytes.Clone(tx.Bucket(boltLogs).Get(key(1)))
			i := bytes.Index(v, []byte("Servers"))
			if i < 0 {
				return errors.New("no Servers in the configuration entry")
			}
			v[i+len("Servers")] = 0xc1 // never used in msgpack
			return tx.Bucket(boltLogs).Put(key(1), v)
		}, "raft log entry 1: "},
		{"short term", func(tx *bbolt.Tx) error {
			return tx.Bucket(boltConf).Put([]byte("CurrentTerm"), []byte{1, 2, 3})
		}, "stable key CurrentTerm holds 3 bytes"},
		{"logs bucket renamed", func(tx *bbolt.Tx) error {
			if _, err := tx.CreateBucket([]byte("lpgs")); err != nil {
				return err
			}
			return tx.DeleteBucket(boltLogs)
		}, `unexpected top-level key "lpgs"`},
		{"conf bucket gone", func(tx *bbolt.Tx) error {
			return tx.DeleteBucket(boltConf)
		}, "the conf bucket is missing"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "raft.db")
			if err := os.WriteFile(path, p.db, 0o600); err != nil {
				t.Fatal(err)
			}
			db, err := bbolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = db.Update(tc.edit)
			if cerr := db.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			o, err := openDamaged(t, b, p.logs)
			if o != outcomeRefused || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("open: %s, %v; want refused with %q", o, err, tc.want)
			}
		})
	}
}

// BenchmarkOpenRaftStore opens a raft.db of 10,000 entries of 200 to 400
// bytes: the structural check, bbolt's check and reading every entry.
func BenchmarkOpenRaftStore(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "raft")
	st, err := Open(dir, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var batch []*raft.Log
	for i := 1; i <= 10000; i++ {
		data := make([]byte, 200+rng.IntN(200))
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		batch = append(batch, &raft.Log{Index: uint64(i), Term: 1, Type: raft.LogCommand, Data: data})
		if len(batch) == 1000 {
			if err := st.Bolt.StoreLogs(batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	st.Close()
	fi, err := os.Stat(filepath.Join(dir, "raft.db"))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		st, err := Open(dir, io.Discard)
		if err != nil {
			b.Fatal(err)
		}
		st.Close()
	}
	b.ReportMetric(float64(fi.Size())/(1<<20), "MiB")
}
