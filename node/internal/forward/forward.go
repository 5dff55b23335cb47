// Package forward carries a node's catalog writes to the Raft leader,
// wherever it is, and serves the admin stream between nodes
// (mesh.KindAdmin; the frames are in node doc.go, "Admin stream").
//
// Apply writes a command through the leader: on the leader it applies it
// to Raft; on a follower it forwards the encoded command (type 1) and
// waits until it has applied the entry itself (read your writes).
// Retryable failures (not the leader, unavailable) are retried with
// back-off; a refused command or a permanent code stops at once; after
// WriteTimeout it fails with api.ErrNoQuorum. Run answers the admin
// stream's requests: forwarded writes (on the leader), the Raft state
// query (type 3), and the types other engines serve (Options.Handlers).
//
// The engine holds no state of its own: Raft, the endpoint and the
// handlers belong to their owners. It never applies a command that does
// not decode.
package forward

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-dr/lifeboat/internal/logpolicy"
	"github.com/lifeboat-dr/lifeboat/internal/retry"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/streams"
)

// Frame types of the admin stream that this engine asks and answers.
// Types 5 and 6 are the recovery engine's stop request, 7 and 8 node
// leave's removal (served through Options.Handlers).
const (
	FrameApply   mesh.FrameType = 1 // payload: an encoded catalog.Command
	FrameApplied mesh.FrameType = 2 // 8 bytes: the entry's Raft index, big-endian
	// The leader asks a voter whose gossip metadata says it has no Raft
	// state before demoting it: metadata can be stale.
	FrameRaftState   mesh.FrameType = 3 // empty
	FrameRaftStateIs mesh.FrameType = 4 // 8 bytes: the node's last Raft log index
)

// Handler answers an admin stream request of another engine: p is the
// request frame's payload. Run closes s after it returns.
type Handler func(ctx context.Context, s *mesh.Stream, p []byte)

// Applied is the node's catalog as the engine waits on it.
type Applied interface {
	// WaitIndex returns once the state machine has applied idx.
	WaitIndex(ctx context.Context, idx uint64) error
}

// Options configure an Engine. Raft, Dial, Accept and Catalog are
// required.
type Options struct {
	Raft    func() *raft.Raft // the node's Raft (it changes on a forced recovery)
	Dial    streams.Dial      // opens a stream to a node's QUIC address
	Accept  func(ctx context.Context, kind mesh.StreamKind) (*mesh.Stream, error)
	Members func() []mesh.Member // the gossip's, for the leader's QUIC address; nil = Raft's address only
	Catalog Applied
	// WriteTimeout bounds Apply; 0 = 10s.
	WriteTimeout time.Duration
	// Handlers serve the admin stream's other request types, by type.
	Handlers map[mesh.FrameType]Handler
	Logs     *logpolicy.Repeats // nil = one of its own
	Logger   *slog.Logger       // nil = slog.Default()
}

// Engine carries writes to the leader and serves the admin stream.
type Engine struct {
	o   Options
	log *slog.Logger
}

// New returns an Engine.
func New(o Options) *Engine {
	if o.WriteTimeout == 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Members == nil {
		o.Members = func() []mesh.Member { return nil }
	}
	return &Engine{o: o, log: o.Logger}
}

// Apply writes cmd to the catalog through the leader, wherever it is, and
// returns once it is committed, applied there and applied on this node.
// It retries while the leadership moves and gives up with
// api.ErrNoQuorum after the write timeout.
func (e *Engine) Apply(ctx context.Context, cmd *catalog.Command) error {
	data, err := catalog.EncodeCommand(cmd)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, e.o.WriteTimeout)
	defer cancel()
	var idx uint64 // the entry's index once committed
	var last error // the last failure, for ErrNoQuorum
	err = retry.Do(ctx, retry.Options{Initial: 50 * time.Millisecond, Max: time.Second}, func(ctx context.Context) error {
		r := e.o.Raft()
		if r.State() == raft.Leader {
			f := r.Apply(data, raftTimeout(ctx))
			err := f.Error()
			if err == nil {
				if res, ok := f.Response().(catalog.ApplyResult); ok && res.Err != nil {
					return retry.Permanent(res.Err)
				}
				idx = f.Index()
				return nil
			}
			if !errors.Is(err, raft.ErrNotLeader) && !errors.Is(err, raft.ErrLeadershipLost) && !errors.Is(err, raft.ErrEnqueueTimeout) {
				return retry.Permanent(fmt.Errorf("raft apply: %w", err))
			}
			last = err
			return err
		}
		if _, id := r.LeaderWithID(); id != "" {
			// forward marks what the leader refuses for good permanent.
			i, err := e.forward(ctx, mesh.NodeID(id), data)
			idx, last = i, err
			return err
		}
		last = errors.New("no leader known")
		return last
	}, nil)
	switch {
	case err == nil:
		// Read your writes: wait until this node has applied it too.
		return e.o.Catalog.WaitIndex(ctx, idx)
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil:
		return fmt.Errorf("%w (waited %s; last: %v)", api.ErrNoQuorum, e.o.WriteTimeout, last)
	}
	return err
}

// raftTimeout turns a context deadline into Raft's enqueue timeout.
func raftTimeout(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		return max(time.Until(d), time.Millisecond)
	}
	return 0
}

// forward sends an encoded command to the leader over an admin stream and
// returns the Raft index it was committed at.
func (e *Engine) forward(ctx context.Context, leader mesh.NodeID, data []byte) (uint64, error) {
	addr := ""
	for _, m := range e.o.Members() {
		if m.Name == leader {
			addr = m.Meta.QUIC
		}
	}
	if addr == "" {
		if a, _ := e.o.Raft().LeaderWithID(); a != "" {
			addr = string(a)
		}
	}
	if addr == "" {
		return 0, fmt.Errorf("leader %s: no address known", leader)
	}
	t, p, err := streams.Request(ctx, e.o.Dial, addr, mesh.KindAdmin, FrameApply, data, 3*time.Second)
	var re *mesh.RemoteError
	switch {
	case t == mesh.FrameTypeError && errors.As(err, &re):
		// The code says whether Apply tries again (not leader,
		// unavailable: the leadership moves) or stops (issue 14 item 5).
		switch {
		case re.Code == mesh.CodeBadRequest:
			return 0, retry.Permanent(fmt.Errorf("%w: %s", catalog.ErrBadCommand, re.Message))
		case !mesh.IsRetryable(re):
			return 0, retry.Permanent(fmt.Errorf("leader %s: %w", leader, re))
		}
		return 0, fmt.Errorf("leader %s: %w", leader, re)
	case err != nil:
		return 0, fmt.Errorf("forward to leader %s: %w", leader, err)
	case t != FrameApplied || len(p) != 8:
		return 0, fmt.Errorf("forward to leader %s: answer of type %d, %d bytes; want type %d, 8 bytes", leader, t, len(p), FrameApplied)
	}
	return binary.BigEndian.Uint64(p), nil
}

// LastIndex asks the node at addr for its last Raft log index (type 3).
func (e *Engine) LastIndex(ctx context.Context, addr string) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	t, p, err := streams.Request(ctx, e.o.Dial, addr, mesh.KindAdmin, FrameRaftState, nil, 3*time.Second)
	switch {
	case err != nil:
		return 0, err
	case t != FrameRaftStateIs || len(p) != 8:
		return 0, fmt.Errorf("raft state answer: frame type %d of %d bytes", t, len(p))
	}
	return binary.BigEndian.Uint64(p), nil
}

// VerifyPeer checks, before a node gets a place in Raft, that the QUIC
// endpoint it advertises holds a certificate from the cluster CA for that
// very node: a gossip member alone (someone with the gossip key) is not
// enough to receive the catalog.
func (e *Engine) VerifyPeer(ctx context.Context, id mesh.NodeID, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	s, err := e.o.Dial(ctx, addr, mesh.KindAdmin)
	if err != nil {
		return fmt.Errorf("verify %s at %s: %w", id, addr, err)
	}
	defer s.Close()
	switch p := s.Peer(); {
	case p.Agent:
		return fmt.Errorf("verify %s at %s: the certificate there is for agent %s of service %s", id, addr, p.Name, p.Service)
	case p.Name != id:
		return fmt.Errorf("verify %s at %s: the certificate there is for node %s at site %s", id, addr, p.Name, p.Site)
	}
	return nil
}

// Run answers the admin streams peers open until ctx ends or the endpoint
// closes; it returns after every request it took has been answered (or
// aborted when ctx ended).
func (e *Engine) Run(ctx context.Context) error {
	return streams.Serve(ctx, streams.Options{Accept: e.o.Accept, Logs: e.o.Logs, Logger: e.log}, mesh.KindAdmin, "admin", e.serve)
}

// serve answers one admin stream: one request frame, one answer. It
// answers refusals itself (error frames), so it returns nil but for a
// request it could not read.
func (e *Engine) serve(ctx context.Context, s *mesh.Stream) error {
	s.SetDeadline(time.Now().Add(30 * time.Second))
	t, p, err := mesh.NewFrameReader(s, catalog.MaxCommand).Next()
	if err != nil {
		e.log.Debug("read admin request", "peer", s.Peer().Name, "err", err)
		return nil
	}
	if h, ok := e.o.Handlers[t]; ok {
		h(ctx, s, p)
		return nil
	}
	switch t {
	case FrameRaftState:
		mesh.WriteFrame(s, FrameRaftStateIs, binary.BigEndian.AppendUint64(nil, e.o.Raft().LastIndex()))
	case FrameApply:
		e.applyForwarded(s, p)
	default:
		mesh.WriteError(s, mesh.CodeBadRequest, fmt.Sprintf("unknown frame type %d", t))
	}
	return nil
}

// applyForwarded applies a write a follower forwarded; leader only.
func (e *Engine) applyForwarded(s *mesh.Stream, p []byte) {
	if _, err := catalog.DecodeCommand(p); err != nil {
		mesh.WriteError(s, mesh.CodeBadRequest, err.Error())
		return
	}
	r := e.o.Raft()
	if r.State() != raft.Leader {
		mesh.WriteError(s, mesh.CodeNotLeader, "not the leader")
		return
	}
	f := r.Apply(p, 10*time.Second)
	if err := f.Error(); err != nil {
		code := mesh.CodeUnavailable
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			code = mesh.CodeNotLeader
		}
		mesh.WriteError(s, code, err.Error())
		return
	}
	if res, ok := f.Response().(catalog.ApplyResult); ok && res.Err != nil {
		mesh.WriteError(s, mesh.CodeBadRequest, res.Err.Error())
		return
	}
	mesh.WriteFrame(s, FrameApplied, binary.BigEndian.AppendUint64(nil, f.Index()))
}
