package blockframe

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/klauspost/compress/s2"

	"github.com/lifeboat-dr/lifeboat/mesh"
)

func randomBlock(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 1))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func textBlock(n int) []byte {
	var sb strings.Builder
	words := []string{"invoice ", "customer ", "total ", "2026-12-07 ", "EUR ", "paid\n", "order "}
	r := rand.New(rand.NewPCG(7, 7))
	for sb.Len() < n {
		sb.WriteString(words[r.IntN(len(words))])
	}
	return []byte(sb.String()[:n])
}

func TestIncompressible(t *testing.T) {
	t.Parallel()
	random, text := randomBlock(64<<10, 1), textBlock(64<<10)
	s2text := s2.Encode(nil, text)
	s2random := s2.Encode(nil, random)
	for _, c := range []struct {
		name string
		rec  mesh.BlockRecord
		data []byte
		want bool
	}{
		{"random sent raw", mesh.BlockRecord{Codec: mesh.CodecRaw}, random, true},
		{"text sent raw", mesh.BlockRecord{Codec: mesh.CodecRaw}, text, false},
		{"zeros sent raw", mesh.BlockRecord{Codec: mesh.CodecRaw}, make([]byte, 64<<10), false},
		{"text sent s2", mesh.BlockRecord{Codec: mesh.CodecS2, Data: s2text}, text, false},
		{"random sent s2", mesh.BlockRecord{Codec: mesh.CodecS2, Data: s2random}, random, true},
		{"tiny", mesh.BlockRecord{Codec: mesh.CodecRaw}, random[:10], false},
	} {
		if got := Incompressible(c.rec, c.data); got != c.want {
			t.Errorf("%s: Incompressible = %v, want %v", c.name, got, c.want)
		}
	}
}

// BenchmarkIncompressible measures the node's check of a 64 KiB block
// sent raw: what the ransomware signal costs ingest (issue 16).
func BenchmarkIncompressible(b *testing.B) {
	for _, c := range []struct {
		name string
		data []byte
	}{{"random", randomBlock(64<<10, 2)}, {"text", textBlock(64 << 10)}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.data)))
			for b.Loop() {
				Incompressible(mesh.BlockRecord{Codec: mesh.CodecRaw}, c.data)
			}
		})
	}
}
