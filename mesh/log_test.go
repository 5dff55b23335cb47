package mesh_test

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/lifeboat-dr/lifeboat/mesh"
)

func captureLogger() (*slog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	return slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug - 4})), &buf
}

func TestStdLoggerLevels(t *testing.T) {
	t.Parallel()
	cases := []struct{ line, level, msg string }{
		{"[DEBUG] memberlist: Stream connection from=1.2.3.4", "DEBUG", "Stream connection from=1.2.3.4"},
		{"[INFO] memberlist: Suspect n2 has failed", "INFO", "Suspect n2 has failed"},
		{"[WARN] memberlist: Was able to connect", "WARN", "Was able to connect"},
		{"[ERR] memberlist: Failed to receive", "ERROR", "Failed to receive"},
		{"no prefix at all", "INFO", "no prefix at all"},
	}
	for _, tc := range cases {
		l, buf := captureLogger()
		mesh.StdLogger(l, "memberlist").Print(tc.line)
		out := buf.String()
		if !strings.Contains(out, "level="+tc.level) || !strings.Contains(out, tc.msg) || !strings.Contains(out, "component=memberlist") {
			t.Errorf("%q logged as %q; want level %s and message %q", tc.line, out, tc.level, tc.msg)
		}
		if strings.Contains(out, "[") {
			t.Errorf("%q: prefix kept in %q", tc.line, out)
		}
	}
}

func TestHCLogger(t *testing.T) {
	t.Parallel()
	l, buf := captureLogger()
	h := mesh.HCLogger(l, "raft").Named("net").With("peer", "n2")
	h.Warn("failed to contact", "server-id", "n3", "error", errors.New("boom"))
	out := buf.String()
	for _, want := range []string{"level=WARN", `msg="failed to contact"`, "component=raft.net", "peer=n2", "server-id=n3", "error=boom"} {
		if !strings.Contains(out, want) {
			t.Errorf("log %q lacks %q", out, want)
		}
	}
	buf.Reset()
	h.SetLevel(hclog.Error)
	h.Info("quiet")
	if buf.Len() != 0 || h.IsInfo() {
		t.Errorf("Info logged at level Error: %q", buf.String())
	}
	h.StandardLogger(nil).Print("[ERROR] from std")
	if !strings.Contains(buf.String(), "level=ERROR") {
		t.Errorf("standard logger: %q", buf.String())
	}
}
