package agent

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/internal/spool"
	"github.com/lifeboat-dr/lifeboat/blockstore"
)

// TestSpoolDamageIsCorruptError: a damaged spool, met at open or later
// while shipping (wrapped), becomes the *blockstore.CorruptError that
// cmd/lifeboat reports as damage (exit 3), naming the file and saying to
// move the state directory aside; the status says so too. Other errors
// pass unchanged.
func TestSpoolDamageIsCorruptError(t *testing.T) {
	state := t.TempDir()
	dir := filepath.Join(state, "spool")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "acked"), make([]byte, 31), 0o600); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	_, openErr := spool.Open(dir, spool.Options{Logger: log})
	if !isSpoolDamage(openErr) {
		t.Fatalf("open of a damaged spool: %v, want a spool.CorruptError", openErr)
	}
	a := &Agent{opts: Options{SpoolDir: state, Now: time.Now}, log: log}
	a.board = newBoard(filepath.Join(state, StatusFile), time.Now, log, a.totals, Status{})
	for _, err := range []error{openErr, fmt.Errorf("ship: %w", openErr)} {
		got := a.spoolDamage(err)
		var ce *blockstore.CorruptError
		if !errors.As(got, &ce) {
			t.Fatalf("spoolDamage(%v) = %v (%T), want a blockstore.CorruptError", err, got, got)
		}
		if ce.Path != filepath.Join(dir, "acked") || !strings.Contains(ce.Hint, state) {
			t.Errorf("path %s, hint %q: want the acked file and the state directory %s", ce.Path, ce.Hint, state)
		}
	}
	if st := a.Status(); st.State != "error" || !strings.Contains(st.Detail, "acked") {
		t.Errorf("status %s (%s), want error naming the file", st.State, st.Detail)
	}
	other := errors.New("connection refused")
	if got := a.spoolDamage(other); got != other || isSpoolDamage(other) {
		t.Errorf("spoolDamage changed an unrelated error: %v", got)
	}
	if a.spoolDamage(nil) != nil {
		t.Error("spoolDamage(nil) is not nil")
	}
}
