package standby

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
)

func fuzzPoint() blockstore.Point {
	var root blockstore.ID
	root[3] = 7
	return blockstore.Point{ID: "0123456789abcdef", Name: "agent/12", Group: "erp", Time: time.Unix(1700000000, 5).UTC(),
		Volumes: []blockstore.VolumeState{
			{Name: "erp/db", Root: root, Size: 1 << 20, BlockSize: 4096, Used: 3},
			{Name: "erp/logs", Size: 5000, BlockSize: 65536},
		}}
}

// FuzzDecodeRecord: no panic on any input, and a record that decodes
// encodes back to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(appendRecord(nil, record{typ: recWrite, file: 2, off: 8192, n: 5, payload: []byte("hello")}))
	f.Add(appendRecord(nil, record{typ: recZero, file: 1, off: 4096, n: 1 << 20}))
	f.Add(appendRecord(nil, record{typ: recTruncate, file: 0, off: 12345}))
	f.Add(appendRecord(nil, record{typ: recReplace, file: 3}))
	f.Add(appendRecord(nil, record{typ: recCommit, n: commitLen, payload: make([]byte, commitLen)}))
	bg := encodeBegin("", []string{"db.img"}, fuzzPoint())
	f.Add(appendRecord(nil, record{typ: recBegin, n: uint32(len(bg)), payload: bg}))
	f.Add(make([]byte, recHeaderSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, n, err := decodeRecord(b)
		if err != nil {
			return
		}
		if again := appendRecord(nil, r); !bytes.Equal(again, b[:n]) {
			t.Fatalf("record type %d does not encode back to its bytes", r.typ)
		}
		if r.typ == recBegin {
			if _, p, err := decodeBegin(r.payload); err == nil {
				if err := checkPoint(p); err != nil {
					t.Fatalf("begin record decoded to a point that fails its check: %v", err)
				}
			}
		}
	})
}

// FuzzDecodeState: no panic, and a state that decodes is a valid point
// that encodes and decodes back to itself.
func FuzzDecodeState(f *testing.F) {
	good := encodeState(fuzzPoint())
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte(`{"state":{},"sha256":""}`))
	f.Add([]byte(`{"state":null,"sha256":"44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := decodeState(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		if err := checkPoint(p); err != nil {
			t.Fatalf("decoded state fails its check: %v", err)
		}
		q, err := decodeState(encodeState(p))
		if err != nil {
			t.Fatalf("re-encoded state: %v", err)
		}
		a, _ := json.Marshal(p)
		c, _ := json.Marshal(q)
		if !bytes.Equal(a, c) || !slices.Equal(p.Volumes, q.Volumes) {
			t.Fatalf("state does not round-trip:\n%s\n%s", a, c)
		}
	})
}

// FuzzLoadJournal: a journal file of any bytes is either uncommitted, a
// *CorruptError, or a journal whose every record checks out.
func FuzzLoadJournal(f *testing.F) {
	bg := encodeBegin("", []string{"db.img", "logs.img"}, fuzzPoint())
	var buf bytes.Buffer
	dir := f.TempDir()
	jw, err := createJournal(filepath.Join(dir, "seed"))
	if err != nil {
		f.Fatal(err)
	}
	jw.add(record{typ: recBegin, n: uint32(len(bg)), payload: bg})
	jw.add(record{typ: recTruncate, file: 1, off: 5000})
	jw.add(record{typ: recWrite, file: 0, off: 4096, n: 3, payload: []byte("abc")})
	jw.add(record{typ: recZero, file: 0, off: 8192, n: 4096})
	jw.sync()
	jw.commit()
	jw.close()
	seed, _ := os.ReadFile(filepath.Join(dir, "seed"))
	buf.Write(seed)
	f.Add(buf.Bytes())
	f.Add(buf.Bytes()[:buf.Len()-1])
	f.Add(buf.Bytes()[buf.Len()-commitRecSize:])
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(t.TempDir(), journalName)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		j, err := loadJournal(path)
		var ce *CorruptError
		switch {
		case errors.Is(err, errUncommitted):
		case errors.As(err, &ce):
			if ce.Path != path {
				t.Fatalf("error names %s, want %s", ce.Path, path)
			}
		case err != nil:
			t.Fatalf("unexpected error kind: %v", err)
		default:
			if err := checkPoint(j.target); err != nil {
				t.Fatalf("loaded journal's target fails its check: %v", err)
			}
		}
	})
}
