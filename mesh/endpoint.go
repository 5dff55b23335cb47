package mesh

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// ALPN is the TLS application protocol of the QUIC endpoint.
const ALPN = "lifeboat/1"

// Endpoint defaults.
const (
	DefaultIdleTimeout      = 30 * time.Second
	DefaultKeepAlive        = 5 * time.Second
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultAcceptQueue      = 64
)

// QUIC application error codes used when we close a connection or reset a
// stream; they are ErrCode values (see doc.go).
const (
	appCodeClosed = quic.ApplicationErrorCode(CodeOK)
)

// EndpointOptions configure NewEndpoint. The zero value of each optional
// field means its default.
type EndpointOptions struct {
	Creds *Creds         // required
	Conn  net.PacketConn // required (from Network.ListenPacket); the Endpoint owns and closes it
	// Advertise is the address (host:port) other nodes dial to reach this
	// endpoint, reported by RaftLayer().Addr(); empty = Conn's local address.
	Advertise string
	Logger    *slog.Logger // nil = slog.Default()

	IdleTimeout      time.Duration // a connection with no traffic for this long dies; default 30s
	KeepAlive        time.Duration // keep-alive period of idle connections; default 5s
	HandshakeTimeout time.Duration // TLS handshake and stream header reads; default 10s
	AcceptQueue      int           // inbound streams queued per kind before new ones are refused; default 64
}

// Endpoint is one node's QUIC endpoint: mutual TLS 1.3 against the cluster
// CA (ALPN "lifeboat/1"). A peer without a valid certificate gets nothing
// (the handshake fails). Agents may open only KindIngest streams; anything
// else from an agent is refused and logged. Outbound connections are cached
// per remote address and re-dialed when they die. Safe for concurrent use.
type Endpoint struct {
	creds     *Creds
	log       *slog.Logger
	tr        *quic.Transport
	ln        *quic.Listener
	conn      net.PacketConn
	advertise net.Addr
	opts      EndpointOptions
	clientTLS *tls.Config
	dialConf  *quic.Config

	slots  [numKinds]chan struct{} // reservations in the accept queues
	queues [numKinds]chan *Stream

	done      chan struct{} // closed by Close
	closeOnce sync.Once
	wg        sync.WaitGroup

	mu      sync.Mutex
	dialing map[string]*dialEntry   // outbound connections by remote address
	inbound map[*quic.Conn]Identity // accepted connections and their peers
}

type dialEntry struct {
	ready chan struct{} // closed when conn/peer/err are set
	conn  *quic.Conn
	peer  Identity // the server's verified identity
	err   error
}

// NewEndpoint starts an endpoint on opts.Conn.
func NewEndpoint(opts EndpointOptions) (*Endpoint, error) {
	if opts.Creds == nil {
		return nil, errors.New("new endpoint: no credentials")
	}
	if opts.Conn == nil {
		return nil, errors.New("new endpoint: no packet conn")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.KeepAlive <= 0 {
		opts.KeepAlive = DefaultKeepAlive
	}
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if opts.AcceptQueue <= 0 {
		opts.AcceptQueue = DefaultAcceptQueue
	}
	advertise := opts.Conn.LocalAddr()
	if opts.Advertise != "" {
		ua, err := net.ResolveUDPAddr("udp", opts.Advertise)
		if err != nil {
			return nil, fmt.Errorf("new endpoint: advertise address: %w", err)
		}
		advertise = ua
	}
	resetKey, err := statelessResetKey(opts.Creds)
	if err != nil {
		return nil, fmt.Errorf("new endpoint: %w", err)
	}
	e := &Endpoint{
		creds:     opts.Creds,
		log:       opts.Logger.With("node", string(opts.Creds.Self.Name)),
		conn:      opts.Conn,
		advertise: advertise,
		opts:      opts,
		done:      make(chan struct{}),
		dialing:   make(map[string]*dialEntry),
		inbound:   make(map[*quic.Conn]Identity),
	}
	for k := range e.queues {
		e.slots[k] = make(chan struct{}, opts.AcceptQueue)
		e.queues[k] = make(chan *Stream, opts.AcceptQueue)
	}
	e.tr = &quic.Transport{Conn: opts.Conn, StatelessResetKey: resetKey}

	serverTLS := opts.Creds.ServerTLS()
	serverTLS.NextProtos = []string{ALPN}
	e.clientTLS = opts.Creds.ClientTLS()
	e.clientTLS.NextProtos = []string{ALPN}

	base := quic.Config{
		HandshakeIdleTimeout: opts.HandshakeTimeout,
		MaxIdleTimeout:       opts.IdleTimeout,
		KeepAlivePeriod:      opts.KeepAlive,
		MaxIncomingStreams:   1024,
		// No unidirectional streams in this protocol.
		MaxIncomingUniStreams:      -1,
		MaxStreamReceiveWindow:     16 << 20,
		MaxConnectionReceiveWindow: 32 << 20,
	}
	serverConf := base
	e.dialConf = &base
	// Streams flow from dialer to listener only: a dialed connection takes
	// no inbound streams.
	e.dialConf.MaxIncomingStreams = -1

	ln, err := e.tr.Listen(serverTLS, &serverConf)
	if err != nil {
		e.tr.Close()
		opts.Conn.Close()
		return nil, fmt.Errorf("new endpoint: listen on %s: %w", opts.Conn.LocalAddr(), err)
	}
	e.ln = ln
	e.wg.Add(1)
	go e.acceptConns()
	return e, nil
}

// statelessResetKey derives the QUIC stateless reset key from the node's
// private key, so that a node restarted with the same credentials resets
// the connections of its previous life at once instead of letting peers
// wait for the idle timeout.
func statelessResetKey(c *Creds) (*quic.StatelessResetKey, error) {
	der, err := x509.MarshalPKCS8PrivateKey(c.Cert.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("derive stateless reset key: %w", err)
	}
	h := sha256.New()
	h.Write([]byte("lifeboat quic stateless reset v1\x00"))
	h.Write(der)
	var k quic.StatelessResetKey
	copy(k[:], h.Sum(nil))
	return &k, nil
}

// Addr returns the local address of the endpoint's socket.
func (e *Endpoint) Addr() net.Addr { return e.conn.LocalAddr() }

// Self returns the endpoint's own identity.
func (e *Endpoint) Self() Identity { return e.creds.Self }

// Close closes every connection and the socket, ends Accept calls with
// ErrClosed, resets queued streams and waits for the endpoint's goroutines.
func (e *Endpoint) Close() error {
	e.closeOnce.Do(func() {
		close(e.done)
		e.ln.Close()
		e.mu.Lock()
		var conns []*quic.Conn
		for c := range e.inbound {
			conns = append(conns, c)
		}
		for _, d := range e.dialing {
			select {
			case <-d.ready:
				if d.conn != nil {
					conns = append(conns, d.conn)
				}
			default:
			}
		}
		e.mu.Unlock()
		for _, c := range conns {
			c.CloseWithError(appCodeClosed, "endpoint closed")
		}
		e.tr.Close()
		e.wg.Wait()
		e.conn.Close()
		for _, q := range e.queues {
			for {
				select {
				case s := <-q:
					s.abort(CodeUnavailable)
					continue
				default:
				}
				break
			}
		}
	})
	return nil
}

// DropRevoked closes every open connection, inbound or dialed, whose peer
// holds a certificate the credentials now list as revoked (Creds.SetRevoked
// refuses new handshakes; this ends the ones made before). It returns how
// many it closed.
func (e *Endpoint) DropRevoked() int {
	e.mu.Lock()
	var conns []*quic.Conn
	var peers []Identity
	for c, id := range e.inbound {
		if e.creds.Revoked(id.Serial) {
			conns, peers = append(conns, c), append(peers, id)
		}
	}
	for addr, d := range e.dialing {
		select {
		case <-d.ready:
			if d.conn != nil && e.creds.Revoked(d.peer.Serial) {
				conns, peers = append(conns, d.conn), append(peers, d.peer)
				delete(e.dialing, addr)
			}
		default:
		}
	}
	e.mu.Unlock()
	for i, c := range conns {
		e.log.Warn("connection closed: certificate revoked", "peer", peers[i].String(), "serial", peers[i].Serial)
		c.CloseWithError(quic.ApplicationErrorCode(CodeForbidden), "certificate revoked")
	}
	return len(conns)
}

func (e *Endpoint) closed() bool {
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}

// acceptConns accepts connections until Close.
func (e *Endpoint) acceptConns() {
	defer e.wg.Done()
	for {
		conn, err := e.ln.Accept(contextDone(e.done))
		if err != nil {
			if !e.closed() {
				e.log.Error("quic listener failed", "err", err)
			}
			return
		}
		id, err := PeerIdentity(conn.ConnectionState().TLS)
		if err != nil {
			// crypto/tls verified the chain; the identity check in
			// ServerTLS makes this unreachable unless that changes.
			e.log.Warn("connection without identity refused", "peer", conn.RemoteAddr().String(), "err", err)
			conn.CloseWithError(quic.ApplicationErrorCode(CodeForbidden), "no identity")
			continue
		}
		if id.Operator {
			// Operators use the admin API; the mesh is for nodes and agents.
			e.log.Warn("connection refused: operator certificates are for the admin API", "peer", id.String(), "addr", conn.RemoteAddr().String())
			conn.CloseWithError(quic.ApplicationErrorCode(CodeForbidden), "operator certificate")
			continue
		}
		e.mu.Lock()
		if e.closed() {
			e.mu.Unlock()
			conn.CloseWithError(appCodeClosed, "endpoint closed")
			return
		}
		e.inbound[conn] = id
		e.mu.Unlock()
		e.log.Debug("connection accepted", "peer", id.String(), "addr", conn.RemoteAddr().String())
		e.wg.Add(1)
		go e.serveConn(conn, id)
	}
}

// serveConn accepts the streams of one inbound connection.
func (e *Endpoint) serveConn(conn *quic.Conn, id Identity) {
	defer e.wg.Done()
	defer func() {
		e.mu.Lock()
		delete(e.inbound, conn)
		e.mu.Unlock()
	}()
	for {
		qs, err := conn.AcceptStream(conn.Context())
		if err != nil {
			e.log.Debug("connection ended", "peer", id.String(), "err", err)
			return
		}
		e.wg.Add(1)
		go e.serveStream(conn, id, qs)
	}
}

// serveStream reads and checks the header of an inbound stream, answers it
// and queues the stream for Accept.
func (e *Endpoint) serveStream(conn *quic.Conn, id Identity, qs *quic.Stream) {
	defer e.wg.Done()
	s := &Stream{qs: qs, conn: conn, peer: id}
	qs.SetReadDeadline(time.Now().Add(e.opts.HandshakeTimeout))
	kind, err := ReadStreamHeader(qs)
	if err != nil {
		e.log.Warn("stream refused: bad header", "peer", id.String(), "err", err)
		s.refuse(CodeBadRequest)
		return
	}
	qs.SetReadDeadline(time.Time{})
	s.kind = kind
	if id.Agent && kind != KindIngest {
		e.log.Warn("stream refused: agents may open only ingest streams", "peer", id.String(), "kind", kind.String())
		s.refuse(CodeForbidden)
		return
	}
	select {
	case e.slots[kind] <- struct{}{}:
	default:
		e.log.Warn("stream refused: accept queue full", "peer", id.String(), "kind", kind.String())
		s.refuse(CodeUnavailable)
		return
	}
	var reply [2]byte
	binary.BigEndian.PutUint16(reply[:], uint16(CodeOK))
	if _, err := qs.Write(reply[:]); err != nil {
		<-e.slots[kind]
		s.abort(CodeInternal)
		return
	}
	e.queues[kind] <- s // never blocks: a slot is reserved
}

// Accept returns the next inbound stream of kind. Each kind has its own
// queue; when a kind's queue is full new streams of that kind are refused
// with CodeUnavailable. It returns ErrClosed after Close.
func (e *Endpoint) Accept(ctx context.Context, kind StreamKind) (*Stream, error) {
	if !kind.Valid() {
		return nil, fmt.Errorf("accept: unknown stream kind %d", kind)
	}
	select {
	case s := <-e.queues[kind]:
		<-e.slots[kind]
		return s, nil
	case <-e.done:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, fmt.Errorf("accept %s stream: %w", kind, ctx.Err())
	}
}

// Dial opens a stream of kind to addr (host:port) and waits for the peer to
// accept it. ctx bounds the whole dial (handshake and answer). Errors wrap
// ErrUnreachable (retryable: timeout, no route, peer restarting, queue
// full) or ErrRefused (permanent: a certificate refused by either side, or
// the kind not allowed for us), or ctx's error when ctx was canceled.
func (e *Endpoint) Dial(ctx context.Context, addr string, kind StreamKind) (*Stream, error) {
	if !kind.Valid() {
		return nil, fmt.Errorf("dial %s: unknown stream kind %d", addr, kind)
	}
	for attempt := 0; ; attempt++ {
		if e.closed() {
			return nil, ErrClosed
		}
		d, fresh, err := e.connTo(ctx, addr)
		if err != nil {
			return nil, e.classify(ctx, fmt.Sprintf("dial %s", addr), err)
		}
		conn := d.conn
		s, err := e.openStream(ctx, d, kind)
		if err == nil {
			return s, nil
		}
		var re *RemoteError
		if errors.As(err, &re) || ctx.Err() != nil {
			return nil, e.classify(ctx, fmt.Sprintf("open %s stream to %s", kind, addr), err)
		}
		// The connection died (peer restarted, idled out): forget it and
		// try once more on a new one unless this one was just made.
		e.forget(addr, conn)
		if fresh || attempt > 0 {
			return nil, e.classify(ctx, fmt.Sprintf("open %s stream to %s", kind, addr), err)
		}
		e.log.Debug("cached connection dead, redialing", "addr", addr, "err", err)
	}
}

// connTo returns a live connection to addr, dialing one if needed. fresh
// says it was dialed by this call.
func (e *Endpoint) connTo(ctx context.Context, addr string) (d *dialEntry, fresh bool, err error) {
	for {
		e.mu.Lock()
		if e.closed() {
			e.mu.Unlock()
			return nil, false, ErrClosed
		}
		d, ok := e.dialing[addr]
		if !ok {
			d = &dialEntry{ready: make(chan struct{})}
			e.dialing[addr] = d
			e.mu.Unlock()
			d.conn, d.err = e.dialConn(ctx, addr)
			if d.err == nil {
				d.peer, d.err = e.creds.verifyChain(d.conn.ConnectionState().TLS.PeerCertificates, x509.ExtKeyUsageServerAuth)
				if d.err != nil {
					d.conn.CloseWithError(quic.ApplicationErrorCode(CodeForbidden), "bad server identity")
					d.err = fmt.Errorf("%w: %w", ErrRefused, d.err)
				}
			}
			close(d.ready)
			if d.err != nil {
				e.mu.Lock()
				if e.dialing[addr] == d {
					delete(e.dialing, addr)
				}
				e.mu.Unlock()
				return nil, true, d.err
			}
			if e.closed() {
				d.conn.CloseWithError(appCodeClosed, "endpoint closed")
				return nil, true, ErrClosed
			}
			return d, true, nil
		}
		e.mu.Unlock()
		select {
		case <-d.ready:
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-e.done:
			return nil, false, ErrClosed
		}
		if d.err != nil {
			// Someone else's dial failed (with their ctx): try our own.
			continue
		}
		if d.conn.Context().Err() == nil {
			return d, false, nil
		}
		e.forget(addr, d.conn)
	}
}

func (e *Endpoint) dialConn(ctx context.Context, addr string) (*quic.Conn, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("resolve: %w", err)
	}
	conn, err := e.tr.Dial(ctx, ua, e.clientTLS, e.dialConf)
	if err != nil {
		return nil, err
	}
	e.log.Debug("connection dialed", "addr", addr)
	return conn, nil
}

// forget drops conn from the cache (if it is still the cached one for
// addr) and closes it.
func (e *Endpoint) forget(addr string, conn *quic.Conn) {
	e.mu.Lock()
	if d, ok := e.dialing[addr]; ok && d.conn == conn {
		delete(e.dialing, addr)
	}
	e.mu.Unlock()
	conn.CloseWithError(appCodeClosed, "redial")
}

// openStream opens a stream on conn, writes the header and reads the
// peer's 2-byte answer.
func (e *Endpoint) openStream(ctx context.Context, d *dialEntry, kind StreamKind) (*Stream, error) {
	qs, err := d.conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	s := &Stream{qs: qs, conn: d.conn, kind: kind, peer: d.peer}
	if dl, ok := ctx.Deadline(); ok {
		qs.SetDeadline(dl)
	}
	// Set after the deadline above so that a cancellation always wins.
	stop := context.AfterFunc(ctx, func() { qs.SetDeadline(time.Now()) })
	defer stop()
	if err := WriteStreamHeader(qs, kind); err != nil {
		s.abort(CodeInternal)
		return nil, err
	}
	var reply [2]byte
	if _, err := io.ReadFull(qs, reply[:]); err != nil {
		s.abort(CodeInternal)
		return nil, err
	}
	if !stop() {
		s.abort(CodeInternal)
		return nil, ctx.Err()
	}
	qs.SetDeadline(time.Time{})
	if code := ErrCode(binary.BigEndian.Uint16(reply[:])); code != CodeOK {
		s.abort(CodeOK)
		return nil, &RemoteError{Code: code}
	}
	return s, nil
}

// classify wraps err from a dial with ErrRefused or ErrUnreachable (or
// returns ctx's error when the caller canceled).
func (e *Endpoint) classify(ctx context.Context, what string, err error) error {
	switch {
	case errors.Is(err, ErrClosed):
		return fmt.Errorf("%s: %w", what, ErrClosed)
	case errors.Is(err, ErrRefused), errors.Is(err, ErrUnreachable):
		return fmt.Errorf("%s: %w", what, err)
	case isAuthFailure(err):
		return fmt.Errorf("%s: %w: %w", what, ErrRefused, err)
	case errors.Is(ctx.Err(), context.Canceled):
		return fmt.Errorf("%s: %w", what, ctx.Err())
	}
	var re *RemoteError
	if errors.As(err, &re) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%s: %w: %w", what, ErrUnreachable, err)
}

// isAuthFailure reports a TLS failure: a crypto error from either side
// (a refused certificate ends the handshake with a TLS alert), or the peer
// closing the connection with CodeForbidden.
func isAuthFailure(err error) bool {
	var te *quic.TransportError
	if errors.As(err, &te) && te.ErrorCode.IsCryptoError() {
		return true
	}
	var ae *quic.ApplicationError
	if errors.As(err, &ae) && ae.ErrorCode == quic.ApplicationErrorCode(CodeForbidden) {
		return true
	}
	var ve *tls.CertificateVerificationError
	return errors.As(err, &ve)
}

// contextDone adapts a done channel to a context, for APIs that take one.
func contextDone(done <-chan struct{}) context.Context {
	return doneCtx(done)
}

type doneCtx <-chan struct{}

func (d doneCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (d doneCtx) Done() <-chan struct{}       { return d }
func (d doneCtx) Value(any) any               { return nil }
func (d doneCtx) Err() error {
	select {
	case <-d:
		return context.Canceled
	default:
		return nil
	}
}
