package policy

import (
	"strings"
	"testing"

	"github.com/lifeboat-dr/lifeboat/config"
)

func TestSensitiveChanges(t *testing.T) {
	parse := func(extra string) *config.Cluster {
		c, err := config.ParseCluster("p.toml", []byte(`approvals = 2
[[site]]
name = "dc1"
[[service]]
name = "web"
primary = "dc1"
`+extra+`
  [[service.server]]
  name = "w"
    [[service.server.volume]]
    name = "disk"
    path = "/dev/x"
    size = "1MiB"
`))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	base := parse("  [service.hooks]\n  start = \"a\"\n  [service.retention]\n  keep_last = 1\n  lock = \"30d\"")
	cases := []struct {
		name string
		new  *config.Cluster
		want string
	}{
		{"same", parse("  [service.hooks]\n  start = \"a\"\n  [service.retention]\n  keep_last = 1\n  lock = \"30d\""), ""},
		{"hook changed", parse("  [service.hooks]\n  start = \"b\"\n  [service.retention]\n  keep_last = 1\n  lock = \"30d\""), "hooks.start"},
		{"drill hook added", parse("  [service.hooks]\n  start = \"a\"\n  drill = \"x\"\n  [service.retention]\n  keep_last = 1\n  lock = \"30d\""), "hooks.drill"},
		{"verify hook added", parse("  [service.hooks]\n  start = \"a\"\n  [service.retention]\n  keep_last = 1\n  lock = \"30d\"\n  [service.verify]\n  every = \"1h\"\n  checks = [\"hook\"]\n  hook = \"/bin/probe\""), "verify.hook"},
		{"lock shortened", parse("  [service.hooks]\n  start = \"a\"\n  [service.retention]\n  keep_last = 1\n  lock = \"1d\""), "retention.lock"},
		{"lock lengthened", parse("  [service.hooks]\n  start = \"a\"\n  [service.retention]\n  keep_last = 1\n  lock = \"60d\""), ""},
	}
	for _, tc := range cases {
		got := strings.Join(sensitiveChanges(base, tc.new), "; ")
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: changes %q, want %q", tc.name, got, tc.want)
		}
	}
	if n := needsApprovals(base, base); n != 2 {
		t.Errorf("approvals needed %d, want 2", n)
	}
	if n := needsApprovals(nil, base); n != 1 {
		t.Errorf("first policy needs %d approvals, want 1", n)
	}
}
