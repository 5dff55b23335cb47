package crashapp_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent"
	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/blockstore/blockstoretest"
	"github.com/lifeboat-dr/lifeboat/test/testbin"
)

const (
	volSize = 64 << 20
	// ringSlots is the number of payload rows the transactions rewrite.
	ringSlots = 64
	// roundsEnv overrides the number of rounds; soakEnv=1 runs many.
	roundsEnv = "LIFEBOAT_CRASHAPP_ROUNDS"
	soakEnv   = "LIFEBOAT_SOAK"
)

// config is one way of running the stack.
type config struct {
	name      string
	ack       string // the agent's --ack
	journal   string // SQLite's journal_mode
	blockSize int    // the volume's block size in the policy
}

var configs = []config{
	{"sync-wal-4KiB", "sync", "wal", 4 << 10},
	{"async-delete-64KiB", "async", "delete", 64 << 10},
}

// need skips without root, FUSE, loop devices or the tools, and fails
// instead with CI=true.
func need(t *testing.T) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (FUSE mounts, losetup, mount)")
	}
	for _, dev := range []string{"/dev/fuse", "/dev/loop-control"} {
		if _, err := os.Stat(dev); err != nil {
			missing = append(missing, dev)
		}
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		if _, err := exec.LookPath("fusermount"); err != nil {
			missing = append(missing, "fusermount3 or fusermount")
		}
	}
	for _, tool := range []string{"losetup", "mkfs.ext4", "e2fsck", "mount", "umount", "sqlite3"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	why := "the crash-consistency test with ext4 and SQLite needs " + strings.Join(missing, ", ")
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: not skipping)", why)
	}
	t.Skip(why)
}

// rounds returns how many kills each configuration gets.
func rounds(t *testing.T) int {
	if s := os.Getenv(roundsEnv); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			t.Fatalf("%s=%q: want a count", roundsEnv, s)
		}
		return n
	}
	switch {
	case os.Getenv(soakEnv) == "1":
		return 60
	case testing.Short():
		return 3
	}
	return 10
}

// TestCrashApp: see the package documentation.
func TestCrashApp(t *testing.T) {
	need(t)
	seed := blockstoretest.Seed(t)
	n := rounds(t)
	for i, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, c, rand.New(rand.NewPCG(uint64(seed), uint64(i))))
			start := time.Now()
			for r := range n {
				h.round(r)
			}
			h.finish()
			t.Logf("%d rounds in %v (seed %d): kills %v; %d transactions committed, %d points restored and checked; loop direct I/O %v",
				n, time.Since(start).Round(time.Millisecond), seed, h.kills, len(h.commits), h.checked, h.dio)
		})
	}
}

// commit is a transaction whose COMMIT sqlite3 reported, and when the test
// read that report (after the commit returned).
type commit struct {
	seq int64
	at  time.Time
}

type harness struct {
	t   *testing.T
	c   config
	rng *rand.Rand

	bin, dir, admin, quic, agentTLS string
	opTLS                           string // an admin operator certificate for the CLI
	nodeArgs, agentArgs             []string
	node, agent                     *testbin.Proc

	mount   string // the agent's FUSE mount; the volume is mount/disk
	fsdir   string // where the ext4 is mounted
	db      string
	loop    string // the loop device over mount/disk, "" when detached
	mounted bool
	dio     bool // the loop device does direct I/O
	app     *app

	kills   map[string]int
	checked int

	mu        sync.Mutex
	commits   []commit // in order
	attempted int64    // the highest sequence number sent to sqlite3
}

// sh runs a system command and returns its combined output and exit code
// (-1 when it could not run or timed out).
func sh(timeout time.Duration, name string, args ...string) (string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return fmt.Sprintf("%s\n(timed out after %s)", out, timeout), -1
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	return string(out) + err.Error(), -1
}

// must runs a system command and fails the test unless it exits 0.
func (h *harness) must(name string, args ...string) string {
	h.t.Helper()
	out, code := sh(2*time.Minute, name, args...)
	if code != 0 {
		h.t.Fatalf("%s %s: exit %d\n%s", name, strings.Join(args, " "), code, out)
	}
	return strings.TrimSpace(out)
}

func newHarness(t *testing.T, c config, rng *rand.Rand) *harness {
	h := &harness{t: t, c: c, rng: rng, bin: testbin.Build(t), dir: t.TempDir(), kills: map[string]int{}}
	image := filepath.Join(h.dir, "disk.img")
	if err := os.WriteFile(image, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(image, volSize); err != nil {
		t.Fatal(err)
	}
	h.mount = filepath.Join(h.dir, "intercept")
	h.fsdir = filepath.Join(h.dir, "fs")
	h.db = filepath.Join(h.fsdir, "app.db")
	if err := os.Mkdir(h.fsdir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.cleanup)

	ca := filepath.Join(h.dir, "ca")
	testbin.Run(t, h.bin, 0, "ca", "init", "--dir", ca)
	nodeTLS := filepath.Join(h.dir, "node-tls")
	h.agentTLS = filepath.Join(h.dir, "agent-tls")
	testbin.Run(t, h.bin, 0, "ca", "issue", "--dir", ca, "--name", "dc1-n1", "--site", "dc1", "--out", nodeTLS)
	testbin.Run(t, h.bin, 0, "ca", "issue", "--dir", ca, "--agent", "--name", "web1", "--site", "dc1", "--service", "web", "--out", h.agentTLS)
	h.opTLS = filepath.Join(h.dir, "operator-tls")
	testbin.Run(t, h.bin, 0, "ca", "issue", "--dir", ca, "--operator", "crashapp-admin", "--role", "admin", "--out", h.opTLS)
	h.admin, h.quic = testbin.FreePort(t), testbin.FreePort(t)
	h.nodeArgs = []string{"node", "run",
		"--name", "dc1-n1", "--site", "dc1", "--data-dir", filepath.Join(h.dir, "node"),
		"--listen-gossip", testbin.FreePort(t), "--listen-quic", h.quic, "--listen-admin", h.admin,
		"--tls-dir", nodeTLS, "--gossip-profile", "test"}
	h.startNode()
	testbin.WaitLeader(t, h.bin, h.admin, h.opTLS, "dc1-n1")
	policy := filepath.Join(h.dir, "cluster.toml")
	if err := os.WriteFile(policy, fmt.Appendf(nil, `[[site]]
name = "dc1"

[[service]]
name = "web"
primary = "dc1"
  [[service.server]]
  name = "web1"
    [[service.server.volume]]
    name = "disk"
    path = %q
    size = "%dB"
    block_size = "%dB"
`, image, volSize, c.blockSize), 0o644); err != nil {
		t.Fatal(err)
	}
	testbin.Run(t, h.bin, 0, "policy", "apply", "--admin", h.admin, "--tls-dir", h.opTLS, policy)

	h.agentArgs = []string{"agent", "run", "--name", "web1", "--service", "web", "--volume", "disk=" + image,
		"--node", h.quic, "--tls-dir", h.agentTLS, "--spool", filepath.Join(h.dir, "agent"), "--mode", "intercept",
		"--mount", h.mount, "--ack", c.ack, "--interval", "1s"}
	h.startAgent()
	// The first start ships the whole volume; the writes are spooled (and
	// acknowledged as --ack says) once that baseline point exists.
	testbin.Eventually(t, "the baseline point", 60*time.Second, func() error {
		pts, err := h.points()
		if err != nil {
			return err
		}
		if len(pts) == 0 {
			return errors.New("no point yet")
		}
		return nil
	})

	h.attach()
	h.must("mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "lazy_itable_init=0,lazy_journal_init=0", h.loop)
	h.mountFS()
	h.must("sqlite3", "-bail", h.db, fmt.Sprintf(`PRAGMA journal_mode=%s;
CREATE TABLE t(seq INTEGER PRIMARY KEY);
CREATE TABLE ring(slot INTEGER PRIMARY KEY, seq INTEGER NOT NULL, data BLOB NOT NULL, h TEXT NOT NULL);
CREATE TABLE meta(n INTEGER NOT NULL, last INTEGER NOT NULL);
INSERT INTO meta VALUES(0, 0);`, c.journal))
	h.startApp()
	return h
}

func (h *harness) startNode() {
	h.node = testbin.Start(h.t, "node", filepath.Join(h.dir, "node.log"), h.bin, h.nodeArgs...)
}

// startAgent starts the agent and waits for the volume file.
func (h *harness) startAgent() {
	h.agent = testbin.Start(h.t, "agent", filepath.Join(h.dir, "agent.log"), h.bin, h.agentArgs...)
	file := filepath.Join(h.mount, "disk")
	testbin.Eventually(h.t, "the intercepted volume file", 30*time.Second, func() error {
		fi, err := os.Stat(file)
		if err != nil {
			return fmt.Errorf("%w (the agent log ends: %s)", err, h.agent.Tail(1))
		}
		if fi.Size() != volSize {
			return fmt.Errorf("size %d, want %d", fi.Size(), volSize)
		}
		return nil
	})
}

// attach puts a loop device over the intercepted volume file, with direct
// I/O when the kernel takes it there.
func (h *harness) attach() {
	h.t.Helper()
	file := filepath.Join(h.mount, "disk")
	var out string
	code := -1
	// losetup --find races with anyone else taking loop devices: retry.
	for try := 0; try < 5 && code != 0; try++ {
		out, code = sh(time.Minute, "losetup", "--find", "--show", "--direct-io=on", file)
		if code != 0 {
			out, code = sh(time.Minute, "losetup", "--find", "--show", file)
		}
	}
	if code != 0 {
		h.t.Fatalf("losetup %s: exit %d\n%s", file, code, out)
	}
	lines := strings.Fields(out)
	h.loop = lines[len(lines)-1]
	dio, _ := sh(time.Minute, "losetup", "--list", "--noheadings", "--output", "DIO", h.loop)
	h.dio = strings.TrimSpace(dio) == "1"
}

// detach unmounts the ext4 and detaches the loop device.
func (h *harness) detach() {
	h.t.Helper()
	if h.mounted {
		h.must("umount", h.fsdir)
		h.mounted = false
	}
	if h.loop != "" {
		h.must("losetup", "--detach", h.loop)
		h.loop = ""
	}
}

func (h *harness) mountFS() {
	h.t.Helper()
	h.must("mount", "-t", "ext4", h.loop, h.fsdir)
	h.mounted = true
}

// fsckLive replays the journal of the live file system after its block
// device died under it (the agent was killed): after the replay, e2fsck
// must find nothing, as after any crash of a device that applied the
// acknowledged writes in order.
func (h *harness) fsckLive(round int) {
	h.t.Helper()
	if out, code := sh(5*time.Minute, "e2fsck", "-E", "journal_only", "-y", h.loop); code > 1 {
		h.t.Fatalf("round %d: the live volume after the agent's restart: e2fsck -E journal_only -y: exit %d\n%s", round, code, out)
	}
	if out, code := sh(5*time.Minute, "e2fsck", "-fn", h.loop); code != 0 {
		h.t.Fatalf("round %d: the live volume after the agent's restart: e2fsck -fn after the journal replay: exit %d\n%s", round, code, out)
	}
}

func (h *harness) cleanup() {
	if h.app != nil && h.t.Failed() && h.agent != nil {
		// The application may be blocked in the agent's mount waiting for
		// the node (--ack sync): stop the agent first, so that the kill
		// takes.
		h.agent.Stop()
		sh(time.Minute, "umount", "-l", h.mount)
	}
	if h.app != nil {
		h.app.kill()
	}
	if h.mounted {
		if _, code := sh(time.Minute, "umount", h.fsdir); code != 0 {
			sh(time.Minute, "umount", "-l", h.fsdir)
		}
	}
	if h.loop != "" {
		sh(time.Minute, "losetup", "--detach", h.loop)
	}
	if h.agent != nil {
		h.agent.Stop()
	}
	// A killed agent's mount, if one is left.
	sh(time.Minute, "umount", "-l", h.mount)
	if h.node != nil {
		h.node.Stop()
	}
	if h.t.Failed() {
		if h.agent != nil {
			h.t.Logf("agent log:\n%s", h.agent.Tail(60))
		}
		if h.node != nil {
			h.t.Logf("node log:\n%s", h.node.Tail(60))
		}
	}
}

// app is a long-lived sqlite3 process committing one transaction after
// another, as fast as the storage lets it.
type app struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr bytes.Buffer
	stop   chan struct{}
	done   chan struct{}
	err    error // why it ended; read after done
	since  time.Time
}

func (h *harness) startApp() {
	h.t.Helper()
	a := &app{cmd: exec.Command("sqlite3", "-bail", h.db), stop: make(chan struct{}), done: make(chan struct{}), since: time.Now()}
	a.cmd.Stderr = &a.stderr
	var err error
	if a.stdin, err = a.cmd.StdinPipe(); err != nil {
		h.t.Fatal(err)
	}
	stdout, err := a.cmd.StdoutPipe()
	if err != nil {
		h.t.Fatal(err)
	}
	if err := a.cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	h.app = a
	go h.runApp(a, bufio.NewReader(stdout), rand.New(rand.NewPCG(h.rng.Uint64(), 1)))
}

// sync is the synchronous setting that makes a commit durable: in
// rollback-journal mode the commit is the journal's deletion, which only
// EXTRA syncs the directory for.
func (h *harness) sync() string {
	if h.c.journal == "wal" {
		return "FULL"
	}
	return "EXTRA"
}

func (h *harness) runApp(a *app, out *bufio.Reader, rng *rand.Rand) {
	defer close(a.done)
	fail := func(err error) {
		a.cmd.Process.Kill()
		a.cmd.Wait()
		a.err = fmt.Errorf("%w; sqlite3 stderr: %s", err, strings.TrimSpace(a.stderr.String()))
	}
	// Each statement's result rows are read back: a line for each.
	if _, err := fmt.Fprintf(a.stdin, ".timeout 10000\nPRAGMA synchronous=%s;\nPRAGMA wal_autocheckpoint=200;\nSELECT 'ready';\n", h.sync()); err != nil {
		fail(err)
		return
	}
	for {
		line, err := out.ReadString('\n')
		if err != nil {
			fail(fmt.Errorf("open the database: %w", err))
			return
		}
		if strings.TrimSpace(line) == "ready" {
			break
		}
	}
	for {
		select {
		case <-a.stop:
			a.stdin.Close()
			if err := a.cmd.Wait(); err != nil {
				a.err = fmt.Errorf("sqlite3 exit: %w; stderr: %s", err, strings.TrimSpace(a.stderr.String()))
			}
			return
		default:
		}
		h.mu.Lock()
		h.attempted++
		seq := h.attempted
		h.mu.Unlock()
		size := 200 + rng.IntN(24<<10)
		if _, err := fmt.Fprintf(a.stdin, `BEGIN IMMEDIATE;
INSERT INTO t(seq) VALUES(%[1]d);
INSERT OR REPLACE INTO ring(slot, seq, data, h) SELECT %[2]d, %[1]d, x, sha3(x) FROM (SELECT randomblob(%[3]d) AS x);
UPDATE meta SET n = n + 1, last = %[1]d;
COMMIT;
SELECT 'done %[1]d';
`, seq, seq%ringSlots, size); err != nil {
			fail(fmt.Errorf("transaction %d: %w", seq, err))
			return
		}
		line, err := out.ReadString('\n')
		if err != nil {
			fail(fmt.Errorf("transaction %d: %w", seq, err))
			return
		}
		if got, want := strings.TrimSpace(line), fmt.Sprintf("done %d", seq); got != want {
			fail(fmt.Errorf("transaction %d: sqlite3 said %q, want %q", seq, got, want))
			return
		}
		at := time.Now()
		h.mu.Lock()
		h.commits = append(h.commits, commit{seq, at})
		h.mu.Unlock()
	}
}

// kill kills sqlite3 with SIGKILL and waits until the loop has ended.
func (a *app) kill() {
	a.cmd.Process.Kill()
	<-a.done
}

// stopApp ends the application cleanly: it must not have failed.
func (h *harness) stopApp() {
	h.t.Helper()
	close(h.app.stop)
	<-h.app.done
	if h.app.err != nil {
		h.t.Fatalf("the application failed: %v", h.app.err)
	}
}

func (h *harness) snapshot() ([]commit, int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.commits), h.attempted
}

// committedSince counts the commits recorded after t.
func (h *harness) committedSince(t time.Time) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for i := len(h.commits) - 1; i >= 0 && h.commits[i].at.After(t); i-- {
		n++
	}
	return n
}

// points lists the node's points of service web.
func (h *harness) points() ([]blockstore.Point, error) {
	out, errOut, code := testbin.RunCode(h.bin, "points", "--admin", h.admin, "--tls-dir", h.opTLS, "--service", "web", "--json")
	if code != 0 {
		return nil, fmt.Errorf("points: exit %d: %s", code, strings.TrimSpace(errOut))
	}
	var pts []blockstore.Point
	if err := json.Unmarshal([]byte(out), &pts); err != nil {
		return nil, fmt.Errorf("points JSON: %v\n%s", err, out)
	}
	return pts, nil
}

// newest returns the point with the latest time (the later one of a tie).
func newest(pts []blockstore.Point) blockstore.Point {
	var p blockstore.Point
	for _, q := range pts {
		if p.ID == "" || !q.Time.Before(p.Time) {
			p = q
		}
	}
	return p
}

// round lets the application commit for a random moment, kills one of
// agent, node and application (or all), recovers, and checks the newest
// point.
func (h *harness) round(r int) {
	t := h.t
	t.Helper()
	testbin.Eventually(t, fmt.Sprintf("round %d: the application commits", r), 60*time.Second, func() error {
		select {
		case <-h.app.done:
			t.Fatalf("round %d: the application stopped with nothing killed: %v", r, h.app.err)
		default:
		}
		if h.committedSince(h.app.since) == 0 {
			return errors.New("no commit since the application started")
		}
		return nil
	})
	select {
	case <-time.After(time.Duration(h.rng.Int64N(int64(2500 * time.Millisecond)))):
	case <-h.app.done:
		t.Fatalf("round %d: the application stopped with nothing killed: %v", r, h.app.err)
	}
	var what string
	switch k := h.rng.IntN(10); {
	case k < 3:
		what = "agent"
	case k < 6:
		what = "node"
	case k < 8:
		what = "app"
	default:
		what = "all"
	}
	h.kills[what]++
	before, _ := h.snapshot()
	switch what {
	case "app":
		h.app.kill()
		h.startApp()
	case "node":
		h.node.Kill()
		h.nodeOutage(r)
		h.startNode()
	case "agent":
		h.agent.Kill()
		h.app.kill() // its volume is gone: the server's application dies too
		h.detach()
		h.startAgent()
		h.recoverFS(r)
	case "all":
		var wg sync.WaitGroup
		for _, kill := range []func(){h.agent.Kill, h.node.Kill, h.app.kill} {
			wg.Go(kill)
		}
		wg.Wait()
		h.detach()
		// Both back before the file system: with --ack sync even the
		// fsync that attaching a loop device does waits for the node.
		if h.rng.IntN(2) == 0 {
			h.startNode()
			h.startAgent()
		} else {
			h.startAgent()
			h.startNode()
		}
		h.recoverFS(r)
	}
	recovered := time.Now()
	// The newest point made after the recovery, once the application has
	// committed again.
	var (
		p         blockstore.Point
		commits   []commit
		attempted int64
	)
	testbin.Eventually(t, fmt.Sprintf("round %d (%s killed): a point after the recovery", r, what), 90*time.Second, func() error {
		select {
		case <-h.app.done:
			t.Fatalf("round %d: the application stopped after the recovery: %v", r, h.app.err)
		default:
		}
		if h.committedSince(recovered) == 0 {
			return errors.New("no commit since the recovery")
		}
		// Commits first: every one of them returned before the listing.
		commits, _ = h.snapshot()
		pts, err := h.points()
		if err != nil {
			return err
		}
		_, attempted = h.snapshot()
		if p = newest(pts); !p.Time.After(recovered) {
			return fmt.Errorf("newest point %s at %s", p.ID, p.Time.Format(time.RFC3339Nano))
		}
		return nil
	})
	h.checkPoint(fmt.Sprintf("round %d (%s killed)", r, what), p, commits, attempted)
	if h.c.ack == "sync" {
		// Said once more for the report: every commit acknowledged before
		// the kill is in the newest point after the recovery.
		t.Logf("round %d (%s killed): the %d commits acknowledged before the kill are in point %s", r, what, len(before), p.ID)
	}
}

// nodeOutage keeps the node down, after it was killed, until a seeded one
// of the states the outage leads to: none (it comes back at once); the
// agent's status says it lost the node; that, and then (with --ack async)
// the application went on for up to 20 commits more. With --ack sync the
// application's commits wait for the node, so there is nothing more to
// wait for.
func (h *harness) nodeOutage(r int) {
	t := h.t
	t.Helper()
	killed := time.Now()
	k := h.rng.IntN(3)
	if k == 0 {
		return
	}
	spool := filepath.Join(h.dir, "agent")
	testbin.Eventually(t, fmt.Sprintf("round %d: the agent's status says the node is gone", r), 60*time.Second, func() error {
		st, err := agent.ReadStatus(spool)
		if err != nil {
			return err
		}
		if st.State != "disconnected" {
			return fmt.Errorf("state %s", st.State)
		}
		return nil
	})
	if k == 1 || h.c.ack == "sync" {
		return
	}
	n := 1 + h.rng.IntN(20)
	testbin.Eventually(t, fmt.Sprintf("round %d: the application goes on without the node", r), 60*time.Second, func() error {
		select {
		case <-h.app.done:
			t.Fatalf("round %d: the application stopped with the node down: %v", r, h.app.err)
		default:
		}
		if got := h.committedSince(killed); got < n {
			return fmt.Errorf("%d of %d commits since the kill", got, n)
		}
		return nil
	})
}

// recoverFS does what an operator does once the agent is back after it
// died under a mounted file system (unmounted and detached by then):
// attach the loop device again, replay the journal, mount, restart the
// application.
func (h *harness) recoverFS(r int) {
	h.t.Helper()
	h.attach()
	h.fsckLive(r)
	h.mountFS()
	h.startApp()
}

// finish stops the application and checks that a point made after its last
// commit holds every committed transaction.
func (h *harness) finish() {
	t := h.t
	t.Helper()
	h.stopApp()
	commits, attempted := h.snapshot()
	if len(commits) == 0 {
		t.Fatal("no transaction was ever committed")
	}
	// A file written and fsynced after the last commit: its fsync is a
	// consistency point later than every commit (an idle file system may
	// not write again for half a minute).
	last := commits[len(commits)-1].at
	f, err := os.Create(filepath.Join(h.fsdir, "end"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("the application stopped\n"); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync on the live file system: %v", err)
	}
	f.Close()
	var p blockstore.Point
	testbin.Eventually(t, "a point after the last commit", 60*time.Second, func() error {
		pts, err := h.points()
		if err != nil {
			return err
		}
		if p = newest(pts); !p.Time.After(last) {
			return fmt.Errorf("newest point %s at %s", p.ID, p.Time.Format(time.RFC3339Nano))
		}
		return nil
	})
	h.checkPoint("the end", p, commits, attempted)
}

// checkPoint restores p and checks the file system and the database in it.
// commits are the transactions whose commit returned before the points
// were listed; attempted is the highest sequence number ever sent.
func (h *harness) checkPoint(what string, p blockstore.Point, commits []commit, attempted int64) {
	t := h.t
	t.Helper()
	what = fmt.Sprintf("%s: point %s at %s", what, p.ID, p.Time.Format(time.RFC3339Nano))
	dir := t.TempDir()
	img := filepath.Join(dir, "point.img")
	testbin.Run(t, h.bin, 0, "restore", "--admin", h.admin, "--tls-dir", h.opTLS, "--volume", "web/disk", "--at", p.ID, "--out", img)
	defer os.Remove(img)
	if out, code := sh(5*time.Minute, "e2fsck", "-E", "journal_only", "-y", img); code > 1 {
		t.Fatalf("%s: e2fsck -E journal_only -y: exit %d\n%s", what, code, out)
	}
	if out, code := sh(5*time.Minute, "e2fsck", "-fn", img); code != 0 {
		t.Fatalf("%s: e2fsck -fn after the journal replay: exit %d\n%s", what, code, out)
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	h.must("mount", "-t", "ext4", "-o", "loop", img, mnt)
	defer h.must("umount", mnt)
	h.checked++

	// The transactions the point must hold: with --ack sync every one
	// whose commit returned before the listing, else those before the
	// point's time.
	var want []commit
	for _, c := range commits {
		if h.c.ack == "sync" || c.at.Before(p.Time) {
			want = append(want, c)
		}
	}
	db := filepath.Join(mnt, "app.db")
	if _, err := os.Stat(db); errors.Is(err, os.ErrNotExist) {
		if len(want) > 0 {
			t.Fatalf("%s: no database, but %d transactions were committed before it", what, len(want))
		}
		return
	}
	// Opening the database recovers it as the application would (hot
	// journal rollback, WAL replay): the file system is a copy.
	q := func(sql string) string {
		t.Helper()
		out, code := sh(2*time.Minute, "sqlite3", "-bail", db, sql)
		if code != 0 {
			t.Fatalf("%s: sqlite3 %q: exit %d\n%s", what, sql, code, out)
		}
		return strings.TrimSpace(out)
	}
	if got := q("PRAGMA integrity_check;"); got != "ok" {
		t.Fatalf("%s: PRAGMA integrity_check:\n%s", what, got)
	}
	if got := q("SELECT count(*) FROM ring WHERE h <> sha3(data);"); got != "0" {
		t.Errorf("%s: %s ring payloads differ from their hashes", what, got)
	}
	var seqs []int64
	if s := q("SELECT seq FROM t ORDER BY seq;"); s != "" {
		for _, f := range strings.Fields(s) {
			n, err := strconv.ParseInt(f, 10, 64)
			if err != nil {
				t.Fatalf("%s: seq %q", what, f)
			}
			seqs = append(seqs, n)
		}
	}
	present := make(map[int64]bool, len(seqs))
	var top int64
	for _, s := range seqs {
		present[s] = true
		top = max(top, s)
		if s < 1 || s > attempted {
			t.Errorf("%s: row %d, but the application only ever sent 1 to %d", what, s, attempted)
		}
	}
	// Every transaction in whole or not at all.
	if got, want := q("SELECT n || ' ' || last FROM meta;"), fmt.Sprintf("%d %d", len(seqs), top); got != want {
		t.Errorf("%s: meta says rows and newest %q, the table has %q", what, got, want)
	}
	newestOf := map[int64]int64{}
	for _, s := range seqs {
		newestOf[s%ringSlots] = s
	}
	ring := map[int64]int64{}
	if s := q("SELECT slot || ' ' || seq FROM ring;"); s != "" {
		for _, l := range strings.Split(s, "\n") {
			var slot, seq int64
			if _, err := fmt.Sscan(l, &slot, &seq); err != nil {
				t.Fatalf("%s: ring row %q", what, l)
			}
			ring[slot] = seq
		}
	}
	for slot := range int64(ringSlots) {
		if ring[slot] != newestOf[slot] {
			t.Errorf("%s: ring slot %d holds transaction %d, the newest row of the slot is %d", what, slot, ring[slot], newestOf[slot])
		}
	}
	// Every transaction that must be there is; and a point that holds a
	// transaction holds every one committed before it began.
	var missing []int64
	for _, c := range want {
		if !present[c.seq] {
			missing = append(missing, c.seq)
		}
	}
	for _, c := range commits {
		if c.seq < top && !present[c.seq] && !slices.Contains(missing, c.seq) {
			missing = append(missing, c.seq)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		at := map[int64]time.Time{}
		for _, c := range commits {
			at[c.seq] = c.at
		}
		first := missing[0]
		t.Errorf("%s: %d committed transactions missing (of %d it must hold; it holds %d rows up to %d): first %d, committed at %s; missing %v",
			what, len(missing), len(want), len(seqs), top, first, at[first].Format(time.RFC3339Nano), head(missing, 20))
	}
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("%s: fsck clean, integrity ok, %d rows up to %d; holds all %d transactions it must (%d committed in all)",
		what, len(seqs), top, len(want), len(commits))
}

func head(s []int64, n int) []int64 {
	if len(s) > n {
		return s[:n]
	}
	return s
}
