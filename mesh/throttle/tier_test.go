package throttle

import "testing"

func TestTierString(t *testing.T) {
	tests := []struct {
		tier Tier
		want string
	}{
		{Hot, "hot"},
		{Warm, "warm"},
		{Cold, "cold"},
		{Tier(3), "Tier(3)"},
		{Tier(-1), "Tier(-1)"},
	}
	for _, tt := range tests {
		if got := tt.tier.String(); got != tt.want {
			t.Errorf("Tier(%d).String() = %q, want %q", int(tt.tier), got, tt.want)
		}
	}
}

func TestParseTier(t *testing.T) {
	tests := []struct {
		in      string
		want    Tier
		wantErr bool
	}{
		{"hot", Hot, false},
		{"warm", Warm, false},
		{"cold", Cold, false},
		{"", 0, true},
		{"Hot", 0, true},
		{"lukewarm", 0, true},
		{"Tier(3)", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseTier(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseTier(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if err == nil && got != tt.want {
			t.Errorf("ParseTier(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
	for _, tier := range []Tier{Hot, Warm, Cold} {
		if got, err := ParseTier(tier.String()); err != nil || got != tier {
			t.Errorf("ParseTier(%q) = %v, %v; want %v, nil", tier.String(), got, err, tier)
		}
	}
}
