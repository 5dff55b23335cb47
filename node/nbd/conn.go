package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"net"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sync/semaphore"
)

// request is one transmission-phase request header.
type request struct {
	flags  uint16
	typ    uint16
	cookie uint64
	off    uint64
	length uint32
}

// session is the transmission phase of one connection: a reader loop that
// decodes requests and runs READ, WRITE and WRITE_ZEROES concurrently, and
// replies written one at a time under wmu (in completion order, which NBD
// allows).
type session struct {
	s   *Server
	c   io.ReadWriteCloser
	log *slog.Logger

	wmu  sync.Mutex
	werr error // sticky: once a reply failed, the connection is dead

	ioErrs atomic.Int64 // failed reads or writes of the point or overlay
}

// serveConn serves one connection until the client disconnects, breaks
// the protocol, or ctx ends; it closes c. It returns nil for a clean end
// (NBD_CMD_DISC, NBD_OPT_ABORT, the client closing between messages, ctx
// ending), an error matching ErrTLSRequired, ErrHandshake or
// ErrUnauthorized when a TLS-required server refused the client, and an
// error describing why it dropped the client otherwise.
func (s *Server) serveConn(ctx context.Context, c net.Conn, log *slog.Logger) error {
	s.conns.Add(1)
	s.active.Add(1)
	defer c.Close()
	defer s.active.Add(-1) // before the close, so a client that saw it sees Active drop
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()

	if s.tls != nil {
		// Cleared once the client is authorized.
		c.SetDeadline(s.authDeadline())
	}
	conn, r, err := s.handshake(ctx, c)
	if conn != nil && conn != io.ReadWriteCloser(c) {
		// The TLS connection: closing it sends close_notify first.
		defer conn.Close()
	}
	if err != nil {
		if refused(err) && ctx.Err() == nil {
			return err
		}
		if errors.Is(err, errAbort) || errors.Is(err, io.EOF) || ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("handshake: %w", err)
	}
	ss := &session{s: s, c: conn, log: log}
	err = ss.run(ctx, r)
	if n := ss.ioErrs.Load(); n > 1 {
		log.Error("nbd i/o errors on this connection", "count", n)
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// run reads requests until NBD_CMD_DISC or an error, then waits for the
// requests it started.
func (ss *session) run(ctx context.Context, r *bufio.Reader) error {
	s := ss.s
	// Bounds the memory held by requests in flight: a request costs its
	// length, and at least minRequestCost so that zero-length requests
	// cannot start unbounded goroutines.
	sem := semaphore.NewWeighted(inflightBudget)
	var wg sync.WaitGroup
	defer wg.Wait()

	var hdr [requestLen]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read request: %w", err)
		}
		if m := binary.BigEndian.Uint32(hdr[0:]); m != magicRequest {
			return fmt.Errorf("request magic %#x: want %#x", m, magicRequest)
		}
		req := request{
			flags:  binary.BigEndian.Uint16(hdr[4:]),
			typ:    binary.BigEndian.Uint16(hdr[6:]),
			cookie: binary.BigEndian.Uint64(hdr[8:]),
			off:    binary.BigEndian.Uint64(hdr[16:]),
			length: binary.BigEndian.Uint32(hdr[24:]),
		}
		s.noteRequest()
		if req.typ == cmdDisc {
			return nil
		}

		if errno := s.check(req); errno != 0 {
			if req.typ == cmdWrite {
				// The payload follows whatever the verdict; drained, not
				// buffered, so the connection stays in step.
				if _, err := io.CopyN(io.Discard, r, int64(req.length)); err != nil {
					return fmt.Errorf("drain refused write of %d bytes: %w", req.length, err)
				}
			}
			ss.log.Debug("nbd request refused", "cmd", req.typ, "offset", req.off, "length", req.length, "errno", errno)
			if err := ss.reply(req.cookie, errno, nil); err != nil {
				return err
			}
			continue
		}

		switch req.typ {
		case cmdFlush, cmdTrim, cmdCache:
			// FLUSH: the overlay is scratch space that dies with the
			// server, so there is nothing to make durable. TRIM is a hint
			// that may be ignored. CACHE is a hint too.
			if err := ss.reply(req.cookie, 0, nil); err != nil {
				return err
			}
			continue
		}

		cost := int64(minRequestCost)
		if req.typ != cmdWriteZeroes {
			cost = max(cost, int64(req.length))
		}
		if err := sem.Acquire(ctx, cost); err != nil {
			return nil // ctx ended
		}
		var payload []byte
		if req.typ == cmdWrite {
			payload = getBuf(int(req.length))
			if _, err := io.ReadFull(r, payload); err != nil {
				putBuf(payload)
				sem.Release(cost)
				return fmt.Errorf("read write payload of %d bytes: %w", req.length, err)
			}
		}
		wg.Go(func() {
			defer sem.Release(cost)
			ss.handle(req, payload)
		})
	}
}

// check validates a request against the export and returns an NBD error
// value, or 0 if the request may run. Unknown commands and flags get
// EINVAL; writes of any kind to a read-only export EPERM; reads and trims
// past the end EINVAL, writes past the end ENOSPC; READ and WRITE longer
// than maxRequest EINVAL.
func (s *Server) check(req request) uint32 {
	allowed := cmdFlagFUA
	if req.typ == cmdWriteZeroes {
		allowed |= cmdFlagNoHole
	}
	if req.flags&^allowed != 0 {
		return errInval
	}
	inRange := req.off <= uint64(s.exp.Size) && uint64(req.length) <= uint64(s.exp.Size)-req.off
	switch req.typ {
	case cmdRead:
		if req.length > maxRequest || !inRange {
			return errInval
		}
	case cmdCache:
		if !inRange {
			return errInval
		}
	case cmdWrite:
		switch {
		case s.ov == nil:
			return errPerm
		case req.length > maxRequest:
			return errInval
		case !inRange:
			return errNoSpc
		}
	case cmdWriteZeroes:
		switch {
		case s.ov == nil:
			return errPerm
		case !inRange:
			return errNoSpc
		}
	case cmdTrim:
		switch {
		case s.ov == nil:
			return errPerm
		case !inRange:
			return errInval
		}
	case cmdFlush:
	default:
		return errInval
	}
	return 0
}

// handle runs a checked READ, WRITE or WRITE_ZEROES and replies. payload
// is a WRITE's data, from getBuf; handle returns it.
func (ss *session) handle(req request, payload []byte) {
	s := ss.s
	off := int64(req.off)
	switch req.typ {
	case cmdRead:
		buf := getBuf(int(req.length))
		defer putBuf(buf)
		var err error
		if s.ov != nil {
			err = s.ov.readAt(s.exp.Data, buf, off)
		} else if len(buf) > 0 {
			err = readFull(s.exp.Data, buf, off)
		}
		if err != nil {
			ss.reply(req.cookie, ss.ioError("read", err), nil)
			return
		}
		if ss.reply(req.cookie, 0, buf) == nil {
			s.bytesRead.Add(int64(len(buf)))
		}

	case cmdWrite:
		err := s.ov.writeAt(s.exp.Data, payload, off)
		putBuf(payload)
		if err != nil {
			ss.reply(req.cookie, ss.ioError("write", err), nil)
			return
		}
		if ss.reply(req.cookie, 0, nil) == nil {
			s.bytesWritten.Add(int64(req.length))
		}

	case cmdWriteZeroes:
		if err := s.ov.zero(s.exp.Data, off, int64(req.length), req.flags&cmdFlagNoHole != 0); err != nil {
			ss.reply(req.cookie, ss.ioError("write zeroes", err), nil)
			return
		}
		ss.reply(req.cookie, 0, nil)
	}
}

// ioError logs the first I/O failure of the connection (later ones are
// counted and logged once at the end) and maps err to an NBD error value.
func (ss *session) ioError(op string, err error) uint32 {
	if ss.ioErrs.Add(1) == 1 {
		ss.log.Error("nbd "+op+" failed", "err", err)
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EFBIG) {
		return errNoSpc
	}
	return errIO
}

// reply sends one simple reply, with data only if errno is 0. A failed
// write closes the connection, which ends the reader loop.
func (ss *session) reply(cookie uint64, errno uint32, data []byte) error {
	var hdr [replyLen]byte
	binary.BigEndian.PutUint32(hdr[0:], magicReply)
	binary.BigEndian.PutUint32(hdr[4:], errno)
	binary.BigEndian.PutUint64(hdr[8:], cookie)

	ss.wmu.Lock()
	defer ss.wmu.Unlock()
	if ss.werr != nil {
		return ss.werr
	}
	var err error
	if errno == 0 && len(data) > 0 {
		bufs := net.Buffers{hdr[:], data}
		_, err = bufs.WriteTo(ss.c)
	} else {
		_, err = ss.c.Write(hdr[:])
	}
	if err != nil {
		ss.werr = fmt.Errorf("write reply: %w", err)
		ss.c.Close()
		return ss.werr
	}
	return nil
}

// Request buffers come from pools by power-of-two size, 4 KiB to
// maxRequest, so steady traffic does not allocate.
const minBufShift = 12

var bufPools [maxRequestShift - minBufShift + 1]sync.Pool

func getBuf(n int) []byte {
	if n == 0 {
		return nil
	}
	shift := max(bits.Len(uint(n-1)), minBufShift)
	if p, ok := bufPools[shift-minBufShift].Get().(*[]byte); ok {
		return (*p)[:n]
	}
	return make([]byte, n, 1<<shift)
}

func putBuf(b []byte) {
	c := cap(b)
	if c < 1<<minBufShift || c&(c-1) != 0 || c > maxRequest {
		return
	}
	b = b[:c]
	bufPools[bits.TrailingZeros(uint(c))-minBufShift].Put(&b)
}
