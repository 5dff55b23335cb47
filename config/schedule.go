package config

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	_ "time/tzdata" // schedules must work on hosts without a zoneinfo database
)

// Days is a set of weekdays, bit i set for time.Weekday(i). The zero value
// means every day. In TOML it is a string ("mon-fri", "sat,sun", "fri-mon"
// wraps over the weekend) or an array of such strings (["mon", "wed-thu"]).
type Days uint8

// AllDays is the set of every day of the week.
const AllDays Days = 1<<7 - 1

const daysWant = `want days like "mon-fri", "sat,sun" or ["mon", "wed"] (mon, tue, wed, thu, fri, sat, sun)`

var dayNames = [7]string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

// parseDay parses one day name: "mon" or "monday", any case.
func parseDay(s string) (time.Weekday, bool) {
	l := strings.ToLower(strings.TrimSpace(s))
	for i, n := range dayNames {
		if l == n || l == strings.ToLower(time.Weekday(i).String()) {
			return time.Weekday(i), true
		}
	}
	return 0, false
}

// ParseDays parses a comma-separated list of days and day ranges.
func ParseDays(s string) (Days, error) {
	var d Days
	for part := range strings.SplitSeq(s, ",") {
		from, to, isRange := strings.Cut(part, "-")
		a, ok1 := parseDay(from)
		b, ok2 := a, true
		if isRange {
			b, ok2 = parseDay(to)
		}
		if !ok1 || !ok2 {
			return 0, fmt.Errorf("%q: %s", s, daysWant)
		}
		for w := a; ; w = (w + 1) % 7 {
			d |= 1 << w
			if w == b {
				break
			}
		}
	}
	return d, nil
}

// Has reports whether w is in the set; the zero Days has every day.
func (d Days) Has(w time.Weekday) bool { return d == 0 || d&(1<<w) != 0 }

// String returns the set as runs starting on Monday: "mon-fri", "mon,wed",
// "sat-sun"; "" for the zero value, "mon-sun" for every day.
func (d Days) String() string {
	if d == 0 {
		return ""
	}
	var parts []string
	order := [7]time.Weekday{1, 2, 3, 4, 5, 6, 0}
	for i := 0; i < 7; {
		if d&(1<<order[i]) == 0 {
			i++
			continue
		}
		j := i
		for j+1 < 7 && d&(1<<order[j+1]) != 0 {
			j++
		}
		switch {
		case j == i:
			parts = append(parts, dayNames[order[i]])
		case j == i+1:
			parts = append(parts, dayNames[order[i]], dayNames[order[j]])
		default:
			parts = append(parts, dayNames[order[i]]+"-"+dayNames[order[j]])
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

// MarshalText returns String.
func (d Days) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses a day list with ParseDays; "" is every day.
func (d *Days) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*d = 0
		return nil
	}
	v, err := ParseDays(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// decodeTOML takes a string or an array of strings.
func (d *Days) decodeTOML(v any) error {
	switch x := v.(type) {
	case string:
		if x == "" {
			return fmt.Errorf("%q: %s", x, daysWant)
		}
		return d.UnmarshalText([]byte(x))
	case []any:
		if len(x) == 0 {
			return fmt.Errorf("[]: %s", daysWant)
		}
		var all Days
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return errWant(e, daysWant)
			}
			v, err := ParseDays(s)
			if err != nil {
				return err
			}
			all |= v
		}
		*d = all
		return nil
	}
	return errWant(v, daysWant)
}

// Window is a time of day range, in minutes after midnight, Start inclusive,
// End exclusive. End may be 1440 (24:00). A window with End <= Start wraps
// midnight: "22:00-06:00" runs from 22:00 to 06:00 the next morning and
// belongs to the day it starts on.
type Window struct {
	Start int
	End   int
}

const windowWant = `want a time window like "08:00-18:00" or "22:00-06:00"`

// parseClock parses "HH:MM" (00:00 to 24:00) into minutes.
func parseClock(s string) (int, bool) {
	h, m, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok || len(h) < 1 || len(h) > 2 || len(m) != 2 {
		return 0, false
	}
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if err1 != nil || err2 != nil || hh < 0 || mm < 0 || mm > 59 || hh > 24 || hh == 24 && mm != 0 {
		return 0, false
	}
	return hh*60 + mm, true
}

// clock formats minutes after midnight as "HH:MM".
func clock(m int) string { return fmt.Sprintf("%02d:%02d", m/60, m%60) }

// ParseWindow parses "HH:MM-HH:MM".
func ParseWindow(s string) (Window, error) {
	a, b, ok := strings.Cut(s, "-")
	start, ok1 := parseClock(a)
	end, ok2 := parseClock(b)
	if !ok || !ok1 || !ok2 || start == 1440 {
		return Window{}, fmt.Errorf("%q: %s", s, windowWant)
	}
	if start == end {
		return Window{}, fmt.Errorf("%q: the window is empty: %s (00:00-24:00 for the whole day)", s, windowWant)
	}
	return Window{start, end}, nil
}

// IsZero reports whether w is unset (the whole day).
func (w Window) IsZero() bool { return w == Window{} }

// String returns "HH:MM-HH:MM", or "" when unset.
func (w Window) String() string {
	if w.IsZero() {
		return ""
	}
	return clock(w.Start) + "-" + clock(w.End)
}

// MarshalText returns String.
func (w Window) MarshalText() ([]byte, error) { return []byte(w.String()), nil }

// UnmarshalText parses a window with ParseWindow; "" is unset.
func (w *Window) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*w = Window{}
		return nil
	}
	v, err := ParseWindow(string(b))
	if err != nil {
		return err
	}
	*w = v
	return nil
}

// active reports whether the window, on the days d, covers the wall clock
// time of t (in t's location). A wrapping window belongs to the day it
// starts on: "22:00-06:00" on fri covers Saturday 03:00 but not Friday 03:00.
func active(d Days, w Window, t time.Time) bool {
	day, m := t.Weekday(), t.Hour()*60+t.Minute()
	if w.IsZero() {
		return d.Has(day)
	}
	if w.Start < w.End {
		return d.Has(day) && m >= w.Start && m < w.End
	}
	return d.Has(day) && m >= w.Start || d.Has((day+6)%7) && m < w.End
}

// locations caches loaded time zones: RateAt runs often, and each
// time.LoadLocation reads the zoneinfo database.
var locations sync.Map // string -> *time.Location

// loadLocation returns the IANA time zone name; "" is UTC. "Local" is
// refused: nodes in different places would read it differently.
func loadLocation(name string) (*time.Location, error) {
	if name == "" || name == "UTC" {
		return time.UTC, nil
	}
	if l, ok := locations.Load(name); ok {
		return l.(*time.Location), nil
	}
	const want = `want an IANA time zone like "Europe/Berlin", "America/New_York" or "UTC"`
	if name == "Local" || len(name) > 64 {
		return nil, fmt.Errorf("%q: %s", name, want)
	}
	l, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("%q: %s", name, want)
	}
	locations.Store(name, l)
	return l, nil
}

// Cadence says when a cold copy takes a point: "hourly" (on the hour),
// "hourly :15", "daily 02:00", "weekly sun 03:00" or "every 6h". An
// "every" interval is whole minutes from 1m to 24h and restarts at each
// midnight, so "every 6h" runs at 00:00, 06:00, 12:00 and 18:00. Times are
// wall clock in the copy site's time zone.
type Cadence struct {
	kind   string // "hourly", "daily", "weekly", "every"; "" unset
	minute int    // minute of the hour (hourly) or of the day (daily, weekly)
	day    time.Weekday
	every  time.Duration
}

const cadenceWant = `want a schedule like "hourly", "hourly :15", "daily 02:00", "weekly sun 03:00" or "every 6h"`

// ParseCadence parses a cold copy schedule.
func ParseCadence(s string) (Cadence, error) {
	f := strings.Fields(s)
	bad := fmt.Errorf("%q: %s", s, cadenceWant)
	if len(f) == 0 {
		return Cadence{}, bad
	}
	switch f[0] {
	case "hourly":
		c := Cadence{kind: "hourly"}
		if len(f) == 1 {
			return c, nil
		}
		m, err := strconv.Atoi(strings.TrimPrefix(f[1], ":"))
		if len(f) != 2 || !strings.HasPrefix(f[1], ":") || len(f[1]) != 3 || err != nil || m < 0 || m > 59 {
			return Cadence{}, bad
		}
		c.minute = m
		return c, nil
	case "daily":
		if len(f) != 2 {
			return Cadence{}, bad
		}
		m, ok := parseClock(f[1])
		if !ok || m == 1440 {
			return Cadence{}, bad
		}
		return Cadence{kind: "daily", minute: m}, nil
	case "weekly":
		if len(f) != 3 {
			return Cadence{}, bad
		}
		d, ok1 := parseDay(f[1])
		m, ok2 := parseClock(f[2])
		if !ok1 || !ok2 || m == 1440 {
			return Cadence{}, bad
		}
		return Cadence{kind: "weekly", minute: m, day: d}, nil
	case "every":
		if len(f) != 2 {
			return Cadence{}, bad
		}
		d, err := ParseDuration(f[1])
		if err != nil || d.Std() < time.Minute || d.Std() > 24*time.Hour || d.Std()%time.Minute != 0 {
			return Cadence{}, fmt.Errorf("%q: %s (every: whole minutes from 1m to 24h)", s, cadenceWant)
		}
		return Cadence{kind: "every", every: d.Std()}, nil
	}
	return Cadence{}, bad
}

// IsZero reports whether c is unset.
func (c Cadence) IsZero() bool { return c.kind == "" }

// Interval returns the time between two runs; 0 when unset.
func (c Cadence) Interval() time.Duration {
	switch c.kind {
	case "hourly":
		return time.Hour
	case "daily":
		return 24 * time.Hour
	case "weekly":
		return 7 * 24 * time.Hour
	}
	return c.every
}

// Next returns the first run strictly after t, wall clock in loc; the zero
// time when c is unset.
func (c Cadence) Next(t time.Time, loc *time.Location) time.Time {
	t = t.In(loc)
	y, mo, d := t.Date()
	switch c.kind {
	case "hourly":
		n := time.Date(y, mo, d, t.Hour(), c.minute, 0, 0, loc)
		for !n.After(t) {
			n = n.Add(time.Hour)
		}
		return n
	case "daily", "weekly":
		for i := 0; i <= 8; i++ {
			day := time.Date(y, mo, d+i, 0, 0, 0, 0, loc)
			n := time.Date(y, mo, d+i, c.minute/60, c.minute%60, 0, 0, loc)
			if n.After(t) && (c.kind == "daily" || day.Weekday() == c.day) {
				return n
			}
		}
	case "every":
		for i := 0; i <= 1; i++ {
			start := time.Date(y, mo, d+i, 0, 0, 0, 0, loc)
			end := time.Date(y, mo, d+i+1, 0, 0, 0, 0, loc)
			for n := start; n.Before(end); n = n.Add(c.every) {
				if n.After(t) {
					return n
				}
			}
		}
	}
	return time.Time{}
}

// String returns the cadence in the syntax ParseCadence reads; "" when unset.
func (c Cadence) String() string {
	switch c.kind {
	case "hourly":
		if c.minute == 0 {
			return "hourly"
		}
		return fmt.Sprintf("hourly :%02d", c.minute)
	case "daily":
		return "daily " + clock(c.minute)
	case "weekly":
		return "weekly " + dayNames[c.day] + " " + clock(c.minute)
	case "every":
		return "every " + Duration(c.every).String()
	}
	return ""
}

// MarshalText returns String.
func (c Cadence) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText parses a cadence with ParseCadence; "" is unset.
func (c *Cadence) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*c = Cadence{}
		return nil
	}
	v, err := ParseCadence(string(b))
	if err != nil {
		return err
	}
	*c = v
	return nil
}
