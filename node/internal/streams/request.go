package streams

import (
	"context"
	"fmt"
	"time"

	"github.com/lifeboat-dr/lifeboat/mesh"
)

// MaxAnswer is the largest answer frame Request reads.
const MaxAnswer = 4096

// Dial opens a stream of kind to a node's QUIC address
// (mesh.Endpoint.Dial).
type Dial func(ctx context.Context, addr string, kind mesh.StreamKind) (*mesh.Stream, error)

// Request is the asking side of a one-request, one-answer stream (the
// admin stream between nodes, node doc.go): it opens a stream of kind to
// addr, the dial bounded by dialTimeout, sends a frame of type t and reads
// the answer, of at most MaxAnswer bytes, within ctx's deadline. An error
// frame comes back as t mesh.FrameTypeError with the peer's
// *mesh.RemoteError as err; any other failure with t 0. The stream is
// closed when Request returns.
func Request(ctx context.Context, dial Dial, addr string, kind mesh.StreamKind, t mesh.FrameType, payload []byte, dialTimeout time.Duration) (mesh.FrameType, []byte, error) {
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	s, err := dial(dctx, addr, kind)
	if err != nil {
		return 0, nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer s.Close()
	if d, ok := ctx.Deadline(); ok {
		s.SetDeadline(d)
	}
	if err := mesh.WriteFrame(s, t, payload); err != nil {
		return 0, nil, fmt.Errorf("send request: %w", err)
	}
	at, p, err := mesh.NewFrameReader(s, MaxAnswer).Next()
	if err != nil {
		return 0, nil, fmt.Errorf("read answer: %w", err)
	}
	if at != mesh.FrameTypeError {
		return at, p, nil
	}
	re, err := mesh.ParseError(p)
	if err != nil {
		return 0, nil, fmt.Errorf("read answer: %w", err)
	}
	return at, nil, re
}
