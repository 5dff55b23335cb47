package blockstoretest

import (
	"os"
	"strconv"
	"testing"
	"time"
)

// SeedEnv names the variable that replays a seeded test run.
const SeedEnv = "LIFEBOAT_SEED"

// Seed returns the run's seed: LIFEBOAT_SEED when set, otherwise one taken
// from the clock. It logs the seed with the command that replays it.
func Seed(t testing.TB) int64 {
	t.Helper()
	seed := time.Now().UnixNano() % 1_000_000_000
	if s := os.Getenv(SeedEnv); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", SeedEnv, s, err)
		}
		seed = v
	}
	t.Logf("seed %d (replay with %s=%d)", seed, SeedEnv, seed)
	return seed
}
