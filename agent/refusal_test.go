package agent

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/mesh"
)

// TestRefusal: the agent's state after a failure comes from the wire code
// (issue 14 item 5), never from the message: a message that says "fenced:"
// under another code is not a fence.
func TestRefusal(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		err       error
		state     string
		permanent bool
	}{
		{"fenced", &RefusedError{&mesh.RemoteError{Code: mesh.CodeFenced, Message: "service web failed over"}}, "fenced", true},
		{"fenced, wrapped", fmt.Errorf("commit: %w", &mesh.RemoteError{Code: mesh.CodeFenced}), "fenced", true},
		{"held", &mesh.RemoteError{Code: mesh.CodeHeld, Message: "stopped for a planned failover"}, "held", false},
		{"no space", fmt.Errorf("commit: %w", &mesh.RemoteError{Code: mesh.CodeNoSpace, Message: "disk low on the node"}), "nospace", false},
		{"no space in the message only", &mesh.RemoteError{Code: mesh.CodeUnavailable, Message: "disk low on the node"}, "disconnected", false},
		{"forbidden", &RefusedError{&mesh.RemoteError{Code: mesh.CodeForbidden, Message: "fenced: not really"}}, "refused", true},
		{"not found", &RefusedError{&mesh.RemoteError{Code: mesh.CodeNotFound}}, "refused", true},
		{"wrong node", &RefusedError{&mesh.RemoteError{Code: mesh.CodeWrongNode}}, "refused", true},
		{"certificate refused", fmt.Errorf("dial: %w: bad certificate", mesh.ErrRefused), "refused", true},
		{"unavailable", &mesh.RemoteError{Code: mesh.CodeUnavailable, Message: "fenced: a message is not a code"}, "disconnected", false},
		{"network", fmt.Errorf("dial: %w", mesh.ErrUnreachable), "disconnected", false},
		{"stream reset", errors.New("read from node: stream reset"), "disconnected", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			state, permanent := refusal(tc.err)
			if state != tc.state || permanent != tc.permanent {
				t.Errorf("refusal(%v) = %s, %v; want %s, %v", tc.err, state, permanent, tc.state, tc.permanent)
			}
		})
	}
}

// TestAfterFailure: a retryable failure waits the back-off on the
// injected clock, a permanent refusal does not; a failure that repeats is
// logged once at WARN with what to do, and the next connect logs the
// recovery.
func TestAfterFailure(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	var waits []time.Duration
	after := func(d time.Duration) <-chan time.Time {
		waits = append(waits, d)
		ch := make(chan time.Time, 1)
		ch <- time.Time{}
		return ch
	}
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	a := &Agent{opts: Options{SpoolDir: t.TempDir(), Node: "n1:1", Interval: time.Nanosecond, Now: clock, After: after}, log: log}
	a.board = newBoard(filepath.Join(a.opts.SpoolDir, StatusFile), clock, log, a.totals, Status{})
	b := a.backoff()

	held := &mesh.RemoteError{Code: mesh.CodeHeld, Message: "planned failover"}
	for range 3 {
		if !a.afterFailure(t.Context(), b, "", held) {
			t.Fatal("afterFailure ended with a live context")
		}
	}
	if len(waits) != 3 || waits[2] <= waits[0] {
		t.Errorf("waits %v: want three growing back-off delays", waits)
	}
	if st := a.Status(); st.State != "held" || st.Detail != refusalDetail("held") {
		t.Errorf("status %s (%s), want held", st.State, st.Detail)
	}
	if n := strings.Count(buf.String(), "agent held"); n != 1 {
		t.Errorf("%d log lines say held, want 1:\n%s", n, buf.String())
	}

	fenced := &RefusedError{&mesh.RemoteError{Code: mesh.CodeFenced}}
	a.afterFailure(t.Context(), b, "", fenced)
	if len(waits) != 3 {
		t.Errorf("a fenced refusal waited the back-off: %v", waits)
	}
	if st := a.Status(); st.State != "fenced" {
		t.Errorf("status %s, want fenced", st.State)
	}
	if !strings.Contains(buf.String(), "level=WARN msg=\"agent fenced\"") {
		t.Errorf("the log does not say fenced at WARN:\n%s", buf.String())
	}

	a.setState("connected", "node n1", nil)
	if !strings.Contains(buf.String(), "msg=recovered") || !strings.Contains(buf.String(), "failure=\"agent held\"") {
		t.Errorf("no recovery line:\n%s", buf.String())
	}
}

// TestNoSpace: a node refusing for disk space (CodeNoSpace) is retried
// with back-off, never dropped: the status says "nospace" with the node's
// message and how much is spooled, carries the refusal's code, and the
// log says it once at WARN; the next accepted session clears it.
func TestNoSpace(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	var waits []time.Duration
	after := func(d time.Duration) <-chan time.Time {
		waits = append(waits, d)
		ch := make(chan time.Time, 1)
		ch <- time.Time{}
		return ch
	}
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	a := &Agent{opts: Options{SpoolDir: t.TempDir(), Node: "n1:1", Mode: ModeIntercept, Interval: time.Hour, Now: clock, After: after}, log: log}
	a.board = newBoard(filepath.Join(a.opts.SpoolDir, StatusFile), clock, log, a.totals, Status{})
	a.backlog.Store(3 << 20)
	b := a.backoff()
	msg := "node dc1-n1 refuses new points of service web (priority 0): disk low on the node (3.1% free); free space on the node"
	for i := range 3 {
		a.backlog.Add(1 << 20)
		err := fmt.Errorf("commit: %w", &mesh.RemoteError{Code: mesh.CodeNoSpace, Message: msg})
		if !a.afterFailure(t.Context(), b, "", err) {
			t.Fatal("afterFailure ended with a live context")
		}
		st := a.Status()
		if st.State != "nospace" {
			t.Fatalf("round %d: state %s, want nospace", i, st.State)
		}
		want := fmt.Sprintf("%s; spooling, %d.0 MiB spooled", msg, 4+i)
		if !strings.HasPrefix(st.Detail, want) {
			t.Errorf("round %d: detail %q, want it to start %q", i, st.Detail, want)
		}
		if st.Refusal == nil || st.Refusal.Code != "no space" || st.Refusal.Message != msg {
			t.Errorf("round %d: refusal %+v", i, st.Refusal)
		}
	}
	if len(waits) != 3 || waits[2] <= waits[0] || waits[2] >= time.Hour {
		t.Errorf("waits %v: want three growing back-off delays, not the interval", waits)
	}
	if n := strings.Count(buf.String(), `level=WARN msg="agent nospace"`); n != 1 {
		t.Errorf("%d WARN lines say nospace, want 1:\n%s", n, buf.String())
	}
	if !strings.Contains(buf.String(), "disk low on the node (3.1% free)") {
		t.Errorf("the log does not say why:\n%s", buf.String())
	}
	a.setState("connected", "node dc1-n1", nil)
	if st := a.Status(); st.Refusal != nil {
		t.Errorf("refusal %+v after an accepted session, want none", st.Refusal)
	}
}
