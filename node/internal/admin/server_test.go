package admin

import "testing"

func TestPolicyFileName(t *testing.T) {
	for _, bad := range []string{"../../etc/shadow", "/etc/passwd", "a/b.toml", ".hidden", "x y"} {
		if _, err := policyFileName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if got, err := policyFileName("cluster.toml"); err != nil || got != "cluster.toml" {
		t.Errorf("cluster.toml: %q %v", got, err)
	}
}
