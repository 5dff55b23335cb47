package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAgentDamagedSpool: `agent run` on a damaged spool exits 3 (damage)
// naming the file and saying what to do, before it needs a node.
func TestAgentDamagedSpool(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	ca, tls := filepath.Join(tmp, "ca"), filepath.Join(tmp, "agent-tls")
	mustRun(t, "ca", "init", "--dir", ca)
	mustRun(t, "ca", "issue", "--dir", ca, "--agent", "--name", "a1", "--service", "db", "--site", "dc1", "--out", tls)
	img := filepath.Join(tmp, "disk.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(tmp, "state")
	acked := filepath.Join(state, "spool", "acked")
	if err := os.MkdirAll(filepath.Dir(acked), 0o700); err != nil {
		t.Fatal(err)
	}
	// An acknowledgement file of the right size whose bytes are garbage.
	if err := os.WriteFile(acked, []byte(strings.Repeat("garbage!", 4)), 0o600); err != nil {
		t.Fatal(err)
	}
	r := lifeboat(t, "agent", "run", "--name", "a1", "--service", "db", "--volume", "disk="+img,
		"--node", "127.0.0.1:1", "--tls-dir", tls, "--spool", state, "--mode", "intercept", "--mount", filepath.Join(tmp, "mnt"))
	if r.code != exitDamage {
		t.Fatalf("agent run on a damaged spool: exit %d, want %d\nstderr:\n%s", r.code, exitDamage, r.stderr)
	}
	for _, want := range []string{"lifeboat: " + acked, "agent spool: bad magic",
		"Try: move the agent's state directory " + state + " (--spool) aside"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr does not say %q:\n%s", want, r.stderr)
		}
	}
	t.Log(r.stderr)
	if strings.Contains(r.stderr, "panic") {
		t.Errorf("stderr mentions a panic:\n%s", r.stderr)
	}
}
