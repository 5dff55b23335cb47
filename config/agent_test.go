package config

import (
	"strings"
	"testing"
)

const minimalAgent = `name = "web1"
service = "web"
node = "10.0.1.11:7947"
tls_dir = "/etc/lifeboat/agent-tls"
spool = "/var/lib/lifeboat-agent"
[[volume]]
name = "disk"
path = "/dev/vg0/web"
`

func TestParseAgent(t *testing.T) {
	t.Parallel()
	a, err := ParseAgent("agent.toml", []byte(minimalAgent))
	if err != nil {
		t.Fatal(err)
	}
	if a.Mode != "scan" || a.Interval != DefaultAgentInterval || a.Ack != "async" || a.SpoolMax != DefaultSpoolMax {
		t.Errorf("defaults not applied: %+v", a)
	}
	if k, err := Detect("agent.toml", []byte(minimalAgent)); err != nil || k != KindAgent {
		t.Errorf("Detect = %v, %v; want agent", k, err)
	}
	tests := []struct {
		name, add, want string
	}{
		{"unknown key", "colour = 1\n", "agent.toml:6: colour: unknown key"},
		{"bad mode", `mode = "tap"` + "\n", `agent.toml:6: mode: "tap": want scan or intercept`},
		{"intercept without mount", `mode = "intercept"` + "\n", "mount: missing"},
		{"bad ack", `ack = "maybe"` + "\n", `ack: "maybe": want async or sync`},
		{"short interval", `interval = "10ms"` + "\n", "interval: 10ms: want at least 1s"},
		{"small spool", `spool_max = "1KiB"` + "\n", "spool_max: 1KiB: want at least 1MiB"},
		{"duplicate volume", "[[volume]]\nname = \"disk\"\npath = \"/x\"\n", `"disk": listed twice`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// Top-level keys must come before the [[volume]] table.
			src := minimalAgent
			if !strings.HasPrefix(tc.add, "[[") {
				i := strings.Index(src, "[[volume]]")
				src = src[:i] + tc.add + src[i:]
			} else {
				src += tc.add
			}
			_, err := ParseAgent("agent.toml", []byte(src))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}
