package archive

import (
	"fmt"
	"time"
)

// Retention says which exports Prune keeps: the newest KeepLast, every
// export younger than All, the newest of each hour (UTC) younger than
// Hourly, of each day (UTC) younger than Daily, of each ISO week younger
// than Weekly. Prune never deletes an export younger than Lock, nor the
// newest. Zero fields keep nothing by that rule. It has the meaning of
// config.Retention; the node converts one into the other.
type Retention struct {
	KeepLast int
	All      time.Duration
	Hourly   time.Duration
	Daily    time.Duration
	Weekly   time.Duration
	Lock     time.Duration
}

// Validate refuses negative fields.
func (r Retention) Validate() error {
	if r.KeepLast < 0 || r.All < 0 || r.Hourly < 0 || r.Daily < 0 || r.Weekly < 0 || r.Lock < 0 {
		return fmt.Errorf("retention %+v: fields must not be negative", r)
	}
	return nil
}

// Keep returns, for export times sorted newest first, which ones r keeps
// at now. The newest is always kept.
func (r Retention) Keep(times []time.Time, now time.Time) []bool {
	keep := make([]bool, len(times))
	hours := map[int64]bool{}
	days := map[int64]bool{}
	weeks := map[[2]int]bool{}
	for i, t := range times {
		t = t.UTC()
		age := now.Sub(t)
		if i == 0 || i < r.KeepLast || age < r.All || age < r.Lock {
			keep[i] = true
		}
		if h := t.Unix() / 3600; age < r.Hourly && !hours[h] {
			hours[h] = true
			keep[i] = true
		}
		if d := t.Unix() / 86400; age < r.Daily && !days[d] {
			days[d] = true
			keep[i] = true
		}
		y, w := t.ISOWeek()
		if wk := [2]int{y, w}; age < r.Weekly && !weeks[wk] {
			weeks[wk] = true
			keep[i] = true
		}
	}
	return keep
}
