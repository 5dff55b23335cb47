package agent

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRunHook(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a := &Agent{opts: Options{Name: "web1", Service: "web", SpoolDir: dir, HookTimeout: 2 * time.Second, Now: time.Now},
		log: slog.New(slog.NewTextHandler(t.Output(), nil))}
	a.board = newBoard(filepath.Join(dir, StatusFile), time.Now, a.log, a.totals, Status{})
	out := filepath.Join(dir, "env")
	if err := a.runHook(t.Context(), "pre", "echo $LIFEBOAT_PHASE $LIFEBOAT_SERVICE $LIFEBOAT_AGENT > "+out); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out); strings.TrimSpace(string(b)) != "pre web web1" {
		t.Errorf("hook saw %q, want %q", b, "pre web web1")
	}
	err := a.runHook(t.Context(), "pre", "echo flushing; echo cannot reach the database >&2; exit 3")
	if err == nil || !strings.Contains(err.Error(), "cannot reach the database") {
		t.Errorf("failing hook: err = %v, want its last output line", err)
	}
	if st := a.Status(); st.State != "hook-failed" {
		t.Errorf("state after a failed hook = %q", st.State)
	}
	start := time.Now()
	err = a.runHook(t.Context(), "pre", "sleep 30")
	if err == nil || !strings.Contains(err.Error(), "did not finish within 2s") {
		t.Errorf("slow hook: err = %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("slow hook killed after %s, want about 2s", d)
	}
}
