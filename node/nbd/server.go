package nbd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"
)

// Export is what a Server serves: one image of Size bytes.
type Export struct {
	// Name is the export's name. A client asking for "" gets this export
	// too: it is the default (and only) export.
	Name string
	// Size is the image size in bytes.
	Size int64
	// Data is the read-only point. ReadAt must be safe for concurrent use
	// and must return Size bytes; the server never writes to it.
	Data io.ReaderAt
	// Writable lets clients write. Writes go to an overlay (a sparse
	// temporary file and a bitmap of written 4 KiB blocks), never to Data,
	// and are lost when the Server is closed.
	Writable bool
	// OverlayDir is where the overlay file is created; "" = os.TempDir().
	OverlayDir string
	// Log receives connection events; nil = slog.Default(). Scope it (for
	// example with the volume) before passing it in.
	Log *slog.Logger

	// TLS, when set, puts the server in TLS-required mode (FORCEDTLS in
	// proto.md): a client must send NBD_OPT_STARTTLS and complete a TLS
	// handshake on the same connection before any other option is
	// answered, and option haggling starts over inside TLS. The config
	// must present a certificate and require verified client
	// certificates (ClientAuth tls.RequireAndVerifyClientCert), TLS 1.2
	// or later; NewServer keeps a clone.
	TLS *tls.Config
	// Authorize, with TLS, is called after each successful handshake; an
	// error closes the connection. nil admits every client whose
	// certificate the handshake verified. It must be safe for concurrent
	// use.
	Authorize func(tls.ConnectionState) error
	// AuthTimeout, with TLS, bounds the time from a client connecting to
	// it passing Authorize (the whole unauthenticated part); zero = 30 s.
	AuthTimeout time.Duration
	// OnRefused, with TLS, is called once for every client the server
	// refused, with its address and an error matching ErrTLSRequired,
	// ErrHandshake or ErrUnauthorized, so that callers can record it.
	// Refusals are also logged at WARN on Log. It is called from the
	// connection's goroutine and must be safe for concurrent use.
	OnRefused func(remote net.Addr, err error)
}

// Stats is a snapshot of a Server's counters.
type Stats struct {
	Connections  int64     // connections accepted since NewServer
	Active       int64     // connections open now
	Requests     int64     // transmission-phase requests received
	BytesRead    int64     // bytes sent in successful READ replies
	BytesWritten int64     // bytes stored by successful WRITEs (zeroing not counted)
	Refused      int64     // clients refused for TLS or by Authorize (see Export.TLS)
	FirstRequest time.Time // when the first transmission request arrived; zero until then
}

// Server serves one Export over NBD (fixed newstyle, simple replies). Serve
// may be called more than once, also concurrently (for several listeners);
// all of them share the overlay. Stats is safe for concurrent use.
type Server struct {
	exp   Export
	log   *slog.Logger
	tls   *tls.Config // nil: no TLS
	flags uint16      // transmission flags
	ov    *overlay

	conns        atomic.Int64
	active       atomic.Int64
	requests     atomic.Int64
	bytesRead    atomic.Int64
	bytesWritten atomic.Int64
	refused      atomic.Int64
	first        atomic.Pointer[time.Time]

	closeOnce sync.Once
	closeErr  error
}

// NewServer checks exp and, if it is Writable, creates the overlay file. The
// caller must Close the Server after its last Serve has returned.
func NewServer(exp Export) (*Server, error) {
	switch {
	case exp.Data == nil:
		return nil, errors.New("nbd export: Data is nil")
	case exp.Size < 0:
		return nil, fmt.Errorf("nbd export: size %d is negative", exp.Size)
	case len(exp.Name) > maxExportName:
		return nil, fmt.Errorf("nbd export: name is %d bytes, want at most %d", len(exp.Name), maxExportName)
	case !utf8.ValidString(exp.Name):
		return nil, errors.New("nbd export: name is not valid UTF-8")
	}
	for i := 0; i < len(exp.Name); i++ {
		if exp.Name[i] == 0 {
			return nil, errors.New("nbd export: name contains NUL")
		}
	}
	if exp.TLS == nil && (exp.Authorize != nil || exp.OnRefused != nil) {
		return nil, errors.New("nbd export: Authorize and OnRefused need TLS")
	}
	if exp.TLS != nil {
		if err := checkTLS(exp.TLS); err != nil {
			return nil, err
		}
	}
	s := &Server{exp: exp, log: exp.Log}
	if exp.TLS != nil {
		s.tls = exp.TLS.Clone()
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.flags = tflagHasFlags | tflagSendFlush
	if exp.Writable {
		// The overlay is shared by all connections and written through to
		// the file at once, so CAN_MULTI_CONN would also be true here; it is
		// advertised for read-only exports only, the conservative choice.
		s.flags |= tflagSendFUA | tflagSendTrim | tflagSendWriteZeroes
		ov, err := newOverlay(exp.OverlayDir, exp.Size)
		if err != nil {
			return nil, err
		}
		s.ov = ov
	} else {
		s.flags |= tflagReadOnly | tflagCanMultiConn
	}
	return s, nil
}

// Serve accepts connections on ln and serves each one concurrently until
// ctx ends or ln is closed; it then closes ln and every connection it
// accepted, waits for their requests to finish, and returns nil. It
// returns an error only when Accept fails for a reason other than ln being
// closed, after the same cleanup. Temporary Accept failures (too many open
// files) are retried with a growing pause.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	var wg sync.WaitGroup
	defer func() {
		cancel() // cuts the connections
		wg.Wait()
	}()
	var pause time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				ln.Close()
				return nil
			}
			if !temporaryAccept(err) {
				ln.Close()
				return fmt.Errorf("nbd accept on %s: %w", ln.Addr(), err)
			}
			if pause == 0 { // once per streak of failures
				s.log.Warn("nbd accept failed, retrying", "err", err)
			}
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			t := time.NewTimer(pause)
			select {
			case <-ctx.Done():
				t.Stop()
			case <-t.C:
			}
			continue
		}
		pause = 0
		wg.Go(func() {
			log := s.log.With("peer", c.RemoteAddr().String())
			log.Info("nbd client connected")
			err := s.serveConn(ctx, c, log)
			switch {
			case refused(err):
				s.refused.Add(1)
				log.Warn("nbd client refused", "err", err)
				if s.exp.OnRefused != nil {
					s.exp.OnRefused(c.RemoteAddr(), err)
				}
			case err != nil:
				log.Info("nbd client dropped", "err", err)
			default:
				log.Info("nbd client disconnected")
			}
		})
	}
}

// temporaryAccept reports whether an Accept error may go away by itself.
func temporaryAccept(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ENOBUFS) ||
		errors.Is(err, syscall.ENOMEM)
}

// Close releases the overlay, discarding every write clients made. Call it
// after Serve has returned; requests still running fail with EIO. Close is
// idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		if s.ov != nil {
			s.closeErr = s.ov.close()
		}
	})
	return s.closeErr
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	st := Stats{
		Connections:  s.conns.Load(),
		Active:       s.active.Load(),
		Requests:     s.requests.Load(),
		BytesRead:    s.bytesRead.Load(),
		BytesWritten: s.bytesWritten.Load(),
		Refused:      s.refused.Load(),
	}
	if t := s.first.Load(); t != nil {
		st.FirstRequest = *t
	}
	return st
}

// noteRequest counts a transmission request and stamps the first one.
func (s *Server) noteRequest() {
	s.requests.Add(1)
	if s.first.Load() == nil {
		now := time.Now()
		s.first.CompareAndSwap(nil, &now)
	}
}

// lookup returns whether name selects this Server's export.
func (s *Server) lookup(name string) bool {
	return name == "" || name == s.exp.Name
}

// overlayDir is the directory for the overlay file.
func overlayDir(dir string) string {
	if dir == "" {
		return os.TempDir()
	}
	return dir
}
