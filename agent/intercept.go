package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/internal/intercept"
	"github.com/lifeboat-dr/lifeboat/agent/internal/spool"
	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/internal/durable"
)

// Intercept mode: each volume appears as a file on a FUSE mount
// (Mountpoint/NAME) backed by the real image; every write is applied to the
// image and its whole blocks are journaled, in order, in the spool; a
// flush or fsync from above appends a mark (a consistency point). The
// shipper sends the spool to the node in order and commits a point at each
// mark (and, in sync mode, as soon as it has records, so that writes are
// acknowledged once the node has them). Any prefix of the ordered write
// stream is a crash-consistent state, so every point is.
//
// When the spool is full, writes are recorded in a durable dirty bitmap
// instead; once the node is back and the spool drained, the shipper reads
// the dirty blocks from the image, and when no write has touched them
// since, switches back to the spool at a mark. No write is ever dropped.

// Ack modes of intercept mode.
const (
	AckAsync = "async" // a write returns once the local spool has it
	AckSync  = "sync"  // a write returns once the node has it
)

// geometryFile keeps the block size of each volume as the node said, so
// that capture can start before the node answers after a restart.
const geometryFile = "geometry.json"

// baselineFile records that the volumes were marked for their first full
// sync (intercept mode ships writes; the content before them goes once).
const baselineFile = "baseline"

// cleanFile is written when intercept mode stops cleanly (unmounted, no
// write in flight); its absence at start means a resync of every block.
const cleanFile = "clean-stop"

// sink receives the intercepted writes.
type sink struct {
	a  *Agent
	sp *spool.Spool
	bs map[string]int   // block size per volume
	nb map[string]int64 // block count per volume

	mu    sync.Mutex
	dirty bool // writes go to the dirty bitmap

	ackMu      sync.Mutex
	ackCond    *sync.Cond
	acked      uint64
	failed     error     // set when the agent stops: waiting writers give up
	pending    []stamped // when each spooled write was acknowledged, for the lag
	boundaries []uint64  // barrier marks the shipper must commit at exactly

	recent recentRecords // the newest spool records, so the shipper need not read them back

	// remarked: blocks written (into the dirty bitmap) since the current
	// resync pass began; guarded by mu.
	remarked map[string]map[int64]bool
}

// remark notes blocks written during a resync; the caller holds s.mu.
func (s *sink) remark(volume string, first int64, n int) {
	if s.remarked == nil {
		return
	}
	m := s.remarked[volume]
	if m == nil {
		m = map[int64]bool{}
		s.remarked[volume] = m
	}
	for i := range int64(n) {
		m[first+i] = true
	}
}

// mark appends a mark to the spool (and to the recent records); the
// caller holds s.mu.
func (s *sink) mark() (uint64, error) {
	seq, _, err := s.markAt()
	return seq, err
}

// markAt is mark, also returning the mark's time.
func (s *sink) markAt() (uint64, time.Time, error) {
	t := s.a.opts.Now()
	seq, err := s.sp.Mark(t)
	if err == nil {
		s.recent.add(spool.Record{Seq: seq, Kind: spool.KindMark, Time: t})
	}
	return seq, t, err
}

// stamped is a spool sequence number and when its write was acknowledged.
type stamped struct {
	seq uint64
	t   time.Time
}

func (s *sink) Blocks(volume string, first int64, blocks [][]byte) error {
	s.mu.Lock()
	if !s.dirty {
		seq, err := s.sp.AppendBlocks(volume, first, blocks)
		if err == nil {
			s.ackMu.Lock()
			s.pending = append(s.pending, stamped{seq, s.a.opts.Now()})
			s.ackMu.Unlock()
			s.recent.addBlocks(seq, volume, first, blocks)
			s.mu.Unlock()
			s.a.backlog.Add(int64(len(blocks) * s.bs[volume]))
			if s.a.opts.Ack == AckSync {
				return s.waitAcked(seq)
			}
			return nil
		}
		if !errors.Is(err, spool.ErrFull) {
			// The write is in the image but not in the spool: close the
			// spooled stream with a mark (when the spool still takes one),
			// remember the blocks for the resync, then fail the write.
			s.mark()
			derr := s.sp.MarkDirty(volume, s.nb[volume], first, int64(len(blocks)))
			s.dirty = true
			s.mu.Unlock()
			return errors.Join(err, derr)
		}
		// The spool ends with a mark (never refused for size): the writes
		// before the overflow make a point of their own.
		if _, err := s.mark(); err != nil {
			s.mu.Unlock()
			return err
		}
		s.dirty = true
		s.a.setState("overflow", "spool full: recording changed blocks in the dirty bitmap", err)
	}
	defer s.mu.Unlock()
	s.remark(volume, first, len(blocks))
	return s.sp.MarkDirty(volume, s.nb[volume], first, int64(len(blocks)))
}

func (s *sink) Flush(volume string) error {
	s.mu.Lock()
	if s.dirty {
		// The spool lacks the writes in the dirty bitmap (durable there
		// already): a mark now would make a point without them.
		s.mu.Unlock()
		return nil
	}
	seq, err := s.mark()
	s.mu.Unlock()
	if errors.Is(err, spool.ErrFull) {
		// No room for the mark: the writes are spooled; the next point
		// comes with the next flush or the shipper's interval commit.
		return s.sp.Sync()
	}
	if err != nil {
		return err
	}
	if err := s.sp.Sync(); err != nil {
		return err
	}
	if s.a.opts.Ack == AckSync {
		return s.waitAcked(seq)
	}
	return nil
}

// markNow appends a mark at this moment, between two writes, and returns
// its sequence number; 0 in overflow, where the spool lacks writes.
func (s *sink) markNow() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dirty {
		return 0, nil
	}
	seq, err := s.mark()
	if err != nil {
		return 0, err
	}
	return seq, s.sp.Sync()
}

// waitAcked blocks until the node has committed seq.
func (s *sink) waitAcked(seq uint64) error {
	s.ackMu.Lock()
	defer s.ackMu.Unlock()
	for s.acked < seq && s.failed == nil {
		s.ackCond.Wait()
	}
	return s.failed
}

func (s *sink) setAcked(seq uint64, err error) {
	now := s.a.opts.Now()
	s.ackMu.Lock()
	if seq > s.acked {
		s.acked = seq
	}
	i := 0
	for ; i < len(s.pending) && s.pending[i].seq <= seq; i++ {
		s.a.lag.add(now.Sub(s.pending[i].t))
	}
	s.pending = s.pending[i:]
	s.boundaries = slices.DeleteFunc(s.boundaries, func(b uint64) bool { return b <= seq })
	if err != nil {
		s.failed = err
	}
	s.ackMu.Unlock()
	s.ackCond.Broadcast()
}

// geometry returns each volume's block size: from the node, or from the
// copy kept in the spool directory when the node does not answer yet.
func (a *Agent) geometry(ctx context.Context) (map[string]int, error) {
	path := filepath.Join(a.opts.SpoolDir, geometryFile)
	var g map[string]int
	if b, err := os.ReadFile(path); err == nil && json.Unmarshal(b, &g) == nil && len(g) == len(a.opts.Volumes) {
		return g, nil
	}
	c, err := a.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	g = map[string]int{}
	for _, v := range a.opts.Volumes {
		bs, ok := c.blockSize(v.Name)
		if !ok {
			return nil, fmt.Errorf("the node did not accept volume %s", v.Name)
		}
		g[v.Name] = bs
	}
	b, _ := json.Marshal(g)
	return g, durable.WriteFile(path, b, 0o600)
}

func (a *Agent) runIntercept(ctx context.Context) error {
	if a.opts.Mountpoint == "" {
		return errors.New("intercept mode needs --mount DIR: the volumes appear there as files")
	}
	// The spool first: a damaged one is reported at start, also while the
	// node does not answer.
	sp, err := spool.Open(filepath.Join(a.opts.SpoolDir, "spool"), spool.Options{MaxBytes: a.opts.SpoolMax, Logger: a.log})
	if err != nil {
		return err
	}
	defer sp.Close()
	geom, err := a.geometry(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	sk := &sink{a: a, sp: sp, bs: geom, nb: map[string]int64{}, acked: sp.Acked()}
	sk.ackCond = sync.NewCond(&sk.ackMu)
	var vols []intercept.Volume
	for _, v := range a.opts.Volumes {
		size, err := volumeSize(v.Path)
		if err != nil {
			return err
		}
		sk.nb[v.Name] = (size + int64(geom[v.Name]) - 1) / int64(geom[v.Name])
		vols = append(vols, intercept.Volume{Name: v.Name, Backing: v.Path, BlockSize: geom[v.Name]})
	}
	// The first time, the whole volume is the change: mark every block
	// dirty, so that the resync sends the baseline before the spool takes
	// over at a consistency point. After an unclean stop (kill -9, crash)
	// the same: a write in flight at that moment reached the image but not
	// the spool, so the image may differ from what the node holds in
	// blocks nobody knows; the resync compares every block (the node has
	// nearly all of them: only the differing ones cross).
	baseline := filepath.Join(a.opts.SpoolDir, baselineFile)
	clean := filepath.Join(a.opts.SpoolDir, cleanFile)
	_, berr := os.Stat(baseline)
	_, cerr := os.Stat(clean)
	first := errors.Is(berr, os.ErrNotExist)
	if first || errors.Is(cerr, os.ErrNotExist) {
		// Records the previous run spooled after its last mark make a
		// point of their own first: every write it acknowledged is in
		// them, and no write was acknowledged since it stopped.
		if sp.Last() > sp.Acked() {
			if _, err := sk.mark(); err != nil {
				return err
			}
			if err := sp.Sync(); err != nil {
				return err
			}
		}
		for name, n := range sk.nb {
			if err := sp.MarkDirty(name, n, 0, n); err != nil {
				return err
			}
		}
		if err := os.WriteFile(baseline, []byte("the whole volumes were marked for the first sync\n"), 0o600); err != nil {
			return fmt.Errorf("record the baseline: %w", err)
		}
		if first {
			a.log.Info("first start: every block is sent once, then the writes", "volumes", len(sk.nb))
		} else {
			a.log.Warn("the agent did not stop cleanly: every block is compared with the node once", "volumes", len(sk.nb))
		}
	}
	if err := os.Remove(clean); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("clear the clean-stop marker: %w", err)
	}
	sk.dirty = len(sp.DirtyVolumes()) > 0
	// A killed agent leaves its FUSE mount behind, answering ENOTCONN:
	// lift it, or the directory cannot even be looked at.
	if _, err := os.Stat(a.opts.Mountpoint); errors.Is(err, syscall.ENOTCONN) {
		a.log.Warn("lifting the stale mount of a previous agent", "mount", a.opts.Mountpoint)
		if err := intercept.UnmountStale(a.opts.Mountpoint); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(a.opts.Mountpoint, 0o755); err != nil {
		return fmt.Errorf("create mount point: %w", err)
	}
	fs, err := intercept.Mount(intercept.Options{Mountpoint: a.opts.Mountpoint, Volumes: vols, Sink: sk, Logger: a.log})
	if err != nil {
		return err
	}
	a.log.Info("volumes mounted for interception", "mount", a.opts.Mountpoint, "ack", a.opts.Ack)
	defer func() {
		sk.setAcked(0, errors.New("agent stopping"))
		if err := fs.Unmount(); err != nil {
			a.log.Error("unmount", "err", err)
			return
		}
		// No write can be in flight any more: the next start needs no
		// full comparison.
		if err := sp.Sync(); err == nil {
			os.WriteFile(clean, []byte("stopped cleanly\n"), 0o600)
		}
	}()
	hctx, stopHooks := context.WithCancel(ctx)
	hooksDone := make(chan struct{}, 2)
	go func() { a.hookedMarks(hctx, sk); hooksDone <- struct{}{} }()
	go func() { a.barrierLoop(hctx, sk); hooksDone <- struct{}{} }()
	defer func() { stopHooks(); <-hooksDone; <-hooksDone }()
	return a.ship(ctx, sk)
}

// isSpoolDamage reports whether err is a damaged spool file.
func isSpoolDamage(err error) bool {
	var ce *spool.CorruptError
	return errors.As(err, &ce)
}

// spoolDamage turns a damaged spool file into a *blockstore.CorruptError,
// which cmd/lifeboat reports as damage (exit 3) with its hint, and sets the
// agent's state to say so. Other errors are returned unchanged.
func (a *Agent) spoolDamage(err error) error {
	var ce *spool.CorruptError
	if !errors.As(err, &ce) {
		return err
	}
	a.setState("error", "the spool is damaged: "+ce.Path, err)
	return &blockstore.CorruptError{Path: ce.Path, Offset: ce.Offset, Err: fmt.Errorf("agent spool: %w", ce.Err),
		Hint: fmt.Sprintf("move the agent's state directory %s (--spool) aside and start the agent again: "+
			"it starts a new spool and sends every block of its volumes that the node does not have; "+
			"points the damaged spool held but had not shipped are lost", a.opts.SpoolDir)}
}

// markWait is how long the shipper waits for the application's next mark
// (fsync) before it appends one itself: the replication lag of a write
// that is not followed by an fsync.
const markWait = 200 * time.Millisecond

// shipBatch bounds the blocks read from the spool for one commit.
const shipBatch = 2048

// ship sends the spool to the node until ctx ends, reconnecting as needed.
func (a *Agent) ship(ctx context.Context, sk *sink) error {
	var c *conn
	b := a.backoff()
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for ctx.Err() == nil {
		if c == nil {
			var err error
			if c, err = a.connect(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				sleepCtx(ctx, a.opts.Interval)
				continue
			}
			if err := a.reconcileSeq(sk, c.welcome.Seq); err != nil {
				return err
			}
		}
		err := a.shipOnce(ctx, c, sk)
		if err == nil {
			b.Reset()
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		if isSpoolDamage(err) {
			// Reconnecting reads the same damaged record again.
			return err
		}
		c.Close()
		c = nil
		// A commit refused as held (planned failover) or fenced must not
		// spin: wait by the refusal's code (issue 14 items 4 and 5).
		if !a.afterFailure(ctx, b, "spool keeps the writes; reconnecting", err) {
			return nil
		}
	}
	return nil
}

// shipOnce ships the spool up to its next mark and commits a point there;
// or, with the spool drained and blocks in the dirty bitmap, one resync
// pass. Every point ends at a mark, so its time is exact: when no mark
// comes within markWait (or the interval, if shorter; at once in sync
// mode), the shipper appends one itself (any prefix of the ordered writes
// is crash-consistent).
func (a *Agent) shipOnce(ctx context.Context, c *conn, sk *sink) error {
	sp := sk.sp
	if len(sp.DirtyVolumes()) > 0 && sp.Last() == sp.Acked() {
		return a.resync(ctx, c, sk)
	}
	read := func(after uint64, wait time.Duration) ([]spool.Record, error) {
		if recs := sk.recent.after(after, shipBatch); len(recs) > 0 {
			return recs, nil
		}
		rctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		recs, err := sp.Read(rctx, after, shipBatch)
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return nil, nil
		}
		return recs, err
	}
	recs, err := read(sp.Acked(), a.opts.Interval)
	if err != nil || len(recs) == 0 {
		return err
	}
	target := lastMark(recs)
	if target == 0 && a.opts.Ack != AckSync && len(recs) < shipBatch {
		more, err := read(recs[len(recs)-1].Seq, min(a.opts.Interval, markWait))
		if err != nil {
			return err
		}
		recs = append(recs, more...)
		target = lastMark(recs)
	}
	if target == 0 {
		if target, err = sk.markNow(); err != nil || target == 0 {
			return err // target 0: overflow, the resync makes the point
		}
	}
	target = sk.clip(sp.Acked(), target)
	// Only durable records may reach the node: after a crash the spool may
	// give the sequence numbers of unsynced records to new ones.
	if err := sp.Sync(); err != nil {
		return err
	}
	a.setState("shipping", fmt.Sprintf("spool records %d to %d", sp.Acked()+1, target), nil)
	var (
		t       time.Time
		shipped int64
	)
	for {
		byVol := map[string]map[int64][]byte{}
		last := uint64(0)
		for _, r := range recs {
			if r.Seq > target {
				break
			}
			last = r.Seq
			switch r.Kind {
			case spool.KindBlock:
				m := byVol[r.Volume]
				if m == nil {
					m = map[int64][]byte{}
					byVol[r.Volume] = m
				}
				m[r.Block] = r.Data // the newest version of a block wins
				shipped += int64(len(r.Data))
			case spool.KindMark:
				t = r.Time
			}
		}
		if err := a.sendVolumes(c, byVol); err != nil {
			return err
		}
		if last >= target {
			break
		}
		if recs, err = read(last, time.Minute); err != nil {
			return err
		}
		if len(recs) == 0 {
			return fmt.Errorf("spool records %d to %d vanished", last+1, target)
		}
	}
	done, err := c.commit(target, t)
	if err != nil {
		return err
	}
	if err := sp.Ack(target); err != nil {
		return err
	}
	a.backlog.Add(-shipped)
	sk.setAcked(target, nil)
	a.board.committed(done)
	a.setState("idle", fmt.Sprintf("point at seq %d", target), nil)
	return nil
}

// lastMark returns the sequence number of the last mark in recs, or 0.
func lastMark(recs []spool.Record) uint64 {
	for i := len(recs) - 1; i >= 0; i-- {
		if recs[i].Kind == spool.KindMark {
			return recs[i].Seq
		}
	}
	return 0
}

// sendVolumes ships whole blocks per volume, hashed here.
func (a *Agent) sendVolumes(c *conn, byVol map[string]map[int64][]byte) error {
	for vol, m := range byVol {
		cs := make([]change, 0, len(m))
		for blk, data := range m {
			ch := change{Block: blk, ID: a.hasher.ID(data)}
			if !ch.ID.IsZero() {
				ch.Data = data
			}
			cs = append(cs, ch)
		}
		slices.SortFunc(cs, func(x, y change) int { return compareBlock(x.Block, y.Block) })
		if err := c.send(vol, cs); err != nil {
			return err
		}
	}
	return nil
}

func compareBlock(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
