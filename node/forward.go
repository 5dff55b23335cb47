package node

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-dr/lifeboat/internal/retry"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/recovery"
)

// Frame types of the admin stream (mesh.KindAdmin) between nodes: a
// follower forwards a catalog write to the leader. See doc.go.
const (
	frameApply   mesh.FrameType = 1 // payload: an encoded Command
	frameApplied mesh.FrameType = 2 // 8 bytes: the entry's Raft index, big-endian
	// The leader asks a voter whose gossip metadata says it has no Raft
	// state before demoting it: metadata can be stale.
	frameRaftState   mesh.FrameType = 3 // empty
	frameRaftStateIs mesh.FrameType = 4 // 8 bytes: the node's last Raft log index
	// A node leaving the cluster (node leave) asks the leader to remove it
	// from Raft and from the catalog (leave.go). Types 5 and 6 are the
	// recovery engine's stop request.
	frameLeave mesh.FrameType = 7 // empty: remove the sender
	frameLeft  mesh.FrameType = 8 // 8 bytes: the removal's Raft index, big-endian (0: it was not in the configuration)
)

// forward sends an encoded command to the leader over an admin stream and
// returns the Raft index it was committed at.
func (n *Node) forward(ctx context.Context, leader mesh.NodeID, data []byte) (uint64, error) {
	addr := ""
	for _, m := range n.gossip.Members() {
		if m.Name == leader {
			addr = m.Meta.QUIC
		}
	}
	if addr == "" {
		if a, _ := n.rn.get().LeaderWithID(); a != "" {
			addr = string(a)
		}
	}
	if addr == "" {
		return 0, fmt.Errorf("leader %s: no address known", leader)
	}
	dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	s, err := n.ep.Dial(dctx, addr, mesh.KindAdmin)
	if err != nil {
		return 0, fmt.Errorf("dial leader %s: %w", leader, err)
	}
	defer s.Close()
	if d, ok := ctx.Deadline(); ok {
		s.SetDeadline(d)
	}
	if err := mesh.WriteFrame(s, frameApply, data); err != nil {
		return 0, fmt.Errorf("forward to leader %s: %w", leader, err)
	}
	fr := mesh.NewFrameReader(s, 4096)
	t, p, err := fr.Next()
	if err != nil {
		return 0, fmt.Errorf("forward to leader %s: read reply: %w", leader, err)
	}
	switch t {
	case frameApplied:
		if len(p) != 8 {
			return 0, fmt.Errorf("forward to leader %s: applied frame of %d bytes, want 8", leader, len(p))
		}
		return binary.BigEndian.Uint64(p), nil
	case mesh.FrameTypeError:
		re, err := mesh.ParseError(p)
		if err != nil {
			return 0, fmt.Errorf("forward to leader %s: %w", leader, err)
		}
		// The code says whether Apply tries again (not leader,
		// unavailable: the leadership moves) or stops (issue 14 item 5).
		switch {
		case re.Code == mesh.CodeBadRequest:
			return 0, retry.Permanent(fmt.Errorf("%w: %s", ErrBadCommand, re.Message))
		case !mesh.IsRetryable(re):
			return 0, retry.Permanent(fmt.Errorf("leader %s: %w", leader, re))
		}
		return 0, fmt.Errorf("leader %s: %w", leader, re)
	}
	return 0, fmt.Errorf("forward to leader %s: unexpected frame type %d", leader, t)
}

// serveForwarded applies the writes that followers forward to this node.
func (n *Node) serveForwarded(ctx context.Context) error {
	for {
		s, err := n.ep.Accept(ctx, mesh.KindAdmin)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, mesh.ErrClosed) {
				return nil
			}
			return fmt.Errorf("accept admin stream: %w", err)
		}
		go n.handleForwarded(ctx, s)
	}
}

func (n *Node) handleForwarded(ctx context.Context, s *mesh.Stream) {
	defer s.Close()
	s.SetDeadline(time.Now().Add(30 * time.Second))
	fr := mesh.NewFrameReader(s, catalog.MaxCommand)
	t, p, err := fr.Next()
	if err != nil {
		n.log.Debug("read forwarded write", "peer", s.Peer().Name, "err", err)
		return
	}
	if t == recovery.FrameStop {
		n.recovery.ServeStop(ctx, s, p)
		return
	}
	if t == frameLeave {
		n.serveLeave(s)
		return
	}
	if t == frameRaftState {
		mesh.WriteFrame(s, frameRaftStateIs, binary.BigEndian.AppendUint64(nil, n.rn.get().LastIndex()))
		return
	}
	if t != frameApply {
		mesh.WriteError(s, mesh.CodeBadRequest, fmt.Sprintf("unknown frame type %d", t))
		return
	}
	if _, err := catalog.DecodeCommand(p); err != nil {
		mesh.WriteError(s, mesh.CodeBadRequest, err.Error())
		return
	}
	r := n.rn.get()
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
	mesh.WriteFrame(s, frameApplied, binary.BigEndian.AppendUint64(nil, f.Index()))
}

// peerLastIndex asks a node for its last Raft log index.
func (n *Node) peerLastIndex(ctx context.Context, addr string) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	s, err := n.ep.Dial(ctx, addr, mesh.KindAdmin)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	if d, ok := ctx.Deadline(); ok {
		s.SetDeadline(d)
	}
	if err := mesh.WriteFrame(s, frameRaftState, nil); err != nil {
		return 0, err
	}
	t, p, err := mesh.NewFrameReader(s, 4096).Next()
	if err != nil {
		return 0, err
	}
	if t != frameRaftStateIs || len(p) != 8 {
		return 0, fmt.Errorf("raft state answer: frame type %d of %d bytes", t, len(p))
	}
	return binary.BigEndian.Uint64(p), nil
}
