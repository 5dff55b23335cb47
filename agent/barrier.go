package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/lifeboat-dr/lifeboat/internal/retry"
	"github.com/lifeboat-dr/lifeboat/mesh"
)

// barrierLoop keeps the agent's barrier stream to the node (mesh doc.go):
// on Prepare it stops acknowledging writes (it holds the sink's lock),
// appends a mark, answers with its sequence number and waits for Release;
// then writes flow again. A released barrier's mark becomes a commit
// boundary, so the node gets this agent's state exactly at the mark.
//
// A stream that ends is opened again after a back-off (internal/retry);
// a permanent refusal (fenced, refused) waits a whole interval instead.
// The shipping stream reports the same refusals in the status.
func (a *Agent) barrierLoop(ctx context.Context, sk *sink) {
	b := retry.New(retry.Options{Initial: time.Second, Max: 30 * time.Second, Retryable: mesh.IsRetryable, After: a.opts.After})
	for ctx.Err() == nil {
		start := a.opts.Now()
		err := a.barrierStream(ctx, sk)
		if ctx.Err() != nil {
			return
		}
		a.log.Debug("barrier stream ended; reconnecting", "err", err)
		if a.opts.Now().Sub(start) > time.Minute {
			b.Reset() // the stream served barriers for a while
		}
		if !b.Retryable(err) {
			if !sleepCtx(ctx, a.opts.Interval) {
				return
			}
			continue
		}
		if b.Wait(ctx) != nil {
			return
		}
	}
}

func (a *Agent) barrierStream(ctx context.Context, sk *sink) error {
	h, err := a.hello()
	if err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	s, err := a.ep.Dial(dctx, a.nodeAddr(), mesh.KindIngest)
	cancel()
	if err != nil {
		return err
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	b, _ := json.Marshal(h)
	if err := mesh.WriteFrame(s, mesh.FrameBarrierJoin, b); err != nil {
		return err
	}
	fr := mesh.NewFrameReader(s, mesh.KindIngest.MaxFrame())
	for {
		s.SetReadDeadline(time.Time{})
		t, p, err := fr.Next()
		if err != nil {
			return err
		}
		if t == mesh.FrameTypeError {
			// The node refuses the barrier stream: its code decides
			// whether barrierLoop retries.
			re, err := mesh.ParseError(p)
			if err != nil {
				return fmt.Errorf("barrier stream: %w", err)
			}
			return fmt.Errorf("barrier stream: %w", re)
		}
		var prep mesh.Barrier
		if t != mesh.FrameBarrierPrepare || json.Unmarshal(p, &prep) != nil {
			return fmt.Errorf("barrier stream: unexpected frame type %d", t)
		}
		if err := a.barrier(s, fr, sk, prep); err != nil {
			return err
		}
	}
}

// barrier handles one Prepare: mark with acknowledgements held, answer,
// and release at Release or after the hold time.
func (a *Agent) barrier(s *mesh.Stream, fr *mesh.FrameReader, sk *sink, prep mesh.Barrier) error {
	hold := min(time.Duration(prep.Hold)*time.Millisecond, 2*time.Second)
	sk.mu.Lock()
	defer sk.mu.Unlock()
	var seq uint64
	if !sk.dirty {
		var err error
		if seq, err = sk.mark(); err != nil {
			return err
		}
		sk.addBoundary(seq)
	}
	b, _ := json.Marshal(mesh.Barrier{ID: prep.ID, Seq: seq})
	s.SetWriteDeadline(time.Now().Add(hold))
	if err := mesh.WriteFrame(s, mesh.FrameBarrierMarked, b); err != nil {
		sk.dropBoundary(seq)
		return err
	}
	s.SetReadDeadline(time.Now().Add(hold))
	t, p, err := fr.Next()
	var rel mesh.Barrier
	if err != nil || t != mesh.FrameBarrierRelease || json.Unmarshal(p, &rel) != nil || rel.ID != prep.ID {
		sk.dropBoundary(seq)
		if err == nil {
			err = fmt.Errorf("barrier %d: unexpected answer", prep.ID)
		}
		return err
	}
	if !rel.OK {
		sk.dropBoundary(seq)
	}
	return nil
}

// addBoundary makes seq a commit boundary: the shipper commits exactly
// there. The caller holds s.mu.
func (s *sink) addBoundary(seq uint64) {
	s.ackMu.Lock()
	s.boundaries = append(s.boundaries, seq)
	s.ackMu.Unlock()
}

func (s *sink) dropBoundary(seq uint64) {
	s.ackMu.Lock()
	s.boundaries = slices.DeleteFunc(s.boundaries, func(b uint64) bool { return b == seq })
	s.ackMu.Unlock()
}

// clip returns target lowered to the first commit boundary above acked.
func (s *sink) clip(acked, target uint64) uint64 {
	s.ackMu.Lock()
	defer s.ackMu.Unlock()
	for _, b := range s.boundaries {
		if b > acked && b < target {
			target = b
		}
	}
	return target
}
