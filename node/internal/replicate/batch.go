package replicate

import (
	"context"
	"fmt"

	"github.com/klauspost/compress/zstd"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// batchSender sends one volume's changes in offer rounds.
type batchSender struct {
	s         *sender
	st        *mesh.Stream
	fr        *mesh.FrameReader
	enc       *zstd.Encoder
	rd        *blockstore.Reader
	volume    string
	blockSize int
	batch     []mesh.BlockChange
	buf       []byte
	zbuf      []byte
	skipZ     int // frames to send without trying to compress
}

// incompressibleSkip is how many frames a sender on an unlimited link
// sends raw after one that did not compress (on a link with a rate, bytes
// matter more than CPU: every frame is tried).
const incompressibleSkip = 8

// flush offers the batch's blocks, sends those wanted, then the changes.
func (bs *batchSender) flush(ctx context.Context) error {
	if len(bs.batch) == 0 {
		return nil
	}
	s := bs.s
	m := &s.e.o
	labels := []string{s.link.name, s.tierName}
	var offer []blockstore.ID
	seen := map[blockstore.ID]bool{}
	for _, c := range bs.batch {
		if !c.ID.IsZero() && !seen[c.ID] {
			seen[c.ID] = true
			offer = append(offer, c.ID)
		}
	}
	var logical int64
	for _, c := range bs.batch {
		if !c.ID.IsZero() {
			logical += int64(bs.blockSize)
		}
	}
	m.Logical.WithLabelValues(labels...).Add(float64(logical))
	if len(offer) > 0 {
		if err := bs.write(ctx, mesh.FrameOffer, mesh.AppendOffer(nil, offer)); err != nil {
			return err
		}
		p, err := bs.fr.Expect(mesh.FrameWant)
		if err != nil {
			return err
		}
		want, err := mesh.DecodeWant(p, len(offer))
		if err != nil {
			return err
		}
		bs.buf = bs.buf[:0]
		raw := 0
		for i, id := range offer {
			if !want[i] {
				m.Dedup.WithLabelValues(labels...).Add(float64(bs.blockSize))
				continue
			}
			data, err := bs.rd.Get(id)
			if err != nil {
				return fmt.Errorf("read block %s: %w", id.Short(), err)
			}
			if raw > 0 && raw+len(data) > mesh.MaxBlocksFrame {
				if err := bs.sendBlocks(ctx, raw); err != nil {
					return err
				}
				raw = 0
			}
			bs.buf = mesh.AppendBlock(bs.buf, mesh.BlockRecord{ID: id, Codec: mesh.CodecRaw, RawLen: len(data), Data: data})
			raw += len(data)
		}
		if raw > 0 {
			if err := bs.sendBlocks(ctx, raw); err != nil {
				return err
			}
		}
	}
	if err := bs.write(ctx, mesh.FrameChanges, mesh.AppendChanges(nil, bs.volume, bs.batch)); err != nil {
		return err
	}
	s.setProgress(func(p *catalog.Progress) { p.Backlog = max(0, p.Backlog-int64(len(bs.batch))*int64(bs.blockSize)) })
	bs.batch = bs.batch[:0]
	return nil
}

// sendBlocks sends the records in bs.buf (raw bytes of blocks in it),
// compressed together when that pays.
func (bs *batchSender) sendBlocks(ctx context.Context, raw int) error {
	labels := []string{bs.s.link.name, bs.s.tierName}
	t, p := mesh.FrameBlocks, bs.buf
	if bs.skipZ > 0 {
		// The last frame did not compress: data like it (encrypted or
		// already compressed) is sent raw for a few frames before trying
		// again.
		bs.skipZ--
	} else {
		bs.zbuf = bs.enc.EncodeAll(bs.buf, bs.zbuf[:0])
		if len(bs.zbuf) < len(bs.buf)-len(bs.buf)/16 {
			t, p = mesh.FrameBlocksPacked, bs.zbuf
		} else if !bs.s.rated {
			bs.skipZ = incompressibleSkip
		}
	}
	bs.s.e.o.CompressSaved.WithLabelValues(labels...).Add(float64(len(bs.buf) - len(p)))
	err := bs.write(ctx, t, p)
	bs.buf = bs.buf[:0]
	return err
}

// write sends a frame through the link's throttle, counting the bytes as
// they go out.
func (bs *batchSender) write(ctx context.Context, t mesh.FrameType, p []byte) error {
	s := bs.s
	sent := sentCounter{w: bs.st, c: s.e.o.Sent.WithLabelValues(s.link.name, s.tierName)}
	return mesh.WriteFrame(s.link.t.Writer(ctx, sent, s.tier), t, p)
}
