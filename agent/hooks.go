package agent

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Hooks make points application-consistent: PreHook runs before a point is
// taken (e.g. a database flush and freeze), PostHook after (thaw). In scan
// mode they wrap every scan; in intercept mode they wrap a mark every
// Interval. A failing or late pre hook does not stop the point, which is
// then crash-consistent only; the status says so.

// runHook runs cmd with sh -c, with the agent's identity and the phase in
// its environment, and kills it after timeout.
func (a *Agent) runHook(ctx context.Context, phase, cmd string) error {
	if cmd == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, a.opts.HookTimeout)
	defer cancel()
	c := exec.CommandContext(ctx, "/bin/sh", "-c", cmd)
	c.Env = append(os.Environ(),
		"LIFEBOAT_PHASE="+phase,
		"LIFEBOAT_SERVICE="+a.opts.Service,
		"LIFEBOAT_AGENT="+a.opts.Name,
	)
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	c.WaitDelay = time.Second
	start := time.Now()
	err := c.Run()
	if ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("%s hook did not finish within %s (killed)", phase, a.opts.HookTimeout)
	} else if err != nil {
		err = fmt.Errorf("%s hook: %w: %s", phase, err, strings.TrimSpace(lastLine(out.String())))
	}
	if err != nil {
		a.log.Warn("hook failed: this point is crash-consistent, not application-consistent", "phase", phase, "err", err)
		a.setState("hook-failed", phase+" hook failed", err)
		return err
	}
	a.log.Debug("hook ran", "phase", phase, "took", time.Since(start))
	return nil
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// hookedMarks makes an application-consistent mark every interval in
// intercept mode: pre hook, mark, post hook.
func (a *Agent) hookedMarks(ctx context.Context, sk *sink) {
	if a.opts.PreHook == "" && a.opts.PostHook == "" {
		return
	}
	t := time.NewTicker(a.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a.runHook(ctx, "pre", a.opts.PreHook)
		if _, err := sk.markNow(); err != nil {
			a.log.Warn("hooked mark", "err", err)
		}
		a.runHook(ctx, "post", a.opts.PostHook)
	}
}
