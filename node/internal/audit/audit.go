// Package audit records the admin API's calls (issue 13): every mutating
// call, every read of data and every refused attempt, with the identity
// from the caller's certificate. The Recorder coalesces repeats, bounds
// what it keeps while the catalog is unreachable, and sends entries to the
// catalog in batches (op audit), where every node holds the same log.
package audit

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/lifeboat-dr/lifeboat/internal/clock"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// maxDetail bounds the text fields of an entry.
const maxDetail = 512

// repeatWindow is the window within which identical data reads and refusals
// coalesce into one entry with a count.
const repeatWindow = time.Minute

// batchSize bounds the entries of one Raft entry.
const batchSize = 256

// maxPending bounds the entries a node keeps while it cannot reach
// the leader; past it the oldest are dropped and counted.
const maxPending = 20000

// Options configure a Recorder.
type Options struct {
	Node mesh.NodeID // the node answering the calls recorded
	// Propose writes a batch of entries to the catalog (op audit) and
	// returns once it is applied; an error keeps them pending.
	Propose func(context.Context, []catalog.AuditEntry) error
	Clock   clock.Clock  // nil = the real clock
	Logger  *slog.Logger // nil = slog.Default()
}

// Recorder batches audit entries into the catalog.
type Recorder struct {
	o    Options
	log  *slog.Logger
	wake chan struct{}

	mu      sync.Mutex
	pending []catalog.AuditEntry
	recent  map[string]int       // coalescing: key -> index of its entry in pending, while pending
	seen    map[string]time.Time // key -> when its window opened
	dropped int
	refused *rate.Limiter // refusals recorded one by one; past it counted
	over    int           // refusals past the limiter, not yet reported
}

// New returns a Recorder; Run sends what it records.
func New(o Options) *Recorder {
	o.Clock = clock.Or(o.Clock)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Recorder{o: o, log: o.Logger.With("component", "audit"), wake: make(chan struct{}, 1),
		recent: map[string]int{}, seen: map[string]time.Time{},
		refused: rate.NewLimiter(50, 200)}
}

// Clip bounds a text field of an entry.
func Clip(s string) string {
	if len(s) > maxDetail {
		return s[:maxDetail] + "..."
	}
	return s
}

// Record queues e. With coalesce, an identical call (same caller, host,
// action, target and result) within repeatWindow of the first is counted
// on the first instead of making an entry of its own.
func (a *Recorder) Record(e *catalog.AuditEntry, coalesce bool) {
	if a == nil {
		return
	}
	e.Time = a.o.Clock.Now().UTC()
	e.Node = a.o.Node
	e.Detail, e.Target, e.Action = Clip(e.Detail), Clip(e.Target), Clip(e.Action)
	a.log.Info("audit", "who", e.Who, "kind", e.Kind, "role", e.Role, "from", e.From, "action", e.Action,
		"target", e.Target, "result", e.Result, "status", e.Status, "detail", e.Detail)
	a.mu.Lock()
	defer a.mu.Unlock()
	if e.Result == "refused" && !a.refused.Allow() {
		a.over++
		return
	}
	if coalesce {
		host, _, err := net.SplitHostPort(e.From)
		if err != nil {
			host = e.From
		}
		key := e.Who + "\x00" + e.Serial + "\x00" + host + "\x00" + e.Action + "\x00" + e.Target + "\x00" + e.Result
		if t, ok := a.seen[key]; ok && e.Time.Sub(t) < repeatWindow {
			if i, ok := a.recent[key]; ok {
				a.pending[i].Count++
				return
			}
		}
		// A repeat after its entry was sent starts a new window.
		a.seen[key] = e.Time
		if len(a.seen) > 4096 {
			for k, t := range a.seen {
				if e.Time.Sub(t) >= repeatWindow {
					delete(a.seen, k)
				}
			}
		}
		e.Count = 1
		a.pending = append(a.pending, *e)
		a.recent[key] = len(a.pending) - 1
	} else {
		a.pending = append(a.pending, *e)
	}
	if len(a.pending) > maxPending {
		drop := len(a.pending) - maxPending
		a.pending = slices.Delete(a.pending, 0, drop)
		a.dropped += drop
		clear(a.recent) // indexes moved
	}
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// Run sends pending entries to the catalog until ctx ends, in batches,
// at most every 200 ms, retrying with backoff while there is no leader.
// At the end it tries for 2 s more to send what is left.
func (a *Recorder) Run(ctx context.Context) error {
	backoff := time.Second
	tick := a.o.Clock.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			a.Flush(context.WithoutCancel(ctx), 2*time.Second)
			return nil
		case <-a.wake:
		case <-tick.C():
		}
		// Let coalescing work a moment before the batch goes.
		select {
		case <-ctx.Done():
			continue
		case <-a.o.Clock.After(100 * time.Millisecond):
		}
		if err := a.Flush(ctx, 0); err != nil {
			if !failing {
				a.log.Warn("audit entries wait for the catalog", "err", err)
				failing = true
			}
			select {
			case <-ctx.Done():
			case <-a.o.Clock.After(backoff):
			}
			backoff = min(2*backoff, 30*time.Second)
			continue
		}
		if failing {
			a.log.Info("audit entries reach the catalog again")
			failing = false
		}
		backoff = time.Second
	}
}

// Flush sends what is pending; with a timeout it bounds the wait.
func (a *Recorder) Flush(ctx context.Context, timeout time.Duration) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	for {
		a.mu.Lock()
		if a.dropped > 0 {
			a.pending = append([]catalog.AuditEntry{{Time: a.o.Clock.Now().UTC(), Node: a.o.Node, Who: "lifeboat", Kind: "node",
				Action: "audit", Result: "error", Detail: fmt.Sprintf("%d audit entries dropped: the catalog was unreachable for too long", a.dropped)}}, a.pending...)
			a.dropped = 0
			clear(a.recent)
		}
		if a.over > 0 {
			a.pending = append(a.pending, catalog.AuditEntry{Time: a.o.Clock.Now().UTC(), Node: a.o.Node, Who: "lifeboat", Kind: "node",
				Action: "audit", Result: "refused", Count: a.over, Detail: fmt.Sprintf("%d more refused calls, past 50 a second, not recorded one by one (see the node's log)", a.over)})
			a.over = 0
		}
		k := min(len(a.pending), batchSize)
		batch := slices.Clone(a.pending[:k])
		a.mu.Unlock()
		if k == 0 {
			return nil
		}
		if err := a.o.Propose(ctx, batch); err != nil {
			return err
		}
		a.mu.Lock()
		a.pending = slices.Delete(a.pending, 0, k)
		clear(a.recent)
		a.mu.Unlock()
	}
}
