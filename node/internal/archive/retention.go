package archive

import (
	"fmt"
	"time"

	"github.com/lifeboat-dr/lifeboat/internal/ladder"
)

// Retention says which exports Prune keeps: those its ladder keeps (see
// internal/ladder; days in UTC) and every export younger than Lock. It has
// the meaning of config.Retention; the node converts one into the other.
type Retention struct {
	KeepLast int
	All      time.Duration
	Hourly   time.Duration
	Daily    time.Duration
	Weekly   time.Duration
	Monthly  time.Duration
	Yearly   time.Duration
	Lock     time.Duration
}

// Validate refuses negative fields.
func (r Retention) Validate() error {
	if r.KeepLast < 0 || r.All < 0 || r.Hourly < 0 || r.Daily < 0 || r.Weekly < 0 || r.Monthly < 0 || r.Yearly < 0 || r.Lock < 0 {
		return fmt.Errorf("retention %+v: fields must not be negative", r)
	}
	return nil
}

// Keep returns, for export times sorted newest first, which ones r keeps
// at now. The newest is always kept.
func (r Retention) Keep(times []time.Time, now time.Time) []bool {
	why := ladder.Rules{KeepLast: r.KeepLast, All: r.All, Hourly: r.Hourly, Daily: r.Daily,
		Weekly: r.Weekly, Monthly: r.Monthly, Yearly: r.Yearly}.Keep(times, now)
	keep := make([]bool, len(times))
	for i, t := range times {
		keep[i] = why[i] != nil || now.Sub(t) < r.Lock
	}
	return keep
}
