package mesh

import (
	"context"
	"encoding/binary"
	"net"
	"time"

	"github.com/quic-go/quic-go"
)

// Stream is one bidirectional QUIC stream of a known kind, past its header
// and the peer's answer. It implements net.Conn: Close closes both
// directions (write side FIN, read side canceled). Peer is the verified
// identity of the other side. Read and Write may be called concurrently
// with each other, not each with itself.
type Stream struct {
	qs   *quic.Stream
	conn *quic.Conn
	kind StreamKind
	peer Identity
}

var _ net.Conn = (*Stream)(nil)

// Peer returns the verified identity of the other side.
func (s *Stream) Peer() Identity { return s.peer }

// Context is canceled when the stream can no longer send: closed or
// reset by either side, or its connection gone.
func (s *Stream) Context() context.Context { return s.qs.Context() }

// Kind returns the stream's kind.
func (s *Stream) Kind() StreamKind { return s.kind }

// Read reads from the stream.
func (s *Stream) Read(p []byte) (int, error) { return s.qs.Read(p) }

// Write writes to the stream. It blocks under flow control.
func (s *Stream) Write(p []byte) (int, error) { return s.qs.Write(p) }

// WriteWithLimit is Write, with limiter asked before each piece how many
// bytes may go now (a hook for link throttling; see quic-go).
func (s *Stream) WriteWithLimit(p []byte, limiter func(maxBytes int) int) (int, error) {
	return s.qs.WriteWithLimit(p, limiter)
}

// CloseWrite ends the write direction (FIN) and keeps reading.
func (s *Stream) CloseWrite() error { return s.qs.Close() }

// Close ends the write direction (FIN) and stops reading.
func (s *Stream) Close() error {
	err := s.qs.Close()
	s.qs.CancelRead(quic.StreamErrorCode(CodeOK))
	return err
}

// Abort resets both directions with code: the peer's reads and writes fail
// with a *quic.StreamError carrying it.
func (s *Stream) Abort(code ErrCode) { s.abort(code) }

func (s *Stream) abort(code ErrCode) {
	s.qs.CancelWrite(quic.StreamErrorCode(code))
	s.qs.CancelRead(quic.StreamErrorCode(code))
}

// refuse answers an inbound stream with code and closes it.
func (s *Stream) refuse(code ErrCode) {
	var reply [2]byte
	binary.BigEndian.PutUint16(reply[:], uint16(code))
	s.qs.SetWriteDeadline(time.Now().Add(time.Second))
	s.qs.Write(reply[:])
	s.Close()
}

// LocalAddr returns the local address of the connection.
func (s *Stream) LocalAddr() net.Addr { return s.conn.LocalAddr() }

// RemoteAddr returns the peer's address.
func (s *Stream) RemoteAddr() net.Addr { return s.conn.RemoteAddr() }

// SetDeadline sets the read and write deadlines.
func (s *Stream) SetDeadline(t time.Time) error { return s.qs.SetDeadline(t) }

// SetReadDeadline sets the read deadline.
func (s *Stream) SetReadDeadline(t time.Time) error { return s.qs.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline.
func (s *Stream) SetWriteDeadline(t time.Time) error { return s.qs.SetWriteDeadline(t) }
