package agent

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/mesh"
)

// testBoard returns a board writing to a temporary spool dir, its log and
// a clock the test moves.
func testBoard(t *testing.T) (*board, string, *bytes.Buffer, *time.Time) {
	t.Helper()
	dir := t.TempDir()
	var buf bytes.Buffer
	now := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	totals := func(s *Status) { s.SentBytes, s.Backlog = 42, 7 }
	b := newBoard(filepath.Join(dir, StatusFile), clock, slog.New(slog.NewTextHandler(&buf, nil)), totals,
		Status{Agent: "web1", Service: "web", State: "starting"})
	return b, dir, &buf, &now
}

// TestBoardStates: which state changes reach the status file at once
// (not the steady "shipping" and "idle": run writes those), the refusal
// that lasts with the time it began, its end at "connected", and the
// running totals in every snapshot and file.
func TestBoardStates(t *testing.T) {
	b, dir, _, now := testBoard(t)
	read := func() *Status {
		t.Helper()
		st, err := ReadStatus(dir)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	b.write()
	if st := read(); st.State != "starting" || st.SentBytes != 42 || st.Backlog != 7 || !st.Updated.Equal(*now) {
		t.Errorf("first file %+v: want starting, the totals and the clock's time", st)
	}
	b.set("connected", "node n1", nil, "n1:1")
	if st := read(); st.State != "connected" || st.Detail != "node n1" {
		t.Errorf("file after connected: %s (%s)", st.State, st.Detail)
	}
	b.set("shipping", "", nil, "n1:1")
	if st := read(); st.State != "connected" {
		t.Errorf("file after shipping: %s, want it left for run to write", st.State)
	}
	if st := b.snapshot(); st.State != "shipping" {
		t.Errorf("snapshot after shipping: %s", st.State)
	}

	begun := *now
	held := &mesh.RemoteError{Code: mesh.CodeHeld, Message: "planned failover"}
	b.set("held", refusalDetail("held"), held, "n1:1")
	*now = now.Add(time.Minute)
	held2 := &mesh.RemoteError{Code: mesh.CodeHeld, Message: "planned failover, still"}
	b.set("held", refusalDetail("held"), held2, "n1:1")
	st := read()
	if st.State != "held" || st.Refusal == nil || st.Refusal.Code != "held" || !st.Refusal.Since.Equal(begun) {
		t.Fatalf("file after two held refusals: %s, refusal %+v; want held since %s", st.State, st.Refusal, begun)
	}
	if got := b.snapshot(); got.Refusal.Message != held2.Message || got.LastError != held2.Error() {
		t.Errorf("snapshot refusal %+v, last error %q: want the latest message", got.Refusal, got.LastError)
	}
	b.set("connected", "node n1", nil, "n1:1")
	if st := read(); st.Refusal != nil || st.LastError == "" {
		t.Errorf("after connected: refusal %+v, last error %q; want no refusal, the last error kept", st.Refusal, st.LastError)
	}
}

// TestBoardLogsRepeatsOnce: a failure state that repeats is logged once at
// WARN, naming the node; the next connected logs the recovery.
func TestBoardLogsRepeatsOnce(t *testing.T) {
	b, _, buf, _ := testBoard(t)
	for range 5 {
		b.set("disconnected", refusalDetail("disconnected"), errors.New("dial: timeout"), "n1:1")
	}
	if n := strings.Count(buf.String(), `level=WARN msg="agent disconnected"`); n != 1 {
		t.Errorf("%d WARN lines for 5 disconnections, want 1:\n%s", n, buf)
	}
	if !strings.Contains(buf.String(), "node=n1:1") {
		t.Errorf("the WARN does not name the node:\n%s", buf)
	}
	b.set("connected", "node n1", nil, "n1:1")
	if !strings.Contains(buf.String(), "msg=recovered") {
		t.Errorf("no recovery line:\n%s", buf)
	}
}

// TestBoardCommitted: the newest committed point is in the status.
func TestBoardCommitted(t *testing.T) {
	b, _, _, _ := testBoard(t)
	at := time.Date(2026, 12, 7, 8, 59, 0, 0, time.UTC)
	b.committed(&mesh.Committed{Seq: 9, Point: "p9", Time: at})
	if st := b.snapshot(); st.Seq != 9 || st.Point != "p9" || !st.PointTime.Equal(at) {
		t.Errorf("status %d %s %s after a commit, want 9 p9 %s", st.Seq, st.Point, st.PointTime, at)
	}
}

// TestBoardRunEnds: run returns once ctx ends.
func TestBoardRunEnds(t *testing.T) {
	b, _, _, _ := testBoard(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { b.run(ctx); close(done) }()
	cancel()
	<-done
}

// TestReadStatusDamaged: a status file that does not decode is an error
// naming the file, not a zero status.
func TestReadStatusDamaged(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadStatus(dir); err == nil {
		t.Error("ReadStatus of a dir without a status file: no error")
	}
	path := filepath.Join(dir, StatusFile)
	if err := os.WriteFile(path, []byte(`{"state": "conn`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadStatus(dir); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("ReadStatus of a damaged file = %v, want an error naming %s", err, path)
	}
}
