package names

import (
	"strings"
	"testing"
)

func TestValid(t *testing.T) {
	for _, s := range []string{"a", "dc1", "erp-db", "web_1.prod", "0", strings.Repeat("a", 63)} {
		if !Valid(s) || Check("site", s) != nil {
			t.Errorf("%q refused", s)
		}
	}
	for _, s := range []string{"", "-a", ".a", "_a", "A", "dc1/x", "a b", "é", strings.Repeat("a", 64), "../x"} {
		if Valid(s) {
			t.Errorf("%q accepted", s)
		}
		if err := Check("site", s); err == nil || !strings.Contains(err.Error(), "site name") {
			t.Errorf("Check(%q) = %v", s, err)
		}
	}
}

func TestCheckLabel(t *testing.T) {
	for _, s := range []string{"web/disk", "Before-Upgrade", "v1.2", strings.Repeat("x", 128)} {
		if err := CheckLabel("point", s); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
	for _, s := range []string{"", "/etc", ".hidden", "a/../b", "a b", "naïve", strings.Repeat("x", 129)} {
		if err := CheckLabel("point", s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}
