// Package checks verifies a point of a service on one node (issue 16):
// the restored images' file systems checked read-only (fsck), the boot
// volume started in qemu until its serial console prints the policy's
// line (boot), and the policy's verify hook run against the images
// (hook). A check whose tool is missing is skipped with a note; nothing
// here panics on a damaged image.
//
// The scheduler (node/internal/verifier) and drills (node/internal/
// recovery) call Run on images restored from the store; Run never writes
// them (e2fsck -n, xfs_repair -n, qemu -snapshot). Evidence (each check's
// log, the serial console, the boot check's screendump PNG) goes into the
// request's evidence directory, DATA_DIR/verify/SERVICE/POINT12.
package checks

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/internal/clock"
	"github.com/lifeboat-dr/lifeboat/internal/durable"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// Options configure a Runner; every field is optional.
type Options struct {
	// Tools by name; "" = looked up in PATH when a check runs.
	Qemu, E2fsck, XFSRepair string
	HooksUser               string              // the user hooks run as, for the log
	HookCred                *syscall.Credential // its credential; nil = the node's own
	Clock                   clock.Clock         // stamps results; nil = the real clock
	Logger                  *slog.Logger
}

// Runner runs checks. Safe for concurrent use.
type Runner struct {
	o   Options
	log *slog.Logger
}

// New returns a Runner.
func New(o Options) *Runner {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.Clock = clock.Or(o.Clock)
	return &Runner{o: o, log: o.Logger}
}

// Image is one restored volume of a point.
type Image struct {
	Volume string // SERVICE/VOLUME, as in the point
	Path   string // a raw image file
}

// Request is one verification of a point.
type Request struct {
	Service   *config.Service // its Verify says which checks
	Site      string
	Point     string
	PointTime time.Time
	Images    []Image
	Evidence  string   // directory for logs and screendumps; created
	Env       []string // more environment for the hook
}

// Run runs the service's checks on the images and returns the
// verification: failed when a check failed, ok when one passed and none
// failed, skipped when none ran.
func (r *Runner) Run(ctx context.Context, req Request) *catalog.Verification {
	v := &catalog.Verification{Site: req.Site, At: r.o.Clock.Now().UTC(), Checks: []catalog.CheckResult{}}
	vf := req.Service.Verify
	if err := durable.MkdirAll(req.Evidence, 0o700); err != nil {
		v.Result = catalog.VerifyFailed
		v.Checks = append(v.Checks, catalog.CheckResult{Name: "evidence", Result: catalog.VerifyFailed, Detail: err.Error()})
		return v
	}
	timeout := time.Duration(vf.Timeout)
	if timeout <= 0 {
		timeout = time.Duration(config.DefaultVerifyTimeout)
	}
	for _, c := range vf.Checks {
		var res catalog.CheckResult
		switch c {
		case config.CheckFsck:
			res = r.fsck(ctx, req, timeout)
		case config.CheckBoot:
			res = r.boot(ctx, req, timeout)
		case config.CheckHook:
			res = r.hook(ctx, req, timeout)
		default:
			res = catalog.CheckResult{Result: catalog.VerifySkipped, Detail: "unknown check"}
		}
		res.Name = string(c)
		r.log.Info("verify check", "service", req.Service.Name, "point", req.Point, "check", c, "result", res.Result, "detail", res.Detail)
		v.Checks = append(v.Checks, res)
	}
	v.Result = Summary(v.Checks)
	return v
}

// Summary is the result of a set of checks: failed when one failed, ok
// when one passed and none failed, skipped when none ran.
func Summary(cs []catalog.CheckResult) string {
	res := catalog.VerifySkipped
	for _, c := range cs {
		switch c.Result {
		case catalog.VerifyFailed:
			return catalog.VerifyFailed
		case catalog.VerifyOK:
			res = catalog.VerifyOK
		}
	}
	return res
}

// Failed names the failed checks of v and why, one line.
func Failed(v *catalog.Verification) string {
	var b []string
	for _, c := range v.Checks {
		if c.Result == catalog.VerifyFailed {
			b = append(b, fmt.Sprintf("%s: %s", c.Name, strings.ReplaceAll(c.Detail, "\n", " ")))
		}
	}
	return strings.Join(b, "; ")
}

// tool returns the path of a tool: set, or looked up in PATH.
func tool(set, name string) (string, bool) {
	if set != "" {
		return set, true
	}
	p, err := exec.LookPath(name)
	return p, err == nil
}

func skipped(format string, a ...any) catalog.CheckResult {
	return catalog.CheckResult{Result: catalog.VerifySkipped, Detail: fmt.Sprintf(format, a...)}
}

// hook runs the service's verify hook with sh -c against the images.
func (r *Runner) hook(ctx context.Context, req Request, timeout time.Duration) catalog.CheckResult {
	cmd := req.Service.Verify.Hook
	if cmd == "" {
		return skipped("no verify.hook in the policy")
	}
	env := []string{
		"LIFEBOAT_SERVICE=" + req.Service.Name, "LIFEBOAT_SITE=" + req.Site, "LIFEBOAT_POINT=" + req.Point,
		"LIFEBOAT_POINT_TIME=" + req.PointTime.UTC().Format(time.RFC3339Nano), "LIFEBOAT_PHASE=verify",
		"LIFEBOAT_EVIDENCE_DIR=" + req.Evidence,
	}
	var paths []string
	for _, im := range req.Images {
		paths = append(paths, im.Path)
		env = append(env, "LIFEBOAT_IMAGE_"+envName(im.Volume)+"="+im.Path)
	}
	if len(req.Images) > 0 {
		env = append(env, "LIFEBOAT_IMAGE_DIR="+filepath.Dir(req.Images[0].Path))
	}
	env = append(append(env, "LIFEBOAT_IMAGES="+strings.Join(paths, " ")), req.Env...)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := exec.CommandContext(ctx, "/bin/sh", "-c", cmd)
	c.Env = append(os.Environ(), env...)
	if r.o.HookCred != nil {
		c.SysProcAttr = &syscall.SysProcAttr{Credential: r.o.HookCred}
	}
	r.log.Info("hook", "phase", "verify", "command", cmd, "user", r.o.HooksUser)
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	c.WaitDelay = time.Second
	err := c.Run()
	logPath := filepath.Join(req.Evidence, "hook.log")
	res := catalog.CheckResult{Result: catalog.VerifyOK, Detail: tail(out.String(), 3)}
	if werr := os.WriteFile(logPath, out.Bytes(), 0o600); werr == nil {
		res.Evidence = []string{logPath}
	}
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		res.Result, res.Detail = catalog.VerifyFailed, fmt.Sprintf("verify hook did not finish within %s (killed): %s", timeout, res.Detail)
	case err != nil:
		res.Result, res.Detail = catalog.VerifyFailed, fmt.Sprintf("verify hook: %v: %s", err, res.Detail)
	}
	return res
}

// envName makes the last part of a volume name an environment variable
// suffix: upper case, anything but letters and digits as '_'.
func envName(volume string) string {
	b := []byte(volume[strings.LastIndexByte(volume, '/')+1:])
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z':
			b[i] = c - 'a' + 'A'
		case c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		default:
			b[i] = '_'
		}
	}
	return string(b)
}

// tail returns the last n lines of s, at most 1 KiB.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	t := strings.Join(lines, "\n")
	if len(t) > 1024 {
		t = t[len(t)-1024:]
	}
	return t
}
