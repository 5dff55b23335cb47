//go:build !linux

package scrub

func idleIOPriority() error { return nil }
