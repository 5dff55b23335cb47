//go:build !race

package standby

const raceEnabled = false
