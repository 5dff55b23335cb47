package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// errAbort ends a connection cleanly during option haggling: the client
// sent NBD_OPT_ABORT.
var errAbort = errors.New("client aborted the handshake")

// handshake runs the fixed newstyle negotiation on a fresh connection c.
// It returns the connection and reader for the transmission phase (a TLS
// connection after NBD_OPT_STARTTLS, else c) and nil once the client has
// entered it; errAbort after NBD_OPT_ABORT; an error matching
// ErrTLSRequired, ErrHandshake or ErrUnauthorized when a TLS-required
// server refuses the client; and any other error when the connection
// must be closed (a read or write failed, a bad magic, unknown client
// flags, an unknown name in NBD_OPT_EXPORT_NAME). When it returns a TLS
// connection with an error, the caller closes that too.
func (s *Server) handshake(ctx context.Context, c net.Conn) (conn io.ReadWriteCloser, r *bufio.Reader, err error) {
	conn = c
	var w io.Writer = c
	r = bufio.NewReaderSize(c, 64<<10)
	var greet [8 + 8 + 2]byte
	binary.BigEndian.PutUint64(greet[0:], magicNBD)
	binary.BigEndian.PutUint64(greet[8:], magicOpt)
	binary.BigEndian.PutUint16(greet[16:], flagFixedNewstyle|flagNoZeroes)
	if _, err := w.Write(greet[:]); err != nil {
		return conn, r, fmt.Errorf("write greeting: %w", err)
	}
	var cf [4]byte
	if _, err := io.ReadFull(r, cf[:]); err != nil {
		return conn, r, fmt.Errorf("read client flags: %w", err)
	}
	cflags := binary.BigEndian.Uint32(cf[:])
	if cflags&^(cflagFixedNewstyle|cflagNoZeroes) != 0 {
		return conn, r, fmt.Errorf("client flags %#x: unknown bits", cflags)
	}
	noZeroes := cflags&cflagNoZeroes != 0

	// needTLS: TLS-required mode and no TLS yet. Until it is false, only
	// NBD_OPT_STARTTLS and NBD_OPT_ABORT are looked at; every other
	// option's data is drained unread, so an unauthenticated client
	// makes the server allocate nothing.
	needTLS := s.tls != nil
	tlsRefusals := 0 // options refused with NBD_REP_ERR_TLS_REQD
	// refuse turns a failure before TLS into a refusal once the client
	// has been told that TLS is required.
	refuse := func(err error) error {
		if needTLS && tlsRefusals > 0 {
			return fmt.Errorf("%w: %d options refused with NBD_REP_ERR_TLS_REQD, then: %w", ErrTLSRequired, tlsRefusals, err)
		}
		return err
	}
	if needTLS && cflags&cflagFixedNewstyle == 0 {
		return conn, r, fmt.Errorf("%w: the client does not speak fixed newstyle, which NBD_OPT_STARTTLS needs", ErrTLSRequired)
	}

	var hdr [optHeaderLen]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return conn, r, refuse(fmt.Errorf("read option header: %w", err))
		}
		if m := binary.BigEndian.Uint64(hdr[0:]); m != magicOpt {
			return conn, r, refuse(fmt.Errorf("option magic %#x: want %#x", m, magicOpt))
		}
		opt := binary.BigEndian.Uint32(hdr[8:])
		n := binary.BigEndian.Uint32(hdr[12:])

		if opt == optAbort {
			// The data, if any, is ignored; the client may already be gone,
			// so a failed ACK does not matter.
			if _, err := io.CopyN(io.Discard, r, int64(n)); err == nil {
				optReply(w, opt, repAck, nil)
			}
			return conn, r, refuse(errAbort)
		}
		if needTLS {
			if _, err := io.CopyN(io.Discard, r, int64(n)); err != nil {
				return conn, r, refuse(fmt.Errorf("drain option %d of %d bytes: %w", opt, n, err))
			}
			switch {
			case opt == optExportName:
				// NBD_OPT_EXPORT_NAME cannot be answered with an error.
				return conn, r, fmt.Errorf("%w: NBD_OPT_EXPORT_NAME before NBD_OPT_STARTTLS", ErrTLSRequired)
			case opt != optStartTLS:
				tlsRefusals++
				if err := optReply(w, opt, repErrTLSReqd, []byte("TLS required: this server needs NBD_OPT_STARTTLS and a client certificate")); err != nil {
					return conn, r, refuse(err)
				}
				continue
			case n != 0:
				if err := optReply(w, opt, repErrInvalid, []byte("NBD_OPT_STARTTLS takes no data")); err != nil {
					return conn, r, err
				}
				continue
			}
			if err := optReply(w, opt, repAck, nil); err != nil {
				return conn, r, err
			}
			tc, err := s.startTLS(ctx, c, r)
			if err != nil {
				return conn, r, err
			}
			c.SetDeadline(time.Time{}) // authorized: no more AuthTimeout
			conn, w, r = tc, tc, bufio.NewReaderSize(tc, 64<<10)
			needTLS = false
			continue
		}
		if n > maxOption {
			if _, err := io.CopyN(io.Discard, r, int64(n)); err != nil {
				return conn, r, fmt.Errorf("drain option %d of %d bytes: %w", opt, n, err)
			}
			if opt == optExportName {
				return conn, r, fmt.Errorf("export name of %d bytes: longer than %d", n, maxOption)
			}
			if err := optReply(w, opt, repErrTooBig, []byte("option data too long")); err != nil {
				return conn, r, err
			}
			continue
		}
		// Grown as bytes arrive, not allocated from the claimed length.
		data, err := io.ReadAll(io.LimitReader(r, int64(n)))
		if err == nil && len(data) < int(n) {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return conn, r, fmt.Errorf("read option %d data: %w", opt, err)
		}

		switch opt {
		case optExportName:
			if !s.lookup(string(data)) {
				// NBD_OPT_EXPORT_NAME cannot be answered with an error.
				return conn, r, fmt.Errorf("export name %q: no such export", data)
			}
			reply := make([]byte, 8+2, 8+2+124)
			binary.BigEndian.PutUint64(reply[0:], uint64(s.exp.Size))
			binary.BigEndian.PutUint16(reply[8:], s.flags)
			if !noZeroes {
				reply = reply[:8+2+124]
			}
			if _, err := w.Write(reply); err != nil {
				return conn, r, fmt.Errorf("write export reply: %w", err)
			}
			return conn, r, nil

		case optInfo, optGo:
			done, err := s.infoOrGo(w, opt, data)
			if err != nil {
				return conn, r, err
			}
			if done {
				return conn, r, nil
			}

		case optList:
			if n != 0 {
				if err := optReply(w, opt, repErrInvalid, []byte("NBD_OPT_LIST takes no data")); err != nil {
					return conn, r, err
				}
				continue
			}
			entry := binary.BigEndian.AppendUint32(nil, uint32(len(s.exp.Name)))
			entry = append(entry, s.exp.Name...)
			if err := optReply(w, opt, repServer, entry); err != nil {
				return conn, r, err
			}
			if err := optReply(w, opt, repAck, nil); err != nil {
				return conn, r, err
			}

		case optStartTLS:
			// Without Export.TLS the server is in NOTLS mode; with it, TLS
			// is on already (proto.md: a second STARTTLS is invalid).
			typ, msg := repErrUnsup, "this server does not offer TLS"
			if s.tls != nil {
				typ, msg = repErrInvalid, "TLS is already on"
			}
			if err := optReply(w, opt, typ, []byte(msg)); err != nil {
				return conn, r, err
			}

		default:
			// NBD_OPT_STRUCTURED_REPLY, the meta context and extended
			// header options and anything unknown: simple replies only.
			if err := optReply(w, opt, repErrUnsup, nil); err != nil {
				return conn, r, err
			}
		}
	}
}

// infoOrGo answers NBD_OPT_INFO or NBD_OPT_GO. done reports that an
// NBD_OPT_GO succeeded and the transmission phase begins.
func (s *Server) infoOrGo(w io.Writer, opt uint32, data []byte) (done bool, err error) {
	// 32-bit name length, name, 16-bit count, count 16-bit info requests.
	if len(data) < 4+2 {
		return false, optReply(w, opt, repErrInvalid, []byte("option data too short"))
	}
	nameLen := binary.BigEndian.Uint32(data)
	if uint64(nameLen) > uint64(len(data)-6) {
		return false, optReply(w, opt, repErrInvalid, []byte("name length exceeds option data"))
	}
	name := string(data[4 : 4+nameLen])
	rest := data[4+nameLen:]
	count := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if len(rest) != 2*count {
		return false, optReply(w, opt, repErrInvalid, []byte("information request count does not match option length"))
	}
	if !s.lookup(name) {
		return false, optReply(w, opt, repErrUnknown, []byte("no such export"))
	}
	wantName := false
	for i := 0; i < count; i++ {
		if binary.BigEndian.Uint16(rest[2*i:]) == infoName {
			wantName = true
		}
	}

	var ex [infoExportLen]byte
	binary.BigEndian.PutUint16(ex[0:], infoExport)
	binary.BigEndian.PutUint64(ex[2:], uint64(s.exp.Size))
	binary.BigEndian.PutUint16(ex[10:], s.flags)
	if err := optReply(w, opt, repInfo, ex[:]); err != nil {
		return false, err
	}
	// Block sizes are sent whether asked for or not: they are the
	// protocol's defaults, so a client that ignores them loses nothing.
	var bs [infoBlockLen]byte
	binary.BigEndian.PutUint16(bs[0:], infoBlockSize)
	binary.BigEndian.PutUint32(bs[2:], minBlock)
	binary.BigEndian.PutUint32(bs[6:], preferredBlock)
	binary.BigEndian.PutUint32(bs[10:], maxRequest)
	if err := optReply(w, opt, repInfo, bs[:]); err != nil {
		return false, err
	}
	if wantName {
		in := binary.BigEndian.AppendUint16(nil, infoName)
		in = append(in, s.exp.Name...)
		if err := optReply(w, opt, repInfo, in); err != nil {
			return false, err
		}
	}
	if err := optReply(w, opt, repAck, nil); err != nil {
		return false, err
	}
	return opt == optGo, nil
}

// optReply writes one option reply in a single Write.
func optReply(w io.Writer, opt, typ uint32, data []byte) error {
	b := make([]byte, optReplyHdrLen, optReplyHdrLen+len(data))
	binary.BigEndian.PutUint64(b[0:], magicOptReply)
	binary.BigEndian.PutUint32(b[8:], opt)
	binary.BigEndian.PutUint32(b[12:], typ)
	binary.BigEndian.PutUint32(b[16:], uint32(len(data)))
	b = append(b, data...)
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("write reply to option %d: %w", opt, err)
	}
	return nil
}
