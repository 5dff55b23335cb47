// Package flock is the one home of the lock files that keep a second
// process (or a second open in the same process) out of a directory: the
// block store, the agent's spool, standby sets and archive directories.
// Locks are flock(2) locks, released by the kernel when the process dies,
// so a crash never leaves a directory locked.
package flock

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// ErrLocked means another holder has the lock.
var ErrLocked = errors.New("locked by another process")

// Lock is a held lock file.
type Lock struct{ f *os.File }

// TryLock creates path if needed and takes an exclusive lock on it without
// waiting. When someone else holds it the error wraps ErrLocked.
func TryLock(path string) (*Lock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock %s: %w", path, ErrLocked)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return &Lock{f: f}, nil
}

// Unlock releases the lock. It is safe to call more than once.
func (l *Lock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	err := l.f.Close()
	l.f = nil
	return err
}
