package diskfull_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-dr/lifeboat/agent"
	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/blockstore/blockstoretest"
	"github.com/lifeboat-dr/lifeboat/internal/testpolicy"
	"github.com/lifeboat-dr/lifeboat/internal/testwait"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/mesh/meshtest"
	"github.com/lifeboat-dr/lifeboat/node"
	"github.com/lifeboat-dr/lifeboat/test/testbin"
)

const (
	spaceFS     = 256 << 20 // the node's DATA_DIR
	spaceVolume = 4 << 20
	spaceBlock  = 4 << 10
)

// needFUSE skips without FUSE (intercept agents mount their volumes), or
// fails with CI=true.
func needFUSE(t *testing.T) {
	t.Helper()
	needRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		missing(t, "needs /dev/fuse for an intercept agent")
	}
	_, err3 := exec.LookPath("fusermount3")
	_, err := exec.LookPath("fusermount")
	if err3 != nil && err != nil {
		missing(t, "needs fusermount for an intercept agent")
	}
}

// syncBuffer is a log both kept for the test's checks and shown on
// failure.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	out io.Writer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	return b.out.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// spaceWriter writes 4 KiB pieces at random block offsets through an
// agent's FUSE file, with an fsync every few writes, until stopped; then
// it fsyncs a last time. Every write it made returned: the agent
// acknowledged it (async: in the spool).
type spaceWriter struct {
	path   string
	every  time.Duration
	seed   uint64
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	writes int
	err    error
}

func (w *spaceWriter) run() {
	defer close(w.done)
	f, err := os.OpenFile(w.path, os.O_WRONLY, 0)
	if err != nil {
		w.fail(err)
		return
	}
	defer f.Close()
	r := rand.New(rand.NewPCG(w.seed, 7))
	buf := make([]byte, spaceBlock)
	tick := time.NewTicker(w.every)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-w.stop:
			if err := f.Sync(); err != nil {
				w.fail(fmt.Errorf("last fsync: %w", err))
			}
			return
		case <-tick.C:
		}
		for j := range buf {
			buf[j] = byte(r.Uint32())
		}
		off := int64(r.IntN(spaceVolume/spaceBlock)) * spaceBlock
		if _, err := f.WriteAt(buf, off); err != nil {
			w.fail(fmt.Errorf("write %d: %w", i, err))
			return
		}
		if i%5 == 4 {
			if err := f.Sync(); err != nil {
				w.fail(fmt.Errorf("fsync after write %d: %w", i, err))
				return
			}
		}
		w.mu.Lock()
		w.writes++
		w.mu.Unlock()
	}
}

func (w *spaceWriter) fail(err error) {
	w.mu.Lock()
	w.err = err
	w.mu.Unlock()
}

// spaceAgent is an in-process intercept agent of one service, with its
// writer.
type spaceAgent struct {
	service string
	image   string // the backing file: the volume as written
	spool   string
	a       *agent.Agent
	cancel  context.CancelFunc
	stopped chan struct{}
	w       *spaceWriter
}

// TestDiskFullRefusesByPriority: a node whose DATA_DIR is a 256 MiB tmpfs
// takes points of two services from in-process intercept agents that keep
// writing. The disk is filled to 4% free: the node refuses new points of
// the low-priority service (CodeNoSpace) and says so in its status and
// log, while the high-priority one keeps committing; the low agent keeps
// spooling and reports the refusal in its status. The filler is removed:
// the node resumes by itself, the low agent's spool drains, and after the
// writers stop, the newest point of each service restores byte-exact to
// the volume as written (every acknowledged write is in it), and the
// store verifies clean.
func TestDiskFullRefusesByPriority(t *testing.T) {
	needFUSE(t)
	dataDir := mountTmpfs(t, spaceFS)
	seed := uint64(blockstoretest.Seed(t))
	logs := &syncBuffer{out: t.Output()}
	logger := func(who string) *slog.Logger {
		return slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})).With("test_node", who)
	}

	ca := meshtest.CA(t)
	net := meshtest.NewNet()
	n, err := node.New(node.Options{
		Name: "dc1-n1", Site: "dc1", DataDir: dataDir, Creds: ca.Node("dc1-n1", "dc1"),
		Network: net.Node("dc1-n1", "dc1"), Gossip: testbin.FreePort(t), QUIC: "127.0.0.1:0",
		BootstrapExpect: 1, GossipProfile: "test",
		RaftConfig: func(c *raft.Config) {
			c.HeartbeatTimeout = 500 * time.Millisecond
			c.ElectionTimeout = 500 * time.Millisecond
			c.LeaderLeaseTimeout = 250 * time.Millisecond
			c.CommitTimeout = 10 * time.Millisecond
		},
		RaftTimeout: 2 * time.Second, ReconcileInterval: 200 * time.Millisecond, WriteTimeout: 3 * time.Second,
		Logger: logger("dc1-n1"),
	})
	if err != nil {
		t.Fatal(err)
	}
	nctx, stopNode := context.WithCancel(context.Background())
	nodeDone := make(chan error, 1)
	go func() { nodeDone <- n.Run(nctx) }()
	nodeStopped := false
	stopTheNode := func() {
		if nodeStopped {
			return
		}
		nodeStopped = true
		stopNode()
		select {
		case err := <-nodeDone:
			if err != nil {
				t.Errorf("node: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the node did not stop within 30s")
		}
	}
	t.Cleanup(stopTheNode)
	testwait.For(t, "dc1-n1 leads", 30*time.Second, func() error {
		if l := n.Status().Leader; l != "dc1-n1" {
			return fmt.Errorf("leader %q", l)
		}
		return nil
	})
	vol := testpolicy.Server("s1", "disk", "/dev/x", "4MiB", `    block_size = "4KiB"`)
	policy := testpolicy.Sites("dc1") +
		testpolicy.Service("low", "dc1", "", "priority = 0", vol) +
		testpolicy.Service("high", "dc1", "", "priority = 10", vol)
	if _, err := n.ApplyPolicy(t.Context(), "cluster.toml", []byte(policy), "test"); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "holders placed", 20*time.Second, func() error {
		cat := n.Catalog()
		if cat.Holder("low", "dc1") != "dc1-n1" || cat.Holder("high", "dc1") != "dc1-n1" {
			return errors.New("not yet")
		}
		return nil
	})

	points := func(service string) []blockstore.Point {
		t.Helper()
		pts, err := n.Points(t.Context(), service, "")
		if err != nil {
			t.Fatalf("points of %s: %v", service, err)
		}
		return pts
	}
	agents := map[string]*spaceAgent{}
	for i, svc := range []string{"low", "high"} {
		dir := t.TempDir()
		sa := &spaceAgent{service: svc, image: filepath.Join(dir, "disk.img"), spool: filepath.Join(dir, "spool")}
		if err := os.WriteFile(sa.image, volumeData(seed, svc, spaceVolume), 0o600); err != nil {
			t.Fatal(err)
		}
		name := svc + "1"
		a, err := agent.New(agent.Options{
			Name: name, Service: svc, Volumes: []agent.Volume{{Name: "disk", Path: sa.image}},
			Node: n.QUICAddr(), Creds: ca.Agent(mesh.NodeID(name), "dc1", svc), Mode: agent.ModeIntercept,
			Mountpoint: filepath.Join(dir, "mnt"), Interval: time.Second, SpoolDir: sa.spool,
			Network: net.Node(mesh.NodeID(name), "dc1"), Logger: logger(name),
		})
		if err != nil {
			t.Fatal(err)
		}
		sa.a = a
		ctx, cancel := context.WithCancel(context.Background())
		sa.cancel, sa.stopped = cancel, make(chan struct{})
		go func() {
			defer close(sa.stopped)
			if err := a.Run(ctx); err != nil {
				t.Errorf("agent %s: %v", name, err)
			}
		}()
		t.Cleanup(func() { cancel(); <-sa.stopped })
		file := filepath.Join(dir, "mnt", "disk")
		testwait.For(t, "the volume file of "+svc+" appears", 30*time.Second, func() error {
			fi, err := os.Stat(file)
			if err != nil {
				return err
			}
			if fi.Size() != spaceVolume {
				return fmt.Errorf("size %d", fi.Size())
			}
			return nil
		})
		sa.w = &spaceWriter{path: file, every: 100 * time.Millisecond, seed: seed + uint64(i), stop: make(chan struct{}), done: make(chan struct{})}
		go sa.w.run()
		t.Cleanup(func() {
			select {
			case <-sa.w.stop:
			default:
				close(sa.w.stop)
			}
			<-sa.w.done
		})
		agents[svc] = sa
	}
	low, high := agents["low"], agents["high"]
	testwait.For(t, "both services have points", 60*time.Second, func() error {
		for _, svc := range []string{"low", "high"} {
			if len(points(svc)) < 2 {
				return fmt.Errorf("%s has %d points", svc, len(points(svc)))
			}
		}
		return nil
	})
	if st := n.Status().Space; st == nil || st.State != "ok" || len(st.Stores) != 1 {
		t.Fatalf("space before the fill: %+v, want ok with one store", st)
	}

	// Fill the disk to 4% free: under 5%, over 3%.
	filler := filepath.Join(dataDir, "filler")
	free, err := fill(filler, spaceFS*4/100)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("filled the node's disk: %d bytes free", free)
	testwait.For(t, "the node refuses the low-priority service", 30*time.Second, func() error {
		st := n.Status().Space
		if st == nil || st.State != "critical" || !slices.Equal(st.Refused, []string{"low"}) {
			return fmt.Errorf("space %+v", st)
		}
		if !strings.Contains(st.Detail, "free space on the node") {
			return fmt.Errorf("detail %q says not what to do", st.Detail)
		}
		return nil
	})
	testwait.For(t, "the low agent reports the refusal", 30*time.Second, func() error {
		st, err := agent.ReadStatus(low.spool) // what `lifeboat agent status --json` shows
		if err != nil {
			return err
		}
		if st.State != "nospace" || st.Refusal == nil || st.Refusal.Code != "no space" {
			return fmt.Errorf("state %s (%s), refusal %+v", st.State, st.Detail, st.Refusal)
		}
		for _, want := range []string{"node dc1-n1 refuses new points of service low", "disk low on the node", "MiB spooled", "free space on the node"} {
			if !strings.Contains(st.Detail, want) {
				return fmt.Errorf("detail %q lacks %q", st.Detail, want)
			}
		}
		return nil
	})
	// While low is refused, high keeps committing and low's writes pile up
	// in its spool.
	lowPoints, highPoints := len(points("low")), len(points("high"))
	testwait.For(t, "the high-priority service commits while the low one is refused", 30*time.Second, func() error {
		if n := len(points("high")); n < highPoints+3 {
			return fmt.Errorf("high has %d points, want %d", n, highPoints+3)
		}
		if b := low.a.Status().Backlog; b == 0 {
			return errors.New("the low agent spools nothing")
		}
		return nil
	})
	if got := len(points("low")); got != lowPoints {
		t.Errorf("low got %d new points while refused", got-lowPoints)
	}
	if st := n.Status().Space; st.State != "critical" || !slices.Equal(st.Refused, []string{"low"}) {
		t.Fatalf("space %+v: the disk went past 3%% free during the test; the writers write too much", st)
	}
	if c := strings.Count(logs.String(), `msg="disk nearly full: refusing new points"`); c != 1 {
		t.Errorf("the node logged the refusal %d times, want once", c)
	}

	// Free the space: the node resumes by itself and the spool drains.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the node takes every service again", 30*time.Second, func() error {
		if st := n.Status().Space; st.State != "ok" || len(st.Refused) != 0 {
			return fmt.Errorf("space %+v", st)
		}
		return nil
	})
	testwait.For(t, "the low agent ships again", 60*time.Second, func() error {
		if n := len(points("low")); n <= lowPoints {
			return fmt.Errorf("low still has %d points", n)
		}
		if st := low.a.Status(); st.Refusal != nil || st.State == "nospace" {
			return fmt.Errorf("low agent %s, refusal %+v", st.State, st.Refusal)
		}
		return nil
	})
	for _, sa := range agents {
		close(sa.w.stop)
		<-sa.w.done
		if sa.w.err != nil {
			t.Errorf("writer of %s: %v", sa.service, sa.w.err)
		}
		t.Logf("%s: %d writes acknowledged", sa.service, sa.w.writes)
	}
	for _, sa := range agents {
		testwait.For(t, "the spool of "+sa.service+" drains", 60*time.Second, func() error {
			if b := sa.a.Status().Backlog; b != 0 {
				return fmt.Errorf("backlog %d bytes", b)
			}
			return nil
		})
		sa.cancel()
		<-sa.stopped
	}
	stopTheNode()

	// Every acknowledged write is in the newest point, byte for byte, and
	// nothing is damaged.
	s := mustOpen(t, filepath.Join(dataDir, "store"))
	for _, sa := range []*spaceAgent{low, high} {
		want, err := os.ReadFile(sa.image)
		if err != nil {
			t.Fatal(err)
		}
		pts, err := s.Points(t.Context(), sa.service+"/disk")
		if err != nil {
			t.Fatal(err)
		}
		var newest *blockstore.Point
		for i := range pts {
			if !strings.HasPrefix(pts[i].Name, "barrier/") && (newest == nil || !pts[i].Time.Before(newest.Time)) {
				newest = &pts[i]
			}
		}
		if newest == nil {
			t.Fatalf("no point of %s in the store", sa.service)
		}
		p, v, err := s.Resolve(t.Context(), sa.service+"/disk", newest.ID)
		if err != nil {
			t.Fatalf("resolve the newest point of %s: %v", sa.service, err)
		}
		img := make(blockstoretest.Image, v.Size)
		if err := s.Restore(t.Context(), v, img, blockstore.RestoreOptions{}); err != nil {
			t.Fatalf("restore point %s of %s: %v", p.ID, sa.service, err)
		}
		if i := firstDiff(img, want); i >= 0 {
			t.Errorf("the newest point %s of %s differs from the volume as written at offset %d", p.ID, sa.service, i)
		}
	}
	wantClean(t, s, "after the disk was full")
}
