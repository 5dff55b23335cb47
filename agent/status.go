package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/internal/logpolicy"
	"github.com/lifeboat-dr/lifeboat/mesh"
)

// Status is what `lifeboat agent status` shows, written to
// SPOOL/status.json whenever it changes.
type Status struct {
	Agent   string `json:"agent"`
	Service string `json:"service"`
	Mode    string `json:"mode"`
	Node    string `json:"node"`
	State   string `json:"state"` // starting, connected, shipping, idle, disconnected, held, nospace, refused, fenced, overflow, resync, error, stopped
	Detail  string `json:"detail,omitempty"`
	// Refusal is the node's latest refusal while it lasts (cleared when a
	// session is accepted again): its wire code and message.
	Refusal    *Refusal  `json:"refusal,omitempty"`
	Seq        uint64    `json:"seq"`
	Point      string    `json:"point,omitempty"`
	PointTime  time.Time `json:"point_time,omitzero"`
	LastError  string    `json:"last_error,omitempty"`
	SentBytes  int64     `json:"sent_bytes"`
	SentBlocks int64     `json:"sent_blocks"`
	DedupBytes int64     `json:"dedup_bytes"`
	ReadBytes  int64     `json:"read_bytes"`
	Backlog    int64     `json:"backlog_bytes"`
	// Replication lag of intercepted writes (acknowledged to committed at
	// the node) over the last lagWindow writes, in milliseconds.
	LagP50    float64   `json:"lag_p50_ms"`
	LagP99    float64   `json:"lag_p99_ms"`
	LagWrites int64     `json:"lag_writes"`
	Updated   time.Time `json:"updated"`
	PID       int       `json:"pid"`
}

// Refusal is a node refusing the agent, as the status shows it.
type Refusal struct {
	Code    string    `json:"code"` // the wire code's name (mesh doc.go): "no space", "held", "fenced", ...
	Message string    `json:"message"`
	Since   time.Time `json:"since"`
}

// StatusFile is the name of the status file in the spool directory.
const StatusFile = "status.json"

// ReadStatus reads the status file an agent keeps in spoolDir.
func ReadStatus(spoolDir string) (*Status, error) {
	b, err := os.ReadFile(filepath.Join(spoolDir, StatusFile))
	if err != nil {
		return nil, fmt.Errorf("agent status: %w", err)
	}
	var s Status
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("agent status %s: %w", filepath.Join(spoolDir, StatusFile), err)
	}
	return &s, nil
}

// failStates are the states of a failure that repeats while the agent
// retries: logged through board.fails (issue 14 item 6).
var failStates = []string{"disconnected", "held", "nospace", "refused", "fenced"}

// board is the agent's status: its state, as the agent's loops record it,
// and the status file, rewritten on each state change that matters and
// every second while run runs. Safe for concurrent use.
type board struct {
	path   string             // SPOOL/status.json
	now    func() time.Time   // the agent's clock
	log    *slog.Logger       // the agent's
	totals func(*Status)      // fills in the running totals
	fails  *logpolicy.Repeats // failure states that repeat: logged once, then counted, and the recovery

	mu     sync.Mutex
	status Status
}

// newBoard returns a board at status s, writing to path.
func newBoard(path string, now func() time.Time, log *slog.Logger, totals func(*Status), s Status) *board {
	return &board{path: path, now: now, log: log, totals: totals, status: s,
		fails: logpolicy.New(logpolicy.Options{Log: log, Now: now})}
}

// snapshot returns the current status with the running totals.
func (b *board) snapshot() Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.status
	b.totals(&s)
	return s
}

// set records a state change, logs it once, and writes the status file.
// A failure state that repeats is logged once at WARN with its detail
// (what to do), then counted; the next "connected" logs the recovery.
// node is the address the agent ships to, for the log.
func (b *board) set(state, detail string, err error, node string) {
	b.mu.Lock()
	changed := b.status.State != state || b.status.Detail != detail
	b.status.State, b.status.Detail = state, detail
	if err != nil {
		b.status.LastError = err.Error()
	}
	var re *mesh.RemoteError
	switch {
	case state == "connected":
		b.status.Refusal = nil
	case errors.As(err, &re):
		if b.status.Refusal == nil || b.status.Refusal.Code != re.Code.String() {
			b.status.Refusal = &Refusal{Code: re.Code.String(), Since: b.now().UTC()}
		}
		b.status.Refusal.Message = re.Message
	}
	b.mu.Unlock()
	switch state {
	case "disconnected", "held", "nospace", "refused", "fenced":
		b.fails.Fail(state, "agent "+state, err, detail, "node", node)
	case "connected":
		for _, s := range failStates {
			b.fails.OK(s)
		}
	}
	if !changed {
		return
	}
	switch state {
	case "shipping", "idle":
		// Several times a second in steady state: logged at debug, and the
		// status file follows within a second (run).
		b.log.Debug("agent "+state, "detail", detail)
		return
	case "disconnected", "held", "nospace", "refused", "fenced":
		// Logged above.
	case "overflow":
		b.log.Warn("agent "+state, "detail", detail, "err", err)
	default:
		b.log.Info("agent "+state, "detail", detail)
	}
	b.write()
}

// committed records the newest point the node committed.
func (b *board) committed(c *mesh.Committed) {
	b.mu.Lock()
	b.status.Seq, b.status.Point, b.status.PointTime = c.Seq, c.Point, c.Time
	b.mu.Unlock()
}

// write replaces the status file atomically.
func (b *board) write() {
	s := b.snapshot()
	s.Updated = b.now().UTC()
	data, _ := json.MarshalIndent(s, "", "  ")
	tmp := b.path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err == nil {
		os.Rename(tmp, b.path)
	}
}

// run rewrites the status file every second until ctx ends.
func (b *board) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			b.write()
		}
	}
}
