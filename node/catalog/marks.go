package catalog

import (
	"fmt"
	"maps"
	"slices"
	"time"
)

// marksLen bounds the marked points kept per service: marks are for the
// exceptional points (suspect, damaged) and the recent verifications, not
// a record of every point.
const marksLen = 64

// PointMark is what the cluster knows about one point beyond its blocks:
// whether its write pattern looked like ransomware, at which sites blocks
// of it are lost, and how its last verification went. A mark is kept in
// the catalog (not in a site's store) so that every site, and a failover
// at any of them, sees it.
type PointMark struct {
	Service string    `json:"service"`
	Point   string    `json:"point"`
	Time    time.Time `json:"time"` // the point's own time
	// Suspect is set when the point's change pattern jumped far above the
	// volume's baseline.
	Suspect *Suspicion `json:"suspect,omitempty"`
	// Damaged, by site: what of the point no site could repair there
	// (volume and byte ranges). A mark command's entry with an empty text
	// clears that site.
	Damaged map[string]string `json:"damaged,omitempty"`
	// Verified is the newest verification of the point.
	Verified *Verification `json:"verified,omitempty"`
}

// Suspicion is the ransomware signal of one point: its figures and the
// volume's trailing baseline they were compared with. The shares are the
// judged window's: the points of the last [service.suspect] window, up to
// the one that tripped the signal.
type Suspicion struct {
	Volume                 string    `json:"volume"`
	Changed                float64   `json:"changed"`        // share of the volume's blocks the point changed
	Incompressible         float64   `json:"incompressible"` // share of the changed blocks that did not compress
	BaselineChanged        float64   `json:"baseline_changed"`
	BaselineIncompressible float64   `json:"baseline_incompressible"`
	At                     time.Time `json:"at"`
	// Cleared is who declared the point clean after all ("" = still suspect).
	Cleared string `json:"cleared,omitempty"`
}

// Verification results.
const (
	VerifyOK      = "ok"
	VerifyFailed  = "failed"
	VerifySkipped = "skipped"
)

// Verification is one check run of a point: where, when, and each check.
type Verification struct {
	Result string        `json:"result"` // ok, failed
	Site   string        `json:"site"`
	At     time.Time     `json:"at"`
	Checks []CheckResult `json:"checks"`
}

// CheckResult is one check (fsck, boot, hook) of a verification.
type CheckResult struct {
	Name     string   `json:"name"`
	Result   string   `json:"result"` // ok, failed, skipped
	Detail   string   `json:"detail,omitempty"`
	Evidence []string `json:"evidence,omitempty"` // paths on the verifying node
}

// IsSuspect says whether the mark holds a suspicion nobody cleared.
func (m PointMark) IsSuspect() bool { return m.Suspect != nil && m.Suspect.Cleared == "" }

// IsDamaged says whether blocks of the point are lost at site ("" = any).
func (m PointMark) IsDamaged(site string) bool {
	if site == "" {
		return len(m.Damaged) > 0
	}
	_, ok := m.Damaged[site]
	return ok
}

// Mark returns the service's mark of point, if any.
func (s *ServiceState) Mark(point string) (PointMark, bool) {
	if s == nil {
		return PointMark{}, false
	}
	i := slices.IndexFunc(s.Marks, func(m PointMark) bool { return m.Point == point })
	if i < 0 {
		return PointMark{}, false
	}
	return s.Marks[i], true
}

// applyMarks merges marks into their services: a mark's set fields
// replace the kept ones, its Damaged entries merge by site.
func (c *Catalog) applyMarks(marks []PointMark) error {
	for _, m := range marks {
		if m.Service == "" || m.Point == "" {
			return fmt.Errorf("%w: a point mark needs a service and a point", ErrBadCommand)
		}
		s := c.service(m.Service)
		i := slices.IndexFunc(s.Marks, func(o PointMark) bool { return o.Point == m.Point })
		if i < 0 {
			s.Marks = append(s.Marks, PointMark{Service: m.Service, Point: m.Point, Time: m.Time})
			i = len(s.Marks) - 1
		}
		k := s.Marks[i]
		if !m.Time.IsZero() {
			k.Time = m.Time
		}
		if m.Suspect != nil {
			k.Suspect = m.Suspect
		}
		if m.Verified != nil {
			k.Verified = m.Verified
		}
		if len(m.Damaged) > 0 {
			d := maps.Clone(k.Damaged)
			if d == nil {
				d = map[string]string{}
			}
			for site, what := range m.Damaged {
				if what == "" {
					delete(d, site)
				} else {
					d[site] = what
				}
			}
			if len(d) == 0 {
				d = nil
			}
			k.Damaged = d
		}
		s.Marks[i] = k
		for len(s.Marks) > marksLen {
			// Drop the oldest mark that only records a verification:
			// suspect and damaged marks are what failovers must see.
			i := slices.IndexFunc(s.Marks, func(m PointMark) bool { return !m.IsSuspect() && !m.IsDamaged("") })
			if i < 0 {
				i = 0
			}
			s.Marks = slices.Delete(s.Marks, i, i+1)
		}
	}
	return nil
}
