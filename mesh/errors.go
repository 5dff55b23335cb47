package mesh

import (
	"context"
	"errors"
)

// Sentinel errors; match them with errors.Is. The sentinels of the other
// error codes are in codes.go.
var (
	// ErrClosed is returned by an Endpoint or Gossip after Close/Shutdown.
	ErrClosed = errors.New("mesh: closed")
	// ErrUnreachable means no path to the peer now (timeout, reset, peer
	// down, queue full); CodeUnavailable stands for it. Retryable.
	ErrUnreachable = errors.New("mesh: peer unreachable")
	// ErrRefused means the peer, or we, refused the other's credentials or
	// the request (unknown CA, expired certificate, an agent asking for a
	// stream kind it may not open); CodeForbidden stands for it.
	// Permanent: do not retry.
	ErrRefused = errors.New("mesh: refused")
	// ErrNotLeader is what CodeNotLeader stands for. Retryable (ask again,
	// the leader).
	ErrNotLeader = errors.New("mesh: not the raft leader")
)

// IsRetryable is the one classification of errors from a peer (issue 14
// item 5): it reports whether the call that returned err is worth another
// attempt after a back-off. A refusal from the peer is retryable when its
// code is not permanent (ErrCode.Permanent); a refused handshake
// (ErrRefused), a closed endpoint and our own cancellation are not; any
// other error (a timeout, a reset, a stream that ended) is a network
// failure and is retryable. nil is not.
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	if c, ok := CodeOf(err); ok {
		return !c.Permanent()
	}
	switch {
	case errors.Is(err, ErrRefused), errors.Is(err, ErrClosed), errors.Is(err, context.Canceled):
		return false
	}
	return true
}
