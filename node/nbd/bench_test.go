package nbd

import (
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"testing"
)

// BenchmarkSequentialRead reads an in-memory export 1 MiB at a time, one
// request in flight, over TCP on 127.0.0.1: the server's per-request cost
// plus a loopback copy. "writable" goes through the overlay's bitmap
// (with nothing written), "overlay" reads blocks that were all written.
func BenchmarkSequentialRead(b *testing.B) {
	const size, chunk = 64 << 20, 1 << 20
	data := randData(size, 30)
	for _, tc := range []struct {
		name     string
		writable bool
		dirty    bool
	}{
		{"read-only", false, false},
		{"writable", true, false},
		{"overlay", true, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			_, addr := startServer(b, Export{Size: size, Data: bytes.NewReader(data), Writable: tc.writable, Log: slog.New(slog.DiscardHandler)})
			cl := connect(b, addr, "")
			if tc.dirty {
				for off := 0; off < size; off += chunk {
					cl.write(uint64(off), data[off:off+chunk])
				}
			}
			buf := make([]byte, chunk)
			var hdr [16]byte
			off := uint64(0)
			b.SetBytes(chunk)
			b.ResetTimer()
			for b.Loop() {
				cookie := cl.request(cmdRead, 0, off, chunk, nil)
				if _, err := io.ReadFull(cl.r, hdr[:]); err != nil {
					b.Fatal(err)
				}
				if binary.BigEndian.Uint32(hdr[4:]) != 0 || binary.BigEndian.Uint64(hdr[8:]) != cookie {
					b.Fatalf("reply %x", hdr)
				}
				if _, err := io.ReadFull(cl.r, buf); err != nil {
					b.Fatal(err)
				}
				off = (off + chunk) % size
			}
			b.StopTimer()
			if !bytes.Equal(buf, data[(off+size-chunk)%size:][:chunk]) {
				b.Fatal("last chunk differs")
			}
			cl.disc()
		})
	}
}
