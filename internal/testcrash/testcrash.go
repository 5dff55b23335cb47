// Package testcrash runs the test binary again as a child to kill with
// SIGKILL in crash tests (STYLE.md section 8): the child prints lines on
// stdout, "ready" when the part worth killing starts, and exits when its
// stdin closes, so that it never outlives the test. Only tests import it.
package testcrash

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Child is a running child process.
type Child struct {
	cmd   *exec.Cmd
	stdin io.Closer
	ready chan struct{} // closed at "ready" or at the end of the output
	done  chan struct{} // closed at the end of the output
	wg    sync.WaitGroup
	lines []string
}

// Start runs the test binary with env added to the environment; its
// stderr goes to t.Output().
func Start(t testing.TB, env ...string) *Child {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), env...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = t.Output()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &Child{cmd: cmd, stdin: stdin, ready: make(chan struct{}), done: make(chan struct{})}
	c.wg.Go(func() {
		var once sync.Once
		defer close(c.done)
		defer once.Do(func() { close(c.ready) })
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.lines = append(c.lines, sc.Text())
			if sc.Text() == "ready" {
				once.Do(func() { close(c.ready) })
			}
		}
	})
	return c
}

// Ready is closed when the child printed "ready" or its output ended.
func (c *Child) Ready() <-chan struct{} { return c.ready }

// KillAfter kills the child with SIGKILL once d has passed, unless its
// output ends first (it finished or failed): then it returns at once.
func (c *Child) KillAfter(d time.Duration) {
	t := time.NewTimer(d) // the kill moment the test chose, not a wait for a state
	defer t.Stop()
	select {
	case <-t.C:
		c.cmd.Process.Signal(syscall.SIGKILL)
	case <-c.done:
	}
}

// Wait waits until the child ended, closes its stdin and returns the
// lines it printed.
func (c *Child) Wait() []string {
	c.wg.Wait()
	c.cmd.Wait()
	c.stdin.Close()
	return c.lines
}

// Exit is for the child: it ends the process with status 2 when stdin
// closes (the parent ended), and returns a fail func that prints
// "error MESSAGE" on one line and exits with status 3.
func Exit() (fail func(error)) {
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(2)
	}()
	return func(err error) {
		fmt.Printf("error %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		os.Exit(3)
	}
}
