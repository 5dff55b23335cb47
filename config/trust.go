package config

// Suspect holds a service's thresholds for the ransomware signal (issue
// 16): a point whose share of changed blocks reaches Changed and whose
// changed blocks are at least Incompressible incompressible, both far
// above the volume's trailing baseline, is marked suspect.
type Suspect struct {
	// Changed is the least share of a volume's blocks a point must change
	// (0 < Changed <= 1); default DefaultSuspectChanged.
	Changed float64 `toml:"changed" json:"changed"`
	// Incompressible is the least share of the changed blocks that do not
	// compress (0 < Incompressible <= 1); default
	// DefaultSuspectIncompressible.
	Incompressible float64 `toml:"incompressible" json:"incompressible"`
	// Off turns the signal off for the service.
	Off bool `toml:"off" json:"off,omitempty"`
}

// Defaults of [service.suspect].
const (
	DefaultSuspectChanged        = 0.3
	DefaultSuspectIncompressible = 0.8
)

// Verify is a service's [service.verify] table.
type Verify struct {
	// RequireVerified makes failovers and drills take only points whose
	// newest verification passed (unless --at names one).
	RequireVerified bool `toml:"require_verified" json:"require_verified,omitempty"`
}

// defaults fills the thresholds left out.
func (s *Suspect) defaults() {
	if s.Changed == 0 {
		s.Changed = DefaultSuspectChanged
	}
	if s.Incompressible == 0 {
		s.Incompressible = DefaultSuspectIncompressible
	}
}

// checkSuspect records thresholds outside (0, 1].
func checkSuspect(ps *problems, p path, s Suspect) {
	for _, f := range []struct {
		key string
		v   float64
	}{{"changed", s.Changed}, {"incompressible", s.Incompressible}} {
		if f.v <= 0 || f.v > 1 {
			ps.add(p.key(f.key), "%v: want a share above 0 and at most 1, like 0.3", f.v)
		}
	}
}
