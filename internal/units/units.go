// Package units is the one home of the textual sizes, rates and durations
// that config files and command-line flags share: "64KiB", "100MB",
// "200Mbit", "25MiB/s", "1h30m", "30d". config re-exports the types.
package units

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Size is a number of bytes. In TOML it is an integer or a string with an
// optional unit: "512", "64KiB", "2GiB", "100MB". Binary units (KiB, MiB,
// GiB, TiB, PiB, and the short K, M, G, T, P) are powers of 1024; decimal
// units (kB, MB, GB, TB, PB) are powers of 1000.
type Size int64

// sizeUnits maps a unit to its number of bytes.
var sizeUnits = map[string]int64{
	"": 1, "B": 1,
	"K": 1 << 10, "KiB": 1 << 10, "kB": 1e3, "KB": 1e3,
	"M": 1 << 20, "MiB": 1 << 20, "MB": 1e6,
	"G": 1 << 30, "GiB": 1 << 30, "GB": 1e9,
	"T": 1 << 40, "TiB": 1 << 40, "TB": 1e12,
	"P": 1 << 50, "PiB": 1 << 50, "PB": 1e15,
}

const sizeWant = `want a whole number of bytes with an optional unit, like 512, "64KiB", "2GiB" or "100MB"`

// ParseSize parses a size such as "64KiB" or "512".
func ParseSize(s string) (Size, error) {
	num, unit := splitNumber(s)
	mult, ok := sizeUnits[unit]
	if num == "" || !ok || strings.Contains(num, ".") {
		return 0, fmt.Errorf("%q: %s", s, sizeWant)
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q: too large: want at most %d bytes", s, int64(math.MaxInt64))
	}
	return Size(n * mult), nil
}

// splitNumber splits s into a leading unsigned decimal number and the unit
// after it, both trimmed of spaces.
func splitNumber(s string) (num, unit string) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	return t[:i], strings.TrimSpace(t[i:])
}

// String returns the size exactly, in the largest unit that divides it:
// 65536 is "64KiB", 100000000 is "100MB", 1000 is "1kB", 1234 is "1234".
func (s Size) String() string {
	n := int64(s)
	if n > 0 {
		for _, u := range []string{"PiB", "TiB", "GiB", "MiB", "KiB", "PB", "TB", "GB", "MB", "kB"} {
			if m := sizeUnits[u]; n%m == 0 {
				return strconv.FormatInt(n/m, 10) + u
			}
		}
	}
	return strconv.FormatInt(n, 10)
}

// MarshalText returns String.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses a size with ParseSize.
func (s *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// Rate is a bandwidth in bytes per second; 0 means unlimited. In TOML it is a
// string in bits ("50Mbit", "200Mbps", "1Gbit", "64kbit") or in bytes per
// second ("6MiB/s", "25MB/s", "1500B/s"), a plain number of bytes per
// second, 0, or "unlimited". Bit units and kB/s, MB/s, GB/s are decimal;
// KiB/s, MiB/s, GiB/s are binary.
type Rate float64

// Unlimited is the Rate that puts no limit on a link.
const Unlimited Rate = 0

const RateWant = `want a rate like "200Mbit", "25MiB/s" or "unlimited"`

// rateUnits maps a unit to bytes per second. Bit units are kept as bits
// (the bool) so that parsing divides by 8 last, which keeps String and
// ParseRate exact inverses.
var rateUnits = func() map[string]struct {
	mult float64
	bits bool
} {
	m := map[string]struct {
		mult float64
		bits bool
	}{"": {1, false}, "B/s": {1, false}, "Bps": {1, false}, "bit": {1, true}, "bps": {1, true}, "b/s": {1, true}}
	for _, p := range []struct {
		prefix string
		mult   float64
	}{{"k", 1e3}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}} {
		m[p.prefix+"bit"] = struct {
			mult float64
			bits bool
		}{p.mult, true}
		m[p.prefix+"bps"] = m[p.prefix+"bit"]
		m[p.prefix+"b/s"] = m[p.prefix+"bit"]
		m[p.prefix+"B/s"] = struct {
			mult float64
			bits bool
		}{p.mult, false}
		m[p.prefix+"Bps"] = m[p.prefix+"B/s"]
	}
	for _, p := range []struct {
		prefix string
		mult   float64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40}} {
		m[p.prefix+"B/s"] = struct {
			mult float64
			bits bool
		}{p.mult, false}
		m[p.prefix+"bit"] = struct {
			mult float64
			bits bool
		}{p.mult, true}
	}
	return m
}()

// ParseRate parses a rate such as "50Mbit", "6MiB/s", "0" or "unlimited".
func ParseRate(s string) (Rate, error) {
	if strings.EqualFold(strings.TrimSpace(s), "unlimited") {
		return Unlimited, nil
	}
	num, unit := splitNumber(s)
	u, ok := rateUnits[unit]
	if !ok {
		// tc writes "mbit" and "gbit": bit units take any case.
		if l := strings.ToLower(unit); len(l) == 4 && strings.HasSuffix(l, "bit") {
			u, ok = rateUnits[strings.ToUpper(l[:1])+"bit"]
		}
	}
	if num == "" || !ok {
		return 0, fmt.Errorf("%q: %s", s, RateWant)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("%q: %s", s, RateWant)
	}
	f *= u.mult
	if u.bits {
		f /= 8
	}
	if math.IsInf(f, 0) || f > 1e18 {
		return 0, fmt.Errorf("%q: too large: want at most 8Ebit", s)
	}
	return Rate(f), nil
}

// String returns "unlimited" for 0, else the rate exactly, in whole bits
// per second when it is a whole number of kbit ("200Mbit"), else in binary
// bytes per second ("6MiB/s"), else in bytes per second ("1500.5B/s").
func (r Rate) String() string {
	f := float64(r)
	switch {
	case f == 0:
		return "unlimited"
	case math.IsNaN(f) || math.IsInf(f, 0) || f < 0:
		return strconv.FormatFloat(f, 'g', -1, 64) + "B/s"
	}
	bits := f * 8
	for _, u := range []struct {
		name string
		mult float64
	}{{"Tbit", 1e12}, {"Gbit", 1e9}, {"Mbit", 1e6}, {"kbit", 1e3}} {
		if n := bits / u.mult; n == math.Trunc(n) && n < 1<<53 && n*u.mult == bits {
			return strconv.FormatFloat(n, 'f', -1, 64) + u.name
		}
	}
	for _, u := range []struct {
		name string
		mult float64
	}{{"TiB/s", 1 << 40}, {"GiB/s", 1 << 30}, {"MiB/s", 1 << 20}, {"KiB/s", 1 << 10}} {
		if n := f / u.mult; n == math.Trunc(n) && n < 1<<53 {
			return strconv.FormatFloat(n, 'f', -1, 64) + u.name
		}
	}
	return strconv.FormatFloat(f, 'f', -1, 64) + "B/s"
}

// BitsPerSecond returns the rate in bits per second, 0 when unlimited.
func (r Rate) BitsPerSecond() float64 { return float64(r) * 8 }

// MarshalText returns String.
func (r Rate) MarshalText() ([]byte, error) {
	f := float64(r)
	if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
		return nil, fmt.Errorf("marshal rate %v: %s", f, "want a finite rate of at least 0")
	}
	return []byte(r.String()), nil
}

// UnmarshalText parses a rate with ParseRate.
func (r *Rate) UnmarshalText(b []byte) error {
	v, err := ParseRate(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// Duration is a time.Duration that reads and writes as text: Go syntax
// ("15s", "1h30m", "250ms") or a whole number of days or weeks ("30d", "2w").
type Duration time.Duration

const durationWant = `want a duration like "15s", "1h30m" or "30d"`

// ParseDuration parses a duration such as "1h30m" or "30d".
func ParseDuration(s string) (Duration, error) {
	t := strings.TrimSpace(s)
	if n := len(t); n > 1 && (t[n-1] == 'd' || t[n-1] == 'w') {
		unit := 24 * time.Hour
		if t[n-1] == 'w' {
			unit *= 7
		}
		v, err := strconv.ParseInt(t[:n-1], 10, 64)
		if err != nil || v < -math.MaxInt64/int64(unit) || v > math.MaxInt64/int64(unit) {
			return 0, fmt.Errorf("%q: %s", s, durationWant)
		}
		return Duration(v * int64(unit)), nil
	}
	d, err := time.ParseDuration(t)
	if err != nil {
		return 0, fmt.Errorf("%q: %s", s, durationWant)
	}
	return Duration(d), nil
}

// String returns the duration in days when it is a whole number of them
// and at least two ("30d"), else in Go syntax without trailing zero units ("1h30m", "90s").
func (d Duration) String() string {
	const day = 24 * time.Hour
	td := time.Duration(d)
	if td >= 2*day && td%day == 0 {
		return strconv.FormatInt(int64(td/day), 10) + "d"
	}
	s := td.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// MarshalText returns String.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses a duration with ParseDuration.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}
