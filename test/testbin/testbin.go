// Package testbin runs the real lifeboat binary in system tests: it builds
// cmd/lifeboat once per test binary, runs commands and checks their exit
// codes, and finds free loopback ports.
package testbin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/internal/testwait"
	"github.com/lifeboat-dr/lifeboat/node"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// Build builds cmd/lifeboat (once per test binary) and returns its path.
func Build(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "lifeboat-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "lifeboat")
		out, err := exec.Command("go", "build", "-o", buildPath, "github.com/lifeboat-dr/lifeboat/cmd/lifeboat").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("build lifeboat: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// Run runs the binary with args and returns its stdout; it fails the test
// unless the exit code is want.
func Run(t testing.TB, bin string, want int, args ...string) string {
	t.Helper()
	out, errOut, code := RunCode(bin, args...)
	if code != want {
		t.Fatalf("lifeboat %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, want, out, errOut)
	}
	return out
}

// RunCode runs the binary and returns stdout, stderr and the exit code (-1
// when it could not run).
func RunCode(bin string, args ...string) (string, string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return stdout.String(), stderr.String(), 0
	case errors.As(err, &ee):
		return stdout.String(), stderr.String(), ee.ExitCode()
	}
	return stdout.String(), stderr.String() + err.Error(), -1
}

// FreePort returns a 127.0.0.1 host:port free for both UDP and TCP.
func FreePort(t testing.TB) string {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		u, err := net.ListenPacket("udp", addr)
		if err != nil {
			continue
		}
		u.Close()
		return addr
	}
	t.Fatal("no free port")
	return ""
}

// Proc is a long-running lifeboat process with its output in a log file.
type Proc struct {
	Name string
	Log  string
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts bin with args, logging to log (appended).
func Start(t testing.TB, name, log, bin string, args ...string) *Proc {
	t.Helper()
	f, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	p := &Proc{Name: name, Log: log, cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		f.Close()
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); f.Close(); close(p.done) }()
	return p
}

// Kill sends SIGKILL and waits for the process to go.
func (p *Proc) Kill() { p.signal(syscall.SIGKILL) }

// Stop sends SIGTERM and waits (SIGKILL after 20 s).
func (p *Proc) Stop() {
	if p == nil || p.cmd.Process == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.Kill()
	}
}

func (p *Proc) signal(s syscall.Signal) {
	if p == nil || p.cmd.Process == nil {
		return
	}
	p.cmd.Process.Signal(s)
	<-p.done
}

// Tail returns the last lines of the process's log.
func (p *Proc) Tail(lines int) string {
	b, _ := os.ReadFile(p.Log)
	s := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(s) > lines {
		s = s[len(s)-lines:]
	}
	return strings.Join(s, "\n")
}

// Eventually polls cond every 100ms until it returns nil or timeout passes
// (conditions here often run the binary, so not more often).
func Eventually(t testing.TB, what string, timeout time.Duration, cond func() error) {
	t.Helper()
	testwait.ForEvery(t, what, timeout, 100*time.Millisecond, cond)
}

// Status runs `lifeboat status --admin ADDR --tls-dir TLSDIR --json` and
// decodes it; tlsDir holds an operator certificate (any role).
func Status(bin, admin, tlsDir string) (*node.Status, error) {
	out, errOut, code := RunCode(bin, "status", "--admin", admin, "--tls-dir", tlsDir, "--json")
	if code != 0 {
		return nil, fmt.Errorf("status exit %d: %s", code, strings.TrimSpace(errOut))
	}
	var st node.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("status JSON: %v: %s", err, out)
	}
	return &st, nil
}

// WaitLeader waits until the node at admin sees leader as the leader,
// asking with the operator certificate in tlsDir.
func WaitLeader(t testing.TB, bin, admin, tlsDir, leader string) {
	t.Helper()
	Eventually(t, leader+" leads", 30*time.Second, func() error {
		st, err := Status(bin, admin, tlsDir)
		if err != nil {
			return err
		}
		if string(st.Leader) != leader {
			return fmt.Errorf("leader %q", st.Leader)
		}
		return nil
	})
}

// Tool returns the path of an external program a test uses, or "" when it
// is not installed; under CI=true a missing program fails the test instead
// (CI installs the Debian package pkg).
func Tool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not found: CI installs the Debian package %s", name, pkg)
	}
	return ""
}

// NeedTool is Tool for tests that cannot run without the program: they
// skip, naming the package to install.
func NeedTool(t testing.TB, name, pkg string) string {
	t.Helper()
	p := Tool(t, name, pkg)
	if p == "" {
		t.Skipf("%s not found: apt-get install %s to run this test", name, pkg)
	}
	return p
}
