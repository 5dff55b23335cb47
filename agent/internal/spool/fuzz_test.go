package spool

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzDecodeRecord: no panic on any input, and a record that decodes
// encodes back to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(appendBlockRecord(nil, 1, 0, "vol", 7, content(1, 512)))
	f.Add(appendMarkRecord(nil, 9, 8, time.Unix(1, 2)))
	f.Add(make([]byte, recHeaderSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, h, err := decodeRecord(b)
		if err != nil {
			return
		}
		var again []byte
		switch r.Kind {
		case KindBlock:
			again = appendBlockRecord(nil, r.Seq, h.durable, r.Volume, r.Block, r.Data)
		case KindMark:
			again = appendMarkRecord(nil, r.Seq, h.durable, r.Time)
		}
		if !bytes.Equal(again, b[:len(again)]) || len(again) != recHeaderSize+h.length {
			t.Fatalf("record %d does not encode back to its bytes", r.Seq)
		}
	})
}

// FuzzRecover: a spool whose only segment holds arbitrary bytes after a
// valid header (or arbitrary bytes entirely) opens or fails with an error,
// never panics; what it keeps reads back.
func FuzzRecover(f *testing.F) {
	var seg []byte
	seg = appendBlockRecord(seg, 1, 0, "v", 0, content(1, 512))
	seg = appendMarkRecord(seg, 2, 1, time.Unix(3, 0))
	seg = appendBlockRecord(seg, 3, 2, "v", 1, content(2, 512))
	f.Add(true, seg)
	f.Add(true, seg[:len(seg)-9])
	f.Add(false, encodeSegHeader(1))
	f.Add(true, append(seg[:40:40], seg[50:]...))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f.Fuzz(func(t *testing.T, header bool, b []byte) {
		dir := t.TempDir()
		data := b
		if header {
			data = append(encodeSegHeader(1), b...)
		}
		if err := os.WriteFile(filepath.Join(dir, segName(1)), data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(dir, Options{Logger: log})
		if err != nil {
			var ce *CorruptError
			if !errors.As(err, &ce) {
				t.Fatalf("open: %v: not a CorruptError", err)
			}
			return
		}
		defer s.Close()
		if s.Last() > 0 {
			recs, err := s.Read(t.Context(), 0, 1<<20)
			if err != nil || uint64(len(recs)) != s.Last() {
				t.Fatalf("read %d records of %d: %v", len(recs), s.Last(), err)
			}
		}
		if _, err := s.Mark(time.Unix(0, 0)); err != nil {
			t.Fatalf("mark after recovery: %v", err)
		}
	})
}

// FuzzDecodeDirty: no panic, and allocation bounded by the input (a
// snapshot is only allocated when its bytes are present).
func FuzzDecodeDirty(f *testing.F) {
	b := &Bitmap{volume: "vol", blocks: 100, bits: make([]uint64, 2)}
	b.setRange(3, 70, true)
	file := b.snapshotFile()
	file = appendDirtyRecord(file, opClear, rangePayloadOf(10, 5))
	f.Add(file)
	f.Add(file[:len(file)-3])
	f.Add(encodeDirtyHeader("x", 1<<36))
	f.Fuzz(func(t *testing.T, data []byte) {
		bm, cut, err := decodeDirty("f", data)
		if err != nil {
			return
		}
		if int64(len(bm.bits))*8 > int64(len(data)) {
			t.Fatalf("bitmap of %d words from %d bytes", len(bm.bits), len(data))
		}
		if cut > int64(len(data)) {
			t.Fatalf("cut at %d past the end %d", cut, len(data))
		}
	})
}
