package mesh

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/lifeboat-dr/lifeboat/blockstore"
)

func testID(b byte) blockstore.ID {
	var id blockstore.ID
	for i := range id {
		id[i] = b + byte(i)
	}
	return id
}

func TestIngestRoundTrip(t *testing.T) {
	t.Parallel()
	ids := []blockstore.ID{testID(1), testID(2), testID(3)}
	got, err := DecodeOffer(AppendOffer(nil, ids))
	if err != nil || !reflect.DeepEqual(got, ids) {
		t.Fatalf("offer round trip: %v %v", got, err)
	}
	want := []bool{true, false, true, true, false, false, false, false, true}
	gw, err := DecodeWant(AppendWant(nil, want), len(want))
	if err != nil || !reflect.DeepEqual(gw, want) {
		t.Fatalf("want round trip: %v %v", gw, err)
	}
	recs := []BlockRecord{{ID: ids[0], Codec: CodecRaw, RawLen: 3, Data: []byte("abc")}, {ID: ids[1], Codec: CodecZstd, RawLen: 65536, Data: []byte("zz")}}
	var b []byte
	for _, r := range recs {
		b = AppendBlock(b, r)
	}
	gr, err := DecodeBlocks(b)
	if err != nil || !reflect.DeepEqual(gr, recs) {
		t.Fatalf("blocks round trip: %+v %v", gr, err)
	}
	cs := []BlockChange{{Block: 0, ID: ids[0]}, {Block: 7, ID: blockstore.ZeroID}, {Block: 1 << 40, ID: ids[2]}}
	name, gc, err := DecodeChanges(AppendChanges(nil, "db-data", cs))
	if err != nil || name != "db-data" || !reflect.DeepEqual(gc, cs) {
		t.Fatalf("changes round trip: %q %+v %v", name, gc, err)
	}
}

func TestIngestRefuses(t *testing.T) {
	t.Parallel()
	hello := func(h Hello) []byte { b, _ := json.Marshal(h); return b }
	good := Hello{Version: 1, Service: "erp", Agent: "a1", Volumes: []HelloVolume{{Name: "data", Size: 1 << 20}}}
	if _, err := DecodeHello(hello(good)); err != nil {
		t.Fatalf("good hello: %v", err)
	}
	unsorted := AppendChanges(nil, "v", []BlockChange{{Block: 5}, {Block: 5}})
	cases := map[string]func() error{
		"hello version": func() error { h := good; h.Version = 2; _, err := DecodeHello(hello(h)); return err },
		"hello service": func() error { h := good; h.Service = "../x"; _, err := DecodeHello(hello(h)); return err },
		"hello no volumes": func() error {
			h := good
			h.Volumes = nil
			_, err := DecodeHello(hello(h))
			return err
		},
		"hello size": func() error {
			h := good
			h.Volumes = []HelloVolume{{Name: "d", Size: -1}}
			_, err := DecodeHello(hello(h))
			return err
		},
		"offer ragged":   func() error { _, err := DecodeOffer(make([]byte, 33)); return err },
		"offer empty":    func() error { _, err := DecodeOffer(nil); return err },
		"offer too many": func() error { _, err := DecodeOffer(make([]byte, 32*(MaxOffer+1))); return err },
		"want short":     func() error { _, err := DecodeWant([]byte{1}, 9); return err },
		"blocks empty":   func() error { _, err := DecodeBlocks(nil); return err },
		"blocks truncated": func() error {
			b := AppendBlock(nil, BlockRecord{Codec: CodecRaw, RawLen: 3, Data: []byte("abc")})
			_, err := DecodeBlocks(b[:len(b)-1])
			return err
		},
		"blocks codec": func() error {
			_, err := DecodeBlocks(AppendBlock(nil, BlockRecord{Codec: 9, RawLen: 1, Data: []byte("a")}))
			return err
		},
		"blocks raw length": func() error {
			_, err := DecodeBlocks(AppendBlock(nil, BlockRecord{Codec: CodecRaw, RawLen: 2, Data: []byte("a")}))
			return err
		},
		"changes unsorted": func() error { _, _, err := DecodeChanges(unsorted); return err },
		"changes bad name": func() error {
			_, _, err := DecodeChanges(AppendChanges(nil, "a/b", []BlockChange{{Block: 1}}))
			return err
		},
		"commit seq 0": func() error { _, err := DecodeCommit([]byte(`{"seq":0}`)); return err },
	}
	for name, f := range cases {
		if err := f(); !errors.Is(err, ErrIngest) {
			t.Errorf("%s: err = %v, want ErrIngest", name, err)
		}
	}
}

func FuzzIngestDecoders(f *testing.F) {
	f.Add(byte(0), AppendOffer(nil, []blockstore.ID{testID(1)}))
	f.Add(byte(1), AppendBlock(nil, BlockRecord{ID: testID(2), Codec: CodecRaw, RawLen: 2, Data: []byte("hi")}))
	f.Add(byte(2), AppendChanges(nil, "vol", []BlockChange{{Block: 3, ID: testID(3)}}))
	f.Add(byte(3), []byte(`{"version":1,"service":"s","agent":"a","volumes":[{"name":"v","size":1}]}`))
	f.Add(byte(4), []byte{0xff, 0x01})
	f.Fuzz(func(t *testing.T, which byte, p []byte) {
		switch which % 6 {
		case 0:
			if ids, err := DecodeOffer(p); err == nil && !bytes.Equal(AppendOffer(nil, ids), p) {
				t.Fatal("offer does not round trip")
			}
		case 1:
			if recs, err := DecodeBlocks(p); err == nil {
				var b []byte
				for _, r := range recs {
					b = AppendBlock(b, r)
				}
				if !bytes.Equal(b, p) {
					t.Fatal("blocks do not round trip")
				}
			}
		case 2:
			if name, cs, err := DecodeChanges(p); err == nil && !bytes.Equal(AppendChanges(nil, name, cs), p) {
				t.Fatal("changes do not round trip")
			}
		case 3:
			DecodeHello(p)
		case 4:
			n := len(p) * 8
			if w, err := DecodeWant(p, n); err == nil && !bytes.Equal(AppendWant(nil, w), p) {
				t.Fatal("want does not round trip")
			}
		case 5:
			DecodeCommit(p)
		}
	})
}
