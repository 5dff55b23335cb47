//go:build race

package standby

// raceEnabled is set when the race detector slows the crash children down.
const raceEnabled = true
