package workload

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
)

// Random numbers.

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// streamKey derives the key of an independent stream for a seed, a purpose
// and an index (an extent or write number), so that every extent and write
// can be generated on its own.
func streamKey(seed int64, tag, idx uint64) uint64 {
	return splitmix(splitmix(splitmix(uint64(seed))^tag) ^ idx)
}

// rng is a PCG stream with its own bounding, so the numbers it gives depend
// only on the specified PCG output.
type rng struct{ pcg rand.PCG }

func newRNG(seed int64, tag, idx uint64) *rng {
	r := new(rng)
	r.seed(seed, tag, idx)
	return r
}

func (r *rng) seed(seed int64, tag, idx uint64) {
	k := streamKey(seed, tag, idx)
	r.pcg.Seed(k, splitmix(k))
}

func (r *rng) next() uint64 { return r.pcg.Uint64() }

// intn returns a number in [0, n), n > 0 (multiply-high; the bias is tiny).
func (r *rng) intn(n int) int {
	hi, _ := bits.Mul64(r.next(), uint64(n))
	return int(hi)
}

// int63n is intn for int64 bounds.
func (r *rng) int63n(n int64) int64 {
	hi, _ := bits.Mul64(r.next(), uint64(n))
	return int64(hi)
}

// pick returns k with probability w[k]/sum(w).
func (r *rng) pick(w *[numKinds]int) kind {
	sum := 0
	for _, x := range w {
		sum += x
	}
	v := r.intn(sum)
	for k, x := range w {
		if v < x {
			return kind(k)
		}
		v -= x
	}
	return numKinds - 1
}

// fillRandom fills p with incompressible bytes from a PCG stream.
func fillRandom(p []byte, seed int64, tag, idx uint64) {
	var r rng
	r.seed(seed, tag, idx)
	for len(p) >= 32 {
		binary.LittleEndian.PutUint64(p, r.pcg.Uint64())
		binary.LittleEndian.PutUint64(p[8:], r.pcg.Uint64())
		binary.LittleEndian.PutUint64(p[16:], r.pcg.Uint64())
		binary.LittleEndian.PutUint64(p[24:], r.pcg.Uint64())
		p = p[32:]
	}
	for len(p) > 0 {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], r.pcg.Uint64())
		p = p[copy(p, b[:]):]
	}
}
