package mesh

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	frames := []struct {
		typ     FrameType
		payload []byte
	}{
		{1, nil},
		{2, []byte("x")},
		{3, bytes.Repeat([]byte{7}, smallFrame)},
		{4, bytes.Repeat([]byte{8}, smallFrame+1)},
		{5, bytes.Repeat([]byte{9}, 1<<20)},
	}
	for _, f := range frames {
		if err := WriteFrame(&buf, f.typ, f.payload); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	fr := NewFrameReader(&buf, 1<<20)
	for i, f := range frames {
		typ, p, err := fr.Next()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if typ != f.typ || !bytes.Equal(p, f.payload) {
			t.Errorf("frame %d: got type %d, %d bytes; want type %d, %d bytes", i, typ, len(p), f.typ, len(f.payload))
		}
	}
	if _, _, err := fr.Next(); err != io.EOF {
		t.Errorf("after the last frame: err = %v, want io.EOF", err)
	}
}

func TestFrameReaderErrors(t *testing.T) {
	t.Parallel()
	frame := func(typ FrameType, n int) []byte {
		var b bytes.Buffer
		WriteFrame(&b, typ, bytes.Repeat([]byte{1}, n))
		return b.Bytes()
	}
	cases := []struct {
		name  string
		in    []byte
		max   int
		want  error
		field string
	}{
		{"empty", nil, 10, io.EOF, ""},
		{"truncated header", frame(1, 5)[:3], 10, io.ErrUnexpectedEOF, ""},
		{"truncated payload", frame(1, 5)[:7], 10, io.ErrUnexpectedEOF, ""},
		{"header only", frame(1, 5)[:5], 10, io.ErrUnexpectedEOF, ""},
		{"over the limit", frame(1, 11), 10, nil, "length"},
		{"huge length", []byte{1, 0xff, 0xff, 0xff, 0xff}, 10, nil, "length"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := NewFrameReader(bytes.NewReader(tc.in), tc.max).Next()
			if tc.field != "" {
				var fe *FrameError
				if !errors.As(err, &fe) || fe.Field != tc.field {
					t.Fatalf("err = %v, want *FrameError on %s", err, tc.field)
				}
				return
			}
			if err != tc.want {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	if err := WriteFrame(io.Discard, 1, make([]byte, MaxFramePayload+1)); err == nil {
		t.Error("WriteFrame accepted a payload over MaxFramePayload")
	}
}

func TestStreamHeader(t *testing.T) {
	t.Parallel()
	for _, k := range []StreamKind{KindRaft, KindBlocks, KindIngest, KindAdmin} {
		var b bytes.Buffer
		if err := WriteStreamHeader(&b, k); err != nil {
			t.Fatal(err)
		}
		if b.Len() != HeaderLen {
			t.Fatalf("header is %d bytes, want %d", b.Len(), HeaderLen)
		}
		got, err := ReadStreamHeader(&b)
		if err != nil || got != k {
			t.Errorf("read header of %v: got %v, %v", k, got, err)
		}
	}
	cases := []struct {
		name  string
		in    string
		field string
		want  error
	}{
		{"magic", "LBX\x01\x01", "magic", nil},
		{"version", "LBS\x02\x01", "version", nil},
		{"kind 0", "LBS\x01\x00", "kind", nil},
		{"kind 5", "LBS\x01\x05", "kind", nil},
		{"http", "GET /", "magic", nil},
		{"short", "LBS", "", io.ErrUnexpectedEOF},
		{"empty", "", "", io.EOF},
	}
	for _, tc := range cases {
		_, err := ReadStreamHeader(strings.NewReader(tc.in))
		if tc.field != "" {
			var he *HeaderError
			if !errors.As(err, &he) || he.Field != tc.field {
				t.Errorf("%s: err = %v, want *HeaderError on %s", tc.name, err, tc.field)
			}
			continue
		}
		if err != tc.want {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestErrorFrame(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	long := strings.Repeat("é", MaxErrorMessage) // 2 bytes each: truncated
	if err := WriteError(&b, CodeNotLeader, long); err != nil {
		t.Fatal(err)
	}
	typ, p, err := NewFrameReader(&b, 4096).Next()
	if err != nil || typ != FrameTypeError {
		t.Fatalf("next: type %d, %v", typ, err)
	}
	re, err := ParseError(p)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if re.Code != CodeNotLeader || len(re.Message) > MaxErrorMessage || !strings.HasPrefix(long, re.Message) {
		t.Errorf("got code %v, %d-byte message", re.Code, len(re.Message))
	}
	if !errors.Is(re, ErrNotLeader) || errors.Is(re, ErrRefused) {
		t.Errorf("errors.Is mapping wrong for %v", re)
	}
	if !errors.Is(&RemoteError{Code: CodeForbidden}, ErrRefused) || !IsRetryable(&RemoteError{Code: CodeUnavailable}) {
		t.Error("forbidden should be ErrRefused and unavailable retryable")
	}
	for _, bad := range [][]byte{nil, {0}, append([]byte{0, 1}, 0xff, 0xfe)} {
		if _, err := ParseError(bad); err == nil {
			t.Errorf("ParseError(%x) accepted", bad)
		}
	}
}

func FuzzFrameReader(f *testing.F) {
	var seed bytes.Buffer
	WriteFrame(&seed, 1, []byte("hello"))
	WriteFrame(&seed, 2, nil)
	WriteError(&seed, CodeNotFound, "gone")
	f.Add(seed.Bytes(), 64)
	f.Add([]byte{1, 0, 0, 0, 3, 'a'}, 10)
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff}, 1<<20)
	f.Fuzz(func(t *testing.T, in []byte, max int) {
		if max < 0 || max > 1<<20 {
			max = 1 << 10
		}
		fr := NewFrameReader(bytes.NewReader(in), max)
		var out bytes.Buffer
		var frames int
		for {
			typ, p, err := fr.Next()
			if err != nil {
				var fe *FrameError
				if err != io.EOF && err != io.ErrUnexpectedEOF && !errors.As(err, &fe) {
					t.Fatalf("unexpected error type %T: %v", err, err)
				}
				break
			}
			if len(p) > max || cap(fr.buf) > max {
				t.Fatalf("payload %d / buffer %d over the limit %d", len(p), cap(fr.buf), max)
			}
			if typ == FrameTypeError {
				ParseError(p)
			}
			WriteFrame(&out, typ, p)
			frames++
		}
		// What was read re-encodes to a prefix of the input.
		if !bytes.HasPrefix(in, out.Bytes()) {
			t.Fatalf("%d frames re-encode to bytes that are not a prefix of the input", frames)
		}
	})
}

func FuzzStreamHeader(f *testing.F) {
	f.Add([]byte("LBS\x01\x02"))
	f.Add([]byte("LBS\x01\x09"))
	f.Add([]byte("GET / HTTP/1.1"))
	f.Fuzz(func(t *testing.T, in []byte) {
		k, err := ReadStreamHeader(bytes.NewReader(in))
		if err != nil {
			var he *HeaderError
			if err != io.EOF && err != io.ErrUnexpectedEOF && !errors.As(err, &he) {
				t.Fatalf("unexpected error type %T: %v", err, err)
			}
			return
		}
		if !k.Valid() {
			t.Fatalf("accepted invalid kind %d", k)
		}
		if got := AppendStreamHeader(nil, k); !bytes.Equal(got, in[:HeaderLen]) {
			t.Fatalf("re-encoded %x, read %x", got, in[:HeaderLen])
		}
	})
}

func FuzzMeta(f *testing.F) {
	for _, m := range []Meta{
		{Site: "dc1", QUIC: "10.0.0.1:7946", Admin: "127.0.0.1:7948", Role: RoleNode, Raft: true},
		{Site: "dc3", QUIC: "[::1]:1", Role: RoleWitness},
	} {
		b, _ := m.MarshalBinary()
		f.Add(b)
	}
	f.Add([]byte{2, 0xff, 1, 0, 0, 0, 9, 9})
	f.Fuzz(func(t *testing.T, in []byte) {
		m, leaving, err := decodeMeta(in)
		if err != nil {
			var me *MetaError
			if !errors.As(err, &me) {
				t.Fatalf("unexpected error type %T: %v", err, err)
			}
			return
		}
		b, err := m.encode(leaving)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", m, err)
		}
		if len(b) > MaxMetaSize {
			t.Fatalf("encoding is %d bytes", len(b))
		}
		m2, leaving2, err := decodeMeta(b)
		if err != nil || m2 != m || leaving2 != leaving {
			t.Fatalf("round trip: %+v %v -> %+v %v (%v)", m, leaving, m2, leaving2, err)
		}
	})
}

func FuzzParseError(f *testing.F) {
	f.Add([]byte{0, 4, 'n', 'o'})
	// One seed per code, so that the corpus covers every row of the table.
	for c := range CodeWrongNode + 2 {
		var b bytes.Buffer
		WriteError(&b, c, "refused: "+c.String())
		f.Add(b.Bytes()[FrameHeaderLen:])
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		re, err := ParseError(in)
		if err != nil {
			return
		}
		// Every decoded code classifies, known or not.
		_ = IsRetryable(re)
		if !re.Code.Known() && !re.Code.Permanent() {
			t.Fatalf("unknown code %d is retryable", re.Code)
		}
		var b bytes.Buffer
		if err := WriteError(&b, re.Code, re.Message); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b.Bytes()[FrameHeaderLen:], in) {
			t.Fatalf("round trip differs")
		}
	})
}

func TestMetaErrors(t *testing.T) {
	t.Parallel()
	if _, err := (Meta{Site: "dc1", Role: "boss"}).MarshalBinary(); err == nil {
		t.Error("unknown role encoded")
	}
	if _, err := (Meta{Site: Site(strings.Repeat("s", 256)), Role: RoleNode}).MarshalBinary(); err == nil {
		t.Error("256-byte site encoded")
	}
	good, _ := Meta{Site: "dc1", QUIC: "q", Role: RoleNode}.MarshalBinary()
	cases := map[string][]byte{
		"empty":        nil,
		"version 0":    append([]byte{0}, good[1:]...),
		"unknown flag": append([]byte{1, 0x80}, good[2:]...),
		"role 9":       append([]byte{1, 0, 9}, good[3:]...),
		"truncated":    good[:len(good)-1],
		"trailing":     append(append([]byte(nil), good...), 0),
	}
	for name, in := range cases {
		var m Meta
		if err := m.UnmarshalBinary(in); err == nil {
			t.Errorf("%s: decoded %+v", name, m)
		}
	}
	// A later version may append fields.
	var m Meta
	if err := m.UnmarshalBinary(append(append([]byte{2}, good[1:]...), 1, 2, 3)); err != nil || m.Site != "dc1" {
		t.Errorf("version 2 with extra fields: %+v, %v", m, err)
	}
}
