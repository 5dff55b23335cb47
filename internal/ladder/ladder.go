// Package ladder decides which points (or exports) a retention ladder
// keeps, and why. It is the one implementation of the policy's retention
// table: the node's thinning, the cold-export archive and `lifeboat prune
// --store` all use it.
package ladder

import (
	"time"
)

// Rules is a retention ladder: the newest KeepLast, every point younger than
// All, the newest point of each hour younger than Hourly, of each day
// younger than Daily, of each ISO week younger than Weekly, of each month
// younger than Monthly, of each year younger than Yearly. Hours, days,
// weeks, months and years are those of Location (UTC when nil). A zero
// field keeps nothing by its rule. The newest point is always kept.
type Rules struct {
	KeepLast int
	All      time.Duration
	Hourly   time.Duration
	Daily    time.Duration
	Weekly   time.Duration
	Monthly  time.Duration
	Yearly   time.Duration
	Location *time.Location
}

// Reasons a point is kept by its ladder.
const (
	Last    = "last"
	All     = "all"
	Hourly  = "hourly"
	Daily   = "daily"
	Weekly  = "weekly"
	Monthly = "monthly"
	Yearly  = "yearly"
)

// Empty reports whether r has no rule at all (it then keeps only the
// newest point).
func (r Rules) Empty() bool {
	return r.KeepLast <= 0 && r.All <= 0 && r.Hourly <= 0 && r.Daily <= 0 && r.Weekly <= 0 && r.Monthly <= 0 && r.Yearly <= 0
}

// Keep returns, for times sorted newest first, the rules that keep each
// one at now; a nil entry means the ladder lets it go. A time in the future
// of now counts as age zero.
func (r Rules) Keep(times []time.Time, now time.Time) [][]string {
	loc := r.Location
	if loc == nil {
		loc = time.UTC
	}
	type bucket struct {
		rule   string
		within time.Duration
		key    func(t time.Time) int64
		seen   map[int64]bool
	}
	buckets := []*bucket{
		{Hourly, r.Hourly, func(t time.Time) int64 {
			y, m, d := t.Date()
			return int64(y)*1e6 + int64(m)*1e4 + int64(d)*1e2 + int64(t.Hour())
		}, nil},
		{Daily, r.Daily, func(t time.Time) int64 { y, m, d := t.Date(); return int64(y)*1e4 + int64(m)*1e2 + int64(d) }, nil},
		{Weekly, r.Weekly, func(t time.Time) int64 { y, w := t.ISOWeek(); return int64(y)*100 + int64(w) }, nil},
		{Monthly, r.Monthly, func(t time.Time) int64 { y, m, _ := t.Date(); return int64(y)*100 + int64(m) }, nil},
		{Yearly, r.Yearly, func(t time.Time) int64 { return int64(t.Year()) }, nil},
	}
	for _, b := range buckets {
		b.seen = map[int64]bool{}
	}
	out := make([][]string, len(times))
	for i, t := range times {
		age := max(now.Sub(t), 0)
		var why []string
		if i == 0 || i < r.KeepLast {
			why = append(why, Last)
		}
		if age < r.All {
			why = append(why, All)
		}
		lt := t.In(loc)
		for _, b := range buckets {
			if age >= b.within {
				continue
			}
			if k := b.key(lt); !b.seen[k] {
				b.seen[k] = true
				why = append(why, b.rule)
			}
		}
		out[i] = why
	}
	return out
}
