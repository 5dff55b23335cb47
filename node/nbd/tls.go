package nbd

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"
)

// Why a TLS-required Server refused a client. The error given to
// Export.OnRefused and logged matches exactly one of them (errors.Is) and
// says more.
var (
	// ErrTLSRequired: the client would not start TLS. It asked for an
	// export with NBD_OPT_EXPORT_NAME before TLS, did not speak fixed
	// newstyle (which STARTTLS needs), or ended the negotiation after
	// options were refused with NBD_REP_ERR_TLS_REQD.
	ErrTLSRequired = errors.New("TLS required")
	// ErrHandshake: the TLS handshake after NBD_OPT_STARTTLS failed: no
	// client certificate, one the config does not verify, no common
	// version or cipher, a timeout, or a client that is not speaking TLS.
	ErrHandshake = errors.New("TLS handshake failed")
	// ErrUnauthorized: the handshake passed and Export.Authorize refused
	// the client.
	ErrUnauthorized = errors.New("client not authorized")
)

// checkTLS checks that cfg is fit for a TLS-required server: it presents
// a certificate and requires verified client certificates of TLS 1.2 or
// later (proto.md: implementations must support 1.2 and should not offer
// less by default).
func checkTLS(cfg *tls.Config) error {
	switch {
	case len(cfg.Certificates) == 0 && cfg.GetCertificate == nil && cfg.GetConfigForClient == nil:
		return errors.New("nbd export: TLS config has no server certificate")
	case cfg.ClientAuth != tls.RequireAndVerifyClientCert:
		return fmt.Errorf("nbd export: TLS config has ClientAuth %v, want RequireAndVerifyClientCert", cfg.ClientAuth)
	case cfg.MinVersion != 0 && cfg.MinVersion < tls.VersionTLS12:
		return fmt.Errorf("nbd export: TLS config allows version %#x, want TLS 1.2 or later", cfg.MinVersion)
	}
	return nil
}

// bufConn is a connection whose reads come through the handshake's
// buffered reader first, so that nothing the client sent right after
// NBD_OPT_STARTTLS (the start of its ClientHello, from a client that did
// not wait for the ACK) is lost.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// startTLS runs the server side of the TLS handshake on c, whose unread
// bytes are in r, then Authorize. It returns the TLS connection, or an
// error matching ErrHandshake or ErrUnauthorized; the caller closes c.
func (s *Server) startTLS(ctx context.Context, c net.Conn, r *bufio.Reader) (*tls.Conn, error) {
	tc := tls.Server(&bufConn{Conn: c, r: r}, s.tls)
	// The connection's deadline (AuthTimeout) bounds the handshake too;
	// ctx ending interrupts it.
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	if s.exp.Authorize != nil {
		if err := s.exp.Authorize(tc.ConnectionState()); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUnauthorized, err)
		}
	}
	return tc, nil
}

// refused reports whether err is a refusal of a TLS-required server.
func refused(err error) bool {
	return errors.Is(err, ErrTLSRequired) || errors.Is(err, ErrHandshake) || errors.Is(err, ErrUnauthorized)
}

// authDeadline is when a client connecting now must have passed
// Authorize.
func (s *Server) authDeadline() time.Time {
	d := s.exp.AuthTimeout
	if d <= 0 {
		d = defaultAuthTimeout
	}
	return time.Now().Add(d)
}
