package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/internal/workload"
	"github.com/lifeboat-dr/lifeboat/test/testbin"
)

// needFUSE skips without FUSE (or root), and fails instead with CI=true.
func needFUSE(t *testing.T) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root to mount FUSE"
	} else if _, err := os.Stat("/dev/fuse"); err != nil {
		why = "no /dev/fuse"
	} else if _, err := exec.LookPath("fusermount3"); err != nil {
		if _, err := exec.LookPath("fusermount"); err != nil {
			why = "no fusermount"
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("intercept tests cannot run: %s (CI=true: not skipping)", why)
	}
	t.Skip(why)
}

// flushingWriter writes the workload through the agent's FUSE file at
// writeRate, with an fsync every flushEvery, logging the end of every
// write; points made at those fsyncs hold exactly the writes before them.
type flushingWriter struct {
	writer
	flushEvery time.Duration
}

func (w *flushingWriter) run(t *testing.T, path string, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Error(err)
		return
	}
	defer f.Close()
	gen := workload.NewWriter(volSize, seed)
	next, lastFlush := time.Now(), time.Now()
	for i := 0; ; i++ {
		select {
		case <-stop:
			f.Sync()
			return
		case <-time.After(time.Until(next)):
		}
		wr := gen.Next()
		start := time.Now()
		if _, err := f.WriteAt(wr.Data, wr.Off); err != nil {
			t.Errorf("write %d through the agent: %v", i, err)
			return
		}
		end := time.Now()
		w.mu.Lock()
		w.log = append(w.log, logged{seq: i, off: wr.Off, n: len(wr.Data), start: start, end: end})
		w.mu.Unlock()
		if time.Since(lastFlush) >= w.flushEvery {
			if err := f.Sync(); err != nil {
				t.Errorf("fsync through the agent: %v", err)
				return
			}
			lastFlush = time.Now()
		}
		next = next.Add(time.Duration(float64(len(wr.Data)) / writeRate * float64(time.Second)))
	}
}

// matches reports whether got is the image after exactly the first k
// writes, for a k that takes in every write that ended before t and none
// that started after it: the writer is single-threaded, so that is what a
// crash-consistent point at t holds (a write in flight at t may or may not
// be in).
func (w *writer) matches(initial, got []byte, t time.Time) bool {
	w.mu.Lock()
	log := append([]logged(nil), w.log...)
	w.mu.Unlock()
	img := append([]byte(nil), initial...)
	gen := workload.NewWriter(volSize, seed)
	for k := 0; ; k++ {
		if k == len(log) || !log[k].end.Before(t) {
			// From here on each further write could be in flight at t.
			for ; ; k++ {
				if string(img) == string(got) {
					return true
				}
				if k == len(log) || !log[k].start.Before(t) {
					return false
				}
				wr := gen.Next()
				copy(img[wr.Off:], wr.Data)
			}
		}
		wr := gen.Next()
		copy(img[wr.Off:], wr.Data)
	}
}

type interceptRun struct {
	s       *site
	agent   *testbin.Proc
	mount   string
	spool   string
	initial []byte
	w       *flushingWriter
	stop    chan struct{}
	done    chan struct{}
}

func startIntercept(t *testing.T, ack string, extra ...string) *interceptRun {
	needFUSE(t)
	image, initial := makeImage(t)
	s := startSite(t, image)
	r := &interceptRun{s: s, initial: initial, mount: filepath.Join(s.dir, "mnt"), spool: filepath.Join(s.dir, "agent"),
		w: &flushingWriter{flushEvery: 200 * time.Millisecond}, stop: make(chan struct{}), done: make(chan struct{})}
	args := append([]string{"agent", "run", "--name", "web1", "--service", "web", "--volume", "disk=" + image,
		"--node", s.quic, "--tls-dir", s.agentTLS, "--spool", r.spool, "--mode", "intercept",
		"--mount", r.mount, "--ack", ack, "--interval", "2s"}, extra...)
	r.agent = testbin.Start(t, "agent", filepath.Join(s.dir, "agent.log"), s.bin, args...)
	t.Cleanup(func() {
		select {
		case <-r.stop:
		default:
			close(r.stop)
		}
		<-r.done
		r.agent.Stop()
		if t.Failed() {
			t.Logf("agent log:\n%s", r.agent.Tail(60))
		}
	})
	file := filepath.Join(r.mount, "disk")
	testbin.Eventually(t, "the volume file appears", 30*time.Second, func() error {
		fi, err := os.Stat(file)
		if err != nil {
			return err
		}
		if fi.Size() != volSize {
			return fmt.Errorf("size %d", fi.Size())
		}
		return nil
	})
	go r.w.run(t, file, r.stop, r.done)
	return r
}

// checkPoints restores every point and compares it with the image rebuilt
// from the writes that ended before the point's time.
func (r *interceptRun) checkPoints(t *testing.T, pts []blockstore.Point) {
	t.Helper()
	for _, p := range pts {
		if got := r.s.restore(t, p.ID); !r.w.matches(r.initial, got, p.Time) {
			t.Errorf("point %s (%s) differs from the image as written up to it", p.ID, p.Time.Format(time.RFC3339Nano))
		}
	}
}

func (r *interceptRun) finish(t *testing.T) {
	t.Helper()
	close(r.stop)
	<-r.done
	stopped := time.Now()
	want := r.w.final(r.initial)
	testbin.Eventually(t, "a point equal to the final image", 60*time.Second, func() error {
		pts := r.s.points(t)
		if len(pts) == 0 || pts[len(pts)-1].Time.Before(stopped.Add(-time.Second)) {
			return errors.New("no point after the writes stopped")
		}
		if got := r.s.restore(t, pts[len(pts)-1].ID); string(got) != string(want) {
			return fmt.Errorf("newest point %s differs from the final image", pts[len(pts)-1].ID)
		}
		return nil
	})
}

// TestInterceptAgentShipsToNode: writes at 500 KiB/s go through the FUSE
// file with an fsync every 200 ms; every point the node commits equals the
// image as written up to that point, exactly.
func TestInterceptAgentShipsToNode(t *testing.T) {
	for _, ack := range []string{"async", "sync"} {
		t.Run(ack, func(t *testing.T) {
			r := startIntercept(t, ack)
			testbin.Eventually(t, "ten points", 60*time.Second, func() error {
				if n := len(r.s.points(t)); n < 10 {
					return fmt.Errorf("%d points", n)
				}
				return nil
			})
			r.checkPoints(t, r.s.points(t))
			r.finish(t)
		})
	}
}

// nodeDown kills the node with SIGKILL for d while the writes go on, then
// restarts it and checks that nothing was lost.
func nodeDown(t *testing.T, r *interceptRun, d time.Duration, wantState string) {
	testbin.Eventually(t, "three points", 60*time.Second, func() error {
		if n := len(r.s.points(t)); n < 3 {
			return fmt.Errorf("%d points", n)
		}
		return nil
	})
	r.s.node.Kill()
	sawState := false
	// The node stays down for d whatever happens (the outage is the
	// test); the agent's status is read on a ticker meanwhile.
	deadline := time.Now().Add(d)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for ; time.Now().Before(deadline); <-tick.C {
		out, _, _ := testbin.RunCode(r.s.bin, "agent", "status", "--spool", r.spool, "--json")
		if wantState != "" && strings.Contains(out, `"state": "`+wantState+`"`) {
			sawState = true
		}
	}
	if wantState != "" && !sawState {
		t.Errorf("agent status never said %q while the node was down", wantState)
	}
	r.s.restartNode(t)
	r.finish(t)
	r.checkPoints(t, r.s.points(t))
}

// TestInterceptNodeDown: the node is killed for 60 s (15 s with -short)
// under load; the spool absorbs the writes, the agent catches up, and
// every point equals the image as written up to it.
func TestInterceptNodeDown(t *testing.T) {
	d := 60 * time.Second
	if testing.Short() {
		d = 15 * time.Second
	}
	r := startIntercept(t, "async")
	nodeDown(t, r, d, "disconnected")
}

// TestInterceptSpoolOverflow: with a 1 MiB spool and the node down for
// 15 s at 500 KiB/s, the spool overflows into the dirty bitmap; when the
// node is back the agent resyncs and no write is lost.
func TestInterceptSpoolOverflow(t *testing.T) {
	r := startIntercept(t, "async", "--spool-max", "1MiB")
	nodeDown(t, r, 15*time.Second, "overflow")
}
