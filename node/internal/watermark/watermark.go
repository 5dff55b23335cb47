// Package watermark batches the newest point of each service this node
// holds into the catalog (op watermarks), with what the tier engines last
// did for it (the standby's point, the newest export), so that many
// volumes committing every second cost one Raft entry per interval.
package watermark

import (
	"context"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/internal/clock"
	"github.com/lifeboat-dr/lifeboat/internal/logpolicy"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// Options configure a Queue.
type Options struct {
	Node mesh.NodeID
	Site mesh.Site
	// Propose writes a command to the catalog; a failed batch is queued
	// again (unless something newer replaced it meanwhile).
	Propose  func(context.Context, *catalog.Command) error
	Interval time.Duration // how often a batch goes; 0 = 1 s
	Clock    clock.Clock   // nil = the real clock
	Logs     *logpolicy.Repeats
}

// Queue holds the watermarks not yet in the catalog.
type Queue struct {
	o Options

	mu    sync.Mutex
	queue map[string]catalog.Watermark // by service: not yet in the catalog
	tiers map[string]catalog.Watermark // by service: the standby and export fields
	marks []catalog.PointMark          // point marks not yet in the catalog, oldest first
}

// New returns an empty Queue.
func New(o Options) *Queue {
	if o.Interval == 0 {
		o.Interval = time.Second
	}
	o.Clock = clock.Or(o.Clock)
	return &Queue{o: o, queue: map[string]catalog.Watermark{}, tiers: map[string]catalog.Watermark{}}
}

// Note queues p as its service's newest point.
func (q *Queue) Note(p blockstore.Point) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.note(&p)
}

// note queues p with what the tier engines last noted; q.mu is held.
func (q *Queue) note(p *blockstore.Point) {
	w := q.tiers[p.Group]
	w.Service, w.Site, w.Node, w.Point, w.Time, w.Size = p.Group, string(q.o.Site), q.o.Node, p.ID, p.Time, 0
	for _, v := range p.Volumes {
		w.Size += v.Size
	}
	q.queue[p.Group] = w
}

// NoteTier records what a tier engine did for service (fn sets the
// standby's or the newest export's fields) in the service's next
// watermark; without a point queued, newest (the service's newest point,
// nil = none) goes again with the news.
func (q *Queue) NoteTier(service string, newest *blockstore.Point, fn func(*catalog.Watermark)) {
	q.mu.Lock()
	defer q.mu.Unlock()
	tm := q.tiers[service]
	fn(&tm)
	q.tiers[service] = tm
	if w, ok := q.queue[service]; ok {
		w.Standby, w.StandbyTime, w.Export, w.ExportTime = tm.Standby, tm.StandbyTime, tm.Export, tm.ExportTime
		q.queue[service] = w
	} else if newest != nil {
		q.note(newest)
	}
}

// maxQueuedMarks bounds the point marks waiting for the catalog; the
// oldest go first (the catalog keeps 64 per service).
const maxQueuedMarks = 1024

// Mark queues a point mark (op marks) for the next batch: marks go with
// the watermarks, so a suspect point reaches the catalog within one
// interval of its watermark.
func (q *Queue) Mark(m catalog.PointMark) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.marks = append(q.marks, m)
	if len(q.marks) > maxQueuedMarks {
		q.marks = q.marks[len(q.marks)-maxQueuedMarks:]
	}
}

// takeMarks returns the queued marks and empties their queue.
func (q *Queue) takeMarks() []catalog.PointMark {
	q.mu.Lock()
	defer q.mu.Unlock()
	m := q.marks
	q.marks = nil
	return m
}

// requeueMarks puts back the marks of a batch that failed, before any
// queued meanwhile.
func (q *Queue) requeueMarks(m []catalog.PointMark) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.marks = append(m, q.marks...)
	if len(q.marks) > maxQueuedMarks {
		q.marks = q.marks[len(q.marks)-maxQueuedMarks:]
	}
}

// take returns the queued watermarks and empties the queue.
func (q *Queue) take() []catalog.Watermark {
	q.mu.Lock()
	defer q.mu.Unlock()
	batch := make([]catalog.Watermark, 0, len(q.queue))
	for _, w := range q.queue {
		batch = append(batch, w)
	}
	q.queue = map[string]catalog.Watermark{}
	return batch
}

// requeue puts back the watermarks of a batch that failed, unless a newer
// one of the same service was queued meanwhile.
func (q *Queue) requeue(batch []catalog.Watermark) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, w := range batch {
		if cur, ok := q.queue[w.Service]; !ok || cur.Time.Before(w.Time) {
			q.queue[w.Service] = w
		}
	}
}

// Flush sends what is queued now: the watermarks in one command, then
// the point marks in another.
func (q *Queue) Flush(ctx context.Context) error {
	if err := q.flushWatermarks(ctx); err != nil {
		return err
	}
	marks := q.takeMarks()
	if len(marks) == 0 {
		return nil
	}
	if err := q.o.Propose(ctx, &catalog.Command{Op: catalog.OpMarks, Marks: marks}); err != nil {
		q.requeueMarks(marks)
		return err
	}
	return nil
}

func (q *Queue) flushWatermarks(ctx context.Context) error {
	batch := q.take()
	if len(batch) == 0 {
		return nil
	}
	if err := q.o.Propose(ctx, &catalog.Command{Op: catalog.OpWatermarks, Watermarks: batch}); err != nil {
		q.requeue(batch)
		return err
	}
	return nil
}

// Run sends a batch every interval until ctx ends.
func (q *Queue) Run(ctx context.Context) error {
	t := q.o.Clock.NewTicker(q.o.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
		}
		err := q.Flush(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			q.o.Logs.Fail("watermarks", "record watermarks in the catalog; will retry", err,
				"the watermarks are kept and sent again; if this lasts, check that this side reaches a raft leader (lifeboat status)")
		default:
			q.o.Logs.OK("watermarks")
		}
	}
}
