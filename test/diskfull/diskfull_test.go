package diskfull_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/lifeboat-dr/lifeboat/blockstore/blockstoretest"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
)

// Environment variables.
const (
	// childEnv holds the JSON childJob; set only in the child process.
	childEnv = "LIFEBOAT_DISKFULL_CHILD"
)

const (
	pageSize = 4 << 10
	// enospcText is what a clear disk-full error says.
	enospcText = "no space left on device"
	// openDeadline bounds an open on a full disk in a child process; a
	// healthy open of these stores takes well under 100 ms.
	openDeadline = 2 * time.Second
	// initDeadline bounds a child that inits and opens a store.
	initDeadline = 10 * time.Second
	// childDeadline bounds a child that opens a store and snapshots 24 MiB.
	childDeadline = 20 * time.Second
	// callDeadline bounds an in-process call that could hang.
	callDeadline = 20 * time.Second
)

// volumeData returns size random, incompressible bytes, the content of the
// named volume under seed.
func volumeData(seed uint64, name string, size int) []byte {
	h := fnv.New64a()
	h.Write([]byte(name))
	r := rand.New(rand.NewPCG(seed, h.Sum64()))
	b := make([]byte, size)
	for i := 0; i < size; i += 8 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], r.Uint64())
		copy(b[i:], w[:])
	}
	return b
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// missing reports a missing prerequisite: a skip, or a failure when CI=true.
func missing(t *testing.T, reason string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (with CI=true a missing prerequisite fails)", reason)
	}
	t.Skip(reason)
}

// needRoot skips the test, or fails it when CI=true, unless it can mount.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, "needs root to mount a tmpfs")
	}
	for _, cmd := range []string{"mount", "umount"} {
		if _, err := exec.LookPath(cmd); err != nil {
			missing(t, fmt.Sprintf("needs %s to mount a tmpfs: %v", cmd, err))
		}
	}
}

// mountTmpfs mounts a tmpfs of size bytes on a new directory and unmounts
// it when the test ends (after the cleanups registered later, which close
// the stores in it).
func mountTmpfs(t *testing.T, size int64) string {
	t.Helper()
	needRoot(t)
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput(); err != nil {
		missing(t, fmt.Sprintf("mount a tmpfs: %v: %s", err, bytes.TrimSpace(out)))
	}
	t.Cleanup(func() {
		out, err := exec.Command("umount", dir).CombinedOutput()
		if err == nil {
			return
		}
		t.Logf("umount %s: %v: %s; unmounting lazily", dir, err, bytes.TrimSpace(out))
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount -l %s: %v: %s", dir, err, bytes.TrimSpace(out))
		}
	})
	return dir
}

// growTmpfs resizes the tmpfs mounted on dir.
func growTmpfs(t *testing.T, dir string, size int64) {
	t.Helper()
	if out, err := exec.Command("mount", "-o", fmt.Sprintf("remount,size=%d", size), dir).CombinedOutput(); err != nil {
		t.Fatalf("grow the tmpfs: %v: %s", err, bytes.TrimSpace(out))
	}
}

// freeBytes returns the space left on the filesystem holding dir.
func freeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * st.Bsize, nil
}

func mustFree(t *testing.T, dir string) int64 {
	t.Helper()
	n, err := freeBytes(dir)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// fill writes a filler file at path so that about leave bytes stay free on
// its filesystem (none when less than that is free), and returns the space
// left.
func fill(path string, leave int64) (int64, error) {
	free, err := freeBytes(filepath.Dir(path))
	if err != nil {
		return 0, err
	}
	n := (free - leave) / pageSize * pageSize
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	zeros := make([]byte, 1<<20)
	for n > 0 {
		w, err := f.Write(zeros[:min(n, int64(len(zeros)))])
		n -= int64(w)
		if err != nil {
			f.Close()
			return 0, fmt.Errorf("write filler: %w", err)
		}
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	return freeBytes(filepath.Dir(path))
}

// within runs f and fails the test if it does not return within d. On a
// timeout the goroutine is left behind: a hung call cannot be stopped.
func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return within %v", what, d)
	}
}

// open opens the store in dir, failing the test if Open hangs.
func open(t *testing.T, dir string) (*blockstore.Store, error) {
	t.Helper()
	var s *blockstore.Store
	var err error
	within(t, callDeadline, "Open "+dir, func() {
		s, err = blockstore.Open(dir, blockstore.Options{Logger: testLogger(t)})
	})
	return s, err
}

func mustOpen(t *testing.T, dir string) *blockstore.Store {
	t.Helper()
	s, err := open(t, dir)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// closeStore closes s and logs an error: a store that hit ENOSPC may say so
// again on close.
func closeStore(t *testing.T, s *blockstore.Store, when string) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Logf("Close %s: %v", when, err)
	}
}

// clearDiskFull says whether err tells the operator the disk is full: it
// wraps ENOSPC or at least says "no space left on device".
func clearDiskFull(err error) (wraps, says bool) {
	if err == nil {
		return false, false
	}
	return errors.Is(err, syscall.ENOSPC), strings.Contains(err.Error(), enospcText)
}

// wantDiskFull fails the test unless err is a clear disk-full error.
func wantDiskFull(t *testing.T, what string, err error) {
	t.Helper()
	wraps, says := clearDiskFull(err)
	switch {
	case err == nil:
		t.Errorf("%s: got no error, want one saying %q", what, enospcText)
	case !says:
		t.Errorf("%s: got %q, want an error saying %q", what, err, enospcText)
	case !wraps:
		t.Logf("%s: the error says %q but does not wrap syscall.ENOSPC: %v", what, enospcText, err)
	default:
		t.Logf("%s: errors.Is(err, syscall.ENOSPC): %v", what, err)
	}
}

// acked is a point whose snapshot returned success: it must never be lost.
type acked struct {
	id, volume string
	data       []byte
}

func snapshot(ctx context.Context, s *blockstore.Store, volume string, data []byte, bs int) (blockstore.Point, error) {
	p, _, err := s.Snapshot(ctx, blockstoretest.Image(data), blockstore.SnapshotOptions{Volume: volume, BlockSize: bs})
	return p, err
}

// pointIDs returns the IDs of every point in s, sorted.
func pointIDs(t *testing.T, s *blockstore.Store) []string {
	t.Helper()
	pts, err := s.Points(t.Context(), "")
	if err != nil {
		t.Fatalf("list points: %v", err)
	}
	var ids []string
	for _, p := range pts {
		ids = append(ids, p.ID)
	}
	slices.Sort(ids)
	return ids
}

func ackedIDs(want []acked) []string {
	var ids []string
	for _, a := range want {
		ids = append(ids, a.id)
	}
	slices.Sort(ids)
	return ids
}

// wantPoints fails the test unless s holds exactly the points of want.
func wantPoints(t *testing.T, s *blockstore.Store, want []acked, when string) {
	t.Helper()
	if got, want := pointIDs(t, s), ackedIDs(want); !slices.Equal(got, want) {
		t.Errorf("%s: points %v, want %v", when, got, want)
	}
}

// wantRestores fails the test unless every point of want restores to its
// data byte for byte.
func wantRestores(t *testing.T, s *blockstore.Store, want []acked, when string) {
	t.Helper()
	for _, a := range want {
		p, v, err := s.Resolve(t.Context(), a.volume, a.id)
		if err != nil {
			t.Errorf("%s: resolve point %s of %s: %v", when, a.id, a.volume, err)
			continue
		}
		if p.ID != a.id || v.Size != int64(len(a.data)) {
			t.Errorf("%s: point %s of %s resolved to point %s of %d bytes, want %d bytes", when, a.id, a.volume, p.ID, v.Size, len(a.data))
			continue
		}
		img := make(blockstoretest.Image, v.Size)
		if err := s.Restore(t.Context(), v, img, blockstore.RestoreOptions{}); err != nil {
			t.Errorf("%s: restore point %s of %s: %v", when, a.id, a.volume, err)
			continue
		}
		if i := firstDiff(img, a.data); i >= 0 {
			t.Errorf("%s: point %s of %s restores with a difference at offset %d", when, a.id, a.volume, i)
		}
	}
}

func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// wantClean fails the test unless Verify finds no damage.
func wantClean(t *testing.T, s *blockstore.Store, when string) {
	t.Helper()
	rep, err := s.Maintenance().Verify(t.Context(), blockstore.VerifyOptions{})
	if err != nil {
		t.Errorf("%s: verify: %v", when, err)
		return
	}
	for _, d := range rep.Damage {
		t.Errorf("%s: verify found damage: %v", when, d)
	}
}

// wantIntact checks the whole promise: exactly the acknowledged points,
// each restoring byte-exact, and no damage.
func wantIntact(t *testing.T, s *blockstore.Store, want []acked, when string) {
	t.Helper()
	wantPoints(t, s, want, when)
	wantRestores(t, s, want, when)
	wantClean(t, s, when)
}

// childJob is what the child process does: Init the store in Dir if Init
// is set; open it; if Volume is set, fill the disk to leave Leave bytes free
// (Leave < 0: no filler) and snapshot Volume (Size random bytes from Seed,
// BlockSize); close.
type childJob struct {
	Init      bool
	Dir       string
	Volume    string
	Size      int
	BlockSize int
	Seed      uint64
	Filler    string
	Leave     int64
}

// childSay prints one report line for the parent. os.Stdout is unbuffered:
// the line is in the pipe even if the child panics right after.
func childSay(key, format string, args ...any) {
	fmt.Printf("diskfull-child %s %s\n", key, strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", " "))
}

// TestDiskFullChild is the child process of the other tests; it runs only
// when LIFEBOAT_DISKFULL_CHILD holds its job. It reports on stdout, one line
// per step: init, open, free-after-open, filled, snapshot,
// free-after-snapshot, close; each "ok ..." or "error ...".
func TestDiskFullChild(t *testing.T) {
	spec := os.Getenv(childEnv)
	if spec == "" {
		t.Skip("helper process; runs only with " + childEnv + " set")
	}
	var job childJob
	if err := json.Unmarshal([]byte(spec), &job); err != nil {
		childSay("open", "error bad job %q: %v", spec, err)
		return
	}
	ctx := context.Background()
	mnt := filepath.Dir(job.Dir)
	if job.Init {
		if err := blockstore.Init(job.Dir, blockstore.InitOptions{}); err != nil {
			childSay("init", "error enospc=%t %v", errors.Is(err, syscall.ENOSPC), err)
		} else {
			childSay("init", "ok")
		}
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	s, err := blockstore.Open(job.Dir, blockstore.Options{Logger: log})
	if err != nil {
		childSay("open", "error %v", err)
		return
	}
	childSay("open", "ok")
	if job.Volume != "" {
		data := volumeData(job.Seed, job.Volume, job.Size)
		free, err := freeBytes(mnt)
		if err != nil {
			childSay("free-after-open", "error %v", err)
			return
		}
		childSay("free-after-open", "ok %d", free)
		if job.Leave >= 0 {
			free, err := fill(job.Filler, job.Leave)
			if err != nil {
				childSay("filled", "error %v", err)
				return
			}
			childSay("filled", "ok %d", free)
		}
		p, err := snapshot(ctx, s, job.Volume, data, job.BlockSize)
		if err != nil {
			childSay("snapshot", "error enospc=%t %v", errors.Is(err, syscall.ENOSPC), err)
		} else {
			childSay("snapshot", "ok %s", p.ID)
		}
		if free, err := freeBytes(mnt); err == nil {
			childSay("free-after-snapshot", "ok %d", free)
		}
	}
	if err := s.Close(); err != nil {
		childSay("close", "error %v", err)
	} else {
		childSay("close", "ok")
	}
}

// childResult is what a child process reported and how it ended.
type childResult struct {
	steps    map[string]string // step -> "ok ..." or "error ..."
	stderr   string
	exit     error
	timedOut bool
	took     time.Duration
}

// ok returns the text after "ok" of a step that succeeded.
func (r childResult) ok(step string) (string, bool) {
	v, found := r.steps[step]
	if !found || (v != "ok" && !strings.HasPrefix(v, "ok ")) {
		return "", false
	}
	return strings.TrimPrefix(strings.TrimPrefix(v, "ok"), " "), true
}

func (r childResult) int(step string) int64 {
	v, _ := r.ok(step)
	n, _ := strconv.ParseInt(v, 10, 64)
	return n
}

// panicked returns the panic message and the calls under it, if the child
// panicked.
func (r childResult) panicked() (msg string, calls []string, ok bool) {
	i := strings.Index("\n"+r.stderr, "\npanic: ")
	if i < 0 {
		return "", nil, false
	}
	msg, stack, _ := strings.Cut(r.stderr[i+len("panic: "):], "\n")
	msg = strings.TrimSuffix(msg, " [recovered, repanicked]")
	// The panicking goroutine's stack is the first one after the message.
	_, stack, _ = strings.Cut(stack, "goroutine ")
	stack, _, _ = strings.Cut(stack, "\n\n")
	return msg, frames(stack), true
}

// hungIn returns the calls the child's test goroutine was in when it was
// stopped with SIGQUIT for running past its deadline.
func (r childResult) hungIn() []string {
	for _, g := range strings.Split(r.stderr, "\n\n") {
		if strings.Contains(g, "TestDiskFullChild") && strings.HasPrefix(strings.TrimSpace(g), "goroutine ") {
			return frames(g)
		}
	}
	return nil
}

// frames returns the calls of a goroutine's stack dump, innermost first, as
// "package.function (file.go:line)": the two innermost that are not in the
// runtime, sync or testing, and the blockstore calls under them.
func frames(stack string) []string {
	lines := strings.Split(stack, "\n")
	var out []string
	inner := 0
	for j := 0; j+1 < len(lines); j++ {
		if strings.HasPrefix(lines[j], "\t") || !strings.HasPrefix(lines[j+1], "\t") {
			continue
		}
		fn, at := strings.TrimSpace(lines[j]), strings.Fields(lines[j+1])
		j++
		if strings.HasPrefix(fn, "created by ") || strings.HasPrefix(fn, "panic(") || strings.Contains(fn, "quietLogger") {
			continue
		}
		fn = strings.ReplaceAll(fn, "pebble/v2.", "pebble.")
		pkg := fn[strings.LastIndex(fn[:max(0, strings.Index(fn, "("))+1], "/")+1:]
		if strings.HasPrefix(pkg, "runtime.") || strings.HasPrefix(pkg, "sync.") || strings.HasPrefix(pkg, "testing.") {
			continue
		}
		isStore := strings.HasPrefix(pkg, "blockstore.")
		if inner >= 2 && !isStore {
			continue
		}
		inner++
		if i := strings.LastIndex(pkg, "("); i > 0 && strings.HasSuffix(pkg, ")") {
			pkg = pkg[:i]
		}
		if len(at) > 0 {
			pkg += " (" + filepath.Base(at[0]) + ")"
		}
		out = append(out, pkg)
	}
	return out
}

// String describes how the child ended, for failure messages.
func (r childResult) String() string {
	if r.timedOut {
		in := ""
		if calls := r.hungIn(); len(calls) > 0 {
			in = "; it was in " + strings.Join(calls, " <- ")
		}
		return fmt.Sprintf("did not finish within %v and was stopped%s (steps reported: %v)", r.took.Round(time.Millisecond), in, r.steps)
	}
	if msg, calls, ok := r.panicked(); ok {
		return fmt.Sprintf("panicked: %s; in %s", msg, strings.Join(calls, " <- "))
	}
	if r.exit != nil {
		return fmt.Sprintf("exited: %v; stderr: %s", r.exit, lastLines(r.stderr, 5))
	}
	return fmt.Sprintf("finished in %v: %v", r.took.Round(time.Millisecond), r.steps)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}

// runChild runs job in a re-executed test binary and stops it after
// deadline.
func runChild(t *testing.T, job childJob, deadline time.Duration) childResult {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	spec, err := json.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), deadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "-test.run=^TestDiskFullChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+string(spec))
	// Past the deadline, SIGQUIT makes the child print its goroutines (so
	// that a hang says where); SIGKILL follows if it does not exit.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGQUIT) }
	cmd.WaitDelay = 2 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err = cmd.Run()
	r := childResult{steps: map[string]string{}, stderr: stderr.String(), exit: err, took: time.Since(start)}
	r.timedOut = errors.Is(ctx.Err(), context.DeadlineExceeded)
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		rest, found := strings.CutPrefix(sc.Text(), "diskfull-child ")
		if !found {
			continue
		}
		step, v, _ := strings.Cut(rest, " ")
		r.steps[step] = v
	}
	return r
}

func TestSnapshotBiggerThanDisk(t *testing.T) {
	needRoot(t)
	seed := uint64(blockstoretest.Seed(t))
	const (
		fsSize  = 32 << 20
		bigSize = 48 << 20
	)
	big := volumeData(seed, "big", bigSize)
	for _, bs := range []int{4 << 10, 64 << 10} {
		t.Run(fmt.Sprintf("block=%dKiB", bs>>10), func(t *testing.T) {
			// In parallel: most of each is waiting for an open to hang.
			t.Parallel()
			ctx := t.Context()
			mnt := mountTmpfs(t, fsSize)
			dir := filepath.Join(mnt, "store")
			if err := blockstore.Init(dir, blockstore.InitOptions{}); err != nil {
				t.Fatal(err)
			}
			s := mustOpen(t, dir)
			var want []acked
			for i, size := range []int{2 << 20, 3 << 20, 4 << 20} {
				vol := fmt.Sprintf("small%d", i)
				data := volumeData(seed, fmt.Sprintf("%s/%d", vol, bs), size)
				p, err := snapshot(ctx, s, vol, data, bs)
				if err != nil {
					t.Fatalf("snapshot %s (%d bytes) with %d bytes free: %v", vol, size, mustFree(t, mnt), err)
				}
				want = append(want, acked{p.ID, vol, data})
			}
			free := mustFree(t, mnt)
			_, err := snapshot(ctx, s, "big", big, bs)
			t.Logf("snapshot of %d MiB with %d bytes free: %v", bigSize>>20, free, err)
			wantDiskFull(t, "snapshot bigger than the free space", err)
			wantPoints(t, s, want, "after the failed snapshot")
			t.Logf("%d bytes free after the failed snapshot", mustFree(t, mnt))

			// Further writes on the same open store.
			small := volumeData(seed, fmt.Sprintf("after/%d", bs), 1<<20)
			p, err := snapshot(ctx, s, "after", small, bs)
			if err == nil {
				t.Logf("a 1 MiB snapshot on the same store after ENOSPC succeeded: point %s", p.ID)
				want = append(want, acked{p.ID, "after", small})
			} else {
				t.Logf("a 1 MiB snapshot on the same store after ENOSPC was refused: %v", err)
				wantDiskFull(t, "snapshot on the same store after ENOSPC", err)
			}
			// Reads keep working on a full disk.
			wantPoints(t, s, want, "on the full disk, before close")
			wantRestores(t, s, want, "on the full disk, before close")
			closeStore(t, s, "after ENOSPC")

			// Reopen with nothing freed. Open could hang: try in a child.
			free = mustFree(t, mnt)
			r := runChild(t, childJob{Dir: dir}, openDeadline)
			if _, ok := r.ok("open"); !ok {
				t.Errorf("reopen with the disk still full (%d bytes free): child %s", free, r)
				t.Logf("growing the tmpfs to %d MiB to go on", 2*fsSize>>20)
				growTmpfs(t, mnt, 2*fsSize)
			} else {
				t.Logf("reopen with the disk still full (%d bytes free): %s", free, r)
			}
			s = mustOpen(t, dir)
			t.Logf("%d bytes free after reopening", mustFree(t, mnt))
			wantIntact(t, s, want, "after reopening")

			rep, err := s.Maintenance().Prune(ctx, blockstore.Retention{Last: 1}, blockstore.PruneOptions{})
			if err != nil {
				t.Errorf("prune after reopening: %v", err)
			} else if rep.PointsDeleted != 0 {
				t.Errorf("prune keeping the last point of each volume deleted %d points, want 0", rep.PointsDeleted)
			}
			fresh := volumeData(seed, fmt.Sprintf("fresh/%d", bs), 1<<20)
			p, err = snapshot(ctx, s, "fresh", fresh, bs)
			if err != nil {
				t.Fatalf("a 1 MiB snapshot after reopening with %d bytes free: %v", mustFree(t, mnt), err)
			}
			want = append(want, acked{p.ID, "fresh", fresh})
			wantIntact(t, s, want, "after a new snapshot")
			closeStore(t, s, "at the end")
			s = mustOpen(t, dir)
			wantIntact(t, s, want, "after a final reopen")
		})
	}
}

// phaseOf names the step of a snapshot that an error or panic comes from.
func phaseOf(text string) string {
	for _, p := range []struct{ marker, phase string }{
		{"write point", "point commit"},
		{"write index", "index write"},
		{"index/", "index (Pebble WAL)"},
		{"write map pages", "map pages"},
		{"sync pack", "pack fsync"},
		{"write pack", "pack write"},
		{"create pack", "pack create"},
	} {
		if strings.Contains(text, p.marker) {
			return p.phase
		}
	}
	return "unknown"
}

func TestENOSPCPhases(t *testing.T) {
	needRoot(t)
	seed := uint64(blockstoretest.Seed(t))
	const (
		fsSize  = 32 << 20
		volume  = "vol"
		volSize = 24 << 20
		bs      = 4 << 10
	)
	base := []struct {
		volume string
		size   int
		bs     int
	}{
		{"base4k", 1 << 20, 4 << 10},
		{"base64k", 2 << 20, 64 << 10},
	}
	data := volumeData(seed, volume, volSize)

	// newStore makes a store with the base points on a fresh tmpfs.
	newStore := func(t *testing.T) (mnt, dir string, want []acked) {
		t.Helper()
		mnt = mountTmpfs(t, fsSize)
		dir = filepath.Join(mnt, "store")
		if err := blockstore.Init(dir, blockstore.InitOptions{}); err != nil {
			t.Fatal(err)
		}
		s, err := open(t, dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range base {
			d := volumeData(seed, b.volume, b.size)
			p, err := snapshot(t.Context(), s, b.volume, d, b.bs)
			if err != nil {
				t.Fatalf("snapshot %s: %v", b.volume, err)
			}
			want = append(want, acked{p.ID, b.volume, d})
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		return mnt, dir, want
	}
	job := func(dir string, leave int64) childJob {
		return childJob{Dir: dir, Volume: volume, Size: volSize, BlockSize: bs, Seed: seed,
			Filler: filepath.Join(filepath.Dir(dir), "filler"), Leave: leave}
	}
	packBytes := func(t *testing.T, dir string) int64 {
		t.Helper()
		entries, err := os.ReadDir(filepath.Join(dir, "packs"))
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		for _, e := range entries {
			if fi, err := e.Info(); err == nil {
				n += fi.Size()
			}
		}
		return n
	}

	// Measure what the snapshot needs: in all, and in packs.
	var need, packNeed int64
	if !t.Run("calibrate", func(t *testing.T) {
		_, dir, _ := newStore(t)
		packs := packBytes(t, dir)
		r := runChild(t, job(dir, -1), childDeadline)
		if _, ok := r.ok("snapshot"); !ok {
			t.Fatalf("snapshot of %d MiB with room to spare: child %s", volSize>>20, r)
		}
		need = r.int("free-after-open") - r.int("free-after-snapshot")
		packNeed = packBytes(t, dir) - packs
		t.Logf("the snapshot needs %d bytes: %d in packs, %d in the index", need, packNeed, need-packNeed)
	}) {
		t.FailNow()
	}
	if need <= 0 || packNeed <= 0 {
		t.Fatalf("calibration failed: need %d, pack need %d", need, packNeed)
	}
	// The file system's free space can drop by less than the packs grew
	// (the index removed an obsolete log meanwhile): then count the packs
	// and a minimum for the index.
	rest := max(need-packNeed, 64<<10)
	need = packNeed + rest
	cases := []struct {
		name  string
		leave int64
	}{
		{"100KiB", 100 << 10},
		{"1MiB", 1 << 20},
		{"4MiB", 4 << 20},
		{"12MiB", 12 << 20},
		{"20MiB", 20 << 20},
		{"pack-64KiB", packNeed - 64<<10},
		{"pack+25pct", packNeed + rest/4},
		{"pack+50pct", packNeed + rest/2},
		{"pack+75pct", packNeed + 3*rest/4},
		{"need-8KiB", need - 8<<10},
		{"need+256KiB", need + 256<<10},
	}
	var summary []string
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			mnt, dir, want := newStore(t)
			r := runChild(t, job(dir, tc.leave), childDeadline)
			filled, _ := r.ok("filled")
			outcome := ""
			committed := false
			if id, ok := r.ok("snapshot"); ok {
				outcome = "ok"
				committed = true
				want = append(want, acked{id, volume, data})
			} else if v, found := r.steps["snapshot"]; found {
				errText := strings.TrimPrefix(v, "error ")
				outcome = fmt.Sprintf("error in %s: %s", phaseOf(errText), errText)
				if !strings.Contains(errText, enospcText) {
					t.Errorf("snapshot with %s bytes free: got %q, want an error saying %q", filled, errText, enospcText)
				} else if !strings.HasPrefix(errText, "enospc=true") {
					t.Logf("snapshot with %s bytes free: the error does not wrap syscall.ENOSPC", filled)
				}
			}
			if _, ok := r.ok("close"); !ok && outcome != "" {
				t.Logf("Close after the snapshot: %s", r.steps["close"])
			}
			crashed := false
			switch msg, frames, panicked := r.panicked(); {
			case panicked:
				crashed = true
				outcome = fmt.Sprintf("PANIC in %s: %s; in %s", panicPhase(frames), msg, strings.Join(frames, " <- "))
				t.Errorf("snapshot with %s bytes free crashed the process instead of returning an error: %s", filled, r)
			case r.timedOut:
				crashed = true
				outcome = "HANG"
				t.Errorf("snapshot with %s bytes free: child %s", filled, r)
			case r.exit != nil || outcome == "":
				crashed = true
				outcome = "child failed: " + r.String()
				t.Errorf("snapshot with %s bytes free: child %s", filled, r)
			}
			t.Logf("%s free: %s", filled, outcome)
			summary = append(summary, fmt.Sprintf("%-13s %9s free: %s", tc.name, filled, strings.ReplaceAll(outcome, mnt, "<tmpfs>")))

			if err := os.Remove(filepath.Join(mnt, "filler")); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
			s, err := open(t, dir)
			if err != nil {
				t.Fatalf("reopen after freeing the filler (%d bytes free): %v", mustFree(t, mnt), err)
			}
			t.Cleanup(func() { s.Close() })
			if crashed && !committed {
				// A crash can leave a point committed but not acknowledged;
				// it must restore right, like any other.
				got := pointIDs(t, s)
				if extra, found := newPoint(got, want); found {
					t.Logf("point %s was committed but not acknowledged before the crash", extra)
					want = append(want, acked{extra, volume, data})
				}
			}
			wantIntact(t, s, want, "after reopening")

			p, err := snapshot(ctx, s, volume, data, bs)
			if err != nil {
				t.Fatalf("retry of the snapshot with %d bytes free: %v", mustFree(t, mnt), err)
			}
			want = append(want, acked{p.ID, volume, data})
			wantPoints(t, s, want, "after the retry")
			wantRestores(t, s, want[len(want)-1:], "after the retry")
		})
	}
	t.Logf("where ENOSPC landed (volume of %d MiB, %d KiB blocks; needs %d bytes, %d in packs):\n%s",
		volSize>>20, bs>>10, need, packNeed, strings.Join(summary, "\n"))
}

// panicPhase names the step of a snapshot a panic comes from, by its
// innermost blockstore frame.
func panicPhase(frames []string) string {
	i := slices.IndexFunc(frames, func(f string) bool { return strings.HasPrefix(f, "blockstore.") })
	if i < 0 {
		return "unknown"
	}
	for _, p := range []struct{ marker, phase string }{
		{"(*Store).flush", "index write (Pebble WAL)"},
		{"(*Store).CommitPoint", "point commit (Pebble WAL)"},
		{"mapWriter", "map pages"},
	} {
		if strings.Contains(frames[i], p.marker) {
			return p.phase
		}
	}
	return frames[i]
}

// newPoint returns the one point of got that want does not hold.
func newPoint(got []string, want []acked) (string, bool) {
	for _, id := range got {
		if !slices.Contains(ackedIDs(want), id) {
			return id, true
		}
	}
	return "", false
}

func TestInitOnFullDisk(t *testing.T) {
	needRoot(t)
	const fsSize = 1 << 20
	for _, leave := range []int64{0, 4 << 10, 8 << 10, 12 << 10, 16 << 10, 20 << 10, 24 << 10, 32 << 10, 64 << 10} {
		t.Run(fmt.Sprintf("free=%dKiB", leave>>10), func(t *testing.T) {
			mnt := mountTmpfs(t, fsSize)
			filler := filepath.Join(mnt, "filler")
			free, err := fill(filler, leave)
			if err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(mnt, "store")
			// Init and Open run in a child: on a full disk they could
			// panic or hang.
			r := runChild(t, childJob{Init: true, Dir: dir}, initDeadline)
			initRes, initRan := r.steps["init"]
			initOK := initRes == "ok"
			stage := "Init"
			if initRan {
				stage = "Open after Init " + initRes
			}
			if _, _, panicked := r.panicked(); panicked || r.timedOut || r.exit != nil || !initRan {
				t.Errorf("%s with %d bytes free: child %s", stage, free, r)
			}
			t.Logf("%d bytes free: child %s", free, strings.ReplaceAll(r.String(), mnt, "<tmpfs>"))
			switch open, opened := r.steps["open"]; {
			case initRan && !initOK:
				if !strings.Contains(initRes, enospcText) {
					t.Errorf("Init with %d bytes free: got %q, want an error saying %q", free, initRes, enospcText)
				}
				if open == "ok" {
					t.Errorf("Open on the full disk accepted the store that Init failed to make")
				}
			case initOK && opened && open != "ok" && !strings.Contains(open, enospcText):
				t.Errorf("Open of a new store with %d bytes free: got %q, want success or an error saying %q", free, open, enospcText)
			}

			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
			s, err := open(t, dir)
			switch {
			case initOK && err != nil:
				t.Errorf("Open of the new store after freeing space: %v", err)
			case initOK:
				wantIntact(t, s, nil, "new store after freeing space")
				closeStore(t, s, "new store")
			case err == nil:
				s.Close()
				t.Errorf("after freeing space, Open accepted the store that Init failed to make")
			default:
				t.Logf("after freeing space, Open refuses the store that Init failed to make: %v", err)
				left, _ := os.ReadDir(dir)
				var names []string
				for _, e := range left {
					names = append(names, e.Name())
				}
				err := blockstore.Init(dir, blockstore.InitOptions{})
				t.Logf("the failed Init left %v; Init again after freeing space: %v", names, err)
			}
		})
	}
}
