package cluster

import (
	"fmt"
	"strings"
)

// The policies of these tests are built from the pieces below, so that
// each test's TOML says only what is particular to it.

// sites returns a [[site]] table for each name.
func sites(names ...string) string {
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "[[site]]\nname = %q\n", n)
	}
	return b.String()
}

// service returns a [[service]] table of name at primary; extra (hooks,
// rpo) follows the primary line, then the server tables and the copies.
func service(name, primary, extra string, servers ...string) string {
	return fmt.Sprintf("[[service]]\nname = %q\nprimary = %q\n%s%s", name, primary, extra, strings.Join(servers, ""))
}

// server returns a [[service.server]] table named name with one volume;
// extra lines (a block size) end the volume table.
func server(name, volume, path, size, extra string) string {
	return fmt.Sprintf(`  [[service.server]]
  name = %q
    [[service.server.volume]]
    name = %q
    path = %q
    size = %q
%s`, name, volume, path, size, extra)
}

// copyAt returns a [[service.copy]] table: a copy at site with the given
// tier line (tier and more).
func copyAt(site, tier string) string {
	return fmt.Sprintf("  [[service.copy]]\n  site = %q\n  %s\n", site, tier)
}

// applyPolicy applies policy at dc1-n1 as cluster.toml and fails the test
// if it is refused.
func (h *harness) applyPolicy(policy []byte) {
	h.t.Helper()
	if _, err := h.node("dc1-n1").ApplyPolicy(h.t.Context(), "cluster.toml", policy, "test"); err != nil {
		h.t.Fatal(err)
	}
}
