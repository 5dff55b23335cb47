package recovery

import (
	"context"
	"fmt"
	"slices"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// Failover and drill take, by default, the newest point worth having
// (issue 16 item 5): not suspect (the ransomware signal flagged it and
// nobody cleared it), not newer than a suspect point (the attack's writes
// are in every later point too), not damaged at this site, and, where the
// service sets [service.verify] require_verified, verified ok. --at with
// a point ID or a time overrides the choice; the plan then warns about
// what is wrong with the point taken.

// maxPassed bounds the passed-over points a plan lists one by one; a run
// of points after one suspect point is one entry with a count.
const maxPassed = 16

// choice is the point a failover or drill takes and what it passed over.
type choice struct {
	point   blockstore.Point
	passed  []api.PassedPoint
	warning string // what is wrong with a point --at named
}

// choosePoint returns the newest of pts (sorted oldest first, not empty)
// worth having at site, with the newer points it passed over and why.
func choosePoint(pts []blockstore.Point, st *catalog.ServiceState, site string, requireVerified bool) (choice, error) {
	var c choice
	for i := len(pts) - 1; i >= 0; i-- {
		p := pts[i]
		why, after := flaw(p, st, site, requireVerified)
		if why == "" {
			c.point = p
			return c, nil
		}
		if n := len(c.passed); after != "" && n > 0 && c.passed[n-1].After == after {
			c.passed[n-1].Count++
			c.passed[n-1].Point, c.passed[n-1].Time = p.ID, p.Time // the run's oldest
			continue
		}
		if len(c.passed) < maxPassed {
			c.passed = append(c.passed, api.PassedPoint{Point: p.ID, Time: p.Time, Why: why, After: after, Count: 1})
		} else {
			c.passed[maxPassed-1].Count++
		}
	}
	return c, fmt.Errorf("%w: no point of the %d here is worth taking: %s; name one with --at POINT to take it anyway",
		blockstore.ErrNotFound, len(pts), api.PassedText(c.passed))
}

// flaw says what makes p not worth taking ("" = nothing); after is the
// suspect point p is newer than, when that is the flaw.
func flaw(p blockstore.Point, st *catalog.ServiceState, site string, requireVerified bool) (why, after string) {
	m, ok := st.Mark(p.ID)
	switch {
	case ok && m.IsSuspect():
		return "suspect: " + api.SuspicionText(m.Suspect), ""
	case st != nil:
		// The oldest suspect point before p: its writes are in p too.
		var first *catalog.PointMark
		for i := range st.Marks {
			s := &st.Marks[i]
			if s.IsSuspect() && s.Time.Before(p.Time) && (first == nil || s.Time.Before(first.Time)) {
				first = s
			}
		}
		if first != nil {
			return "after suspect point " + shortID(first.Point), first.Point
		}
	}
	switch {
	case ok && m.IsDamaged(site):
		return "damaged at " + site + ": " + m.Damaged[site], ""
	case requireVerified && (!ok || m.Verified == nil):
		return "not verified (the service requires verified points)", ""
	case requireVerified && m.Verified.Result != catalog.VerifyOK:
		return "verified " + m.Verified.Result + " at " + m.Verified.Site + ", not ok", ""
	}
	return "", ""
}

// atWarning says what is wrong with a point --at named, "" if nothing.
func atWarning(p blockstore.Point, st *catalog.ServiceState, site string, requireVerified bool) string {
	why, _ := flaw(p, st, site, requireVerified)
	if why == "" {
		return ""
	}
	return fmt.Sprintf("point %s, named by --at, is %s", shortID(p.ID), why)
}

// sortByTime sorts points oldest first.
func sortByTime(pts []blockstore.Point) {
	slices.SortStableFunc(pts, func(a, b blockstore.Point) int { return a.Time.Compare(b.Time) })
}

// chosenHow is the plan's Chosen for a request's --at.
func chosenHow(at string) string {
	if at == "" || at == "latest" {
		return "newest worth having"
	}
	return "--at"
}

// ChoosePoint returns the point of service a failover or drill on this
// node would take for at, with what it passed over: for a drill whose hook
// runs on the operator's machine (lifeboat drill --hook).
func (e *Engine) ChoosePoint(ctx context.Context, service, at string) (api.PointChoice, error) {
	if e.o.Store == nil {
		return api.PointChoice{}, api.ErrNoStore
	}
	c, err := e.resolveServicePoint(ctx, service, at)
	if err != nil {
		return api.PointChoice{}, err
	}
	return api.PointChoice{Point: c.point.ID, Time: c.point.Time, Chosen: chosenHow(at), PassedOver: c.passed, Warning: c.warning}, nil
}
