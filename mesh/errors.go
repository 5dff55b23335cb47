package mesh

import "errors"

// Sentinel errors; match them with errors.Is.
var (
	// ErrClosed is returned by an Endpoint or Gossip after Close/Shutdown.
	ErrClosed = errors.New("mesh: closed")
	// ErrUnreachable means no path to the peer now (timeout, reset, peer
	// down, queue full). Retryable.
	ErrUnreachable = errors.New("mesh: peer unreachable")
	// ErrRefused means the peer, or we, refused the other's credentials or
	// the request (unknown CA, expired certificate, an agent asking for a
	// stream kind it may not open). Permanent: do not retry.
	ErrRefused = errors.New("mesh: refused")
	// ErrNotLeader is what CodeNotLeader stands for.
	ErrNotLeader = errors.New("mesh: not the raft leader")
)

// IsRetryable reports whether err is worth retrying: ErrUnreachable and not
// ErrRefused.
func IsRetryable(err error) bool {
	return errors.Is(err, ErrUnreachable) && !errors.Is(err, ErrRefused)
}
