package blockstore

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

func FuzzDecodeFrame(f *testing.F) {
	entries := []frameEntry{{id: ID{1}, len: 3}, {id: ID{2}, len: 2}}
	f.Add(encodeFrame(nil, kindBlock, codecRaw, entries, 5, []byte("abcde")))
	f.Add(encodeFrame(nil, kindPage, codecZstd, entries[:1], 3, []byte{0x28, 0xb5, 0x2f, 0xfd}))
	f.Add(encodeFrame(nil, kindBlock, codecRaw|codecSealed, entries, 5, make([]byte, 5+sealOver)))
	f.Add(encodeFrame(nil, kindPoint, codecZstd|codecSealed, entries[:1], 3, make([]byte, 40)))
	f.Add([]byte("LBF1"))
	f.Fuzz(func(t *testing.T, rec []byte) {
		fr, err := decodeFrame(rec)
		if err != nil {
			return
		}
		// A record that decodes re-encodes to the same bytes.
		if got := encodeFrame(nil, fr.kind, fr.codec, fr.entries, fr.plain, fr.payload); !bytes.Equal(got, rec) {
			t.Fatalf("round trip differs")
		}
	})
}

func FuzzDecodePage(f *testing.F) {
	f.Add(encodePage(0, []ID{{1}, {}, {3}}))
	f.Add(encodePage(2, []ID{{9}}))
	f.Add([]byte("LBM1\x01\x01\x00\x01"))
	f.Fuzz(func(t *testing.T, p []byte) {
		level, ids, err := decodePage(p)
		if err != nil {
			return
		}
		if got := encodePage(level, ids); !bytes.Equal(got, p) {
			t.Fatalf("round trip differs")
		}
	})
}

func FuzzDecodeLocation(f *testing.F) {
	f.Add(encodeLocation(location{pack: 3, offset: 16, recLen: 100, slot: 2, plainOff: 8192, plainLen: 4096}))
	f.Add([]byte{1, 0, 16, 30, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := decodeLocation(b)
		if err != nil {
			return
		}
		if got := encodeLocation(l); !bytes.Equal(got, b) {
			t.Fatalf("round trip differs")
		}
	})
}

func FuzzDecodePackHeader(f *testing.F) {
	f.Add(encodePackHeader(7))
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := decodePackHeader(b)
		if err != nil {
			return
		}
		if got := encodePackHeader(id); !bytes.Equal(got, b[:packHeaderSize]) {
			t.Fatalf("round trip differs")
		}
	})
}

func FuzzDecodePoint(f *testing.F) {
	p := Point{ID: "0123456789abcdef", Group: "vol", Time: time.Unix(1e9, 0).UTC(),
		Volumes: []VolumeState{{Name: "vol", Root: ID{1}, Size: 1 << 20, BlockSize: 4096, Used: 3}}}
	b, _ := json.Marshal(p)
	f.Add(b)
	f.Add([]byte(`{"id":"x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := decodePoint(b)
		if err != nil {
			return
		}
		again, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodePoint(again); err != nil {
			t.Fatalf("re-encoded point does not decode: %v", err)
		}
	})
}

// FuzzScanPack feeds arbitrary bytes as a pack to the scan behind
// RebuildIndex, plain and encrypted: it must never panic, and every object
// it hands out must be sound (its location inside the data, blocks hashing
// to their ID).
func FuzzScanPack(f *testing.F) {
	h, _ := newHasher(Key{1})
	block := []byte("abcdefgh")
	entries := []frameEntry{{id: h.sum(block), len: uint32(len(block))}}
	good := append(encodePackHeader(0), encodeFrame(nil, kindBlock, codecRaw, entries, uint32(len(block)), block)...)
	f.Add(good, false)
	f.Add(append(bytes.Clone(good), good[packHeaderSize:]...), false)
	seal, _ := newSealer([32]byte{2})
	f.Add(append(encodePackHeader(0), encodeSealedFrame(nil, seal, kindBlock, codecRaw, entries, uint32(len(block)), block)...), true)
	f.Add(encodePackHeader(0), false)
	f.Add([]byte("LBF1LBF1LBF1LBF1LBF1"), true)
	dec, _ := zstd.NewReader(nil, zstd.WithDecoderMaxMemory(maxFramePlain))
	f.Fuzz(func(t *testing.T, pack []byte, encrypted bool) {
		codec := &frameCodec{dec: dec}
		if encrypted {
			codec.seal = seal
		}
		rb := &rebuilder{h: h, codec: codec, rep: &RebuildReport{}}
		end, err := rb.scanPack(t.Context(), 0, "pack", pack, func(k kind, id ID, loc location, body []byte) {
			if loc.offset+uint64(loc.recLen) > uint64(len(pack)) {
				t.Fatalf("object past the end of the pack: %+v", loc)
			}
			if k != kindPoint && h.sum(body) != id {
				t.Fatalf("unsound block handed out")
			}
		})
		if err != nil || end > len(pack) && len(pack) >= packHeaderSize {
			t.Fatalf("end %d of %d: %v", end, len(pack), err)
		}
	})
}
