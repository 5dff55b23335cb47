package blockstore

import (
	"encoding/binary"
	"math/bits"
	"sync/atomic"
)

// liveFilter is the Bloom filter of live object IDs that one GC run marks
// into (gc.go). It has no false negatives: an ID added is always reported
// present. A false positive only leaves a dead object for the next run,
// whose seed differs. Add and has are safe for concurrent use without a
// lock (atomic words), so that writers note dedup hits cheaply.
type liveFilter struct {
	words []atomic.Uint64
	mask  uint64 // number of bits - 1 (a power of two)
	k     int
	seed  uint64
}

// filterBitsPerObject and filterHashes give about a 1% false-positive rate
// at the sized number of objects.
const (
	filterBitsPerObject = 10
	filterHashes        = 7
	filterMinBits       = 1 << 16
	filterMaxBits       = 1 << 36 // 8 GiB: far beyond any store we size for
)

// newLiveFilter sizes a filter for n objects.
func newLiveFilter(n int64, seed uint64) *liveFilter {
	want := uint64(max(n, 1)) * filterBitsPerObject
	m := uint64(filterMinBits)
	for m < want && m < filterMaxBits {
		m <<= 1
	}
	return &liveFilter{words: make([]atomic.Uint64, m/64), mask: m - 1, k: filterHashes, seed: seed}
}

// hashes returns the two hashes of id that double hashing combines. IDs are
// keyed BLAKE3 output, so their bytes are already uniform; the seed makes
// each run's false positives different.
func (f *liveFilter) hashes(id ID) (uint64, uint64) {
	a := mix64(binary.LittleEndian.Uint64(id[0:8]) ^ f.seed)
	b := mix64(binary.LittleEndian.Uint64(id[8:16]) ^ bits.RotateLeft64(f.seed, 32))
	return a, b | 1
}

// add records id as live.
func (f *liveFilter) add(id ID) {
	a, b := f.hashes(id)
	for i := 0; i < f.k; i++ {
		bit := (a + uint64(i)*b) & f.mask
		w := &f.words[bit/64]
		if m := uint64(1) << (bit % 64); w.Load()&m == 0 {
			w.Or(m)
		}
	}
}

// has reports whether id may have been added.
func (f *liveFilter) has(id ID) bool {
	a, b := f.hashes(id)
	for i := 0; i < f.k; i++ {
		bit := (a + uint64(i)*b) & f.mask
		if f.words[bit/64].Load()&(uint64(1)<<(bit%64)) == 0 {
			return false
		}
	}
	return true
}

// bytes is the filter's memory.
func (f *liveFilter) bytes() int64 { return int64(len(f.words)) * 8 }

// mix64 is splitmix64's finalizer.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}
