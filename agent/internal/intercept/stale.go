//go:build linux

package intercept

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// isStale reports whether mountpoint is a FUSE mount whose server is gone
// (a killed agent): stat fails with ENOTCONN.
func isStale(mountpoint string) (bool, error) {
	_, err := os.Stat(mountpoint)
	if errors.Is(err, syscall.ENOTCONN) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("mount intercept: %w", err)
	}
	return false, nil
}

// UnmountStale lazily unmounts whatever is mounted at mountpoint (umount
// -l, or fusermount -uz without the privilege), so that a restarted agent
// can mount again after the previous one was killed. Loop devices still
// attached to files of the old mount keep failing I/O until detached. It
// returns nil when nothing is mounted there.
func UnmountStale(mountpoint string) error {
	err := unix.Unmount(mountpoint, unix.MNT_DETACH)
	switch {
	case err == nil, errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
		return nil
	case !errors.Is(err, unix.EPERM):
		return fmt.Errorf("unmount stale intercept mount %s: %w", mountpoint, err)
	}
	for _, tool := range []string{"fusermount3", "fusermount"} {
		path, lerr := exec.LookPath(tool)
		if lerr != nil {
			continue
		}
		out, err := exec.Command(path, "-uz", mountpoint).CombinedOutput()
		if err != nil {
			return fmt.Errorf("unmount stale intercept mount %s: %s -uz: %w: %s", mountpoint, tool, err, out)
		}
		return nil
	}
	return fmt.Errorf("unmount stale intercept mount %s: %w (and no fusermount found)", mountpoint, err)
}
