// Package streams accepts a node's typed streams from peers and runs a
// handler on each (agents' ingest, other sites' replication), sending a
// handler's refusal to the peer as an error frame. It holds no state of
// its own beyond the handlers it runs, and never decides what to refuse.
package streams

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/lifeboat-dr/lifeboat/internal/logpolicy"
	"github.com/lifeboat-dr/lifeboat/mesh"
)

// Refusal is a refusal sent to the peer as an error frame: Code says what
// kind, Msg what and why.
type Refusal struct {
	Code mesh.ErrCode
	Msg  string
}

func (e *Refusal) Error() string { return e.Msg }

// Refuse returns a Refusal with a formatted message.
func Refuse(code mesh.ErrCode, format string, a ...any) error {
	return &Refusal{Code: code, Msg: fmt.Sprintf(format, a...)}
}

// Hint says what an operator does about a refusal this node sends.
func Hint(code mesh.ErrCode) string {
	switch code {
	case mesh.CodeFenced:
		return "the service runs at another site now: stop its servers here, or fail it back"
	case mesh.CodeHeld:
		return "a planned failover is under way: the peer's writes wait until it ends"
	case mesh.CodeWrongNode:
		return "point the peer at a node that holds the service (the message names it)"
	case mesh.CodeForbidden:
		return "check the peer's certificate: its kind, service and site"
	case mesh.CodeNotFound:
		return "check the cluster policy: it must list the service and its volumes"
	case mesh.CodeBadRequest:
		return "the peer sent what this node does not accept; check both run the same version"
	}
	return "the peer retries; if it lasts, check this node's log and store"
}

// Options configure Serve.
type Options struct {
	// Accept returns the next stream of kind; it fails with mesh.ErrClosed
	// once the endpoint is closed (mesh.Endpoint.Accept).
	Accept func(ctx context.Context, kind mesh.StreamKind) (*mesh.Stream, error)
	Logs   *logpolicy.Repeats // refusals are logged once per peer, then counted
	Logger *slog.Logger       // nil = slog.Default()
}

// Serve accepts streams of kind and runs handle on each, concurrently: a
// Refusal it returns goes to the peer as an error frame, and the stream
// is aborted when ctx ends. Serve returns when ctx ends or the endpoint
// closes, after every handler it started has returned.
func Serve(ctx context.Context, o Options, kind mesh.StreamKind, what string, handle func(context.Context, *mesh.Stream) error) error {
	logger := o.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logs := o.Logs
	if logs == nil {
		logs = logpolicy.New(logpolicy.Options{Log: logger})
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		s, err := o.Accept(ctx, kind)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, mesh.ErrClosed) {
				return nil
			}
			return fmt.Errorf("accept %s stream: %w", what, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.Close()
			stop := context.AfterFunc(ctx, func() { s.Abort(mesh.CodeUnavailable) })
			defer stop()
			peer := s.Peer()
			log := logger.With("peer", peer.Name)
			if peer.Agent {
				log = log.With("service", peer.Service)
			}
			err := handle(ctx, s)
			// A peer that is refused retries every few seconds: its
			// refusals are logged once, then counted (issue 14 item 6).
			key := what + " refused/" + string(peer.Name)
			var ie *Refusal
			switch {
			case err == nil:
				logs.OK(key)
			case errors.As(err, &ie):
				logs.Fail(key, what+" refused", err, Hint(ie.Code), "peer", peer.Name, "service", peer.Service, "code", ie.Code.String())
				mesh.WriteError(s, ie.Code, ie.Msg)
			case ctx.Err() != nil:
			default:
				logs.OK(key)
				log.Info(what+" stream ended", "err", err)
			}
		}()
	}
}
