package nbd

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

func TestNewServerRejects(t *testing.T) {
	data := bytes.NewReader(nil)
	ca := newTestCA(t)
	tlsWith := func(change func(*tls.Config)) *tls.Config {
		cfg := ca.serverTLS(t)
		change(cfg)
		return cfg
	}
	for _, tc := range []struct {
		name string
		exp  Export
		want string
	}{
		{"nil data", Export{Size: 1}, "Data is nil"},
		{"negative size", Export{Data: data, Size: -1}, "negative"},
		{"long name", Export{Data: data, Name: strings.Repeat("x", 4097)}, "at most 4096"},
		{"NUL in name", Export{Data: data, Name: "a\x00b"}, "NUL"},
		{"bad UTF-8", Export{Data: data, Name: "\xff"}, "UTF-8"},
		{"missing overlay dir", Export{Data: data, Writable: true, OverlayDir: "/nonexistent/nbd"}, "create nbd overlay"},
		{"TLS without certificate", Export{Data: data, TLS: tlsWith(func(c *tls.Config) { c.Certificates = nil })}, "no server certificate"},
		{"TLS without client certificates", Export{Data: data, TLS: tlsWith(func(c *tls.Config) { c.ClientAuth = tls.VerifyClientCertIfGiven })}, "want RequireAndVerifyClientCert"},
		{"TLS 1.1", Export{Data: data, TLS: tlsWith(func(c *tls.Config) { c.MinVersion = tls.VersionTLS11 })}, "want TLS 1.2 or later"},
		{"Authorize without TLS", Export{Data: data, Authorize: func(tls.ConnectionState) error { return nil }}, "need TLS"},
		{"OnRefused without TLS", Export{Data: data, OnRefused: func(net.Addr, error) {}}, "need TLS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewServer(tc.exp)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewServer: got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestHandshakeGo(t *testing.T) {
	data := randData(1<<20, 1)
	for _, tc := range []struct {
		name      string
		writable  bool
		wantFlags uint16
	}{
		{"read-only", false, tflagHasFlags | tflagSendFlush | tflagReadOnly | tflagCanMultiConn},
		{"writable", true, tflagHasFlags | tflagSendFlush | tflagSendFUA | tflagSendTrim | tflagSendWriteZeroes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, addr := startServer(t, Export{Name: "vol", Size: int64(len(data)), Data: bytes.NewReader(data), Writable: tc.writable})
			for _, name := range []string{"", "vol"} {
				cl := dial(t, addr)
				cl.clientFlags(3)
				// INFO first (stays in negotiation), then GO.
				info := cl.goExport(optInfo, name, infoBlockSize, infoName)
				rs := cl.goExport(optGo, name, infoBlockSize)
				for _, r := range [][]optReplyMsg{info, rs} {
					if r[len(r)-1].typ != repAck {
						t.Fatalf("name %q: final reply %#x, want ACK", name, r[len(r)-1].typ)
					}
				}
				if cl.size != uint64(len(data)) || cl.flags != tc.wantFlags {
					t.Fatalf("name %q: size %d flags %#x, want %d %#x", name, cl.size, cl.flags, len(data), tc.wantFlags)
				}
				var sawBS, sawName bool
				for _, m := range info {
					if m.typ != repInfo {
						continue
					}
					switch binary.BigEndian.Uint16(m.data) {
					case infoBlockSize:
						sawBS = true
						minB, pref, maxB := binary.BigEndian.Uint32(m.data[2:]), binary.BigEndian.Uint32(m.data[6:]), binary.BigEndian.Uint32(m.data[10:])
						if minB != 1 || pref != 4096 || maxB != 32<<20 {
							t.Fatalf("block sizes %d/%d/%d, want 1/4096/32MiB", minB, pref, maxB)
						}
					case infoName:
						sawName = true
						if got := string(m.data[2:]); got != "vol" {
							t.Fatalf("NBD_INFO_NAME %q, want vol", got)
						}
					}
				}
				if !sawBS || !sawName {
					t.Fatalf("NBD_OPT_INFO replies lack block size (%v) or name (%v)", sawBS, sawName)
				}
				if got := cl.read(100, 5000); !bytes.Equal(got, data[100:5100]) {
					t.Fatal("read after GO returned wrong bytes")
				}
				cl.disc()
			}
		})
	}
}

func TestHandshakeExportName(t *testing.T) {
	data := randData(8192, 2)
	_, addr := startServer(t, Export{Name: "vol", Size: int64(len(data)), Data: bytes.NewReader(data)})
	for _, tc := range []struct {
		name    string
		cflags  uint32
		zeroes  int
		exportN string
	}{
		{"no zeroes", 3, 0, "vol"},
		{"zeroes", 1, 124, ""},
		{"not fixed newstyle", 0, 124, "vol"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := dial(t, addr)
			cl.clientFlags(tc.cflags)
			cl.option(optExportName, []byte(tc.exportN))
			b := make([]byte, 10+tc.zeroes)
			cl.readFull(b)
			if size, flags := binary.BigEndian.Uint64(b), binary.BigEndian.Uint16(b[8:]); size != 8192 || flags&tflagReadOnly == 0 {
				t.Fatalf("export reply size %d flags %#x", size, flags)
			}
			if !bytes.Equal(b[10:], make([]byte, tc.zeroes)) {
				t.Fatal("padding is not zeroes")
			}
			if got := cl.read(0, 8192); !bytes.Equal(got, data) {
				t.Fatal("read returned wrong bytes")
			}
			cl.disc()
		})
	}
}

func TestOptions(t *testing.T) {
	data := randData(4096, 3)
	_, addr := startServer(t, Export{Name: "vol", Size: int64(len(data)), Data: bytes.NewReader(data)})
	goData := func(name string, count uint16, infos ...uint16) []byte {
		d := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
		d = append(d, name...)
		d = binary.BigEndian.AppendUint16(d, count)
		for _, i := range infos {
			d = binary.BigEndian.AppendUint16(d, i)
		}
		return d
	}
	for _, tc := range []struct {
		name string
		opt  uint32
		data []byte
		want []uint32 // reply types, in order
	}{
		{"list", optList, nil, []uint32{repServer, repAck}},
		{"list with data", optList, []byte{1}, []uint32{repErrInvalid}},
		{"structured reply", optStructuredReply, nil, []uint32{repErrUnsup}},
		{"starttls", optStartTLS, nil, []uint32{repErrUnsup}},
		{"list meta context", 9, goData("", 0), []uint32{repErrUnsup}},
		{"unknown option", 0xdead, []byte("x"), []uint32{repErrUnsup}},
		{"info unknown export", optInfo, goData("nope", 0), []uint32{repErrUnknown}},
		{"go unknown export", optGo, goData("nope", 0), []uint32{repErrUnknown}},
		{"info too short", optInfo, []byte{0, 0, 0}, []uint32{repErrInvalid}},
		{"info name too long", optInfo, []byte{0, 0, 1, 0, 0, 0}, []uint32{repErrInvalid}},
		{"info count mismatch", optInfo, goData("", 2, infoBlockSize), []uint32{repErrInvalid}},
		{"info unknown request", optInfo, goData("vol", 1, 77), []uint32{repInfo, repInfo, repAck}},
		{"too big", 0xbeef, make([]byte, 70000), []uint32{repErrTooBig}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := dial(t, addr)
			cl.clientFlags(3)
			cl.option(tc.opt, tc.data)
			for i, want := range tc.want {
				m := cl.optReply()
				if m.opt != tc.opt || m.typ != want {
					t.Fatalf("reply %d: option %d type %#x, want %d %#x", i, m.opt, m.typ, tc.opt, want)
				}
				if m.typ == repServer {
					if n := binary.BigEndian.Uint32(m.data); n != 3 || string(m.data[4:]) != "vol" {
						t.Fatalf("NBD_REP_SERVER %q", m.data)
					}
				}
			}
			// Negotiation goes on after any of these.
			if rs := cl.goExport(optGo, "vol"); rs[len(rs)-1].typ != repAck {
				t.Fatalf("GO after %s: %#x", tc.name, rs[len(rs)-1].typ)
			}
			if got := cl.read(0, 4096); !bytes.Equal(got, data) {
				t.Fatal("read returned wrong bytes")
			}
			cl.disc()
		})
	}
}

func TestHandshakeCloses(t *testing.T) {
	_, addr := startServer(t, Export{Name: "vol", Size: 4096, Data: bytes.NewReader(make([]byte, 4096))})
	for _, tc := range []struct {
		name string
		run  func(cl *testClient)
		ack  bool // an NBD_REP_ACK comes before the close
	}{
		{"unknown client flag", func(cl *testClient) { cl.clientFlags(4) }, false},
		{"bad option magic", func(cl *testClient) {
			cl.clientFlags(3)
			cl.send(make([]byte, 16))
		}, false},
		{"unknown export name", func(cl *testClient) {
			cl.clientFlags(3)
			cl.option(optExportName, []byte("nope"))
		}, false},
		{"abort", func(cl *testClient) {
			cl.clientFlags(3)
			cl.option(optAbort, nil)
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := dial(t, addr)
			tc.run(cl)
			if tc.ack {
				if m := cl.optReply(); m.typ != repAck {
					t.Fatalf("reply %#x, want ACK", m.typ)
				}
			}
			cl.expectClosed()
		})
	}
}

func TestRequestErrors(t *testing.T) {
	const size = 3*4096 + 100
	data := randData(size, 4)
	for _, writable := range []bool{false, true} {
		name := map[bool]string{false: "read-only", true: "writable"}[writable]
		t.Run(name, func(t *testing.T) {
			pt := newFrozen(data)
			_, addr := startServer(t, Export{Size: size, Data: pt, Writable: writable})
			cl := connect(t, addr, "")
			rw := func(ro, w uint32) uint32 {
				if writable {
					return w
				}
				return ro
			}
			for _, tc := range []struct {
				name    string
				typ     uint16
				flags   uint16
				off     uint64
				length  uint32
				payload []byte
				want    uint32
			}{
				{"read past end", cmdRead, 0, size - 10, 11, nil, errInval},
				{"read offset past end", cmdRead, 0, size + 1, 0, nil, errInval},
				{"read offset wraps", cmdRead, 0, 1<<64 - 1, 2, nil, errInval},
				{"read too large", cmdRead, 0, 0, 32<<20 + 1, nil, errInval},
				{"read zero length", cmdRead, 0, size, 0, nil, 0},
				{"read unknown flag", cmdRead, 1 << 9, 0, 1, nil, errInval},
				{"read DF flag", cmdRead, 1 << 2, 0, 1, nil, errInval},
				{"unknown command", 99, 0, 0, 0, nil, errInval},
				{"block status", 7, 0, 0, 4096, nil, errInval},
				{"flush", cmdFlush, 0, 0, 0, nil, 0},
				{"cache", cmdCache, 0, 0, 4096, nil, 0},
				{"cache past end", cmdCache, 0, size, 1, nil, errInval},
				{"write", cmdWrite, 0, 10, 3, []byte{1, 2, 3}, rw(errPerm, 0)},
				{"write FUA", cmdWrite, cmdFlagFUA, 10, 3, []byte{1, 2, 3}, rw(errPerm, 0)},
				{"write past end", cmdWrite, 0, size - 1, 2, []byte{1, 2}, rw(errPerm, errNoSpc)},
				{"write unknown flag", cmdWrite, 1 << 7, 0, 2, []byte{1, 2}, errInval},
				{"write NO_HOLE flag", cmdWrite, cmdFlagNoHole, 0, 2, []byte{1, 2}, errInval},
				{"write too large", cmdWrite, 0, 0, 32<<20 + 1, make([]byte, 32<<20+1), rw(errPerm, errInval)},
				{"trim", cmdTrim, 0, 0, 4096, nil, rw(errPerm, 0)},
				{"trim past end", cmdTrim, 0, 4096, size, nil, rw(errPerm, errInval)},
				{"write zeroes", cmdWriteZeroes, cmdFlagNoHole, 20, 4, nil, rw(errPerm, 0)},
				{"write zeroes past end", cmdWriteZeroes, 0, 0, size + 1, nil, rw(errPerm, errNoSpc)},
				{"write zeroes fast zero", cmdWriteZeroes, 1 << 4, 0, 1, nil, errInval},
			} {
				m := cl.do(tc.typ, tc.flags, tc.off, tc.length, tc.payload)
				if m.errno != tc.want {
					t.Errorf("%s: errno %d, want %d", tc.name, m.errno, tc.want)
				}
				// The connection survives every refusal.
				if got := cl.read(4000, 200); !bytes.Equal(got, data[4000:4200]) {
					t.Fatalf("after %s: read returned wrong bytes", tc.name)
				}
			}
			cl.disc()
			pt.unchanged(t)
		})
	}
}

func TestBadRequestMagicCloses(t *testing.T) {
	_, addr := startServer(t, Export{Size: 4096, Data: bytes.NewReader(make([]byte, 4096))})
	cl := connect(t, addr, "")
	cl.send(make([]byte, 28))
	cl.expectClosed()
}

// model applies the same writes as the server, for comparison.
type model []byte

func (m model) write(off int, p []byte) { copy(m[off:], p) }
func (m model) zero(off, n int)         { clear(m[off : off+n]) }

func TestWritableOverlay(t *testing.T) {
	const size = 40*4096 + 1000 // the last block is short
	data := randData(size, 5)
	pt := newFrozen(data)
	s, addr := startServer(t, Export{Name: "vol", Size: size, Data: pt, Writable: true})
	cl := connect(t, addr, "vol")
	want := model(bytes.Clone(data))
	rng := rand.New(rand.NewPCG(1, 2))
	randRange := func(maxLen int) (int, int) {
		off := rng.IntN(size)
		n := 1 + rng.IntN(min(maxLen, size-off))
		return off, n
	}
	var written int64
	for i := range 300 {
		switch rng.IntN(5) {
		case 0, 1:
			off, n := randRange(3 * 4096)
			p := randData(n, uint64(100+i))
			cl.write(uint64(off), p)
			want.write(off, p)
			written += int64(n)
		case 2:
			off, n := randRange(6 * 4096)
			flags := uint16(0)
			if rng.IntN(2) == 0 {
				flags = cmdFlagNoHole
			}
			if m := cl.do(cmdWriteZeroes, flags, uint64(off), uint32(n), nil); m.errno != 0 {
				t.Fatalf("write zeroes %d at %d: errno %d", n, off, m.errno)
			}
			want.zero(off, n)
		default:
			off, n := randRange(8 * 4096)
			if got := cl.read(uint64(off), uint32(n)); !bytes.Equal(got, want[off:off+n]) {
				t.Fatalf("step %d: read %d at %d differs from the model", i, n, off)
			}
		}
	}
	if got := cl.read(0, size); !bytes.Equal(got, want) {
		t.Fatal("whole image differs from the model")
	}
	// A second connection sees the same overlay.
	cl2 := connect(t, addr, "")
	if got := cl2.read(0, size); !bytes.Equal(got, want) {
		t.Fatal("second connection: image differs from the model")
	}
	cl.disc()
	cl2.disc()
	pt.unchanged(t)
	if st := s.Stats(); st.BytesWritten != written || st.Connections != 2 {
		t.Fatalf("stats %+v: want %d bytes written over 2 connections", st, written)
	}
}

// TestPipelined sends many requests before reading any reply; replies may
// come in any order and are matched by cookie.
func TestPipelined(t *testing.T) {
	const size = 1 << 20
	data := randData(size, 6)
	pt := newFrozen(data)
	_, addr := startServer(t, Export{Size: size, Data: pt, Writable: true})
	cl := connect(t, addr, "")
	want := model(bytes.Clone(data))

	// Unaligned writes to distinct bytes of the same blocks, all in
	// flight at once: none may be lost to another's read-modify-write.
	type op struct {
		off, n int
		read   bool
	}
	ops := map[uint64]op{}
	for i := range 64 {
		off := (i%8)*4096 + (i/8)*500 + 7
		p := bytes.Repeat([]byte{byte(i + 1)}, 300)
		ops[cl.request(cmdWrite, 0, uint64(off), 300, p)] = op{off, 300, false}
		want.write(off, p)
	}
	for range ops {
		m := cl.reply(nil)
		if _, ok := ops[m.cookie]; !ok || m.errno != 0 {
			t.Fatalf("write reply cookie %d errno %d", m.cookie, m.errno)
		}
	}
	ops = map[uint64]op{}
	for i := range 100 {
		off, n := i*9000, 1+i*37
		ops[cl.request(cmdRead, 0, uint64(off), uint32(n), nil)] = op{off, n, true}
	}
	for range len(ops) {
		m := cl.reply(func(c uint64) int { return ops[c].n })
		o, ok := ops[m.cookie]
		if !ok || m.errno != 0 {
			t.Fatalf("read reply cookie %d errno %d", m.cookie, m.errno)
		}
		if !bytes.Equal(m.data, want[o.off:o.off+o.n]) {
			t.Fatalf("read %d at %d differs from the model", o.n, o.off)
		}
		delete(ops, m.cookie)
	}
	cl.disc()
	pt.unchanged(t)
}

func TestOverlayGoneAfterClose(t *testing.T) {
	dir := t.TempDir()
	s, err := NewServer(Export{Size: 1 << 30, Data: bytes.NewReader(nil), Writable: true, OverlayDir: dir, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	// The overlay is unlinked at creation: nothing to leave behind even on
	// a crash.
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("overlay dir holds %d entries, want 0", len(ents))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.ov.f.Stat(); err == nil {
		t.Fatal("overlay file still open after Close")
	}
}

func TestServeStops(t *testing.T) {
	exp := Export{Size: 4096, Data: bytes.NewReader(make([]byte, 4096)), Log: testLogger(t)}
	for _, tc := range []struct {
		name string
		stop func(cancel context.CancelFunc, ln net.Listener)
	}{
		{"context", func(cancel context.CancelFunc, _ net.Listener) { cancel() }},
		{"listener closed", func(_ context.CancelFunc, ln net.Listener) { ln.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewServer(exp)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- s.Serve(ctx, ln) }()
			// One client mid-handshake, one in transmission: both are cut.
			idle := dial(t, ln.Addr().String())
			busy := connect(t, ln.Addr().String(), "")
			busy.read(0, 10)
			tc.stop(cancel, ln)
			if err := <-done; err != nil {
				t.Fatalf("Serve: %v, want nil", err)
			}
			idle.expectClosed()
			busy.expectClosed()
			if st := s.Stats(); st.Active != 0 || st.Connections != 2 {
				t.Fatalf("stats %+v: want 2 connections, none active", st)
			}
		})
	}
}

func TestStats(t *testing.T) {
	data := randData(1<<16, 7)
	start := time.Now()
	s, addr := startServer(t, Export{Size: int64(len(data)), Data: bytes.NewReader(data), Writable: true})
	if st := s.Stats(); !st.FirstRequest.IsZero() || st.Requests != 0 {
		t.Fatalf("stats before any request: %+v", st)
	}
	cl := connect(t, addr, "")
	cl.read(0, 1000)
	first := s.Stats().FirstRequest
	cl.read(5000, 24)
	cl.write(0, make([]byte, 100))
	cl.do(cmdRead, 0, 1<<16, 1, nil) // refused: counted as a request, no bytes
	cl.disc()
	st := s.Stats()
	want := Stats{Connections: 1, Active: 0, Requests: 5, BytesRead: 1024, BytesWritten: 100, FirstRequest: first}
	if st != want {
		t.Fatalf("stats %+v, want %+v", st, want)
	}
	if first.Before(start) || first.After(time.Now()) {
		t.Fatalf("FirstRequest %v outside the test", first)
	}
}

// TestConcurrentConnections reads from many connections at once.
func TestConcurrentConnections(t *testing.T) {
	const size = 1 << 20
	data := randData(size, 8)
	_, addr := startServer(t, Export{Size: size, Data: bytes.NewReader(data)})
	t.Run("group", func(t *testing.T) {
		for i := range 8 {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				t.Parallel()
				cl := connect(t, addr, "")
				for j := range 20 {
					off := (i*131072 + j*4099) % (size - 10000)
					if got := cl.read(uint64(off), 10000); !bytes.Equal(got, data[off:off+10000]) {
						t.Fatalf("read at %d differs", off)
					}
				}
				cl.disc()
			})
		}
	})
}
