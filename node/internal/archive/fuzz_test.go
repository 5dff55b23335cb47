package archive

import (
	"bytes"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
)

func fuzzManifest() Manifest {
	var root blockstore.ID
	root[0] = 9
	return Manifest{Format: formatName, Version: formatVersion, ImageFormat: "raw", Service: "erp",
		Point:   Point{ID: "0123456789abcdef", Name: "nightly", Time: time.Unix(1700000000, 7).UTC()},
		Created: time.Unix(1700000100, 0).UTC(),
		Volumes: []Volume{
			{Name: "erp/db", File: "db.img", Size: 1 << 20, BlockSize: 65536, Root: root, SHA256: sha256Hex([]byte("x"))},
			{Name: "erp/logs", File: "logs.img", Size: 0, BlockSize: 4096, SHA256: sha256Hex(nil)},
		}}
}

// FuzzDecodeManifest: no panic on any input, and a manifest that decodes
// is valid and encodes and decodes back to itself.
func FuzzDecodeManifest(f *testing.F) {
	good := encodeManifest(fuzzManifest())
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(bytes.Replace(good, []byte(`"db.img"`), []byte(`"../db.img"`), 1))
	f.Add([]byte(`{}`))
	f.Add(bytes.Replace(bytes.Replace(bytes.Replace(good, []byte(`"raw"`), []byte(`"qcow2"`), 1), []byte(`db.img`), []byte(`db.qcow2`), 1), []byte(`logs.img`), []byte(`logs.qcow2`), 1))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeManifest(b)
		if err != nil {
			return
		}
		for _, v := range m.Volumes {
			if f, err := fileName(v.Name, imageExts[m.ImageFormat]); err != nil || f != v.File {
				t.Fatalf("decoded volume %q has file %q", v.Name, v.File)
			}
		}
		again, err := decodeManifest(encodeManifest(m))
		if err != nil {
			t.Fatalf("re-encoded manifest: %v", err)
		}
		if !bytes.Equal(encodeManifest(again), encodeManifest(m)) {
			t.Fatal("manifest does not round-trip")
		}
	})
}

// FuzzDecodeSums: no panic; what decodes lists names with 64-digit sums.
func FuzzDecodeSums(f *testing.F) {
	m := fuzzManifest()
	f.Add(encodeSums(m, encodeManifest(m)))
	f.Add([]byte("abc  x\n"))
	f.Add([]byte(sha256Hex(nil) + " *a.img\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		sums, err := decodeSums(b)
		if err != nil {
			return
		}
		for name, sum := range sums {
			if name == "" || len(sum) != 64 || !isLowerHex(sum) {
				t.Fatalf("decoded %q: %q", name, sum)
			}
		}
	})
}
