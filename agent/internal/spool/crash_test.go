package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/internal/testcrash"
)

const (
	crashChildEnv  = "LIFEBOAT_SPOOL_CRASH_CHILD"
	crashSeedEnv   = "LIFEBOAT_SEED"
	crashRoundsEnv = "LIFEBOAT_CRASH_ROUNDS"
)

var crashOptions = Options{MaxBytes: 16 << 20, SegmentSize: 256 << 10}

// keyed returns a self-describing block: the key, then content derived
// from it, so that any record can be checked on its own.
func keyed(key uint64, size int) []byte {
	b := content(key, size)
	binary.LittleEndian.PutUint64(b, key)
	return b
}

func keyedVolume(key uint64) (string, int64, int) {
	return "v" + strconv.Itoa(int(key%3)), int64(key / 3 % 1000), []int{4096, 16384, 512}[key%3]
}

// checkKeyed returns the key of a block record made by the child, or an
// error if the record is not one.
func checkKeyed(r Record) (uint64, error) {
	if r.Kind != KindBlock {
		return 0, nil
	}
	if len(r.Data) < 8 {
		return 0, fmt.Errorf("record %d: %d bytes", r.Seq, len(r.Data))
	}
	key := binary.LittleEndian.Uint64(r.Data)
	vol, blk, size := keyedVolume(key)
	if r.Volume != vol || r.Block != blk || len(r.Data) != size || string(r.Data) != string(keyed(key, size)) {
		return 0, fmt.Errorf("record %d (key %d) has wrong volume, block or content", r.Seq, key)
	}
	return key, nil
}

// TestMain runs the crash child instead of the tests when
// LIFEBOAT_SPOOL_CRASH_CHILD is set (TestCrash starts the test binary so).
func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir)
	}
	os.Exit(m.Run())
}

// crashChild is the child process of TestCrash: with the spool directory
// dir it appends from four goroutines, syncs, marks
// and acknowledges until killed, printing one line per event:
//
//	a <seq> <key>...   AppendBlocks returned seq for blocks with these keys
//	s <seq>            Sync returned after the append of seq
//	k <seq>            Ack(seq) returned
func crashChild(dir string) {
	fail := testcrash.Exit()
	seed, _ := strconv.ParseUint(os.Getenv(crashSeedEnv), 10, 64)
	o := crashOptions
	o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	s, err := Open(dir, o)
	if err != nil {
		fail(err)
	}
	// Each append is offered to the marker, which marks after a seeded
	// number of them: marks fall between appends at random.
	appended := make(chan struct{})
	for w := range 4 {
		go func() {
			r := rand.New(rand.NewPCG(seed, uint64(w)))
			for {
				n := 1 + r.IntN(4)
				base := r.Uint64() >> 8
				// One call writes one volume and one block size.
				vol, blk, size := keyedVolume(base)
				if blk+int64(n) > 1000 {
					continue
				}
				keys := make([]string, n)
				blocks := make([][]byte, n)
				for i := range n {
					k := base + 3*uint64(i) // same volume, next block
					keys[i] = strconv.FormatUint(k, 10)
					blocks[i] = keyed(k, size)
				}
				seq, err := s.AppendBlocks(vol, blk, blocks)
				if errors.Is(err, ErrFull) {
					continue
				}
				if err != nil {
					fail(err)
				}
				fmt.Printf("a %d %s\n", seq, strings.Join(keys, " "))
				select {
				case appended <- struct{}{}:
				default:
				}
				if r.IntN(3) == 0 {
					if err := s.Sync(); err != nil {
						fail(err)
					}
					fmt.Printf("s %d\n", seq)
				}
			}
		}()
	}
	r := rand.New(rand.NewPCG(seed, 99))
	for {
		for range r.IntN(8) {
			<-appended
		}
		m, err := s.Mark(time.Now())
		if err != nil {
			fail(err)
		}
		if err := s.Sync(); err != nil {
			fail(err)
		}
		fmt.Printf("s %d\n", m)
		if r.IntN(2) == 0 {
			if err := s.Ack(m); err != nil {
				fail(err)
			}
			fmt.Printf("k %d\n", m)
		}
	}
}

func TestCrash(t *testing.T) {
	seed := uint64(time.Now().UnixNano() % 1_000_000_000)
	if s := os.Getenv(crashSeedEnv); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", crashSeedEnv, s, err)
		}
		seed = v
	}
	t.Logf("seed %d (replay with %s=%d)", seed, crashSeedEnv, seed)
	rounds := 50
	if testing.Short() {
		rounds = 10
	}
	if s := os.Getenv(crashRoundsEnv); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("%s=%q: want a positive number", crashRoundsEnv, s)
		}
		rounds = v
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(seed, 1))
	known := map[uint64][]uint64{} // seq of an append -> its keys (first..last)
	var synced, acked uint64
	var repairs, lostUnsynced, checkedRecords int
	log, h := testLogger(t)
	for round := range rounds {
		child := testcrash.Start(t, crashChildEnv+"="+dir, crashSeedEnv+"="+strconv.FormatUint(seed+uint64(round)*7919, 10))
		child.KillAfter(time.Duration(20+rng.IntN(300)) * time.Millisecond)
		lines := child.Wait()
		roundSynced := synced
		for _, l := range lines {
			f := strings.Fields(l)
			if len(f) < 2 {
				continue
			}
			if f[0] == "error" {
				t.Fatalf("round %d: child: %s", round, l)
			}
			seq, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				continue
			}
			switch f[0] {
			case "a":
				keys := make([]uint64, 0, len(f)-2)
				for _, k := range f[2:] {
					v, _ := strconv.ParseUint(k, 10, 64)
					keys = append(keys, v)
				}
				known[seq] = keys
			case "s":
				roundSynced = max(roundSynced, seq)
			case "k":
				acked = max(acked, seq)
			}
		}
		synced = roundSynced

		s, err := Open(dir, Options{MaxBytes: crashOptions.MaxBytes, SegmentSize: crashOptions.SegmentSize, Logger: log})
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		if s.Acked() < acked {
			t.Fatalf("round %d: acked %d after reopen, child acknowledged %d", round, s.Acked(), acked)
		}
		if s.Last() < synced {
			t.Fatalf("round %d: last %d after reopen, child synced up to %d", round, s.Last(), synced)
		}
		var recs []Record
		if s.Last() > s.Acked() {
			recs, err = s.Read(t.Context(), s.Acked(), 1<<30)
			if err != nil {
				t.Fatalf("round %d: read: %v", round, err)
			}
		}
		bySeq := map[uint64]Record{}
		for i, r := range recs {
			if r.Seq != s.Acked()+uint64(i)+1 {
				t.Fatalf("round %d: record %d has seq %d", round, i, r.Seq)
			}
			if _, err := checkKeyed(r); err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			bySeq[r.Seq] = r
		}
		checkedRecords += len(recs)
		// Every append the child reported is present with its keys,
		// unless it lies above both the last sync and the acknowledgement.
		for seq, keys := range known {
			if seq <= s.Acked() {
				delete(known, seq)
				continue
			}
			present := seq <= s.Last()
			if !present {
				if seq <= synced {
					t.Fatalf("round %d: record %d was synced but is gone (last %d)", round, seq, s.Last())
				}
				lostUnsynced++
				delete(known, seq)
				continue
			}
			for i, k := range keys {
				r := bySeq[seq-uint64(len(keys)-1-i)]
				if got, _ := checkKeyed(r); got != k {
					t.Fatalf("round %d: record %d holds key %d, the child appended %d", round, r.Seq, got, k)
				}
			}
		}
		synced = s.Last() // everything present is durable now (Open synced it)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	repairs = h.count("spool_torn_tail_truncated")
	t.Logf("%d kills (seed %d): %d records checked, %d torn tails repaired, %d unsynced appends lost, acked %d, synced %d",
		rounds, seed, checkedRecords, repairs, lostUnsynced, acked, synced)
	if checkedRecords == 0 || acked == 0 {
		t.Errorf("the child made no progress in %d rounds", rounds)
	}
}
