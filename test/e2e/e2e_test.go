// Package e2e tests lifeboat end to end with real processes: a node and an
// agent started from the built binary, a workload writing into a volume
// while they run, and restores compared with what was written.
package e2e

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/internal/workload"
	"github.com/lifeboat-dr/lifeboat/node"
	"github.com/lifeboat-dr/lifeboat/test/testbin"
)

const (
	volSize   = 16 << 20
	blockSize = 64 << 10
	seed      = 7
	writeRate = 500 << 10 // bytes per second, as the issue asks
)

// site is one node with an applied policy protecting service "web", the
// credentials for its agent and an admin operator certificate (opTLS) for
// the CLI's cluster commands.
type site struct {
	bin, dir, admin, quic, agentTLS, opTLS string
	node                                   *testbin.Proc
	nodeArgs                               []string
}

// restartNode starts the node again after a kill, with the same settings.
func (s *site) restartNode(t testing.TB) {
	t.Helper()
	s.node = testbin.Start(t, "node", filepath.Join(s.dir, "node.log"), s.bin, s.nodeArgs...)
	// The process is started, not yet serving: callers go on to the admin
	// API at once.
	testbin.WaitLeader(t, s.bin, s.admin, s.opTLS, "dc1-n1")
}

func startSite(t testing.TB, image string) *site {
	t.Helper()
	return startSiteVolumes(t, []string{"disk"}, []string{image})
}

// startSiteVolumes is startSite for service "web" with the given volumes
// (names and image paths), all volSize bytes.
func startSiteVolumes(t testing.TB, names, images []string) *site {
	t.Helper()
	s := &site{bin: testbin.Build(t), dir: t.TempDir()}
	ca := filepath.Join(s.dir, "ca")
	testbin.Run(t, s.bin, 0, "ca", "init", "--dir", ca)
	nodeTLS := filepath.Join(s.dir, "node-tls")
	s.agentTLS = filepath.Join(s.dir, "agent-tls")
	testbin.Run(t, s.bin, 0, "ca", "issue", "--dir", ca, "--name", "dc1-n1", "--site", "dc1", "--out", nodeTLS)
	testbin.Run(t, s.bin, 0, "ca", "issue", "--dir", ca, "--agent", "--name", "web1", "--site", "dc1", "--service", "web", "--out", s.agentTLS)
	s.opTLS = filepath.Join(s.dir, "operator-tls")
	testbin.Run(t, s.bin, 0, "ca", "issue", "--dir", ca, "--operator", "e2e-admin", "--role", "admin", "--out", s.opTLS)
	s.admin, s.quic = testbin.FreePort(t), testbin.FreePort(t)
	s.nodeArgs = []string{"node", "run",
		"--name", "dc1-n1", "--site", "dc1", "--data-dir", filepath.Join(s.dir, "node"),
		"--listen-gossip", testbin.FreePort(t), "--listen-quic", s.quic, "--listen-admin", s.admin,
		"--tls-dir", nodeTLS, "--gossip-profile", "test", "--barrier-interval", "1s"}
	s.node = testbin.Start(t, "node", filepath.Join(s.dir, "node.log"), s.bin, s.nodeArgs...)
	t.Cleanup(func() {
		s.node.Stop()
		if t.Failed() {
			t.Logf("node log:\n%s", s.node.Tail(60))
		}
	})
	testbin.WaitLeader(t, s.bin, s.admin, s.opTLS, "dc1-n1")
	policy := filepath.Join(s.dir, "cluster.toml")
	src := []byte("[[site]]\nname = \"dc1\"\n\n[[service]]\nname = \"web\"\nprimary = \"dc1\"\n  [[service.server]]\n  name = \"web1\"\n")
	for i, name := range names {
		src = fmt.Appendf(src, "    [[service.server.volume]]\n    name = %q\n    path = %q\n    size = \"%dB\"\n    block_size = \"%dB\"\n",
			name, images[i], volSize, blockSize)
	}
	os.WriteFile(policy, src, 0o644)
	testbin.Run(t, s.bin, 0, "policy", "apply", "--admin", s.admin, "--tls-dir", s.opTLS, policy)
	return s
}

// points lists the node's points of service web.
func (s *site) points(t *testing.T) []blockstore.Point {
	t.Helper()
	out := testbin.Run(t, s.bin, 0, "points", "--admin", s.admin, "--tls-dir", s.opTLS, "--service", "web", "--json")
	var pts []blockstore.Point
	if err := json.Unmarshal([]byte(out), &pts); err != nil {
		t.Fatalf("points JSON: %v\n%s", err, out)
	}
	return pts
}

// restore fetches the volume at a point through the admin API.
func (s *site) restore(t *testing.T, at string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "restored.img")
	testbin.Run(t, s.bin, 0, "restore", "--admin", s.admin, "--tls-dir", s.opTLS, "--volume", "web/disk", "--at", at, "--out", out)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// logged is one write of the workload, with when it started and ended.
type logged struct {
	seq        int
	off        int64
	n          int
	start, end time.Time
}

// writer writes the workload's stream into an image at writeRate and logs
// every write, until stop is closed.
type writer struct {
	mu  sync.Mutex
	log []logged
}

func (w *writer) run(t *testing.T, path string, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Error(err)
		return
	}
	defer f.Close()
	gen := workload.NewWriter(volSize, seed)
	next := time.Now()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-time.After(time.Until(next)):
		}
		wr := gen.Next()
		start := time.Now()
		if _, err := f.WriteAt(wr.Data, wr.Off); err != nil {
			t.Error(err)
			return
		}
		end := time.Now()
		w.mu.Lock()
		w.log = append(w.log, logged{seq: i, off: wr.Off, n: len(wr.Data), start: start, end: end})
		w.mu.Unlock()
		next = next.Add(time.Duration(float64(len(wr.Data)) / writeRate * float64(time.Second)))
	}
}

// replay rebuilds the image from the initial one and the logged writes.
// For the window [from, to] it returns, per block, every content hash the
// block had at some moment of the window: the state after the writes that
// ended before from, and after each later write that started by to.
func (w *writer) allowed(initial []byte, from, to time.Time) []map[[32]byte]bool {
	w.mu.Lock()
	log := append([]logged(nil), w.log...)
	w.mu.Unlock()
	img := append([]byte(nil), initial...)
	gen := workload.NewWriter(volSize, seed)
	allowed := make([]map[[32]byte]bool, volSize/blockSize)
	i := 0
	for ; i < len(log) && log[i].end.Before(from); i++ {
		wr := gen.Next()
		copy(img[wr.Off:], wr.Data)
	}
	for b := range allowed {
		allowed[b] = map[[32]byte]bool{sha256.Sum256(img[b*blockSize : (b+1)*blockSize]): true}
	}
	for ; i < len(log) && !log[i].start.After(to); i++ {
		wr := gen.Next()
		copy(img[wr.Off:], wr.Data)
		for b := wr.Off / blockSize; b <= (wr.Off+int64(len(wr.Data))-1)/blockSize; b++ {
			allowed[b][sha256.Sum256(img[b*blockSize:(b+1)*blockSize])] = true
		}
	}
	return allowed
}

// final is the image after every logged write.
func (w *writer) final(initial []byte) []byte {
	w.mu.Lock()
	n := len(w.log)
	w.mu.Unlock()
	img := append([]byte(nil), initial...)
	gen := workload.NewWriter(volSize, seed)
	for range n {
		wr := gen.Next()
		copy(img[wr.Off:], wr.Data)
	}
	return img
}

func makeImage(t testing.TB) (string, []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := workload.Image(f, volSize, seed); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(volSize); err != nil {
		t.Fatal(err)
	}
	f.Close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, b
}

// TestScanAgentShipsToNode: the workload writes at 500 KiB/s while a scan
// agent (1 s interval) ships to a node; every point restored through the
// admin API holds, for each block, a content the block really had while
// that scan ran; after the writes stop, the next point equals the image
// byte for byte.
func TestScanAgentShipsToNode(t *testing.T) {
	t.Parallel()
	image, initial := makeImage(t)
	s := startSite(t, image)
	spool := filepath.Join(s.dir, "agent")
	agent := testbin.Start(t, "agent", filepath.Join(s.dir, "agent.log"), s.bin, "agent", "run",
		"--name", "web1", "--service", "web", "--volume", "disk="+image, "--node", s.quic,
		"--tls-dir", s.agentTLS, "--spool", spool, "--mode", "scan", "--interval", "1s")
	t.Cleanup(func() {
		agent.Stop()
		if t.Failed() {
			t.Logf("agent log:\n%s", agent.Tail(40))
		}
	})
	w := &writer{}
	stop, done := make(chan struct{}), make(chan struct{})
	go w.run(t, image, stop, done)

	seen := map[string]time.Time{} // point ID → when the test first saw it
	testbin.Eventually(t, "five points while writing", 90*time.Second, func() error {
		for _, p := range s.points(t) {
			if _, ok := seen[p.ID]; !ok {
				seen[p.ID] = time.Now()
			}
		}
		if len(seen) < 5 {
			return fmt.Errorf("%d points", len(seen))
		}
		return nil
	})
	close(stop)
	<-done
	stopped := time.Now()
	pts := s.points(t)
	for _, p := range pts {
		if p.Time.After(stopped) {
			continue
		}
		to, ok := seen[p.ID]
		if !ok {
			to = time.Now()
		}
		got := s.restore(t, p.ID)
		allowed := w.allowed(initial, p.Time, to)
		for b := range allowed {
			if !allowed[b][sha256.Sum256(got[b*blockSize:(b+1)*blockSize])] {
				t.Errorf("point %s (%s): block %d holds content it never had between %s and %s",
					p.ID, p.Time.Format(time.RFC3339Nano), b, p.Time.Format(time.RFC3339Nano), to.Format(time.RFC3339Nano))
			}
		}
	}
	// After the writes stop, a point equal to the final image appears.
	want := w.final(initial)
	testbin.Eventually(t, "a point equal to the final image", 30*time.Second, func() error {
		var last blockstore.Point
		for _, p := range s.points(t) {
			if p.Time.After(stopped) {
				last = p
			}
		}
		if last.ID == "" {
			return errors.New("no point after the writes stopped")
		}
		if got := s.restore(t, last.ID); string(got) != string(want) {
			return fmt.Errorf("point %s differs from the final image", last.ID)
		}
		return nil
	})
	st := testbin.Run(t, s.bin, 0, "agent", "status", "--spool", spool)
	t.Logf("agent status:\n%s", st)
	// The newest point, or one the agent made since (it goes on
	// scanning), reaches the catalog as the service's watermark.
	newest := s.points(t)
	since := newest[len(newest)-1].Time
	testbin.Eventually(t, "the watermark in the catalog", 20*time.Second, func() error {
		recent := map[string]bool{}
		for _, p := range s.points(t) {
			if !p.Time.Before(since) {
				recent[p.ID] = true
			}
		}
		var ns node.Status
		if err := json.Unmarshal([]byte(testbin.Run(t, s.bin, 0, "status", "--admin", s.admin, "--tls-dir", s.opTLS, "--json")), &ns); err != nil {
			return err
		}
		for _, svc := range ns.Services {
			for _, w := range svc.Watermarks {
				if svc.Name == "web" && w.Site == "dc1" && recent[w.Point] && w.Size == volSize {
					return nil
				}
			}
		}
		return fmt.Errorf("services %+v", ns.Services)
	})
	t.Logf("node status:\n%s", testbin.Run(t, s.bin, 0, "status", "--admin", s.admin, "--tls-dir", s.opTLS))
}
