package agent

// Resync in intercept mode: after the spool overflowed, or a start without
// a clean stop, the blocks of the dirty bitmaps are read from the images
// and sent, and the sink returns to the spool at a consistency point; the
// spool's sequence is lined up with the node's after every (re)connect.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/internal/spool"
	"github.com/lifeboat-dr/lifeboat/internal/durable"
)

// resyncFile holds the mark at which a resync was switched back to the
// spool, until the point at that mark is committed: that mark is only a
// consistent point together with the resync's blocks, which die with the
// stream if the commit fails.
const resyncFile = "resync-pending"

// reconcileSeq lines the spool up with the newest sequence number w the
// node holds for this agent, after every (re)connect.
func (a *Agent) reconcileSeq(sk *sink, w uint64) error {
	sp := sk.sp
	pending := readSeqFile(filepath.Join(a.opts.SpoolDir, resyncFile))
	switch {
	case w > sp.Acked() && w <= sp.Durable():
		// The node committed more than the spool knows (an answer lost
		// in a crash): those records are in.
		if err := sp.Ack(w); err != nil {
			return err
		}
		sk.setAcked(w, nil)
	case w < sp.Acked():
		// The node lacks points the spool already let go of (another
		// node, or one that lost its store): compare every block.
		a.log.Warn("the node holds older points than this agent shipped: every block is compared once", "node_seq", w, "acked", sp.Acked())
		if err := sk.foldIntoBitmap(true); err != nil {
			return err
		}
	case w > sp.Durable():
		a.log.Error("the node holds newer points from this agent than its spool: was the spool reset? Points cannot be committed until the agent gets a new name or the node's points are removed", "node_seq", w, "spool_last", sp.Last())
	}
	if pending > 0 && sp.Acked() < pending {
		// A resync's commit did not happen: its blocks are gone with the
		// stream. Fold what was spooled since into the bitmaps and resync.
		a.log.Warn("a resync was not committed: resyncing again", "mark", pending)
		if err := sk.foldIntoBitmap(false); err != nil {
			return err
		}
	}
	if pending > 0 {
		os.Remove(filepath.Join(a.opts.SpoolDir, resyncFile))
	}
	return nil
}

// foldIntoBitmap switches the sink to the dirty bitmap and moves every
// spooled, unshipped block into it (all blocks with all), acknowledging
// those records: the resync then sends those blocks from the image.
func (sk *sink) foldIntoBitmap(all bool) error {
	sk.mu.Lock()
	defer sk.mu.Unlock()
	sp := sk.sp
	sk.dirty = true
	if all {
		for name, n := range sk.nb {
			if err := sp.MarkDirty(name, n, 0, n); err != nil {
				return err
			}
		}
	}
	for sp.Last() > sp.Acked() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		recs, err := sp.Read(ctx, sp.Acked(), shipBatch)
		cancel()
		if err != nil {
			return err
		}
		for _, r := range recs {
			if r.Kind == spool.KindBlock {
				if err := sp.MarkDirty(r.Volume, sk.nb[r.Volume], r.Block, 1); err != nil {
					return err
				}
			}
		}
		if err := sp.Sync(); err != nil {
			return err
		}
		last := recs[len(recs)-1].Seq
		if err := sp.Ack(last); err != nil {
			return err
		}
		sk.ackMu.Lock()
		if last > sk.acked {
			sk.acked = last
		}
		sk.ackMu.Unlock()
		sk.ackCond.Broadcast()
	}
	return nil
}

// readSeqFile reads a sequence number file; 0 when absent or unreadable.
func readSeqFile(path string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return n
}

// writeSeqFile writes a sequence number file durably.
func writeSeqFile(path string, n uint64) error {
	return durable.WriteFile(path, fmt.Appendf(nil, "%d\n", n), 0o600)
}

// resync sends the blocks of the dirty bitmaps, read from the images, and
// returns the sink to the spool at a consistency point. Pass one sends every
// dirty block while writes go on (into the bitmap); each further pass sends
// the blocks written during the previous one; once few remain (or after
// ten passes) the last pass runs with writes held, switches the sink back
// to the spool and appends a mark. The commit at that mark holds the image
// as it was at the switch, and every write after it comes from the spool.
// The bitmaps are cleared only once that point is committed.
func (a *Agent) resync(ctx context.Context, c *conn, sk *sink) error {
	sp := sk.sp
	var bitmaps []*spool.Bitmap
	for _, vol := range sp.DirtyVolumes() {
		bm, err := sp.Dirty(vol)
		if err != nil {
			return err
		}
		bitmaps = append(bitmaps, bm)
	}
	sk.mu.Lock()
	// Writes go to the bitmap while the resync runs (the spool is drained:
	// nothing spooled is left unshipped).
	sk.dirty = true
	sk.remarked = map[string]map[int64]bool{}
	sk.mu.Unlock()
	defer func() {
		sk.mu.Lock()
		sk.remarked = nil
		sk.mu.Unlock()
	}()
	total := int64(0)
	for _, bm := range bitmaps {
		total += bm.Count()
		a.setState("resync", fmt.Sprintf("volume %s: %d dirty blocks", bm.Volume(), bm.Count()), nil)
		var blocks []int64
		for blk, ok := bm.Next(0); ok; blk, ok = bm.Next(blk + 1) {
			blocks = append(blocks, blk)
		}
		if err := a.sendFromImage(c, sk, bm.Volume(), blocks); err != nil {
			return err
		}
	}
	var (
		seq    uint64
		at     time.Time
		tokens []spool.Token
	)
	for pass := 1; ; pass++ {
		sk.mu.Lock()
		re := sk.remarked
		n := 0
		for _, m := range re {
			n += len(m)
		}
		final := n <= finalPassBlocks || pass >= 20
		if !final {
			sk.remarked = map[string]map[int64]bool{}
			sk.mu.Unlock()
			for vol, m := range re {
				if err := a.sendFromImage(c, sk, vol, slices.Sorted(maps.Keys(m))); err != nil {
					return err
				}
			}
			continue
		}
		// The last pass: with writes held, only read the remaining blocks
		// (local I/O); they are sent once writes flow again. What is sent
		// is the image at the switch.
		last := map[string][]change{}
		for vol, m := range re {
			cs, err := a.readFromImage(sk, vol, slices.Sorted(maps.Keys(m)))
			if err != nil {
				sk.mu.Unlock()
				return err
			}
			last[vol] = cs
		}
		{
			// Every bitmap (also of volumes first written during the
			// resync) is cleared after the commit, but only of what is
			// not marked again by then.
			bitmaps = bitmaps[:0]
			tokens = tokens[:0]
			for _, vol := range sp.DirtyVolumes() {
				bm, err := sp.Dirty(vol)
				if err != nil {
					sk.mu.Unlock()
					return err
				}
				bitmaps = append(bitmaps, bm)
				tokens = append(tokens, bm.Token())
			}
			sk.dirty = false
			var err error
			seq, at, err = sk.markAt()
			if err == nil {
				err = writeSeqFile(filepath.Join(a.opts.SpoolDir, resyncFile), seq)
			}
			sk.mu.Unlock()
			if err != nil {
				return err
			}
		}
		for vol, cs := range last {
			if err := c.send(vol, cs); err != nil {
				return err
			}
		}
		break
	}
	if err := sp.Sync(); err != nil {
		return err
	}
	done, err := c.commit(seq, at)
	if err != nil {
		return err
	}
	if err := sp.Ack(seq); err != nil {
		return err
	}
	for i, bm := range bitmaps {
		if err := bm.ClearIfUnchanged(tokens[i], 0, bm.Blocks()); err != nil {
			return err
		}
	}
	if err := os.Remove(filepath.Join(a.opts.SpoolDir, resyncFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	sk.setAcked(seq, nil)
	a.board.committed(done)
	a.setState("idle", fmt.Sprintf("resync of %d blocks done; back to the spool", total), nil)
	return nil
}

// finalPassBlocks is how few blocks written during a resync pass let the
// next pass be the last (read with writes held: 1024 blocks of 64 KiB are
// 64 MiB of local reads).
const finalPassBlocks = 1024

// readFromImage reads blocks of a volume from its image as changes.
func (a *Agent) readFromImage(sk *sink, vol string, blocks []int64) ([]change, error) {
	var path string
	for _, v := range a.opts.Volumes {
		if v.Name == vol {
			path = v.Path
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("resync %s: %w", vol, err)
	}
	defer f.Close()
	bs := sk.bs[vol]
	out := make([]change, 0, len(blocks))
	for _, blk := range blocks {
		buf := make([]byte, bs)
		if _, err := f.ReadAt(buf, blk*int64(bs)); err != nil {
			return nil, fmt.Errorf("resync %s block %d: %w", vol, blk, err)
		}
		a.stats.readBytes.Add(int64(bs))
		ch := change{Block: blk, ID: a.hasher.ID(buf)}
		if !ch.ID.IsZero() {
			ch.Data = buf
		}
		out = append(out, ch)
	}
	return out, nil
}

// sendFromImage reads blocks of a volume from its image and ships them,
// 1024 at a time.
func (a *Agent) sendFromImage(c *conn, sk *sink, vol string, blocks []int64) error {
	for len(blocks) > 0 {
		n := min(len(blocks), 1024)
		cs, err := a.readFromImage(sk, vol, blocks[:n])
		if err != nil {
			return err
		}
		if err := c.send(vol, cs); err != nil {
			return err
		}
		blocks = blocks[n:]
	}
	return nil
}

// recentMax bounds the bytes of block data the recent records keep.
const recentMax = 64 << 20

// recentRecords keeps the newest spool records in memory, in order, so
// that the shipper ships them without reading them back from the spool
// files (a system call, a copy and a checksum per block). The spool stays
// the truth: whatever is not here is read from it.
type recentRecords struct {
	mu    sync.Mutex
	recs  []spool.Record
	bytes int
}

func (r *recentRecords) addBlocks(last uint64, volume string, first int64, blocks [][]byte) {
	seq := last - uint64(len(blocks)) + 1
	for i, b := range blocks {
		r.add(spool.Record{Seq: seq + uint64(i), Kind: spool.KindBlock, Volume: volume, Block: first + int64(i), Data: bytes.Clone(b)})
	}
}

// add appends a record; a gap in sequence numbers (records the spool has
// and this does not) starts over.
func (r *recentRecords) add(rec spool.Record) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := len(r.recs); n > 0 && r.recs[n-1].Seq+1 != rec.Seq {
		r.recs, r.bytes = nil, 0
	}
	r.recs = append(r.recs, rec)
	r.bytes += len(rec.Data)
	for r.bytes > recentMax && len(r.recs) > 1 {
		r.bytes -= len(r.recs[0].Data)
		r.recs = r.recs[1:]
	}
}

// after returns up to max records following seq after, if it holds the
// next one; otherwise nil. Records up to after are dropped.
func (r *recentRecords) after(after uint64, max int) []spool.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := 0
	for i < len(r.recs) && r.recs[i].Seq <= after {
		r.bytes -= len(r.recs[i].Data)
		i++
	}
	r.recs = r.recs[i:]
	if len(r.recs) == 0 || r.recs[0].Seq != after+1 {
		return nil
	}
	return slices.Clone(r.recs[:min(max, len(r.recs))])
}
