// Package testlog gives tests a logger that writes to t.Output(), which
// the test runner shows only when the test fails. Only tests import it.
package testlog

import (
	"io"
	"log/slog"
	"sync"
	"testing"
)

// New returns a DEBUG-level text logger writing to t.Output(). Writes
// that come after the test ended (memberlist's goroutines outlive its
// Shutdown, for one) are dropped instead of panicking the test binary.
func New(t testing.TB) *slog.Logger {
	w := &writer{w: t.Output()}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// writer passes writes to w until done.
type writer struct {
	mu   sync.Mutex
	w    io.Writer
	done bool
}

func (w *writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return len(p), nil
	}
	return w.w.Write(p)
}
