package config

import (
	"testing"
	"time"
)

func TestDaysWindowCadence(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, str string }{
		{"mon-fri", "mon-fri"},
		{"sat,sun", "sat,sun"},
		{"fri-mon", "mon,fri-sun"},
		{"Monday,wed-thu", "mon,wed,thu"},
		{"sun-sat", "mon-sun"},
	} {
		d, err := ParseDays(tc.in)
		if err != nil || d.String() != tc.str {
			t.Errorf("ParseDays(%q) = %q, %v; want %q", tc.in, d, err, tc.str)
		}
		back, err := ParseDays(d.String())
		if err != nil || back != d {
			t.Errorf("ParseDays(%q) does not round trip: %v, %v", d, back, err)
		}
	}
	for _, in := range []string{"", "weekdays", "mon-", "mon,,tue"} {
		if _, err := ParseDays(in); err == nil {
			t.Errorf("ParseDays(%q): no error", in)
		}
	}

	for _, in := range []string{"08:00-18:00", "22:00-06:00", "00:00-24:00", "9:30-10:00"} {
		w, err := ParseWindow(in)
		if err != nil {
			t.Errorf("ParseWindow(%q): %v", in, err)
			continue
		}
		back, err := ParseWindow(w.String())
		if err != nil || back != w {
			t.Errorf("ParseWindow(%q) does not round trip: %v, %v", w, back, err)
		}
	}
	for _, in := range []string{"", "8-18", "08:00-08:00", "24:00-06:00", "08:60-09:00", "25:00-01:00", "08:00", "08:00-18:00-20:00"} {
		if _, err := ParseWindow(in); err == nil {
			t.Errorf("ParseWindow(%q): no error", in)
		}
	}

	utc := time.UTC
	base := time.Date(2026, 11, 3, 10, 20, 0, 0, utc) // a Tuesday
	for _, tc := range []struct {
		in   string
		str  string
		next time.Time
	}{
		{"hourly", "hourly", time.Date(2026, 11, 3, 11, 0, 0, 0, utc)},
		{"hourly :15", "hourly :15", time.Date(2026, 11, 3, 11, 15, 0, 0, utc)},
		{"hourly :30", "hourly :30", time.Date(2026, 11, 3, 10, 30, 0, 0, utc)},
		{"daily 02:00", "daily 02:00", time.Date(2026, 11, 4, 2, 0, 0, 0, utc)},
		{"daily 23:00", "daily 23:00", time.Date(2026, 11, 3, 23, 0, 0, 0, utc)},
		{"weekly sun 03:00", "weekly sun 03:00", time.Date(2026, 11, 8, 3, 0, 0, 0, utc)},
		{"weekly tue 10:20", "weekly tue 10:20", time.Date(2026, 11, 10, 10, 20, 0, 0, utc)},
		{"every 6h", "every 6h", time.Date(2026, 11, 3, 12, 0, 0, 0, utc)},
		{"every 90m", "every 1h30m", time.Date(2026, 11, 3, 10, 30, 0, 0, utc)},
		{"every 24h", "every 24h", time.Date(2026, 11, 4, 0, 0, 0, 0, utc)},
	} {
		c, err := ParseCadence(tc.in)
		if err != nil {
			t.Errorf("ParseCadence(%q): %v", tc.in, err)
			continue
		}
		if c.String() != tc.str {
			t.Errorf("ParseCadence(%q).String() = %q, want %q", tc.in, c, tc.str)
		}
		if back, err := ParseCadence(c.String()); err != nil || back != c {
			t.Errorf("ParseCadence(%q) does not round trip: %v, %v", c, back, err)
		}
		if got := c.Next(base, utc); !got.Equal(tc.next) {
			t.Errorf("%q.Next(%s) = %s, want %s", tc.in, base, got, tc.next)
		}
	}
	for _, in := range []string{"", "nightly", "daily", "daily 25:00", "hourly 15", "hourly :75", "weekly 03:00", "every 30s", "every 2d", "every 90s"} {
		if _, err := ParseCadence(in); err == nil {
			t.Errorf("ParseCadence(%q): no error", in)
		}
	}
}
