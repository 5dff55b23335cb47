package mesh_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/lifeboat-dr/lifeboat/internal/testlog"
	"github.com/lifeboat-dr/lifeboat/internal/testwait"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/mesh/meshtest"
)

// testLogger logs to t's output, shown only when the test fails.
func testLogger(t testing.TB) *slog.Logger { return testlog.New(t) }

// eventually polls cond until it holds or d passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	testwait.True(t, what, d, cond)
}

type epOpt func(*mesh.EndpointOptions)

// newEndpoint starts an endpoint on 127.0.0.1 (port 0 unless addr given)
// on net (nil = the OS), closed at cleanup.
func newEndpoint(t testing.TB, creds *mesh.Creds, nw mesh.Network, addr string, opts ...epOpt) *mesh.Endpoint {
	t.Helper()
	if nw == nil {
		nw = mesh.OS()
	}
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	pc, err := nw.ListenPacket(addr)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	o := mesh.EndpointOptions{Creds: creds, Conn: pc, Logger: testLogger(t).With("self", string(creds.Self.Name))}
	for _, f := range opts {
		f(&o)
	}
	e, err := mesh.NewEndpoint(o)
	if err != nil {
		t.Fatalf("new endpoint: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func dialCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// echoOnce accepts one stream of kind on e and echoes it until EOF.
func echoOnce(t testing.TB, e *mesh.Endpoint, kind mesh.StreamKind) <-chan *mesh.Stream {
	got := make(chan *mesh.Stream, 1)
	go func() {
		s, err := e.Accept(t.Context(), kind)
		if err != nil {
			close(got)
			return
		}
		got <- s
		io.Copy(s, s)
		s.CloseWrite()
	}()
	return got
}

func TestEndpointStreamKindsRoundTrip(t *testing.T) {
	t.Parallel()
	ca := meshtest.CA(t)
	a := newEndpoint(t, ca.Node("a", "dc1"), nil, "")
	b := newEndpoint(t, ca.Node("b", "dc2"), nil, "")
	for _, kind := range []mesh.StreamKind{mesh.KindRaft, mesh.KindBlocks, mesh.KindIngest, mesh.KindAdmin} {
		t.Run(kind.String(), func(t *testing.T) {
			accepted := echoOnce(t, b, kind)
			s, err := a.Dial(dialCtx(t, 5*time.Second), b.Addr().String(), kind)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer s.Close()
			if got, want := noSerial(s.Peer()), (mesh.Identity{Name: "b", Site: "dc2"}); got != want {
				t.Errorf("dialer sees peer %+v, want %+v", got, want)
			}
			if s.Kind() != kind {
				t.Errorf("kind = %v, want %v", s.Kind(), kind)
			}
			msg := bytes.Repeat([]byte(kind.String()), 10000)
			go func() {
				s.Write(msg)
				s.CloseWrite()
			}()
			back, err := io.ReadAll(s)
			if err != nil {
				t.Fatalf("read echo: %v", err)
			}
			if !bytes.Equal(back, msg) {
				t.Fatalf("echo: got %d bytes, want %d", len(back), len(msg))
			}
			in := <-accepted
			if in == nil {
				t.Fatal("nothing accepted")
			}
			if got, want := noSerial(in.Peer()), (mesh.Identity{Name: "a", Site: "dc1"}); got != want {
				t.Errorf("acceptor sees peer %+v, want %+v", got, want)
			}
			if in.Kind() != kind {
				t.Errorf("accepted kind = %v, want %v", in.Kind(), kind)
			}
		})
	}
}

func TestEndpointFramesOverStream(t *testing.T) {
	t.Parallel()
	ca := meshtest.CA(t)
	a := newEndpoint(t, ca.Node("a", "dc1"), nil, "")
	b := newEndpoint(t, ca.Node("b", "dc1"), nil, "")
	done := make(chan error, 1)
	go func() {
		s, err := b.Accept(t.Context(), mesh.KindBlocks)
		if err != nil {
			done <- err
			return
		}
		defer s.Close()
		fr := mesh.NewFrameReader(s, mesh.KindBlocks.MaxFrame())
		for i := 0; ; i++ {
			typ, p, err := fr.Next()
			if errors.Is(err, io.EOF) {
				done <- mesh.WriteError(s, mesh.CodeNotFound, fmt.Sprintf("%d frames", i))
				return
			}
			if err != nil {
				done <- err
				return
			}
			if int(typ) != i || len(p) != i*1000 {
				done <- fmt.Errorf("frame %d: type %d, %d bytes", i, typ, len(p))
				return
			}
		}
	}()
	s, err := a.Dial(dialCtx(t, 5*time.Second), b.Addr().String(), mesh.KindBlocks)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer s.Close()
	for i := range 20 {
		if err := mesh.WriteFrame(s, mesh.FrameType(i), make([]byte, i*1000)); err != nil {
			t.Fatalf("write frame %d: %v", i, err)
		}
	}
	s.CloseWrite()
	typ, p, err := mesh.NewFrameReader(s, mesh.KindBlocks.MaxFrame()).Next()
	if err != nil || typ != mesh.FrameTypeError {
		t.Fatalf("answer: type %d, err %v; want an error frame", typ, err)
	}
	re, err := mesh.ParseError(p)
	if err != nil {
		t.Fatalf("parse error frame: %v", err)
	}
	if re.Code != mesh.CodeNotFound || re.Message != "20 frames" {
		t.Errorf("answer = %v, want not found: 20 frames", re)
	}
	if err := <-done; err != nil {
		t.Fatalf("server: %v", err)
	}
}

func TestEndpointRefusesForeignCA(t *testing.T) {
	t.Parallel()
	ca := meshtest.CA(t)
	good := newEndpoint(t, ca.Node("good", "dc1"), nil, "")
	bad := newEndpoint(t, ca.Foreign("bad", "dc1"), nil, "")
	expired := newEndpoint(t, ca.Expired("old", "dc1"), nil, "")

	cases := []struct {
		name     string
		from, to *mesh.Endpoint
	}{
		{"server refuses foreign client", bad, good},
		{"client refuses foreign server", good, bad},
		{"server refuses expired client", expired, good},
		{"client refuses expired server", good, expired},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, err := tc.from.Dial(dialCtx(t, 5*time.Second), tc.to.Addr().String(), mesh.KindBlocks)
			if err == nil {
				s.Close()
				t.Fatal("dial succeeded, want refused")
			}
			if !errors.Is(err, mesh.ErrRefused) {
				t.Errorf("err = %v, want ErrRefused", err)
			}
			if mesh.IsRetryable(err) {
				t.Errorf("err %v is retryable, want permanent", err)
			}
		})
	}
	// Nothing reached the good endpoint's queue.
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if s, err := good.Accept(ctx, mesh.KindBlocks); err == nil {
		t.Errorf("good endpoint accepted a stream from %v", s.Peer())
	}
}

func TestEndpointAgentScope(t *testing.T) {
	t.Parallel()
	ca := meshtest.CA(t)
	node := newEndpoint(t, ca.Node("n1", "dc1"), nil, "")
	agent := newEndpoint(t, ca.Agent("web1", "dc1", "erp"), nil, "")

	for _, kind := range []mesh.StreamKind{mesh.KindRaft, mesh.KindBlocks, mesh.KindAdmin} {
		s, err := agent.Dial(dialCtx(t, 5*time.Second), node.Addr().String(), kind)
		if err == nil {
			s.Close()
			t.Fatalf("agent opened a %v stream", kind)
		}
		if !errors.Is(err, mesh.ErrRefused) {
			t.Errorf("%v: err = %v, want ErrRefused", kind, err)
		}
	}
	accepted := echoOnce(t, node, mesh.KindIngest)
	s, err := agent.Dial(dialCtx(t, 5*time.Second), node.Addr().String(), mesh.KindIngest)
	if err != nil {
		t.Fatalf("agent ingest dial: %v", err)
	}
	defer s.Close()
	in := <-accepted
	if in == nil {
		t.Fatal("nothing accepted")
	}
	want := mesh.Identity{Name: "web1", Site: "dc1", Agent: true, Service: "erp"}
	if noSerial(in.Peer()) != want {
		t.Errorf("node sees %+v, want %+v", in.Peer(), want)
	}
	// A node refuses to talk to an "endpoint" presenting an agent
	// certificate as a server.
	if s, err := node.Dial(dialCtx(t, 5*time.Second), agent.Addr().String(), mesh.KindBlocks); err == nil {
		s.Close()
		t.Error("node dialed an agent as a server")
	} else if !errors.Is(err, mesh.ErrRefused) {
		t.Errorf("node dialing agent: err = %v, want ErrRefused", err)
	}
}

func TestEndpointRedialAfterRestart(t *testing.T) {
	t.Parallel()
	ca := meshtest.CA(t)
	a := newEndpoint(t, ca.Node("a", "dc1"), nil, "")
	bCreds := ca.Node("b", "dc1")

	roundTrip := func(b *mesh.Endpoint, addr string) error {
		echoOnce(t, b, mesh.KindAdmin)
		// Far below the 30 s idle timeout: a stale connection must be
		// noticed (stateless reset) and replaced, not waited out.
		s, err := a.Dial(dialCtx(t, 3*time.Second), addr, mesh.KindAdmin)
		if err != nil {
			return err
		}
		defer s.Close()
		if _, err := s.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 4)
		s.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, err = io.ReadFull(s, buf)
		return err
	}
	for _, crash := range []bool{false, true} {
		name := "clean restart"
		if crash {
			name = "crash"
		}
		t.Run(name, func(t *testing.T) {
			pc, err := mesh.OS().ListenPacket("127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			b, err := mesh.NewEndpoint(mesh.EndpointOptions{Creds: bCreds, Conn: pc, Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			addr := b.Addr().String()
			if err := roundTrip(b, addr); err != nil {
				t.Fatalf("first round trip: %v", err)
			}
			if crash {
				// The socket goes first: no CONNECTION_CLOSE reaches a,
				// which keeps its cached connection.
				pc.Close()
			}
			b.Close()
			if !crash {
				_, err := a.Dial(dialCtx(t, 500*time.Millisecond), addr, mesh.KindAdmin)
				if !mesh.IsRetryable(err) {
					t.Fatalf("dial while down: err = %v, want retryable ErrUnreachable", err)
				}
			}
			b2 := newEndpoint(t, bCreds, nil, addr)
			if err := roundTrip(b2, addr); err != nil {
				t.Fatalf("round trip after restart: %v", err)
			}
		})
	}
}

func TestEndpointCloseUnblocksAccept(t *testing.T) {
	t.Parallel()
	ca := meshtest.CA(t)
	e := newEndpoint(t, ca.Node("a", "dc1"), nil, "")
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for _, kind := range []mesh.StreamKind{mesh.KindRaft, mesh.KindBlocks, mesh.KindIngest, mesh.KindAdmin} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := e.Accept(t.Context(), kind)
			errs <- err
		}()
	}
	e.Close()
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, mesh.ErrClosed) {
			t.Errorf("Accept after Close: err = %v, want ErrClosed", err)
		}
	}
	if _, err := e.Dial(t.Context(), "127.0.0.1:1", mesh.KindRaft); !errors.Is(err, mesh.ErrClosed) {
		t.Errorf("Dial after Close: err = %v, want ErrClosed", err)
	}
}

func TestEndpointAcceptQueueFull(t *testing.T) {
	t.Parallel()
	ca := meshtest.CA(t)
	a := newEndpoint(t, ca.Node("a", "dc1"), nil, "")
	b := newEndpoint(t, ca.Node("b", "dc1"), nil, "", func(o *mesh.EndpointOptions) { o.AcceptQueue = 2 })
	for i := range 2 {
		s, err := a.Dial(dialCtx(t, 5*time.Second), b.Addr().String(), mesh.KindAdmin)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		defer s.Close()
	}
	_, err := a.Dial(dialCtx(t, 5*time.Second), b.Addr().String(), mesh.KindAdmin)
	if !mesh.IsRetryable(err) {
		t.Fatalf("third dial: err = %v, want retryable (queue full)", err)
	}
	// Other kinds have their own queue.
	s, err := a.Dial(dialCtx(t, 5*time.Second), b.Addr().String(), mesh.KindBlocks)
	if err != nil {
		t.Fatalf("blocks dial with admin queue full: %v", err)
	}
	s.Close()
	// Accepting frees a slot.
	if _, err := b.Accept(t.Context(), mesh.KindAdmin); err != nil {
		t.Fatalf("accept: %v", err)
	}
	s, err = a.Dial(dialCtx(t, 5*time.Second), b.Addr().String(), mesh.KindAdmin)
	if err != nil {
		t.Fatalf("dial after accept: %v", err)
	}
	s.Close()
}

func TestEndpointBadHeaderRefused(t *testing.T) {
	t.Parallel()
	ca := meshtest.CA(t)
	b := newEndpoint(t, ca.Node("b", "dc1"), nil, "")
	_, err := b.Dial(dialCtx(t, time.Second), b.Addr().String(), mesh.StreamKind(9))
	if err == nil || !strings.Contains(err.Error(), "unknown stream kind") {
		t.Errorf("dial kind 9: err = %v, want unknown stream kind", err)
	}
	var _ net.Conn = (*mesh.Stream)(nil)
}

// TestEndpointAnswersBadHeader speaks raw QUIC to an endpoint: a stream
// that does not start with our header gets CodeBadRequest and is closed.
func TestEndpointAnswersBadHeader(t *testing.T) {
	t.Parallel()
	ca := meshtest.CA(t)
	srv := newEndpoint(t, ca.Node("srv", "dc1"), nil, "")
	tlsConf := ca.Node("raw", "dc1").ClientTLS()
	tlsConf.NextProtos = []string{mesh.ALPN}
	conn, err := quic.DialAddr(dialCtx(t, 5*time.Second), srv.Addr().String(), tlsConf, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.CloseWithError(0, "")
	for _, hdr := range []string{"GET /", "LBS\x02\x01", "LBS\x01\x07"} {
		s, err := conn.OpenStreamSync(t.Context())
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		s.Write([]byte(hdr))
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		reply, err := io.ReadAll(s)
		if err != nil {
			t.Fatalf("%q: read reply: %v", hdr, err)
		}
		if !bytes.Equal(reply, []byte{0, byte(mesh.CodeBadRequest)}) {
			t.Errorf("%q: reply %x, want bad request then FIN", hdr, reply)
		}
		s.Close()
	}
}

func TestEndpointDialTimeoutAndCancel(t *testing.T) {
	t.Parallel()
	ca := meshtest.CA(t)
	a := newEndpoint(t, ca.Node("a", "dc1"), nil, "")
	// A UDP socket that never answers.
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	_, err = a.Dial(dialCtx(t, 300*time.Millisecond), silent.LocalAddr().String(), mesh.KindBlocks)
	if !mesh.IsRetryable(err) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("dial past deadline: err = %v, want ErrUnreachable and DeadlineExceeded", err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err = a.Dial(ctx, silent.LocalAddr().String(), mesh.KindBlocks)
	if !errors.Is(err, context.Canceled) || errors.Is(err, mesh.ErrUnreachable) {
		t.Errorf("canceled dial: err = %v, want context.Canceled only", err)
	}
}

// noSerial drops the certificate serial, which differs per certificate.
func noSerial(id mesh.Identity) mesh.Identity {
	id.Serial = ""
	return id
}

func TestEndpointRefusesOperatorsAndRevoked(t *testing.T) {
	t.Parallel()
	ca := meshtest.CA(t)
	srvCreds := ca.Node("srv", "dc1")
	srv := newEndpoint(t, srvCreds, nil, "")
	op := newEndpoint(t, ca.Operator("alice", mesh.RoleAdmin), nil, "")
	peerCreds := ca.Node("peer", "dc1")
	peer := newEndpoint(t, peerCreds, nil, "")

	// An operator certificate gets no stream of any kind on the mesh.
	if s, err := op.Dial(dialCtx(t, 5*time.Second), srv.Addr().String(), mesh.KindAdmin); err == nil {
		// The refusal may come as the connection closes, after the dial.
		buf := make([]byte, 1)
		if _, rerr := s.Read(buf); rerr == nil {
			t.Error("operator got an admin stream on the mesh")
		}
		s.Close()
	}

	// A node is served, then revoked: its open connection is closed and
	// a new handshake refused.
	accepted := echoOnce(t, srv, mesh.KindBlocks)
	s, err := peer.Dial(dialCtx(t, 5*time.Second), srv.Addr().String(), mesh.KindBlocks)
	if err != nil {
		t.Fatalf("dial before revocation: %v", err)
	}
	<-accepted
	srvCreds.SetRevoked([]string{peerCreds.Self.Serial})
	if n := srv.DropRevoked(); n != 1 {
		t.Errorf("DropRevoked closed %d connections, want 1", n)
	}
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := s.Read(make([]byte, 1)); err == nil {
		t.Error("revoked peer's stream still reads")
	}
	s.Close()
	if s2, err := peer.Dial(dialCtx(t, 5*time.Second), srv.Addr().String(), mesh.KindBlocks); err == nil {
		s2.Close()
		t.Error("revoked peer dialed again")
	}
}
