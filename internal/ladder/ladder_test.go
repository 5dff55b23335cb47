package ladder

import (
	"slices"
	"strings"
	"testing"
	"time"
	_ "time/tzdata"
)

func times(start time.Time, step time.Duration, n int) []time.Time {
	ts := make([]time.Time, n)
	for i := range ts {
		ts[i] = start.Add(-time.Duration(i) * step) // newest first
	}
	return ts
}

func kept(why [][]string) (n int) {
	for _, w := range why {
		if w != nil {
			n++
		}
	}
	return n
}

func TestNewestAlwaysKept(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	why := Rules{}.Keep(times(now.Add(-48*time.Hour), time.Hour, 10), now)
	if kept(why) != 1 || !slices.Equal(why[0], []string{Last}) {
		t.Fatalf("empty ladder keeps %v, want only the newest (last)", why)
	}
}

func TestKeepLast(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	why := Rules{KeepLast: 5}.Keep(times(now, time.Second, 20), now)
	if kept(why) != 5 || why[4] == nil || why[5] != nil {
		t.Fatalf("keep_last 5 keeps %v", why)
	}
}

// A point every 15 minutes for 400 days against a full ladder keeps the
// sum of its rules' buckets, less the overlaps, and each reason is right.
func TestLadderCounts(t *testing.T) {
	now := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	r := Rules{KeepLast: 4, All: 2 * time.Hour, Hourly: 24 * time.Hour, Daily: 7 * 24 * time.Hour,
		Weekly: 5 * 7 * 24 * time.Hour, Monthly: 365 * 24 * time.Hour, Yearly: 3 * 365 * 24 * time.Hour}
	ts := times(now, 15*time.Minute, 400*96)
	why := r.Keep(ts, now)
	count := map[string]int{}
	for _, w := range why {
		for _, x := range w {
			count[x]++
		}
	}
	// all: ages 0, 15, ..., 105 min = 8 points; hourly: the 24 hours
	// before midnight and the midnight point's own hour = 25; daily
	// likewise 8; weekly: the ISO weeks touched within 35 days: 5 or 6;
	// monthly: 12 or 13; yearly: 2 (2026, 2025).
	if count[All] != 8 || count[Hourly] != 25 || count[Daily] != 8 || count[Last] != 4 || count[Yearly] != 2 {
		t.Fatalf("counts %v", count)
	}
	if count[Weekly] < 5 || count[Weekly] > 6 || count[Monthly] < 12 || count[Monthly] > 13 {
		t.Fatalf("counts %v", count)
	}
	// Each bucket keeps the newest of its hour/day: the kept hourly points
	// are on the hour's last quarter.
	for i, w := range why {
		if slices.Contains(w, Hourly) && ts[i].Minute() != 45 && i != 0 {
			t.Fatalf("hourly kept %s, want the newest of its hour", ts[i])
		}
	}
}

// Days are the location's: a point at 23:30 UTC is on the next day in
// Berlin.
func TestLocationDays(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin") // time/tzdata is linked in: no system zoneinfo needed
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 8, 12, 0, 0, 0, time.UTC)
	ts := []time.Time{
		time.Date(2026, 12, 7, 23, 30, 0, 0, time.UTC), // 8 Dec in Berlin
		time.Date(2026, 12, 7, 22, 30, 0, 0, time.UTC), // 7 Dec 23:30 in Berlin
		time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC),
	}
	utc := Rules{Daily: 7 * 24 * time.Hour}.Keep(ts, now)
	ber := Rules{Daily: 7 * 24 * time.Hour, Location: berlin}.Keep(ts, now)
	got := func(why [][]string) string {
		var b strings.Builder
		for _, w := range why {
			b.WriteString(strings.Join(w, "+") + ";")
		}
		return b.String()
	}
	if got(utc) != "last+daily;;;" || got(ber) != "last+daily;daily;;" {
		t.Fatalf("utc %q berlin %q", got(utc), got(ber))
	}
}
