package units

import (
	"strings"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want Size
		str  string
	}{
		{"512", 512, "512"},
		{"0", 0, "0"},
		{"64KiB", 64 << 10, "64KiB"},
		{"64 KiB", 64 << 10, "64KiB"},
		{"64K", 64 << 10, "64KiB"},
		{"2GiB", 2 << 30, "2GiB"},
		{"1TiB", 1 << 40, "1TiB"},
		{"100MB", 100e6, "100MB"},
		{"1kB", 1000, "1kB"},
		{"1536KiB", 1536 << 10, "1536KiB"},
		{"1000000KiB", 1000000 << 10, "1000000KiB"},
		{"8191PiB", 8191 << 50, "8191PiB"},
	} {
		got, err := ParseSize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			continue
		}
		if s := got.String(); s != tc.str {
			t.Errorf("Size(%d).String() = %q, want %q", got, s, tc.str)
		}
	}
	for _, in := range []string{"", "KiB", "-1", "1.5GiB", "64kib", "64 gallons", "9223372036854775808", "8192PiB", "0x10"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, got)
		} else if !strings.Contains(err.Error(), "want") {
			t.Errorf("ParseSize(%q) error %q does not say what is wanted", in, err)
		}
	}
}

func TestParseRate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want Rate
		str  string
	}{
		{"50Mbit", 50e6 / 8, "50Mbit"},
		{"200Mbps", 25e6, "200Mbit"},
		{"200Mb/s", 25e6, "200Mbit"},
		{"1Gbit", 125e6, "1Gbit"},
		{"1gbit", 125e6, "1Gbit"},
		{"100mbit", 12.5e6, "100Mbit"},
		{"64kbit", 8000, "64kbit"},
		{"6MiB/s", 6 << 20, "6MiB/s"},
		{"25MB/s", 25e6, "200Mbit"},
		{"1.5Gbit", 187.5e6, "1500Mbit"},
		{"1500B/s", 1500, "12kbit"},
		{"1500", 1500, "12kbit"},
		{"1001", 1001, "1001B/s"},
		{"0", Unlimited, "unlimited"},
		{"unlimited", Unlimited, "unlimited"},
		{"Unlimited", Unlimited, "unlimited"},
	} {
		got, err := ParseRate(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v", tc.in, float64(got), err, float64(tc.want))
			continue
		}
		if s := got.String(); s != tc.str {
			t.Errorf("Rate(%v).String() = %q, want %q", float64(got), s, tc.str)
		}
	}
	for _, in := range []string{"", "fast", "-5Mbit", "5 furlongs", "NaN", "Inf", "1e3Mbit", "1.2.3Mbit", "99999999999999999999Tbit", "Mbit"} {
		if got, err := ParseRate(in); err == nil {
			t.Errorf("ParseRate(%q) = %v, want an error", in, float64(got))
		}
	}
}

func TestParseDuration(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want time.Duration
		str  string
	}{
		{"15s", 15 * time.Second, "15s"},
		{"1h30m", 90 * time.Minute, "1h30m"},
		{"24h", 24 * time.Hour, "24h"},
		{"48h", 48 * time.Hour, "2d"},
		{"30d", 30 * 24 * time.Hour, "30d"},
		{"2w", 14 * 24 * time.Hour, "14d"},
		{"250ms", 250 * time.Millisecond, "250ms"},
		{"1h0m1s", time.Hour + time.Second, "1h0m1s"},
		{"0", 0, "0s"},
	} {
		got, err := ParseDuration(tc.in)
		if err != nil || got.Std() != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", tc.in, got.Std(), err, tc.want)
			continue
		}
		if s := got.String(); s != tc.str {
			t.Errorf("Duration(%v).String() = %q, want %q", got.Std(), s, tc.str)
		}
	}
	for _, in := range []string{"", "soon", "15", "1.5d", "99999999999d", "d"} {
		if got, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", in, got.Std())
		}
	}
}

func TestTextRoundTrip(t *testing.T) {
	t.Parallel()
	for _, s := range []Size{0, 1, 4096, 64 << 10, 1e9, 1<<63 - 1} {
		b, _ := s.MarshalText()
		var back Size
		if err := back.UnmarshalText(b); err != nil || back != s {
			t.Errorf("Size %d -> %q -> %d, %v", s, b, back, err)
		}
	}
	for _, r := range []Rate{0, 1, 0.5, 1e-9, 125e6, 6 << 20, 1.0 / 3, 12345.678} {
		b, err := r.MarshalText()
		var back Rate
		if err != nil || back.UnmarshalText(b) != nil || back != r {
			t.Errorf("Rate %v -> %q -> %v, %v", float64(r), b, float64(back), err)
		}
	}
	for _, d := range []Duration{0, 1, Duration(time.Hour), Duration(36 * time.Hour), -Duration(time.Second), Duration(1<<63 - 1)} {
		b, _ := d.MarshalText()
		var back Duration
		if err := back.UnmarshalText(b); err != nil || back != d {
			t.Errorf("Duration %d -> %q -> %d, %v", d, b, back, err)
		}
	}
	if _, err := Rate(-1).MarshalText(); err == nil {
		t.Error("Rate(-1).MarshalText: no error")
	}
}

// FuzzParseSize checks that every size that parses prints back to itself.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"512", "64KiB", "2GiB", "100MB", "1.5G", "-1", "9223372036854775807"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseSize(s)
		if err != nil {
			return
		}
		back, err := ParseSize(v.String())
		if err != nil || back != v {
			t.Fatalf("%q -> %d -> %q -> %d, %v", s, v, v.String(), back, err)
		}
	})
}

// FuzzParseRate checks that every rate that parses prints back to itself.
func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"50Mbit", "200Mbps", "6MiB/s", "0", "unlimited", "1.5Gbit", "0.1kbit"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseRate(s)
		if err != nil {
			return
		}
		if v < 0 {
			t.Fatalf("%q -> negative rate %v", s, float64(v))
		}
		back, err := ParseRate(v.String())
		if err != nil || back != v {
			t.Fatalf("%q -> %v -> %q -> %v, %v", s, float64(v), v.String(), float64(back), err)
		}
	})
}
