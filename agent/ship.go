package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/klauspost/compress/s2"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/mesh"
)

// change is one block of a volume to ship: its number, ID and content
// (nil for a zero block).
type change struct {
	Block int64
	ID    blockstore.ID
	Data  []byte
}

// conn is one ingest stream to the node (mesh doc.go, ingest protocol).
// It is used by one goroutine at a time.
type conn struct {
	s       *mesh.Stream
	fr      *mesh.FrameReader
	welcome mesh.Welcome
	buf     []byte
	zbuf    []byte // S2 output, reused: AppendBlock copies it
	stats   *counters
}

// RefusedError is the node refusing the agent with a permanent code
// (mesh.IsRetryable: wrong service, a volume the policy does not list, the
// service fenced, ...): retrying will not help until that changes. Match
// the code's sentinel with errors.Is (mesh.ErrFenced, mesh.ErrNotFound...).
type RefusedError struct{ Err *mesh.RemoteError }

func (e *RefusedError) Error() string {
	return "node refused (" + e.Err.Code.String() + "): " + e.Err.Message
}
func (e *RefusedError) Unwrap() error { return e.Err }

// dial opens an ingest stream and says hello.
func dial(ctx context.Context, ep *mesh.Endpoint, addr string, h mesh.Hello, stats *counters) (*conn, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := ep.Dial(dctx, addr, mesh.KindIngest)
	if err != nil {
		return nil, fmt.Errorf("dial node %s: %w", addr, err)
	}
	c := &conn{s: s, fr: mesh.NewFrameReader(s, mesh.KindIngest.MaxFrame()), stats: stats}
	b, _ := json.Marshal(h)
	if err := mesh.WriteFrame(s, mesh.FrameHello, b); err != nil {
		s.Close()
		return nil, fmt.Errorf("hello to %s: %w", addr, err)
	}
	p, err := c.expect(mesh.FrameWelcome)
	if err != nil {
		s.Close()
		return nil, err
	}
	if err := json.Unmarshal(p, &c.welcome); err != nil {
		s.Close()
		return nil, fmt.Errorf("welcome from %s: %w", addr, err)
	}
	if c.welcome.Redirect != "" {
		s.Close()
		return nil, &redirectError{node: c.welcome.Node, addr: c.welcome.Redirect}
	}
	return c, nil
}

// redirectError is a node sending the agent to the service's holder.
type redirectError struct{ node, addr string }

func (e *redirectError) Error() string {
	return fmt.Sprintf("redirected to holder %s at %s", e.node, e.addr)
}

func (c *conn) Close() error { return c.s.Close() }

// expect reads the next frame, which must be of type t or an error frame.
func (c *conn) expect(t mesh.FrameType) ([]byte, error) {
	c.s.SetReadDeadline(time.Now().Add(2 * time.Minute))
	p, err := c.fr.Expect(t)
	var re *mesh.RemoteError
	switch {
	case errors.As(err, &re):
		// The code decides, never the message (issue 14 item 5).
		if !mesh.IsRetryable(re) {
			return nil, &RefusedError{re}
		}
		return nil, re
	case err != nil:
		return nil, fmt.Errorf("read from node: %w", err)
	}
	return p, nil
}

// blockGeometry returns the node's block size for a volume.
func (c *conn) blockSize(volume string) (int, bool) {
	for _, v := range c.welcome.Volumes {
		if v.Name == volume {
			return v.BlockSize, true
		}
	}
	return 0, false
}

// send ships changes of one volume: it offers the IDs, sends the blocks the
// node lacks (S2-compressed when that saves an eighth), then the map
// changes.
// changes must be sorted by block without repeats.
func (c *conn) send(volume string, changes []change) error {
	for len(changes) > 0 {
		n := min(len(changes), mesh.MaxOffer)
		if err := c.sendBatch(volume, changes[:n]); err != nil {
			return err
		}
		changes = changes[n:]
	}
	return nil
}

func (c *conn) sendBatch(volume string, changes []change) error {
	// Offer each distinct non-zero ID once.
	var offer []blockstore.ID
	first := map[blockstore.ID]int{}
	for i, ch := range changes {
		if ch.ID.IsZero() {
			continue
		}
		if _, ok := first[ch.ID]; !ok {
			first[ch.ID] = i
			offer = append(offer, ch.ID)
		}
	}
	if len(offer) > 0 {
		if err := mesh.WriteFrame(c.s, mesh.FrameOffer, mesh.AppendOffer(c.buf[:0], offer)); err != nil {
			return fmt.Errorf("offer: %w", err)
		}
		p, err := c.expect(mesh.FrameWant)
		if err != nil {
			return err
		}
		want, err := mesh.DecodeWant(p, len(offer))
		if err != nil {
			return err
		}
		frame := c.buf[:0]
		for i, id := range offer {
			if !want[i] {
				c.stats.dedupBytes.Add(int64(len(changes[first[id]].Data)))
				continue
			}
			data := changes[first[id]].Data
			rec := mesh.BlockRecord{ID: id, Codec: mesh.CodecRaw, RawLen: len(data), Data: data}
			c.zbuf = s2.Encode(c.zbuf[:cap(c.zbuf)], data)
			if len(c.zbuf) < len(data)-len(data)/8 {
				rec.Codec, rec.Data = mesh.CodecS2, c.zbuf
			}
			if len(frame)+len(rec.Data)+64 > mesh.KindIngest.MaxFrame() {
				if err := mesh.WriteFrame(c.s, mesh.FrameBlocks, frame); err != nil {
					return fmt.Errorf("send blocks: %w", err)
				}
				frame = frame[:0]
			}
			frame = mesh.AppendBlock(frame, rec)
			c.stats.sentBytes.Add(int64(len(rec.Data)))
			c.stats.sentBlocks.Add(1)
		}
		if len(frame) > 0 {
			if err := mesh.WriteFrame(c.s, mesh.FrameBlocks, frame); err != nil {
				return fmt.Errorf("send blocks: %w", err)
			}
		}
		c.buf = frame[:0]
	}
	cs := make([]mesh.BlockChange, len(changes))
	for i, ch := range changes {
		cs[i] = mesh.BlockChange{Block: ch.Block, ID: ch.ID}
	}
	if err := mesh.WriteFrame(c.s, mesh.FrameChanges, mesh.AppendChanges(nil, volume, cs)); err != nil {
		return fmt.Errorf("send changes: %w", err)
	}
	return nil
}

// commit asks for a consistency point and waits until it is durable.
func (c *conn) commit(seq uint64, t time.Time) (*mesh.Committed, error) {
	b, _ := json.Marshal(mesh.Commit{Seq: seq, Time: t})
	if err := mesh.WriteFrame(c.s, mesh.FrameCommit, b); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	p, err := c.expect(mesh.FrameCommitted)
	if err != nil {
		return nil, err
	}
	var done mesh.Committed
	if err := json.Unmarshal(p, &done); err != nil {
		return nil, fmt.Errorf("committed: %w", err)
	}
	if done.Seq != seq {
		return nil, fmt.Errorf("node committed seq %d, asked %d", done.Seq, seq)
	}
	return &done, nil
}

// sortChanges orders changes by block and keeps the last of repeats.
func sortChanges(cs []change) []change {
	slices.SortStableFunc(cs, func(a, b change) int {
		switch {
		case a.Block < b.Block:
			return -1
		case a.Block > b.Block:
			return 1
		}
		return 0
	})
	out := cs[:0]
	for i, c := range cs {
		if i+1 < len(cs) && cs[i+1].Block == c.Block {
			continue
		}
		out = append(out, c)
	}
	return out
}

// refusal names the agent's state for a failure to reach or ship to the
// node, by the wire code (mesh doc.go): "fenced" (the service failed over
// to another site) and "refused" are permanent, the agent stops shipping
// until the next interval; "held" (a planned failover stops the service),
// "nospace" (the node's disk is nearly full: issue 15 item 5) and
// "disconnected" are retried with back-off while the spool keeps the
// writes.
func refusal(err error) (state string, permanent bool) {
	switch {
	case errors.Is(err, mesh.ErrFenced):
		return "fenced", true
	case errors.Is(err, mesh.ErrHeld):
		return "held", false
	case errors.Is(err, mesh.ErrNoSpace):
		return "nospace", false
	case !mesh.IsRetryable(err):
		return "refused", true
	}
	return "disconnected", false
}
