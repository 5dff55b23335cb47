package blockstore

import (
	"fmt"
	"time"
)

// Retention says which points prune keeps. A point is kept when any rule
// keeps it; the newest point of every group is always kept.
type Retention struct {
	// Last keeps the newest N points of each group.
	Last int `json:"last"`
	// Hours keeps every point of the last N hours.
	Hours int `json:"hours"`
	// HourlyDays keeps the newest point of each hour for the last N days.
	HourlyDays int `json:"hourly_days"`
	// DailyWeeks keeps the newest point of each day (UTC) for the last N weeks.
	DailyWeeks int `json:"daily_weeks"`
}

// Validate refuses a policy that keeps nothing.
func (r Retention) Validate() error {
	if r.Last < 0 || r.Hours < 0 || r.HourlyDays < 0 || r.DailyWeeks < 0 {
		return fmt.Errorf("retention: counts must not be negative")
	}
	if r.Last == 0 && r.Hours == 0 && r.HourlyDays == 0 && r.DailyWeeks == 0 {
		return fmt.Errorf("retention: no keep rule given (keep-last, keep-hours, keep-hourly-days or keep-daily-weeks); refusing to delete every point")
	}
	return nil
}

// keep returns, for points sorted oldest first, which ones r keeps at now.
// Points are grouped by Group.
func (r Retention) keep(points []Point, now time.Time) []bool {
	keep := make([]bool, len(points))
	groups := map[string][]int{}
	for i, p := range points {
		groups[p.Group] = append(groups[p.Group], i)
	}
	for _, idx := range groups {
		hours := map[int64]bool{}
		days := map[int64]bool{}
		for rank, k := 0, len(idx)-1; k >= 0; rank, k = rank+1, k-1 {
			i := idx[k]
			p := points[i]
			age := now.Sub(p.Time)
			if rank == 0 || rank < r.Last || age <= time.Duration(r.Hours)*time.Hour {
				keep[i] = true
			}
			if hour := p.Time.Unix() / 3600; age <= time.Duration(r.HourlyDays)*24*time.Hour && !hours[hour] {
				hours[hour] = true
				keep[i] = true
			}
			if day := p.Time.Unix() / 86400; age <= time.Duration(r.DailyWeeks)*7*24*time.Hour && !days[day] {
				days[day] = true
				keep[i] = true
			}
		}
	}
	return keep
}
