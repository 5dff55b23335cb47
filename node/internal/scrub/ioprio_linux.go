package scrub

import "syscall"

// idleIOPriority puts the calling thread in the idle I/O class: the disk
// serves it only when nothing else asks (with the bfq scheduler; others
// ignore the class).
func idleIOPriority() error {
	const (
		whoProcess = 1 // with id 0: the calling thread
		classIdle  = 3
		classShift = 13
	)
	if _, _, errno := syscall.Syscall(syscall.SYS_IOPRIO_SET, whoProcess, 0, classIdle<<classShift); errno != 0 {
		return errno
	}
	return nil
}
