package throttle

import (
	"fmt"
	"strconv"
)

// Tier is the replication tier a Wait is made for; it decides the share of
// the link the bytes get when tiers compete. The zero value is Hot.
type Tier int

// The tiers, from the highest priority to the lowest.
const (
	Hot Tier = iota
	Warm
	Cold
)

const numTiers = 3

// String returns "hot", "warm" or "cold" ("Tier(N)" for an invalid tier).
func (t Tier) String() string {
	switch t {
	case Hot:
		return "hot"
	case Warm:
		return "warm"
	case Cold:
		return "cold"
	}
	return "Tier(" + strconv.Itoa(int(t)) + ")"
}

// ParseTier returns the Tier that String spells s as.
func ParseTier(s string) (Tier, error) {
	switch s {
	case "hot":
		return Hot, nil
	case "warm":
		return Warm, nil
	case "cold":
		return Cold, nil
	}
	return 0, fmt.Errorf("parse tier %q: want hot, warm or cold", s)
}

func (t Tier) valid() bool { return t >= Hot && t <= Cold }
