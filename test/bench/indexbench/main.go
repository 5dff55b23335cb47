// idxbench: compare pebble/v2 and bbolt for a 32-byte-key / 24-byte-value block index.
package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	bolt "go.etcd.io/bbolt"
)

// Keys are pseudo-random 32-byte IDs derived from an index (splitmix64), so
// "present" keys can be regenerated without holding them in RAM. Statistically
// equivalent to BLAKE3 outputs for the purposes of an ordered store.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func key(dst []byte, i uint64, domain uint64) {
	s := i*4 + domain<<56
	for j := 0; j < 4; j++ {
		binary.LittleEndian.PutUint64(dst[j*8:], mix(s+uint64(j)))
	}
}

func val(dst []byte, i uint64) { // pack id u64, offset u64, clen u32, ulen u32 = 24 B
	binary.LittleEndian.PutUint64(dst[0:], i>>12)
	binary.LittleEndian.PutUint64(dst[8:], i*4096)
	binary.LittleEndian.PutUint32(dst[16:], 4000)
	binary.LittleEndian.PutUint32(dst[20:], 4096)
}

const (
	domPresent = 1
	domMissing = 2
)

type store interface {
	insertBatch(keys [][]byte, vals [][]byte) error
	// lookup returns a per-goroutine lookup func (plus cleanup)
	newReader() (func(k []byte) (bool, error), func())
	close() error
}

// ---- pebble ----
type pebbleStore struct {
	db       *pebble.DB
	l6filter bool // use Iterator.SeekPrefixGE with UseL6Filters instead of DB.Get
}

func openPebble(dir string, bloomBits int, cacheMiB int64) (*pebbleStore, error) {
	c := pebble.NewCache(cacheMiB << 20)
	defer c.Unref()
	opts := &pebble.Options{Cache: c}
	if bloomBits > 0 {
		opts.Levels[0].FilterPolicy = bloom.FilterPolicy(bloomBits)
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, err
	}
	return &pebbleStore{db: db}, nil
}

func (p *pebbleStore) insertBatch(keys, vals [][]byte) error {
	b := p.db.NewBatch()
	for i := range keys {
		if err := b.Set(keys[i], vals[i], nil); err != nil {
			return err
		}
	}
	return b.Commit(pebble.Sync)
}

func (p *pebbleStore) newReader() (func([]byte) (bool, error), func()) {
	if p.l6filter {
		it, err := p.db.NewIter(&pebble.IterOptions{UseL6Filters: true})
		if err != nil {
			panic(err)
		}
		return func(k []byte) (bool, error) {
			if it.SeekPrefixGE(k) && bytes.Equal(it.Key(), k) {
				return len(it.Value()) == 24, nil
			}
			return false, it.Error()
		}, func() { it.Close() }
	}
	return func(k []byte) (bool, error) {
		v, cl, err := p.db.Get(k)
		if errors.Is(err, pebble.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		ok := len(v) == 24
		cl.Close()
		return ok, nil
	}, func() {}
}

func (p *pebbleStore) close() error { return p.db.Close() }

// ---- bbolt ----
var bucket = []byte("idx")

type boltStore struct{ db *bolt.DB }

func openBolt(path string) (*boltStore, error) {
	db, err := bolt.Open(path, 0o600, nil) // defaults: NoSync=false
	if err != nil {
		return nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error { _, e := tx.CreateBucketIfNotExists(bucket); return e })
	return &boltStore{db}, err
}

func (s *boltStore) insertBatch(keys, vals [][]byte) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		for i := range keys {
			if err := b.Put(keys[i], vals[i]); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *boltStore) newReader() (func([]byte) (bool, error), func()) {
	tx, err := s.db.Begin(false)
	if err != nil {
		panic(err)
	}
	b := tx.Bucket(bucket)
	return func(k []byte) (bool, error) { return len(b.Get(k)) == 24, nil }, func() { tx.Rollback() }
}

func (s *boltStore) close() error { return s.db.Close() }

// ---- helpers ----
func diskUsage(path string) (apparent, alloc int64) {
	filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		var st syscall.Stat_t
		if syscall.Stat(p, &st) == nil {
			apparent += st.Size
			alloc += st.Blocks * 512
		}
		return nil
	})
	return
}

func procStatus() string {
	b, _ := os.ReadFile("/proc/self/status")
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		for _, f := range []string{"VmRSS", "VmHWM", "RssAnon", "RssFile"} {
			if strings.HasPrefix(l, f+":") {
				out = append(out, strings.Join(strings.Fields(l), " "))
			}
		}
	}
	return strings.Join(out, ", ")
}

func writeBytes() int64 {
	b, _ := os.ReadFile("/proc/self/io")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "write_bytes:") {
			n, _ := strconv.ParseInt(strings.TrimSpace(l[12:]), 10, 64)
			return n
		}
	}
	return -1
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }

func memReport(tag string) {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	fmt.Printf("MEM %-18s HeapAlloc=%.1fMiB HeapInuse=%.1fMiB Sys=%.1fMiB | %s\n",
		tag, mib(m.HeapAlloc), mib(m.HeapInuse), mib(m.Sys), procStatus())
}

func main() {
	engine := flag.String("engine", "pebble", "pebble | bbolt")
	dir := flag.String("dir", "", "data dir (default: new temp dir under /tmp, removed at end)")
	roundsF := flag.String("rounds", "1000000,1000000", "comma-separated insert round sizes")
	batch := flag.Int("batch", 65536, "keys per durable batch")
	lookups := flag.Int("lookups", 1000000, "lookups per (present|missing) x (1|2 goroutines) test")
	lookupAfter := flag.String("lookup-after", "1", "comma-separated round numbers (1-based) after which to run lookups")
	sortBatch := flag.Bool("sort", false, "sort keys within each batch before insert")
	bloomBits := flag.Int("bloom", 0, "pebble bloom filter bits/key (0 = default: no filter)")
	l6filter := flag.Bool("l6filter", false, "pebble: look up via Iterator.SeekPrefixGE with UseL6Filters (DB.Get never consults L6 filters)")
	cacheMiB := flag.Int64("cache", 64, "pebble block cache MiB")
	settle := flag.Bool("settle", false, "pebble: wait (max 120s) for compaction debt to reach 0 before lookups")
	cpuprof := flag.String("cpuprofile", "", "write CPU profile of lookup phase")
	flag.Parse()

	tmp := *dir
	if tmp == "" {
		var err error
		tmp, err = os.MkdirTemp("/tmp", "idxbench-"+*engine+"-")
		if err != nil {
			panic(err)
		}
		defer os.RemoveAll(tmp)
	}
	var st store
	var dataPath string
	var err error
	switch *engine {
	case "pebble":
		dataPath = filepath.Join(tmp, "pebble")
		var ps *pebbleStore
		ps, err = openPebble(dataPath, *bloomBits, *cacheMiB)
		if err == nil {
			ps.l6filter = *l6filter
		}
		st = ps
	case "bbolt":
		dataPath = filepath.Join(tmp, "index.db")
		st, err = openBolt(dataPath)
	default:
		err = fmt.Errorf("unknown engine %q", *engine)
	}
	if err != nil {
		panic(err)
	}
	fmt.Printf("engine=%s batch=%d sort=%v bloom=%d dir=%s GOMAXPROCS=%d %s\n",
		*engine, *batch, *sortBatch, *bloomBits, tmp, runtime.GOMAXPROCS(0), runtime.Version())

	lookAfter := map[int]bool{}
	for _, s := range strings.Split(*lookupAfter, ",") {
		if n, e := strconv.Atoi(strings.TrimSpace(s)); e == nil {
			lookAfter[n] = true
		}
	}

	// reusable batch buffers
	kbuf := make([]byte, *batch*32)
	vbuf := make([]byte, *batch*24)
	keys := make([][]byte, *batch)
	vals := make([][]byte, *batch)

	var total uint64
	for ri, rs := range strings.Split(*roundsF, ",") {
		n, _ := strconv.Atoi(strings.TrimSpace(rs))
		round := ri + 1
		wb0 := writeBytes()
		start := time.Now()
		var worst time.Duration
		var last time.Duration
		for done := 0; done < n; {
			m := min(*batch, n-done)
			for j := 0; j < m; j++ {
				id := total + uint64(done+j)
				keys[j] = kbuf[j*32 : j*32+32]
				vals[j] = vbuf[j*24 : j*24+24]
				key(keys[j], id, domPresent)
				val(vals[j], id)
			}
			if *sortBatch {
				sort.Slice(keys[:m], func(a, b int) bool { return bytes.Compare(keys[a], keys[b]) < 0 })
			}
			bs := time.Now()
			if err := st.insertBatch(keys[:m], vals[:m]); err != nil {
				panic(err)
			}
			last = time.Since(bs)
			worst = max(worst, last)
			done += m
		}
		el := time.Since(start)
		total += uint64(n)
		app, alloc := diskUsage(dataPath)
		wb := writeBytes() - wb0
		fmt.Printf("INSERT round=%d n=%d total=%d time=%.2fs rate=%.0f keys/s worstBatch=%.0fms lastBatch=%.0fms disk=%.1fMiB (alloc %.1fMiB, %.1f B/key) devWrites=%.0fMiB (%.0f B/inserted key)\n",
			round, n, total, el.Seconds(), float64(n)/el.Seconds(), float64(worst.Milliseconds()), float64(last.Milliseconds()),
			mib(uint64(app)), mib(uint64(alloc)), float64(alloc)/float64(total), mib(uint64(wb)), float64(wb)/float64(n))
		memReport(fmt.Sprintf("after-round-%d", round))

		if p, ok := st.(*pebbleStore); ok {
			m := p.db.Metrics()
			fmt.Printf("PEBBLE after-round-%d readAmp=%d L0files=%d debt=%.1fMiB compactionsInProgress=%d\n",
				round, m.ReadAmp(), m.Levels[0].TablesCount, mib(m.Compact.EstimatedDebt), m.Compact.NumInProgress)
			if *settle && lookAfter[round] {
				t0 := time.Now()
				for time.Since(t0) < 120*time.Second {
					m = p.db.Metrics()
					if m.Compact.EstimatedDebt == 0 && m.Compact.NumInProgress == 0 {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				fmt.Printf("PEBBLE settled in %.1fs readAmp=%d L0files=%d debt=%.1fMiB\n",
					time.Since(t0).Seconds(), m.ReadAmp(), m.Levels[0].TablesCount, mib(m.Compact.EstimatedDebt))
			}
		}
		if lookAfter[round] {
			if *cpuprof != "" {
				f, _ := os.Create(*cpuprof)
				pprof.StartCPUProfile(f)
			}
			for _, kind := range []string{"missing", "present"} {
				for _, g := range []int{1, 2} {
					var wg sync.WaitGroup
					per := *lookups / g
					found := make([]int, g)
					t0 := time.Now()
					for w := 0; w < g; w++ {
						wg.Add(1)
						go func(w int) {
							defer wg.Done()
							get, done := st.newReader()
							defer done()
							r := rand.New(rand.NewPCG(uint64(round*100+g*10+w), 42))
							k := make([]byte, 32)
							for i := 0; i < per; i++ {
								if kind == "present" {
									key(k, r.Uint64N(total), domPresent)
								} else {
									key(k, r.Uint64(), domMissing)
								}
								ok, err := get(k)
								if err != nil {
									panic(err)
								}
								if ok {
									found[w]++
								}
							}
						}(w)
					}
					wg.Wait()
					el := time.Since(t0)
					f := 0
					for _, x := range found {
						f += x
					}
					fmt.Printf("LOOKUP round=%d keys=%d %-7s goroutines=%d ops=%d wall=%.2fs %.0f ns/op(wall, aggregate) found=%d\n",
						round, total, kind, g, per*g, el.Seconds(), float64(el.Nanoseconds())/float64(per*g), f)
				}
			}
			if *cpuprof != "" {
				pprof.StopCPUProfile()
			}
			memReport(fmt.Sprintf("after-lookups-%d", round))
		}
	}
	if p, ok := st.(*pebbleStore); ok {
		m := p.db.Metrics()
		fmt.Printf("PEBBLE levels:\n%s\n", m.String())
	}
	if b, ok := st.(*boltStore); ok {
		b.db.View(func(tx *bolt.Tx) error {
			s := tx.Bucket(bucket).Stats()
			fmt.Printf("BBOLT depth=%d leafPages=%d branchPages=%d leafInuse=%.1fMiB leafAlloc=%.1fMiB fill=%.0f%% freePages=%d\n",
				s.Depth, s.LeafPageN, s.BranchPageN, mib(uint64(s.LeafInuse)), mib(uint64(s.LeafAlloc)),
				100*float64(s.LeafInuse)/float64(s.LeafAlloc), b.db.Stats().FreePageN)
			return nil
		})
	}
	if err := st.close(); err != nil {
		panic(err)
	}
	memReport("final-after-close")
}
