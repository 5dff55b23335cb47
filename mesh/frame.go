package mesh

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// StreamKind says what a stream carries; it is the last byte of the stream
// header (see doc.go).
type StreamKind byte

// The stream kinds.
const (
	KindRaft   StreamKind = 1 // raft RPCs (raft's own encoding, no frames)
	KindBlocks StreamKind = 2 // block exchange between nodes
	KindIngest StreamKind = 3 // agent to node: captured changes
	KindAdmin  StreamKind = 4 // node to node admin requests
)

// numKinds is one more than the highest kind.
const numKinds = 5

// Valid reports whether k is a known stream kind.
func (k StreamKind) Valid() bool { return k >= KindRaft && k <= KindAdmin }

// String returns the kind's name.
func (k StreamKind) String() string {
	switch k {
	case KindRaft:
		return "raft"
	case KindBlocks:
		return "blocks"
	case KindIngest:
		return "ingest"
	case KindAdmin:
		return "admin"
	}
	return fmt.Sprintf("kind(%d)", byte(k))
}

// MaxFrame is the largest frame payload a reader of a stream of kind k must
// accept (see doc.go); readers pass it to NewFrameReader.
func (k StreamKind) MaxFrame() int {
	switch k {
	case KindBlocks, KindIngest:
		return 8 << 20
	case KindAdmin:
		return 1 << 20
	}
	return 0
}

// Stream header: magic, version, kind.
const (
	headerMagic   = "LBS"
	HeaderVersion = 1
	HeaderLen     = 5
)

// HeaderError reports a stream header that is not ours or not understood.
type HeaderError struct {
	Field string // "magic", "version" or "kind"
	Value []byte
}

func (e *HeaderError) Error() string {
	return fmt.Sprintf("stream header: bad %s %x", e.Field, e.Value)
}

// AppendStreamHeader appends the 5-byte header for kind to b.
func AppendStreamHeader(b []byte, kind StreamKind) []byte {
	return append(b, headerMagic[0], headerMagic[1], headerMagic[2], HeaderVersion, byte(kind))
}

// WriteStreamHeader writes the stream header for kind.
func WriteStreamHeader(w io.Writer, kind StreamKind) error {
	_, err := w.Write(AppendStreamHeader(make([]byte, 0, HeaderLen), kind))
	return err
}

// ParseStreamHeader checks a 5-byte header and returns its kind, or a
// *HeaderError naming the bad field.
func ParseStreamHeader(h []byte) (StreamKind, error) {
	if len(h) != HeaderLen {
		return 0, &HeaderError{Field: "length", Value: h}
	}
	if string(h[:3]) != headerMagic {
		return 0, &HeaderError{Field: "magic", Value: h[:3]}
	}
	if h[3] != HeaderVersion {
		return 0, &HeaderError{Field: "version", Value: h[3:4]}
	}
	k := StreamKind(h[4])
	if !k.Valid() {
		return 0, &HeaderError{Field: "kind", Value: h[4:5]}
	}
	return k, nil
}

// ReadStreamHeader reads and checks a stream header. A stream that ends
// before the header gives io.EOF (nothing read) or io.ErrUnexpectedEOF.
func ReadStreamHeader(r io.Reader) (StreamKind, error) {
	var h [HeaderLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, err
	}
	return ParseStreamHeader(h[:])
}

// FrameType is the first byte of a frame. Each protocol defines its own
// types below FrameTypeError.
type FrameType byte

// FrameTypeError is the one frame type shared by every framed protocol: its
// payload is an error code and a message (see WriteError).
const FrameTypeError FrameType = 0xFF

// FrameHeaderLen is the size of a frame header: type byte and 4-byte
// big-endian payload length.
const FrameHeaderLen = 5

// MaxFramePayload is the largest payload WriteFrame sends, whatever the kind.
const MaxFramePayload = 64 << 20

// smallFrame is the size below which WriteFrame copies header and payload
// into one buffer so they go out in one Write.
const smallFrame = 16 << 10

// FrameError reports a frame field (a length) out of its bounds.
type FrameError struct {
	Field string // "length", "error code", "error message"
	Value uint64 // the length found
	Limit int    // the bound it broke (a maximum, or for "error code" the minimum)
}

func (e *FrameError) Error() string {
	return fmt.Sprintf("frame: bad %s %d (limit %d)", e.Field, e.Value, e.Limit)
}

// WriteFrame writes one frame: type, 4-byte big-endian length, payload.
func WriteFrame(w io.Writer, t FrameType, payload []byte) error {
	if len(payload) > MaxFramePayload {
		return &FrameError{Field: "length", Value: uint64(len(payload)), Limit: MaxFramePayload}
	}
	if len(payload) <= smallFrame {
		var buf [FrameHeaderLen + smallFrame]byte
		b := append(appendFrameHeader(buf[:0], t, len(payload)), payload...)
		_, err := w.Write(b)
		return err
	}
	var h [FrameHeaderLen]byte
	if _, err := w.Write(appendFrameHeader(h[:0], t, len(payload))); err != nil {
		return err
	}
	_, err := w.Write(payload)
	return err
}

func appendFrameHeader(b []byte, t FrameType, n int) []byte {
	b = append(b, byte(t))
	return binary.BigEndian.AppendUint32(b, uint32(n))
}

// FrameReader reads frames from a stream. Not safe for concurrent use.
type FrameReader struct {
	r   io.Reader
	max int
	hdr [FrameHeaderLen]byte
	buf []byte
}

// NewFrameReader returns a reader that refuses payloads longer than max
// (before allocating anything for them).
func NewFrameReader(r io.Reader, max int) *FrameReader {
	if max < 0 {
		max = 0
	}
	return &FrameReader{r: r, max: max}
}

// Next reads the next frame. The payload is valid until the next call. It
// returns io.EOF at a clean end between frames, io.ErrUnexpectedEOF inside
// one, and *FrameError for a length above the limit.
func (fr *FrameReader) Next() (FrameType, []byte, error) {
	if _, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(fr.hdr[1:])
	if uint64(n) > uint64(fr.max) {
		return 0, nil, &FrameError{Field: "length", Value: uint64(n), Limit: fr.max}
	}
	if cap(fr.buf) < int(n) {
		fr.buf = make([]byte, n)
	}
	p := fr.buf[:n]
	if _, err := io.ReadFull(fr.r, p); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return FrameType(fr.hdr[0]), p, nil
}

// MaxErrorMessage bounds the message of an error frame, in bytes.
const MaxErrorMessage = 1024

// WriteError writes an error frame: 2-byte big-endian code, then the message
// (UTF-8, truncated to MaxErrorMessage bytes).
func WriteError(w io.Writer, code ErrCode, msg string) error {
	if len(msg) > MaxErrorMessage {
		msg = msg[:MaxErrorMessage]
		for !utf8.ValidString(msg) {
			msg = msg[:len(msg)-1]
		}
	}
	b := make([]byte, 2, 2+len(msg))
	binary.BigEndian.PutUint16(b, uint16(code))
	return WriteFrame(w, FrameTypeError, append(b, msg...))
}

// ParseError decodes the payload of an error frame into a *RemoteError.
func ParseError(payload []byte) (*RemoteError, error) {
	if len(payload) < 2 {
		return nil, &FrameError{Field: "error code", Value: uint64(len(payload)), Limit: 2}
	}
	msg := payload[2:]
	if len(msg) > MaxErrorMessage {
		return nil, &FrameError{Field: "error message", Value: uint64(len(msg)), Limit: MaxErrorMessage}
	}
	if !utf8.Valid(msg) {
		return nil, errors.New("frame: error message is not UTF-8")
	}
	return &RemoteError{Code: ErrCode(binary.BigEndian.Uint16(payload)), Message: string(msg)}, nil
}

// Expect reads the next frame, which must be of type t. An error frame
// from the peer is returned as a *RemoteError; another type is an error
// naming both.
func (fr *FrameReader) Expect(t FrameType) ([]byte, error) {
	got, p, err := fr.Next()
	if err != nil {
		return nil, err
	}
	if got == FrameTypeError {
		re, err := ParseError(p)
		if err != nil {
			return nil, err
		}
		return nil, re
	}
	if got != t {
		return nil, fmt.Errorf("peer sent frame type %d, want %d", got, t)
	}
	return p, nil
}
