package config

import "time"

// Suspect holds a service's thresholds for the ransomware signal (issue
// 16): when, over the last Window of points, the share of a volume's
// blocks changed reaches Changed and the changed blocks are at least
// Incompressible incompressible, both far above the volume's trailing
// baseline, the first point of the jump is marked suspect.
type Suspect struct {
	// Changed is the least share of a volume's blocks a point must change
	// (0 < Changed <= 1); default DefaultSuspectChanged.
	Changed float64 `toml:"changed" json:"changed"`
	// Incompressible is the least share of the changed blocks that do not
	// compress (0 < Incompressible <= 1); default
	// DefaultSuspectIncompressible.
	Incompressible float64 `toml:"incompressible" json:"incompressible"`
	// Window is the span of points judged together (so that an attack
	// spread over many small points is seen whole) and of each sample of
	// the baseline; default DefaultSuspectWindow, from 1s to 24h.
	Window Duration `toml:"window" json:"window"`
	// Off turns the signal off for the service.
	Off bool `toml:"off" json:"off,omitempty"`
}

// Defaults of [service.suspect].
const (
	DefaultSuspectChanged        = 0.3
	DefaultSuspectIncompressible = 0.8
	DefaultSuspectWindow         = Duration(5 * time.Minute)
)

// defaults fills the thresholds left out.
func (s *Suspect) defaults() {
	if s.Changed == 0 {
		s.Changed = DefaultSuspectChanged
	}
	if s.Incompressible == 0 {
		s.Incompressible = DefaultSuspectIncompressible
	}
	if s.Window == 0 {
		s.Window = DefaultSuspectWindow
	}
}

// checkSuspect records thresholds outside (0, 1] and a window outside
// [1s, 24h].
func checkSuspect(ps *problems, p path, s Suspect) {
	for _, f := range []struct {
		key string
		v   float64
	}{{"changed", s.Changed}, {"incompressible", s.Incompressible}} {
		if f.v <= 0 || f.v > 1 {
			ps.add(p.key(f.key), "%v: want a share above 0 and at most 1, like 0.3", f.v)
		}
	}
	if s.Window < Duration(time.Second) || s.Window > Duration(24*time.Hour) {
		ps.add(p.key("window"), "%s: want a duration from 1s to 24h, like \"5m\"", s.Window)
	}
}
