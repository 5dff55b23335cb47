package blockstore

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// Disk space. Pebble treats a failed write to its log as fatal and retries a
// failed flush forever, so the store never lets packs take the last of the
// disk: pack appends stop while less than the reserve would remain, which
// keeps room for the index, and every index write checks its own headroom.
// Running out of space is an error wrapping syscall.ENOSPC; nothing already
// committed is touched, and the store takes writes again once space is freed.

const (
	minReserve = 4 << 20
	maxReserve = 64 << 20
	// minInitFree is what creating a store needs.
	minInitFree = 1 << 20
)

// DiskSpace reports the bytes available to unprivileged writers and the
// size of the file system holding dir.
func DiskSpace(dir string) (free, size int64, err error) { return space(dir) }

// space reports the bytes available to us and the size of the file system
// holding dir.
func space(dir string) (free, size int64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), int64(st.Blocks) * int64(st.Bsize), nil
}

// Space reports the bytes available to the store and the size of the file
// system that holds it.
func (s *Store) Space() (free, size int64, err error) { return space(s.dir) }

// defaultReserve is a tenth of the file system, between 4 and 64 MiB.
func defaultReserve(dir string) int64 {
	_, size, err := space(dir)
	if err != nil {
		return maxReserve
	}
	return min(max(size/10, minReserve), maxReserve)
}

// checkSpace fails with an error wrapping ENOSPC unless writing n bytes
// leaves at least keep bytes free.
func checkSpace(dir string, n, keep int64, what string) error {
	free, _, err := space(dir)
	if err != nil {
		return err
	}
	if free-n < keep {
		return fmt.Errorf("%s: disk full: %s free, %s needed plus %s kept for the index (free space and retry): %w",
			what, sizeString(free), sizeString(n), sizeString(keep), syscall.ENOSPC)
	}
	return nil
}

func sizeString(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
