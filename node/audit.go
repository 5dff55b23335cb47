package node

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// The audit log (issue 13): every mutating admin call, every read of data
// (image, restore, NBD through the API) and every refused attempt, with the
// identity from the caller's certificate, its role, its address, what it
// asked and what came of it. Entries are Raft log entries (op audit), so no
// caller can forge or erase them and every node holds the same log; they
// live beside the catalog in the state machine, not in Catalog, so that
// reading the catalog does not copy them. The policy's [audit] table says
// how long they are kept.

// maxAuditDetail bounds the text fields of an entry.
const maxAuditDetail = 512

// auditRepeat is the window within which identical data reads and refusals
// coalesce into one entry with a count.
const auditRepeat = time.Minute

// auditBatch bounds the entries of one Raft entry.
const auditBatch = 256

// maxAuditPending bounds the entries a node keeps while it cannot reach
// the leader; past it the oldest are dropped and counted.
const maxAuditPending = 20000

// auditor batches audit entries into Raft.
type auditor struct {
	n    *Node
	log  *slog.Logger
	wake chan struct{}

	mu      sync.Mutex
	pending []AuditEntry
	recent  map[string]int       // coalescing: key -> index of its entry in pending, while pending
	seen    map[string]time.Time // key -> when its window opened
	dropped int
	refused *rate.Limiter // refusals recorded one by one; past it counted
	over    int           // refusals past the limiter, not yet reported
}

func newAuditor(n *Node) *auditor {
	return &auditor{n: n, log: n.log.With("component", "audit"), wake: make(chan struct{}, 1),
		recent: map[string]int{}, seen: map[string]time.Time{},
		refused: rate.NewLimiter(50, 200)}
}

func clip(s string) string {
	if len(s) > maxAuditDetail {
		return s[:maxAuditDetail] + "..."
	}
	return s
}

// record queues e. With coalesce, an identical call (same caller, host,
// action, target and result) within auditRepeat of the first is counted
// on the first instead of making an entry of its own.
func (a *auditor) record(e *AuditEntry, coalesce bool) {
	if a == nil {
		return
	}
	e.Time = a.n.opts.Now().UTC()
	e.Node = a.n.opts.Name
	e.Detail, e.Target, e.Action = clip(e.Detail), clip(e.Target), clip(e.Action)
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
		if t, ok := a.seen[key]; ok && e.Time.Sub(t) < auditRepeat {
			if i, ok := a.recent[key]; ok {
				a.pending[i].Count++
				return
			}
		}
		// A repeat after its entry was sent starts a new window.
		a.seen[key] = e.Time
		if len(a.seen) > 4096 {
			for k, t := range a.seen {
				if e.Time.Sub(t) >= auditRepeat {
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
	if len(a.pending) > maxAuditPending {
		drop := len(a.pending) - maxAuditPending
		a.pending = slices.Delete(a.pending, 0, drop)
		a.dropped += drop
		clear(a.recent) // indexes moved
	}
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// run sends pending entries to the catalog until ctx ends, in batches,
// at most every 200 ms, retrying with backoff while there is no leader.
func (a *auditor) run(ctx context.Context) {
	backoff := time.Second
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			a.flush(context.WithoutCancel(ctx), 2*time.Second)
			return
		case <-a.wake:
		case <-tick.C:
		}
		// Let coalescing work a moment before the batch goes.
		select {
		case <-ctx.Done():
			continue
		case <-time.After(100 * time.Millisecond):
		}
		if err := a.flush(ctx, 0); err != nil {
			if !failing {
				a.log.Warn("audit entries wait for the catalog", "err", err)
				failing = true
			}
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
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

// flush sends what is pending; with a timeout it bounds the wait.
func (a *auditor) flush(ctx context.Context, timeout time.Duration) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	for {
		a.mu.Lock()
		if a.dropped > 0 {
			a.pending = append([]AuditEntry{{Time: a.n.opts.Now().UTC(), Node: a.n.opts.Name, Who: "lifeboat", Kind: "node",
				Action: "audit", Result: "error", Detail: fmt.Sprintf("%d audit entries dropped: the catalog was unreachable for too long", a.dropped)}}, a.pending...)
			a.dropped = 0
			clear(a.recent)
		}
		if a.over > 0 {
			a.pending = append(a.pending, AuditEntry{Time: a.n.opts.Now().UTC(), Node: a.n.opts.Name, Who: "lifeboat", Kind: "node",
				Action: "audit", Result: "refused", Count: a.over, Detail: fmt.Sprintf("%d more refused calls, past 50 a second, not recorded one by one (see the node's log)", a.over)})
			a.over = 0
		}
		k := min(len(a.pending), auditBatch)
		batch := slices.Clone(a.pending[:k])
		a.mu.Unlock()
		if k == 0 {
			return nil
		}
		if err := a.n.Apply(ctx, &Command{Op: catalog.OpAudit, Audit: batch}); err != nil {
			return err
		}
		a.mu.Lock()
		a.pending = slices.Delete(a.pending, 0, k)
		clear(a.recent)
		a.mu.Unlock()
	}
}

// Audit returns the audit entries at or after since, at most limit (the
// newest), oldest first. The slice is shared: do not change it.
func (n *Node) Audit(since time.Time, limit int) []AuditEntry {
	return n.fsm.Audit(since, limit)
}

func (n *Node) serveAudit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var since time.Time
	if s := q.Get("since"); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			writeErr(w, http.StatusBadRequest, apiBadRequest, fmt.Sprintf("since %q: want an RFC 3339 time", s))
			return
		}
		since = t
	}
	limit := 1000
	if s := q.Get("limit"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			writeErr(w, http.StatusBadRequest, apiBadRequest, fmt.Sprintf("limit %q: want a positive number", s))
			return
		}
		limit = v
	}
	writeJSON(w, http.StatusOK, n.Audit(since, limit))
}

// Audit reads the cluster's audit log: entries at or after since (zero =
// all), at most limit of the newest (0 = the node's default, 1000).
func (c *Client) Audit(ctx context.Context, since time.Time, limit int) ([]AuditEntry, error) {
	q := url.Values{}
	if !since.IsZero() {
		q.Set("since", since.UTC().Format(time.RFC3339Nano))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out []AuditEntry
	return out, c.do(ctx, http.MethodGet, "/v1/audit?"+q.Encode(), nil, &out)
}
