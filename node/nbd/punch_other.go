//go:build !linux

package nbd

import (
	"errors"
	"os"
)

// punchHole is not available here; the caller writes zeroes instead.
func punchHole(f *os.File, off, n int64) error {
	return errors.ErrUnsupported
}
