package testlog

import (
	"bytes"
	"strings"
	"testing"
)

func TestDropsAfterTheTest(t *testing.T) {
	var buf bytes.Buffer
	w := &writer{w: &buf}
	w.Write([]byte("during\n"))
	w.done = true
	if n, err := w.Write([]byte("after\n")); n != 6 || err != nil {
		t.Errorf("Write after the test = %d, %v; want 6, nil", n, err)
	}
	if got := buf.String(); got != "during\n" {
		t.Errorf("wrote %q, want only what came during the test", got)
	}
	New(t).Debug("shown only on failure", "key", strings.Repeat("x", 3))
}
