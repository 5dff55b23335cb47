package recovery

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/node/api"
)

// hookEnv is the environment of start, health and drill hooks.
func hookEnv(service, site string, epoch uint64, p blockstore.Point, dir string, images []api.PlanImage) []string {
	env := []string{
		"LIFEBOAT_SERVICE=" + service,
		"LIFEBOAT_SITE=" + site,
		"LIFEBOAT_EPOCH=" + strconv.FormatUint(epoch, 10),
		"LIFEBOAT_POINT=" + p.ID,
		"LIFEBOAT_POINT_TIME=" + p.Time.UTC().Format(time.RFC3339Nano),
		"LIFEBOAT_IMAGE_DIR=" + dir,
	}
	paths := make([]string, len(images))
	for i, im := range images {
		paths[i] = im.Path
		env = append(env, "LIFEBOAT_IMAGE_"+envName(im.Volume[strings.LastIndexByte(im.Volume, '/')+1:])+"="+im.Path)
	}
	return append(env, "LIFEBOAT_IMAGES="+strings.Join(paths, " "))
}

// envName makes a volume name an environment variable suffix: upper case,
// anything but letters and digits as '_'.
func envName(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		}
		return '_'
	}, s)
}

// runHook runs cmd with sh -c and env added, killing it after timeout. It
// returns the output's last lines.
// runHook runs a hook of the applied policy with sh -c, as the node's
// hooks user when one is set.
func (e *Engine) runHook(ctx context.Context, phase, cmd string, env []string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := exec.CommandContext(ctx, "/bin/sh", "-c", cmd)
	c.Env = append(append(os.Environ(), env...), "LIFEBOAT_PHASE="+phase)
	if e.o.HookCred != nil {
		c.SysProcAttr = &syscall.SysProcAttr{Credential: e.o.HookCred}
	}
	e.log.Info("hook", "phase", phase, "command", cmd, "user", e.o.HooksUser)
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	c.WaitDelay = time.Second
	err := c.Run()
	tail := lastLines(out.String(), 5)
	if ctx.Err() == context.DeadlineExceeded {
		return tail, fmt.Errorf("%s hook did not finish within %s (killed)", phase, timeout)
	}
	if err != nil {
		return tail, fmt.Errorf("%s hook: %w: %s", phase, err, tail)
	}
	return tail, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// startAndCheck runs the start hook, then the health hook until it passes
// or the hook timeout ends.
func (e *Engine) startAndCheck(ctx context.Context, h config.Hooks, env []string, emit func(api.FailoverEvent)) error {
	timeout := time.Duration(h.Timeout)
	if timeout <= 0 {
		timeout = time.Duration(config.DefaultHookTimeout)
	}
	if h.Start == "" {
		emit(api.FailoverEvent{Step: "start", Message: "no start hook in the policy: the images are ready, start the servers by hand"})
	} else {
		t0 := e.o.Clock.Now()
		out, err := e.runHook(ctx, "start", h.Start, env, timeout)
		if err != nil {
			return err
		}
		emit(api.FailoverEvent{Step: "start", Message: fmt.Sprintf("start hook ran in %s: %s", e.o.Clock.Now().Sub(t0).Round(time.Millisecond), out)})
	}
	if h.Health == "" {
		return nil
	}
	t0 := e.o.Clock.Now()
	deadline := t0.Add(timeout)
	for try := 1; ; try++ {
		out, err := e.runHook(ctx, "health", h.Health, env, timeout)
		if err == nil {
			emit(api.FailoverEvent{Step: "health", Message: fmt.Sprintf("health hook passed after %s (try %d): %s", e.o.Clock.Now().Sub(t0).Round(time.Millisecond), try, out)})
			return nil
		}
		if e.o.Clock.Now().After(deadline) {
			return fmt.Errorf("health hook did not pass within %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-e.o.Clock.After(time.Second):
		}
	}
}
