package nbd

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"testing"
	"time"
)

// A tiny NBD client for the tests: fixed newstyle, simple replies. It
// encodes the wire format independently of the server's code.

type testClient struct {
	t      testing.TB
	c      net.Conn
	r      *bufio.Reader
	size   uint64
	flags  uint16
	cookie uint64
}

type optReplyMsg struct {
	opt, typ uint32
	data     []byte
}

type replyMsg struct {
	errno  uint32
	cookie uint64
	data   []byte
}

// dial connects and reads the greeting; it does not send client flags.
func dial(t testing.TB, addr string) *testClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(time.Minute))
	cl := &testClient{t: t, c: c, r: bufio.NewReader(c)}
	var g [18]byte
	cl.readFull(g[:])
	if got := binary.BigEndian.Uint64(g[0:]); got != 0x4e42444d41474943 {
		t.Fatalf("greeting magic %#x, want NBDMAGIC", got)
	}
	if got := binary.BigEndian.Uint64(g[8:]); got != 0x49484156454F5054 {
		t.Fatalf("greeting option magic %#x, want IHAVEOPT", got)
	}
	if got := binary.BigEndian.Uint16(g[16:]); got != 3 {
		t.Fatalf("handshake flags %#x, want FIXED_NEWSTYLE|NO_ZEROES", got)
	}
	return cl
}

// connect dials, sends client flags FIXED_NEWSTYLE|NO_ZEROES and does
// NBD_OPT_GO for name.
func connect(t testing.TB, addr, name string) *testClient {
	t.Helper()
	cl := dial(t, addr)
	cl.clientFlags(3)
	if rs := cl.goExport(optGo, name); rs[len(rs)-1].typ != repAck {
		t.Fatalf("NBD_OPT_GO %q: final reply %#x, want ACK", name, rs[len(rs)-1].typ)
	}
	return cl
}

func (cl *testClient) readFull(p []byte) {
	cl.t.Helper()
	if _, err := io.ReadFull(cl.r, p); err != nil {
		cl.t.Fatalf("read from server: %v", err)
	}
}

func (cl *testClient) send(p []byte) {
	cl.t.Helper()
	if _, err := cl.c.Write(p); err != nil {
		cl.t.Fatalf("write to server: %v", err)
	}
}

func (cl *testClient) clientFlags(f uint32) {
	cl.t.Helper()
	cl.send(binary.BigEndian.AppendUint32(nil, f))
}

func (cl *testClient) option(opt uint32, data []byte) {
	cl.t.Helper()
	b := binary.BigEndian.AppendUint64(nil, 0x49484156454F5054)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	cl.send(append(b, data...))
}

func (cl *testClient) optReply() optReplyMsg {
	cl.t.Helper()
	var h [20]byte
	cl.readFull(h[:])
	if got := binary.BigEndian.Uint64(h[0:]); got != 0x3e889045565a9 {
		cl.t.Fatalf("option reply magic %#x", got)
	}
	m := optReplyMsg{opt: binary.BigEndian.Uint32(h[8:]), typ: binary.BigEndian.Uint32(h[12:])}
	n := binary.BigEndian.Uint32(h[16:])
	if n > 1<<20 {
		cl.t.Fatalf("option reply of %d bytes", n)
	}
	m.data = make([]byte, n)
	cl.readFull(m.data)
	return m
}

// goExport sends NBD_OPT_INFO or NBD_OPT_GO and returns every reply up to
// the final one; on ACK it records size and flags.
func (cl *testClient) goExport(opt uint32, name string, infos ...uint16) []optReplyMsg {
	cl.t.Helper()
	d := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	d = append(d, name...)
	d = binary.BigEndian.AppendUint16(d, uint16(len(infos)))
	for _, i := range infos {
		d = binary.BigEndian.AppendUint16(d, i)
	}
	cl.option(opt, d)
	var rs []optReplyMsg
	for {
		m := cl.optReply()
		if m.opt != opt {
			cl.t.Fatalf("reply to option %d, want %d", m.opt, opt)
		}
		rs = append(rs, m)
		if m.typ != repInfo {
			break
		}
		if binary.BigEndian.Uint16(m.data) == infoExport {
			cl.size = binary.BigEndian.Uint64(m.data[2:])
			cl.flags = binary.BigEndian.Uint16(m.data[10:])
		}
	}
	return rs
}

// request sends one request and returns its cookie.
func (cl *testClient) request(typ, flags uint16, off uint64, length uint32, payload []byte) uint64 {
	cl.t.Helper()
	cl.cookie++
	b := binary.BigEndian.AppendUint32(nil, 0x25609513)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, cl.cookie)
	b = binary.BigEndian.AppendUint64(b, off)
	b = binary.BigEndian.AppendUint32(b, length)
	cl.send(append(b, payload...))
	return cl.cookie
}

// reply reads one simple reply; dataLen is the payload that follows it on
// success (a READ's length, else 0).
func (cl *testClient) reply(dataLen func(cookie uint64) int) replyMsg {
	cl.t.Helper()
	var h [16]byte
	cl.readFull(h[:])
	if got := binary.BigEndian.Uint32(h[0:]); got != 0x67446698 {
		cl.t.Fatalf("reply magic %#x", got)
	}
	m := replyMsg{errno: binary.BigEndian.Uint32(h[4:]), cookie: binary.BigEndian.Uint64(h[8:])}
	if m.errno == 0 && dataLen != nil {
		m.data = make([]byte, dataLen(m.cookie))
		cl.readFull(m.data)
	}
	return m
}

// do sends one request and waits for its reply.
func (cl *testClient) do(typ, flags uint16, off uint64, length uint32, payload []byte) replyMsg {
	cl.t.Helper()
	cookie := cl.request(typ, flags, off, length, payload)
	m := cl.reply(func(uint64) int {
		if typ == cmdRead {
			return int(length)
		}
		return 0
	})
	if m.cookie != cookie {
		cl.t.Fatalf("reply cookie %d, want %d", m.cookie, cookie)
	}
	return m
}

func (cl *testClient) read(off uint64, n uint32) []byte {
	cl.t.Helper()
	m := cl.do(cmdRead, 0, off, n, nil)
	if m.errno != 0 {
		cl.t.Fatalf("read %d at %d: errno %d", n, off, m.errno)
	}
	return m.data
}

func (cl *testClient) write(off uint64, p []byte) {
	cl.t.Helper()
	if m := cl.do(cmdWrite, 0, off, uint32(len(p)), p); m.errno != 0 {
		cl.t.Fatalf("write %d at %d: errno %d", len(p), off, m.errno)
	}
}

// disc sends NBD_CMD_DISC and checks that the server closes.
func (cl *testClient) disc() {
	cl.t.Helper()
	cl.request(cmdDisc, 0, 0, 0, nil)
	cl.expectClosed()
}

// expectClosed checks that the server closes the connection.
func (cl *testClient) expectClosed() {
	cl.t.Helper()
	b, err := io.ReadAll(cl.r)
	if err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		cl.t.Fatalf("waiting for close: %v", err)
	}
	if len(b) != 0 {
		cl.t.Fatalf("server sent %d more bytes before closing", len(b))
	}
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

// Test support.

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// randData returns n reproducible pseudo-random bytes.
func randData(n int, seed uint64) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}).Read(b)
	return b
}

// startServer serves exp on 127.0.0.1 until the test ends, then checks
// that Serve returned nil and closes the Server.
func startServer(t testing.TB, exp Export) (*Server, string) {
	t.Helper()
	if exp.Log == nil {
		exp.Log = testLogger(t)
	}
	if exp.Writable && exp.OverlayDir == "" {
		exp.OverlayDir = t.TempDir()
	}
	s, err := NewServer(exp)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s, ln.Addr().String()
}

// frozen is a read-only point whose bytes the test can check afterwards.
type frozen struct {
	*bytes.Reader
	orig []byte
	snap []byte
}

func newFrozen(b []byte) *frozen {
	return &frozen{Reader: bytes.NewReader(b), orig: b, snap: bytes.Clone(b)}
}

// unchanged fails the test if the point's bytes changed.
func (f *frozen) unchanged(t testing.TB) {
	t.Helper()
	if !bytes.Equal(f.orig, f.snap) {
		t.Fatal("the point's bytes changed")
	}
}
