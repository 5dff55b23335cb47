package standby

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/lifeboat-dr/lifeboat/internal/durable"
)

// zeros is a read-only buffer for writing zeros where holes cannot be
// punched.
var zeros = make([]byte, 1<<20)

// zeroRange makes n bytes at off read as zeros: it punches a hole, or
// writes zeros on a file system that cannot.
func zeroRange(f *os.File, off, n int64) error {
	err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if err == nil {
		return nil
	}
	if !errors.Is(err, syscall.EOPNOTSUPP) && !errors.Is(err, syscall.ENOSYS) && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("punch hole in %s at offset %d: %w", f.Name(), off, err)
	}
	for n > 0 {
		k := min(n, int64(len(zeros)))
		if _, err := f.WriteAt(zeros[:k], off); err != nil {
			return fmt.Errorf("write zeros to %s at offset %d: %w", f.Name(), off, err)
		}
		off, n = off+k, n-k
	}
	return nil
}

// writeFileDurable replaces path with data durably (temp, fsync, rename,
// fsync dir).
func writeFileDurable(path string, data []byte) error { return durable.WriteFile(path, data, 0o600) }
