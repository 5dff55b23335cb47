package nbd

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// testCA is a certificate authority for the TLS tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "nbd test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

var serialMu sync.Mutex
var serial int64 = 1

// issue returns a certificate for name, good for TLS clients and servers
// on 127.0.0.1 and localhost.
func (ca *testCA) issue(t testing.TB, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serialMu.Lock()
	serial++
	sn := serial
	serialMu.Unlock()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(sn),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// serverTLS is a TLS-required server config with a certificate from ca
// that accepts clients of ca.
func (ca *testCA) serverTLS(t testing.TB) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{ca.issue(t, "server")},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.pool,
	}
}

// clientTLS is a client config trusting ca, presenting cert if given.
func (ca *testCA) clientTLS(cert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{RootCAs: ca.pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}

// writeGnuTLSDir writes cert, and ca's certificate as the one to trust,
// in the file names qemu's tls-creds-x509 and libnbd's tls-certificates
// look for.
func (ca *testCA) writeGnuTLSDir(t testing.TB, cert tls.Certificate) string {
	t.Helper()
	dir := t.TempDir()
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"ca-cert.pem":     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}),
		"client-cert.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}),
		"client-key.pem":  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// refusals records what OnRefused was called with.
type refusals struct {
	mu   sync.Mutex
	errs []error
	ch   chan struct{}
}

func newRefusals() *refusals { return &refusals{ch: make(chan struct{}, 100)} }

func (rf *refusals) record(_ net.Addr, err error) {
	rf.mu.Lock()
	rf.errs = append(rf.errs, err)
	rf.mu.Unlock()
	rf.ch <- struct{}{}
}

// next waits for the next refusal and checks it matches want.
func (rf *refusals) next(t testing.TB, want error) error {
	t.Helper()
	select {
	case <-rf.ch:
	case <-time.After(time.Minute):
		t.Fatalf("no refusal reported, want one matching %v", want)
	}
	rf.mu.Lock()
	defer rf.mu.Unlock()
	err := rf.errs[0]
	rf.errs = rf.errs[1:]
	if !errors.Is(err, want) {
		t.Fatalf("refused with %v, want an error matching %v", err, want)
	}
	return err
}

// none checks that no refusal was reported.
func (rf *refusals) none(t testing.TB) {
	t.Helper()
	rf.mu.Lock()
	defer rf.mu.Unlock()
	if len(rf.errs) != 0 {
		t.Fatalf("unexpected refusals: %v", rf.errs)
	}
}

// startTLS sends NBD_OPT_STARTTLS, expects ACK and runs the client side
// of the TLS handshake; later messages go through TLS.
func (cl *testClient) startTLS(cfg *tls.Config) error {
	cl.t.Helper()
	cl.option(optStartTLS, nil)
	if m := cl.optReply(); m.opt != optStartTLS || m.typ != repAck || len(m.data) != 0 {
		cl.t.Fatalf("NBD_OPT_STARTTLS: reply %#x to option %d with %d bytes, want ACK", m.typ, m.opt, len(m.data))
	}
	if cl.r.Buffered() != 0 {
		cl.t.Fatalf("server sent %d bytes after the STARTTLS ACK before the handshake", cl.r.Buffered())
	}
	tc := tls.Client(cl.c, cfg)
	if err := tc.HandshakeContext(cl.t.Context()); err != nil {
		return err
	}
	cl.c = tc
	cl.r = bufio.NewReader(tc)
	return nil
}

// tlsServer starts a TLS-required server over data, recording refusals.
func tlsServer(t *testing.T, ca *testCA, exp Export) (*Server, string, *refusals) {
	t.Helper()
	rf := newRefusals()
	exp.TLS = ca.serverTLS(t)
	exp.OnRefused = rf.record
	s, addr := startServer(t, exp)
	return s, addr, rf
}

func TestStartTLS(t *testing.T) {
	ca := newTestCA(t)
	data := randData(1<<20, 30)
	for _, tc := range []struct {
		name     string
		writable bool
	}{
		{"read-only", false},
		{"writable", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var authorized []string
			var mu sync.Mutex
			s, addr, rf := tlsServer(t, ca, Export{Name: "vol", Size: int64(len(data)), Data: newFrozen(data), Writable: tc.writable,
				Authorize: func(cs tls.ConnectionState) error {
					mu.Lock()
					defer mu.Unlock()
					authorized = append(authorized, cs.PeerCertificates[0].Subject.CommonName)
					return nil
				}})
			cert := ca.issue(t, "alice")
			cl := dial(t, addr)
			cl.clientFlags(3)
			if err := cl.startTLS(ca.clientTLS(&cert)); err != nil {
				t.Fatalf("TLS handshake: %v", err)
			}
			// Haggling starts over inside TLS: options are answered now.
			cl.option(optList, nil)
			if m := cl.optReply(); m.typ != repServer {
				t.Fatalf("NBD_OPT_LIST inside TLS: reply %#x, want NBD_REP_SERVER", m.typ)
			}
			if m := cl.optReply(); m.typ != repAck {
				t.Fatalf("NBD_OPT_LIST inside TLS: final reply %#x, want ACK", m.typ)
			}
			cl.option(optStartTLS, nil)
			if m := cl.optReply(); m.typ != repErrInvalid {
				t.Fatalf("second NBD_OPT_STARTTLS: reply %#x, want NBD_REP_ERR_INVALID", m.typ)
			}
			if rs := cl.goExport(optGo, "vol"); rs[len(rs)-1].typ != repAck || cl.size != uint64(len(data)) {
				t.Fatalf("NBD_OPT_GO inside TLS: final reply %#x size %d", rs[len(rs)-1].typ, cl.size)
			}
			if got := cl.read(1000, 70000); !bytes.Equal(got, data[1000:71000]) {
				t.Fatal("read over TLS differs from the point")
			}
			if tc.writable {
				cl.write(5, []byte("hello"))
				if got := cl.read(0, 10); !bytes.Equal(got[5:], []byte("hello")) {
					t.Fatalf("read back over TLS: %q", got)
				}
			}
			cl.disc()
			mu.Lock()
			if len(authorized) != 1 || authorized[0] != "alice" {
				t.Fatalf("Authorize saw %q, want [alice]", authorized)
			}
			mu.Unlock()
			rf.none(t)
			if st := s.Stats(); st.Refused != 0 {
				t.Fatalf("Stats.Refused = %d, want 0", st.Refused)
			}
		})
	}
}

// TestTLSRequired: before TLS every option but STARTTLS and ABORT is
// refused with NBD_REP_ERR_TLS_REQD, and the connection stays usable.
func TestTLSRequired(t *testing.T) {
	ca := newTestCA(t)
	const size = 1 << 16
	_, addr, rf := tlsServer(t, ca, Export{Name: "vol", Size: size, Data: bytes.NewReader(make([]byte, size))})
	cert := ca.issue(t, "bob")

	cl := dial(t, addr)
	cl.clientFlags(3)
	for _, opt := range []uint32{optList, optInfo, optGo, optStructuredReply, 77} {
		data := []byte(nil)
		if opt == optInfo || opt == optGo {
			data = seedGoData("vol")
		}
		cl.option(opt, data)
		if m := cl.optReply(); m.opt != opt || m.typ != repErrTLSReqd || !strings.Contains(string(m.data), "TLS required") {
			t.Fatalf("option %d before TLS: reply %#x %q to %d, want NBD_REP_ERR_TLS_REQD", opt, m.typ, m.data, m.opt)
		}
	}
	// Option data before TLS is drained, never buffered, whatever its size.
	cl.option(optList, make([]byte, maxOption+1))
	if m := cl.optReply(); m.typ != repErrTLSReqd {
		t.Fatalf("long option before TLS: reply %#x, want NBD_REP_ERR_TLS_REQD", m.typ)
	}
	cl.option(optStartTLS, []byte("x"))
	if m := cl.optReply(); m.typ != repErrInvalid {
		t.Fatalf("NBD_OPT_STARTTLS with data: reply %#x, want NBD_REP_ERR_INVALID", m.typ)
	}
	// Still usable: TLS now works on the same connection.
	if err := cl.startTLS(ca.clientTLS(&cert)); err != nil {
		t.Fatalf("TLS after refused options: %v", err)
	}
	if rs := cl.goExport(optGo, ""); rs[len(rs)-1].typ != repAck {
		t.Fatalf("NBD_OPT_GO inside TLS: final reply %#x", rs[len(rs)-1].typ)
	}
	cl.disc()
	rf.none(t)

	for _, tc := range []struct {
		name   string
		client func(cl *testClient)
	}{
		{"abort after TLS_REQD", func(cl *testClient) {
			cl.clientFlags(3)
			cl.goExport(optGo, "vol")
			cl.option(optAbort, nil)
			if m := cl.optReply(); m.typ != repAck {
				t.Fatalf("NBD_OPT_ABORT: reply %#x, want ACK", m.typ)
			}
		}},
		{"close after TLS_REQD", func(cl *testClient) {
			cl.clientFlags(3)
			cl.option(optList, nil)
			cl.optReply()
			cl.c.(*net.TCPConn).CloseWrite()
		}},
		{"export name before TLS", func(cl *testClient) {
			cl.clientFlags(3)
			cl.option(optExportName, []byte("vol"))
		}},
		{"not fixed newstyle", func(cl *testClient) { cl.clientFlags(2) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := dial(t, addr)
			tc.client(cl)
			cl.expectClosed()
			rf.next(t, ErrTLSRequired)
		})
	}

	// Neither a bare connect nor an ABORT with nothing refused is a
	// refusal. This server is stopped (Serve joins its connections) before
	// the count is checked.
	exp := Export{Size: size, Data: bytes.NewReader(make([]byte, size)), Log: testLogger(t), TLS: ca.serverTLS(t), OnRefused: rf.record}
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
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	cl = dial(t, ln.Addr().String())
	cl.clientFlags(3)
	cl.option(optAbort, nil)
	cl.optReply()
	cl.expectClosed()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	dial(t, ln.Addr().String()).c.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	rf.none(t)
	if st := s.Stats(); st.Refused != 0 || st.Connections != 3 {
		t.Fatalf("stats %+v, want 3 connections and none refused", st)
	}
}

// TestTLSRefused: a failed handshake or a failed Authorize closes the
// connection and is reported.
func TestTLSRefused(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	const size = 1 << 16
	s, addr, rf := tlsServer(t, ca, Export{Size: size, Data: bytes.NewReader(make([]byte, size)),
		Authorize: func(cs tls.ConnectionState) error {
			if cn := cs.PeerCertificates[0].Subject.CommonName; cn != "alice" {
				return fmt.Errorf("%s is not alice", cn)
			}
			return nil
		}})
	alice, bob, mallory := ca.issue(t, "alice"), ca.issue(t, "bob"), other.issue(t, "alice")

	for _, tc := range []struct {
		name string
		cfg  *tls.Config
		want error
	}{
		{"no client certificate", ca.clientTLS(nil), ErrHandshake},
		{"foreign CA", ca.clientTLS(&mallory), ErrHandshake},
		{"not authorized", ca.clientTLS(&bob), ErrUnauthorized},
		{"TLS 1.2 only", func() *tls.Config { c := ca.clientTLS(&alice); c.MaxVersion = tls.VersionTLS12; return c }(), ErrHandshake},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := dial(t, addr)
			cl.clientFlags(3)
			// With TLS 1.3 the client's half of the handshake may succeed
			// before the server has checked its certificate; the first
			// read then fails.
			if err := cl.startTLS(tc.cfg); err == nil {
				cl.option(optList, nil)
				if _, err := cl.r.ReadByte(); err == nil {
					t.Fatal("server answered over TLS")
				}
			}
			rf.next(t, tc.want)
		})
	}
	t.Run("not TLS after the ACK", func(t *testing.T) {
		cl := dial(t, addr)
		cl.clientFlags(3)
		cl.option(optStartTLS, nil)
		cl.optReply()
		cl.send(seedOpt(optGo, seedGoData("")))
		rf.next(t, ErrHandshake)
	})
	// alice gets in.
	cl := dial(t, addr)
	cl.clientFlags(3)
	if err := cl.startTLS(ca.clientTLS(&alice)); err != nil {
		t.Fatal(err)
	}
	cl.goExport(optGo, "")
	cl.read(0, 512)
	cl.disc()
	rf.none(t)
	if st := s.Stats(); st.Refused != 5 {
		t.Fatalf("Stats.Refused = %d, want 5", st.Refused)
	}
}

// TestTLSAuthTimeout: a client that does not finish authenticating within
// AuthTimeout is dropped; one that did keeps its connection however long
// it idles.
func TestTLSAuthTimeout(t *testing.T) {
	ca := newTestCA(t)
	const size = 1 << 16
	_, addr, rf := tlsServer(t, ca, Export{Size: size, Data: bytes.NewReader(make([]byte, size)), AuthTimeout: 300 * time.Millisecond})
	cert := ca.issue(t, "alice")

	ok := dial(t, addr)
	ok.clientFlags(3)
	if err := ok.startTLS(ca.clientTLS(&cert)); err != nil {
		t.Fatal(err)
	}

	idle := dial(t, addr) // says nothing
	idle.expectClosed()
	stalled := dial(t, addr) // STARTTLS, then no ClientHello
	stalled.clientFlags(3)
	stalled.option(optStartTLS, nil)
	stalled.optReply()
	stalled.expectClosed()
	if err := rf.next(t, ErrHandshake); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("stalled handshake refused with %v, want a deadline", err)
	}

	// The authorized client connected before the others, so its
	// AuthTimeout has passed too: it is still served.
	ok.goExport(optGo, "")
	ok.read(0, 4096)
	ok.disc()
	rf.none(t)
}
