package policy

import (
	"fmt"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
)

// Four-eyes policy changes (issue 13): a policy is code the nodes run (its
// hooks) and the limit of what they may delete (its retention locks).
// Under a policy with approvals = 2, a new policy that adds, changes or
// removes a hook, shortens a lock, or lowers approvals waits in the
// catalog (PendingPolicy) until an admin other than its proposer approves
// it; anything else applies at once.

// needsApprovals is how many admins must agree to replace old with new.
func needsApprovals(old, _ *config.Cluster) int {
	if old == nil {
		return 1
	}
	return max(old.Approvals, 1)
}

// sensitiveChanges lists what replacing old with new changes in hooks,
// retention locks and approvals, one line each.
func sensitiveChanges(old, new *config.Cluster) []string {
	if old == nil {
		return nil
	}
	var out []string
	if new.Approvals < old.Approvals {
		out = append(out, fmt.Sprintf("approvals %d -> %d", old.Approvals, new.Approvals))
	}
	for _, ns := range new.Services {
		os := old.Service(ns.Name)
		var oh config.Hooks
		var oret config.Retention
		var overify string
		if os != nil {
			oh, oret, overify = os.Hooks, os.Retention, os.Verify.Hook
		}
		for _, h := range []struct{ name, old, new string }{
			{"hooks.start", oh.Start, ns.Hooks.Start}, {"hooks.stop", oh.Stop, ns.Hooks.Stop},
			{"hooks.health", oh.Health, ns.Hooks.Health}, {"hooks.drill", oh.Drill, ns.Hooks.Drill},
			{"verify.hook", overify, ns.Verify.Hook},
		} {
			if h.old != h.new {
				out = append(out, fmt.Sprintf("service %s: %s %q -> %q", ns.Name, h.name, h.old, h.new))
			}
		}
		if ns.Retention.Lock < oret.Lock {
			out = append(out, fmt.Sprintf("service %s: retention.lock %s -> %s", ns.Name, time.Duration(oret.Lock), time.Duration(ns.Retention.Lock)))
		}
		for _, nc := range ns.Copies {
			if os == nil {
				continue
			}
			if oc := os.Copy(nc.Site); oc != nil && nc.Retention.Lock < oc.Retention.Lock {
				out = append(out, fmt.Sprintf("service %s: copy at %s: retention.lock %s -> %s", ns.Name, nc.Site, time.Duration(oc.Retention.Lock), time.Duration(nc.Retention.Lock)))
			}
		}
	}
	for _, os := range old.Services {
		if new.Service(os.Name) == nil && os.Retention.Lock > 0 {
			out = append(out, fmt.Sprintf("service %s removed, with retention.lock %s", os.Name, time.Duration(os.Retention.Lock)))
		}
	}
	return out
}
