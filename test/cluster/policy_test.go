package cluster

import (
	"fmt"

	"github.com/lifeboat-dr/lifeboat/internal/testpolicy"
)

// The policies of these tests are built from the pieces below, so that
// each test's TOML says only what is particular to it.

// sites, server: see package testpolicy.
var (
	sites  = testpolicy.Sites
	server = testpolicy.Server
)

// service returns a [[service]] table of name at primary; extra (hooks,
// rpo) follows the primary line, then the server tables and the copies.
func service(name, primary, extra string, servers ...string) string {
	return testpolicy.Service(name, primary, "", extra, servers...)
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
