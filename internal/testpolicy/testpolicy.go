// Package testpolicy builds cluster policy files for tests, so that each
// test's policy says only what is particular to it.
package testpolicy

import (
	"fmt"
	"strings"
)

// Sites returns a [[site]] table for each name.
func Sites(names ...string) string {
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "[[site]]\nname = %q\n", n)
	}
	return b.String()
}

// Service returns a [[service]] table of name at primary: extra (rpo,
// [service.hooks], ...) follows the primary line, then the servers (one
// server "s1" with one volume "disk" of size at /dev/x when none are
// given; see Server) and the copies.
func Service(name, primary, size, extra string, parts ...string) string {
	var servers, copies []string
	for _, p := range parts {
		if strings.HasPrefix(p, "  [[service.copy]]") {
			copies = append(copies, p)
		} else {
			servers = append(servers, p)
		}
	}
	if len(servers) == 0 {
		servers = []string{Server("s1", "disk", "/dev/x", size, "")}
	}
	if extra != "" && !strings.HasSuffix(extra, "\n") {
		extra += "\n"
	}
	return fmt.Sprintf("[[service]]\nname = %q\nprimary = %q\n%s%s%s", name, primary, extra, strings.Join(servers, ""), strings.Join(copies, ""))
}

// Server returns a [[service.server]] table with one volume; extra lines
// (a block size) end the volume table.
func Server(name, volume, path, size, extra string) string {
	if extra != "" && !strings.HasSuffix(extra, "\n") {
		extra += "\n"
	}
	return fmt.Sprintf("  [[service.server]]\n  name = %q\n    [[service.server.volume]]\n    name = %q\n    path = %q\n    size = %q\n%s", name, volume, path, size, extra)
}

// Copy returns a [[service.copy]] table at site with the tier given and
// extra lines (export, schedule, retention).
func Copy(site, tier, extra string) string {
	if extra != "" && !strings.HasSuffix(extra, "\n") {
		extra += "\n"
	}
	return fmt.Sprintf("  [[service.copy]]\n  site = %q\n  tier = %q\n%s", site, tier, extra)
}
