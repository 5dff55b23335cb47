package testpolicy

import (
	"testing"

	"github.com/lifeboat-dr/lifeboat/config"
)

func TestParses(t *testing.T) {
	src := Sites("dc1", "dc2") + Service("web", "dc1", "1MiB", "rpo = \"1m\"\n  [service.hooks]\n  start = \"true\"",
		Copy("dc2", "cold", "  schedule = \"hourly\""))
	c, err := config.ParseCluster("p.toml", []byte(src))
	if err != nil {
		t.Fatalf("%v\n%s", err, src)
	}
	s := c.Service("web")
	if s == nil || s.Primary != "dc1" || len(s.Servers) != 1 || s.Copy("dc2") == nil || s.Copy("dc2").Tier != config.TierCold || s.Hooks.Start != "true" {
		t.Errorf("parsed %+v", s)
	}
}
