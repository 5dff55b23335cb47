package nbd

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// pipeConn is a connection whose client side is a fixed byte string; what
// the server writes is counted and dropped.
type pipeConn struct {
	r       io.Reader
	written atomic.Int64
}

func (c *pipeConn) Read(p []byte) (int, error) { return c.r.Read(p) }
func (c *pipeConn) Write(p []byte) (int, error) {
	c.written.Add(int64(len(p)))
	return len(p), nil
}
func (c *pipeConn) Close() error                     { return nil }
func (c *pipeConn) LocalAddr() net.Addr              { return pipeAddr{} }
func (c *pipeConn) RemoteAddr() net.Addr             { return pipeAddr{} }
func (c *pipeConn) SetDeadline(time.Time) error      { return nil }
func (c *pipeConn) SetReadDeadline(time.Time) error  { return nil }
func (c *pipeConn) SetWriteDeadline(time.Time) error { return nil }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// fuzzServers returns four servers over the same small point, shared by
// all inputs of one fuzz target: index bit 0 makes it writable, bit 1
// TLS-required.
func fuzzServers(f *testing.F) (*frozen, [4]*Server) {
	const size = 64<<10 + 100
	pt := newFrozen(randData(size, 20))
	log := slog.New(slog.DiscardHandler)
	ca := newTestCA(f)
	var ss [4]*Server
	for i := range ss {
		exp := Export{Name: "vol", Size: size, Data: pt, Writable: i&1 != 0, OverlayDir: f.TempDir(), Log: log}
		if i&2 != 0 {
			exp.TLS = ca.serverTLS(f)
			exp.OnRefused = func(net.Addr, error) {}
		}
		s, err := NewServer(exp)
		if err != nil {
			f.Fatal(err)
		}
		f.Cleanup(func() { s.Close() })
		ss[i] = s
	}
	return pt, ss
}

// clientHello returns the first flight of a Go TLS client (its
// ClientHello record), for seeds that get a TLS server past the first
// step of the handshake.
func clientHello(f *testing.F) []byte {
	c := &captureConn{}
	tls.Client(c, &tls.Config{InsecureSkipVerify: true}).Handshake()
	return c.buf.Bytes()
}

// captureConn records what is written to it; reads fail.
type captureConn struct {
	pipeConn
	buf bytes.Buffer
}

func (c *captureConn) Read([]byte) (int, error)    { return 0, io.EOF }
func (c *captureConn) Write(p []byte) (int, error) { return c.buf.Write(p) }

// fuzzServe feeds in to one of the servers as a client's whole byte
// stream and checks that serving it ends, leaves the point untouched, and
// allocated no more than a fixed amount plus a bounded multiple of the
// input: nothing read from the wire sizes an allocation by itself.
func fuzzServe(t *testing.T, pt *frozen, s *Server, in []byte) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	c := &pipeConn{r: bytes.NewReader(in)}
	s.serveConn(t.Context(), c, slog.New(slog.DiscardHandler))
	runtime.ReadMemStats(&after)
	pt.unchanged(t)
	// The fixed part covers the 64 KiB reader buffer and a first pooled
	// buffer of each size; a request can read at most the 64 KiB export,
	// so 28 bytes of input cost at most 64 KiB.
	limit := uint64(8<<20) + 4096*uint64(len(in))
	if got := after.TotalAlloc - before.TotalAlloc; got > limit {
		t.Fatalf("serving %d input bytes allocated %d bytes, limit %d", len(in), got, limit)
	}
}

// Handshake bytes for the seeds.
func seedOpt(opt uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, magicOpt)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

func seedGoData(name string, infos ...uint16) []byte {
	d := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	d = append(d, name...)
	d = binary.BigEndian.AppendUint16(d, uint16(len(infos)))
	for _, i := range infos {
		d = binary.BigEndian.AppendUint16(d, i)
	}
	return d
}

func seedReq(typ, flags uint16, off uint64, length uint32, payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, magicRequest)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, 1)
	b = binary.BigEndian.AppendUint64(b, off)
	b = binary.BigEndian.AppendUint32(b, length)
	return append(b, payload...)
}

// goPrefix is a valid handshake ending in NBD_OPT_GO for the default
// export.
var goPrefix = append([]byte{0, 0, 0, 3}, seedOpt(optGo, seedGoData(""))...)

// FuzzOptions feeds arbitrary bytes as everything a client sends after
// the greeting: client flags, options, and any requests after them. The
// first byte picks the server (fuzzServers): bit 0 writable, bit 1
// TLS-required.
func FuzzOptions(f *testing.F) {
	pt, ss := fuzzServers(f)
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	f.Add(cat([]byte{0, 0, 0, 0, 3}, seedOpt(optList, nil), seedOpt(optAbort, nil)))
	f.Add(cat([]byte{1, 0, 0, 0, 3}, seedOpt(optInfo, seedGoData("vol", infoBlockSize, infoName)), seedOpt(optGo, seedGoData("vol")),
		seedReq(cmdRead, 0, 0, 512, nil), seedReq(cmdDisc, 0, 0, 0, nil)))
	f.Add(cat([]byte{1, 0, 0, 0, 1}, seedOpt(optExportName, []byte("vol")), seedReq(cmdWrite, 0, 10, 4, []byte("abcd"))))
	f.Add(cat([]byte{0, 0, 0, 0, 3}, seedOpt(optStructuredReply, nil), seedOpt(0xff, []byte("junk")), seedOpt(optGo, seedGoData("nope"))))
	f.Add(cat([]byte{0, 0, 0, 0, 3}, seedOpt(optInfo, []byte{0xff, 0xff, 0xff, 0xff, 0, 0})))
	f.Add(cat([]byte{0, 0, 0, 0, 3}, seedOpt(77, nil)[:16], []byte{0xff, 0xff, 0xff, 0xff}))
	f.Add([]byte{0, 0xff, 0xff, 0xff, 0xff})
	// STARTTLS: unsupported without TLS; with TLS, every other option
	// before it is refused, EXPORT_NAME and plain newstyle close, a
	// second STARTTLS or one with data is invalid, and after the ACK the
	// bytes are a TLS handshake (a real ClientHello, or garbage).
	hello := clientHello(f)
	f.Add(cat([]byte{0, 0, 0, 0, 3}, seedOpt(optStartTLS, nil), seedOpt(optGo, seedGoData("vol")), seedReq(cmdRead, 0, 0, 512, nil)))
	f.Add(cat([]byte{2, 0, 0, 0, 3}, seedOpt(optList, nil), seedOpt(optInfo, seedGoData("vol")), seedOpt(optGo, seedGoData("")),
		seedOpt(optStructuredReply, nil), seedOpt(0xff, []byte("junk")), seedOpt(optAbort, nil)))
	f.Add(cat([]byte{3, 0, 0, 0, 3}, seedOpt(optStartTLS, []byte("data")), seedOpt(optList, make([]byte, maxOption+1)), seedOpt(optExportName, []byte("vol"))))
	f.Add(cat([]byte{2, 0, 0, 0, 1}, seedOpt(optExportName, []byte("vol")), seedReq(cmdRead, 0, 0, 512, nil)))
	f.Add(cat([]byte{2, 0, 0, 0, 0}, seedOpt(optStartTLS, nil)))
	f.Add(cat([]byte{2, 0, 0, 0, 3}, seedOpt(optStartTLS, nil), hello))
	f.Add(cat([]byte{3, 0, 0, 0, 3}, seedOpt(optStartTLS, nil), hello[:len(hello)/2]))
	f.Add(cat([]byte{2, 0, 0, 0, 3}, seedOpt(optStartTLS, nil), seedOpt(optGo, seedGoData("vol")), seedReq(cmdRead, 0, 0, 512, nil)))
	f.Add(cat([]byte{2, 0, 0, 0, 3}, seedOpt(optStartTLS, nil), []byte{0x16, 0x03, 0x01, 0xff, 0xff, 0x01}))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		fuzzServe(t, pt, ss[in[0]&3], in[1:])
	})
}

// FuzzRequests feeds arbitrary bytes as transmission-phase requests after
// a valid handshake. The first byte picks the read-only (even) or
// writable (odd) server without TLS.
func FuzzRequests(f *testing.F) {
	pt, ss := fuzzServers(f)
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	f.Add(cat([]byte{1}, seedReq(cmdWrite, 0, 4000, 200, bytes.Repeat([]byte{7}, 200)), seedReq(cmdRead, 0, 3900, 400, nil)))
	f.Add(cat([]byte{1}, seedReq(cmdWriteZeroes, 0, 100, 20000, nil), seedReq(cmdWriteZeroes, cmdFlagNoHole, 0, 5000, nil),
		seedReq(cmdTrim, 0, 0, 4096, nil), seedReq(cmdFlush, 0, 0, 0, nil), seedReq(cmdCache, 0, 0, 1, nil)))
	f.Add(cat([]byte{0}, seedReq(cmdWrite, 0, 0, 4, []byte("abcd")), seedReq(cmdRead, 0, 1<<40, 1, nil), seedReq(cmdDisc, 0, 0, 0, nil)))
	f.Add(cat([]byte{1}, seedReq(cmdWrite, 0, 0, 32<<20+1, []byte("short"))))
	f.Add(cat([]byte{1}, seedReq(cmdWrite, 0, 0, 1000, []byte("short"))))
	f.Add(cat([]byte{0}, seedReq(cmdRead, 0xffff, 0xffffffffffffffff, 0xffffffff, nil)))
	f.Add(cat([]byte{0}, seedReq(cmdRead, 0, 0, 16, nil), []byte("not a request at all")))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		fuzzServe(t, pt, ss[in[0]&1], append(bytes.Clone(goPrefix), in[1:]...))
	})
}
