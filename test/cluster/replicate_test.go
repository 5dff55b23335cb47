package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent"
	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/internal/clock"
	"github.com/lifeboat-dr/lifeboat/internal/testwait"
	"github.com/lifeboat-dr/lifeboat/internal/workload"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node"
	"github.com/lifeboat-dr/lifeboat/test/testbin"
)

// replPolicy protects service web (one 8 MiB volume) at dc1 with a copy
// at dc2 of the given tier; extra is appended to the link table.
func replPolicy(tier, link string) []byte {
	return []byte(sites("dc1", "dc2", "dc3") + "[[link]]\nbetween = [\"dc1\", \"dc2\"]\n" + link + "\n" +
		service("web", "dc1", "", server("web1", "disk", "/dev/web", "8MiB", "")+copyAt("dc2", fmt.Sprintf("tier = %q", tier))))
}

// replSites starts dc1-n1, dc2-n1 and the witness dc3-w1, applies the
// policy and waits until both data nodes hold web at their site.
func replSites(t testing.TB, policy []byte, dc2 ...mesh.NodeID) *harness {
	h := newHarness(t)
	h.first("dc1-n1", "dc1")
	if len(dc2) == 0 {
		dc2 = []mesh.NodeID{"dc2-n1"}
	}
	for _, n := range dc2 {
		h.add(n, "dc2", node.RoleNode)
	}
	h.add("dc3-w1", "dc3", node.RoleWitness)
	h.applyPolicy(policy)
	h.eventually("holders placed", 20*time.Second, func() error {
		cat := h.node("dc1-n1").Catalog()
		if cat.Holder("web", "dc1") != "dc1-n1" || cat.Holder("web", "dc2") == "" {
			return fmt.Errorf("holders %v", cat.Services["web"])
		}
		return nil
	})
	return h
}

// startAgent runs a scan agent for web/disk on path, shipping to dc1-n1.
func startAgent(t testing.TB, h *harness, path string, interval time.Duration) *agent.Agent {
	return startAgentAt(t, h, "dc1-n1", path, interval)
}

// startAgentAt runs a scan agent for web/disk on path, pointed at node at.
func startAgentAt(t testing.TB, h *harness, at mesh.NodeID, path string, interval time.Duration) *agent.Agent {
	a, _ := runAgent(t, h, at, "web", "web1", path, interval)
	return a
}

// runAgent runs scan agent name of service at dc1 on path (its volume
// disk), pointed at node at, until the test ends, and returns it with its
// credentials.
func runAgent(t testing.TB, h *harness, at mesh.NodeID, service, name, path string, interval time.Duration) (*agent.Agent, *mesh.Creds) {
	t.Helper()
	creds := h.ca.Agent(mesh.NodeID(name), "dc1", service)
	a, err := agent.New(agent.Options{
		Name: name, Service: service, Volumes: []agent.Volume{{Name: "disk", Path: path}},
		Node: h.node(at).QUICAddr(), Creds: creds,
		Interval: interval, SpoolDir: t.TempDir(), Network: h.net.Node(mesh.NodeID(name), "dc1"),
		Logger: h.logger(name),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return a, creds
}

// imageAt reads web/disk at a point from a node's admin API, as an
// operator (image reads need that role).
func imageAt(t *testing.T, h *harness, n mesh.NodeID, at string) []byte {
	t.Helper()
	c, err := node.NewClient(h.node(n).AdminAddr(), h.ca.Operator("image-reader", mesh.RoleOperator))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(t.TempDir(), "img")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, _, err := c.Image(t.Context(), "web/disk", at, "", f); err != nil {
		t.Fatalf("image of web/disk at %s from %s: %v", at, n, err)
	}
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// watermark returns the point a site holds for web per the catalog.
func watermark(h *harness, from mesh.NodeID, site string) node.Watermark {
	if s := h.node(from).Catalog().Services["web"]; s != nil {
		return s.Watermarks[site]
	}
	return node.Watermark{}
}

func newest(t *testing.T, n *node.Node) (blockstore.Point, error) { return newestTB(t, n) }

func newestTB(t testing.TB, n *node.Node) (blockstore.Point, error) {
	pts, err := n.Points(t.Context(), "web", "")
	if err != nil || len(pts) == 0 {
		return blockstore.Point{}, fmt.Errorf("points of web at %s: %v (%d)", n.Name(), err, len(pts))
	}
	return pts[len(pts)-1], nil
}

// TestReplicationWarm: points made at dc1 reach dc2's holder, which holds
// them under the same IDs with byte-identical images, and the catalog's
// dc2 watermark follows. A volume rewritten between points crosses as map
// diffs: the second round sends far fewer bytes than the first.
func TestReplicationWarm(t *testing.T) {
	t.Parallel()
	h := replSites(t, replPolicy("warm", ""))
	img, f := workloadImage(t)
	startAgent(t, h, img, 300*time.Millisecond)
	caughtUp := func(what string) blockstore.Point {
		var pt blockstore.Point
		h.eventually(what, 60*time.Second, func() error {
			var err error
			if pt, err = newest(t, h.node("dc1-n1")); err != nil {
				return err
			}
			if w := watermark(h, "dc1-n1", "dc2"); w.Point != pt.ID {
				return fmt.Errorf("dc2 watermark %q, dc1 newest %s", w.Point, pt.ID)
			}
			return nil
		})
		return pt
	}
	p1 := caughtUp("first point at dc2")
	if got, want := imageAt(t, h, "dc2-n1", p1.ID), imageAt(t, h, "dc1-n1", p1.ID); !bytes.Equal(got, want) {
		t.Fatalf("dc2's image at %s differs from dc1's", p1.ID)
	}
	// Rewrite 5% of the volume.
	if _, err := workload.Mutate(f, 8<<20, 2, 5); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(img)
	h.eventually("a newer point at dc1", 30*time.Second, func() error {
		if p, err := newest(t, h.node("dc1-n1")); err != nil || p.ID == p1.ID {
			return fmt.Errorf("no new point (%v)", err)
		}
		return nil
	})
	p2 := caughtUp("second point at dc2")
	got := imageAt(t, h, "dc2-n1", p2.ID)
	if !bytes.Equal(got, b) {
		t.Fatalf("dc2's image at %s is not the volume as written", p2.ID)
	}
}

// workloadImage writes the project's 8 MiB workload image (seed 1) to a
// new file and returns its path and the file, open for writing, closed at
// the end of the test.
func workloadImage(t *testing.T) (string, *os.File) {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := workload.Image(f, 8<<20, 1); err != nil {
		t.Fatal(err)
	}
	return img, f
}

// randomImage writes size bytes of incompressible data to a new file.
func randomImage(t testing.TB, size int64, seed uint64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := 0; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// throttleRates are the link rates the throttle is measured at, in
// bytes per second: 2, 10 and 50 Mbit/s.
var throttleRates = []float64{2e6 / 8, 10e6 / 8, 50e6 / 8}

// measureThrottle replicates incompressible data from dc1 to dc2 under
// each of throttleRates in turn (a new policy each time, applied while the
// transfer runs) and returns the rate measured on the test network over
// about window (the time its rate takes for that many bytes): QUIC packets
// between the sites, less the Raft and gossip background measured before
// replication starts.
func measureThrottle(tb testing.TB, window time.Duration) []float64 {
	var need float64
	for _, r := range throttleRates {
		need += r * (window + 3*time.Second).Seconds()
	}
	size := (int64(need)/(1<<20) + 8) << 20
	policy := func(rate string) []byte {
		return bytes.Replace(replPolicy("warm", "rate = \""+rate+"\""), []byte(`size = "8MiB"`), fmt.Appendf(nil, `size = "%dB"`, size), 1)
	}
	h := replSites(tb, policy("2Mbit"))
	background := backgroundRate(h)
	tb.Logf("background (raft, gossip) dc1 to dc2: %.1f KB/s", background/1e3)
	startAgent(tb, h, randomImage(tb, size, 3), time.Hour)
	h.eventually("replication under way", 60*time.Second, func() error {
		if p := h.node("dc1-n1").Catalog().Services["web"].Progress["dc2"]; p.Sending == "" {
			return fmt.Errorf("progress %+v", p)
		}
		return nil
	})
	viewer := h.ca.Operator("metrics-viewer", mesh.RoleViewer)
	var got []float64
	for i, rate := range throttleRates {
		if i > 0 {
			mbit := fmt.Sprintf("%dMbit", int(rate*8/1e6))
			h.applyPolicy(policy(mbit))
		}
		// The replicator rereads the policy every second.
		waitLinkRate(h, viewer, rate, 10*time.Second)
		r := sentRate(h, rate*window.Seconds(), 3*window) - background
		tb.Logf("policy %.1f Mbit/s: measured %.2f Mbit/s over %s (%+.1f%%)", rate*8/1e6, r*8/1e6, window, (r/rate-1)*100)
		got = append(got, r)
	}
	return got
}

// waitLinkRate waits until dc1-n1's throttle on its link to dc2 says it
// sends at rate (bytes per second, within 1%).
func waitLinkRate(h *harness, viewer *mesh.Creds, rate float64, timeout time.Duration) {
	h.t.Helper()
	h.eventually(fmt.Sprintf("the dc1-dc2 throttle at %.2f Mbit/s", rate*8/1e6), timeout, func() error {
		got, err := metric(viewer, h.node("dc1-n1").AdminAddr(), "lifeboat_link_rate_bytes_per_second", `link="dc1-dc2"`)
		if err == nil && math.Abs(got-rate) > rate/100 {
			err = fmt.Errorf("at %.2f Mbit/s", got*8/1e6)
		}
		return err
	})
}

// sentRate waits until n more bytes crossed from dc1 to dc2 on the test
// network and returns the rate they crossed at, in bytes per second.
func sentRate(h *harness, n float64, timeout time.Duration) float64 {
	h.t.Helper()
	start, t0 := h.net.Sent("dc1", "dc2"), time.Now()
	var sent int64
	var took time.Duration
	testwait.ForEvery(h.t, fmt.Sprintf("%.0f bytes from dc1 to dc2", n), timeout, 10*time.Millisecond, func() error {
		sent, took = h.net.Sent("dc1", "dc2")-start, time.Since(t0)
		if float64(sent) < n {
			return fmt.Errorf("%d bytes in %s", sent, took.Round(time.Millisecond))
		}
		return nil
	})
	return float64(sent) / took.Seconds()
}

// backgroundRate returns the rate of the Raft and gossip traffic from dc1
// to dc2 on the test network before replication starts: the time 20 KB
// of it take to cross.
func backgroundRate(h *harness) float64 {
	h.t.Helper()
	return sentRate(h, 20_000, time.Minute)
}

// TestReplicationThrottle: replication never exceeds the link's rate (5%
// over at most, over 3 s windows at 2, 10 and 50 Mbit/s), and a new
// policy's rate takes over while a transfer runs. The figures for a quiet
// machine over 10 s windows: BenchmarkReplicationThrottle. A starved CPU
// delivers less, so the lower bound here is loose.
func TestReplicationThrottle(t *testing.T) {
	t.Parallel()
	got := measureThrottle(t, 3*time.Second)
	for i, rate := range throttleRates {
		if d := got[i]/rate - 1; d > 0.05 || d < -0.5 {
			t.Errorf("policy %.1f Mbit/s: measured %.2f Mbit/s (%+.1f%%), want at most +5%% (and no less than -50%%)", rate*8/1e6, got[i]*8/1e6, d*100)
		}
	}
}

// BenchmarkReplicationThrottle measures replication against the link's
// rate over 10 s windows at 2, 10 and 50 Mbit/s (issue 5: within 5%):
//
//	go test -run '^$' -bench ReplicationThrottle -benchtime 1x ./test/cluster
func BenchmarkReplicationThrottle(b *testing.B) {
	for range b.N {
		got := measureThrottle(b, 10*time.Second)
		for i, rate := range throttleRates {
			b.ReportMetric((got[i]/rate-1)*100, fmt.Sprintf("%%dev@%gMbit", rate*8/1e6))
		}
	}
}

// TestReplicationResumesAfterCut: the link is cut in the middle of a
// transfer until the sender has lost its session, and healed; the
// transfer resumes from what the receiver holds. The bytes that crossed in total
// stay close to the volume's size: nothing the receiver already had was
// sent again.
func TestReplicationResumesAfterCut(t *testing.T) {
	t.Parallel()
	const size = 48 << 20
	policy := bytes.Replace(replPolicy("warm", `rate = "40Mbit"`), []byte(`size = "8MiB"`), fmt.Appendf(nil, `size = "%dB"`, size), 1)
	h := replSites(t, policy)
	background := backgroundRate(h)
	startAgent(t, h, randomImage(t, size, 4), time.Hour)
	start, tStart := h.net.Sent("dc1", "dc2"), time.Now()
	h.eventually("40% across", 60*time.Second, func() error {
		if got := h.net.Sent("dc1", "dc2") - start; got < size*4/10 {
			return fmt.Errorf("%d bytes across", got)
		}
		return nil
	})
	viewer := h.ca.Operator("metrics-viewer", mesh.RoleViewer)
	replErrors := func() (float64, error) {
		return metric(viewer, h.node("dc1-n1").AdminAddr(), "lifeboat_replication_errors_total", `service="web"`, `site="dc2"`)
	}
	errs0, err := replErrors()
	if err != nil {
		t.Fatal(err)
	}
	h.net.Cut("dc1-n1", "dc2-n1")
	cutAt := time.Now()
	t.Logf("link cut after %d MB", (h.net.Sent("dc1", "dc2")-start)/1e6)
	// The cut lasts until the sender has lost its session and failed to
	// dial again: the transfer that follows is a new session, which must
	// resume from what dc2 holds.
	h.eventually("the sender's session lost and a redial failed", 2*time.Minute, func() error {
		n, err := replErrors()
		if err == nil && n < errs0+2 {
			err = fmt.Errorf("%.0f replication errors since the cut", n-errs0)
		}
		return err
	})
	t.Logf("link healed after %s", time.Since(cutAt).Round(time.Millisecond))
	h.net.Heal()
	var pt blockstore.Point
	h.eventually("dc2 has the point", 2*time.Minute, func() error {
		var err error
		if pt, err = newest(t, h.node("dc1-n1")); err != nil {
			return err
		}
		if w := watermark(h, "dc1-n1", "dc2"); w.Point != pt.ID {
			return fmt.Errorf("dc2 watermark %q, want %s", w.Point, pt.ID)
		}
		return nil
	})
	total := float64(h.net.Sent("dc1", "dc2")-start) - background*time.Since(tStart).Seconds()
	t.Logf("%.1f MB crossed for a %d MB volume (%.3fx)", total/1e6, size>>20, total/size)
	// QUIC framing and the offer and change frames cost a few percent; a
	// transfer that started over would cost 40% more.
	if total > size*1.10 {
		t.Errorf("%.1f MB crossed for a %d MiB volume: blocks were sent again", total/1e6, size>>20)
	}
	if got, want := imageAt(t, h, "dc2-n1", pt.ID), imageAt(t, h, "dc1-n1", pt.ID); !bytes.Equal(got, want) {
		t.Errorf("dc2's image at %s differs from dc1's", pt.ID)
	}
}

// TestHolderTakesOver: dc2 has two nodes; when the one holding web dies,
// the other becomes the holder after HolderTimeout and receives the
// service's points from dc1, so the copy at dc2 goes on.
func TestHolderTakesOver(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.opts = func(o *node.Options) { o.HolderTimeout = 3 * time.Second }
	h.first("dc1-n1", "dc1")
	h.add("dc2-n1", "dc2", node.RoleNode)
	h.add("dc2-n2", "dc2", node.RoleNode)
	h.add("dc3-w1", "dc3", node.RoleWitness)
	h.applyPolicy(replPolicy("warm", ""))
	img := randomImage(t, 8<<20, 5)
	startAgent(t, h, img, 300*time.Millisecond)
	var first mesh.NodeID
	h.eventually("dc2 holds web", 60*time.Second, func() error {
		pt, err := newest(t, h.node("dc1-n1"))
		if err != nil {
			return err
		}
		w := watermark(h, "dc1-n1", "dc2")
		if w.Point != pt.ID {
			return fmt.Errorf("dc2 watermark %q, want %s", w.Point, pt.ID)
		}
		first = w.Node
		return nil
	})
	other := mesh.NodeID("dc2-n1")
	if first == other {
		other = "dc2-n2"
	}
	// restore --admin at the node of dc2 that does not hold web reads
	// from the one that does, and says so.
	bin := testbin.Build(t)
	restored := filepath.Join(t.TempDir(), "restored.img")
	_, res, code := testbin.RunCode(bin, "restore", "--admin", h.node(other).AdminAddr(), "--tls-dir", h.ca.OperatorDir("olga", mesh.RoleOperator),
		"--volume", "web/disk", "--out", restored)
	if code != 0 || !strings.Contains(res, string(first)+" holds web at site dc2") {
		t.Errorf("restore through %s, which does not hold web: exit %d, stderr %q; want exit 0 naming the holder %s", other, code, res, first)
	}
	if got, err := os.ReadFile(restored); err != nil || !bytes.Equal(got, mustRead(t, img)) {
		t.Errorf("restore through the non-holder: %v, byte-exact %v", err, err == nil && bytes.Equal(got, mustRead(t, img)))
	}
	h.kill(first)
	// A new point after the holder died.
	b, _ := os.ReadFile(img)
	copy(b[1<<20:], bytes.Repeat([]byte("after the holder died "), 1000))
	if err := os.WriteFile(img, b, 0o644); err != nil {
		t.Fatal(err)
	}
	var pt blockstore.Point
	h.eventually(string(other)+" takes over and holds the newest point", 60*time.Second, func() error {
		var err error
		if pt, err = newest(t, h.node("dc1-n1")); err != nil {
			return err
		}
		if hd := h.node("dc1-n1").Catalog().Holder("web", "dc2"); hd != other {
			return fmt.Errorf("holder at dc2 is %q", hd)
		}
		if w := watermark(h, "dc1-n1", "dc2"); w.Point != pt.ID || w.Node != other {
			return fmt.Errorf("dc2 watermark %s from %s, want %s from %s", w.Point, w.Node, pt.ID, other)
		}
		return nil
	})
	if got := imageAt(t, h, other, pt.ID); !bytes.Equal(got, b) {
		t.Fatalf("%s's image at %s is not the volume as written", other, pt.ID)
	}
}

// TestReplicationHot: a hot copy keeps standby images at dc2 that equal
// the primary's volume at the point they are at, byte for byte, and follow
// new points; the catalog's dc2 watermark names the standby's point.
func TestReplicationHot(t *testing.T) {
	t.Parallel()
	h := replSites(t, replPolicy("hot", ""))
	img, f := workloadImage(t)
	startAgent(t, h, img, 300*time.Millisecond)
	standbyAt := func(what string, not string) blockstore.Point {
		var pt blockstore.Point
		h.eventually(what, 60*time.Second, func() error {
			var err error
			if pt, err = newest(t, h.node("dc1-n1")); err != nil {
				return err
			}
			if pt.ID == not {
				return fmt.Errorf("no new point yet")
			}
			if w := watermark(h, "dc1-n1", "dc2"); w.Standby != pt.ID {
				return fmt.Errorf("dc2 standby at %q, dc1 newest %s", w.Standby, pt.ID)
			}
			return nil
		})
		return pt
	}
	check := func(pt blockstore.Point) {
		t.Helper()
		path, at, ok := h.node("dc2-n1").StandbyPath("web", "web/disk")
		if !ok || at.ID != pt.ID {
			t.Fatalf("standby image: ok %v at %s, want %s", ok, at.ID, pt.ID)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if want := imageAt(t, h, "dc1-n1", pt.ID); !bytes.Equal(got, want) {
			t.Fatalf("standby image %s differs from dc1's volume at %s", path, pt.ID)
		}
	}
	p1 := standbyAt("standby at the first point", "")
	check(p1)
	if _, err := workload.Mutate(f, 8<<20, 2, 5); err != nil {
		t.Fatal(err)
	}
	check(standbyAt("standby at a newer point", p1.ID))
}

// TestReplicationRefusals: the receiving node refuses, with a reason,
// replication streams from an agent certificate, from a node that does not
// hold the service at the primary site, for a site without a copy, and
// points whose changes do not rebuild the sender's roots or whose blocks
// do not hash to their IDs; nothing refused is committed.
func TestReplicationRefusals(t *testing.T) {
	t.Parallel()
	h := replSites(t, replPolicy("warm", ""))
	dc2 := h.node("dc2-n1")
	open := func(creds *mesh.Creds, hello mesh.ReplHello) (*mesh.Stream, *mesh.FrameReader, func()) {
		pc, err := mesh.OS().ListenPacket("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ep, err := mesh.NewEndpoint(mesh.EndpointOptions{Creds: creds, Conn: pc})
		if err != nil {
			t.Fatal(err)
		}
		s, err := ep.Dial(t.Context(), dc2.QUICAddr(), mesh.KindBlocks)
		if err != nil {
			ep.Close()
			t.Fatalf("open a blocks stream as %s: %v", creds.Self.Name, err)
		}
		b, _ := json.Marshal(hello)
		if err := mesh.WriteFrame(s, mesh.FrameReplHello, b); err != nil {
			t.Fatal(err)
		}
		return s, mesh.NewFrameReader(s, mesh.KindBlocks.MaxFrame()), func() { s.Close(); ep.Close() }
	}
	refused := func(fr *mesh.FrameReader, want string) {
		t.Helper()
		for {
			typ, p, err := fr.Next()
			if err != nil {
				t.Fatalf("want a refusal containing %q, got %v", want, err)
			}
			if typ != mesh.FrameTypeError {
				continue
			}
			re, err := mesh.ParseError(p)
			if err != nil || !strings.Contains(re.Message, want) {
				t.Fatalf("refusal %v (%v), want one containing %q", re, err, want)
			}
			return
		}
	}
	hello := mesh.ReplHello{Version: mesh.ReplVersion, Service: "web", Site: "dc1", Tier: "warm"}
	for _, tc := range []struct {
		name  string
		creds *mesh.Creds
		hello mesh.ReplHello
		want  string
	}{
		{"not the primary's holder", h.ca.Node("dc1-n9", "dc1"), hello, "only the holder replicates it"},
		{"hello site is not the certificate's", h.ca.Node("dc1-n1", "dc1"), mesh.ReplHello{Version: 1, Service: "web", Site: "dc3", Tier: "warm"}, "the certificate says dc1"},
		{"unknown service", h.ca.Node("dc1-n1", "dc1"), mesh.ReplHello{Version: 1, Service: "nope", Site: "dc1", Tier: "warm"}, "not in the applied policy"},
	} {
		_, fr, done := open(tc.creds, tc.hello)
		refused(fr, tc.want)
		done()
	}

	// An agent certificate cannot even open a blocks stream.
	pc, _ := mesh.OS().ListenPacket("127.0.0.1:0")
	ep, err := mesh.NewEndpoint(mesh.EndpointOptions{Creds: h.ca.Agent("web1", "dc1", "web"), Conn: pc})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ep.Dial(t.Context(), dc2.QUICAddr(), mesh.KindBlocks); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Errorf("agent opening a blocks stream: err = %v, want forbidden", err)
	}
	ep.Close()

	// A point whose changes do not give its root.
	s, fr, done := open(h.ca.Node("dc1-n1", "dc1"), hello)
	defer done()
	if _, err := fr.Expect(mesh.FrameReplWelcome); err != nil {
		t.Fatal(err)
	}
	block := bytes.Repeat([]byte("lifeboat"), 8192)
	var key blockstore.Key
	copy(key[:], h.ca.Node("dc1-n1", "dc1").DedupKey)
	hs, err := blockstore.NewHasher(key)
	if err != nil {
		t.Fatal(err)
	}
	id := hs.ID(block)
	begin := mesh.ReplBegin{Point: blockstore.Point{ID: "0123456789abcdef", Name: "web1/1", Group: "web", Time: time.Now().UTC(),
		Volumes: []blockstore.VolumeState{{Name: "web/disk", Root: id, Size: 8 << 20, BlockSize: 64 << 10, Used: 1}}}}
	b, _ := json.Marshal(begin)
	mesh.WriteFrame(s, mesh.FrameReplBegin, b)
	mesh.WriteFrame(s, mesh.FrameBlocks, mesh.AppendBlock(nil, mesh.BlockRecord{ID: id, RawLen: len(block), Data: block}))
	mesh.WriteFrame(s, mesh.FrameChanges, mesh.AppendChanges(nil, "disk", []mesh.BlockChange{{Block: 0, ID: id}}))
	mesh.WriteFrame(s, mesh.FrameReplCommit, nil)
	refused(fr, "base and diff disagree")

	// A block that does not hash to its ID.
	s2, fr2, done2 := open(h.ca.Node("dc1-n1", "dc1"), hello)
	defer done2()
	if _, err := fr2.Expect(mesh.FrameReplWelcome); err != nil {
		t.Fatal(err)
	}
	mesh.WriteFrame(s2, mesh.FrameReplBegin, b)
	bad := append([]byte(nil), block...)
	bad[0] ^= 1
	mesh.WriteFrame(s2, mesh.FrameBlocks, mesh.AppendBlock(nil, mesh.BlockRecord{ID: id, RawLen: len(bad), Data: bad}))
	refused(fr2, "hashes to")

	if pts, err := dc2.Points(t.Context(), "web", ""); err != nil || len(pts) != 0 {
		t.Fatalf("dc2 holds %d points (%v) after refusals, want none", len(pts), err)
	}
}

// TestReplicationCoalesces: with a 3 s coalescing window on the link, a
// block rewritten at every one of dc1's many points crosses about once per
// window; each point dc2 keeps is one of dc1's, restorable byte for byte.
func TestReplicationCoalesces(t *testing.T) {
	t.Parallel()
	h := replSites(t, replPolicy("warm", `coalesce = "3s"`))
	img := randomImage(t, 8<<20, 6)
	startAgent(t, h, img, 100*time.Millisecond)
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Rewrite the same two blocks for 10 s.
	block := make([]byte, 128<<10)
	end := time.Now().Add(10 * time.Second)
	pace := time.NewTicker(50 * time.Millisecond) // an application's pace, not a wait
	defer pace.Stop()
	for i := 0; time.Now().Before(end); i++ {
		for j := range block {
			block[j] = byte(i + j)
		}
		if _, err := f.WriteAt(block, 1<<20); err != nil {
			t.Fatal(err)
		}
		<-pace.C
	}
	// Scans go on making points of the unchanged volume: wait until dc2
	// holds the final content.
	h.eventually("dc2 holds the final content", 30*time.Second, func() error {
		p1, err := newest(t, h.node("dc1-n1"))
		if err != nil {
			return err
		}
		p2, err := newest(t, h.node("dc2-n1"))
		if err != nil {
			return err
		}
		if p1.Volumes[0].Root != p2.Volumes[0].Root {
			return fmt.Errorf("dc2's newest point %s has another root than dc1's %s", p2.ID, p1.ID)
		}
		return nil
	})
	at1, err := h.node("dc1-n1").Points(t.Context(), "web", "")
	if err != nil {
		t.Fatal(err)
	}
	at2, err := h.node("dc2-n1").Points(t.Context(), "web", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dc1 made %d points, dc2 received %d", len(at1), len(at2))
	// About one point per 3 s window.
	if len(at1) < 3*len(at2) {
		t.Errorf("dc1 made %d points and dc2 received %d: not coalesced", len(at1), len(at2))
	}
	ids := map[string]bool{}
	for _, p := range at1 {
		ids[p.ID] = true
	}
	for _, p := range at2 {
		if !ids[p.ID] {
			t.Errorf("dc2 holds point %s, which dc1 never made", p.ID)
			continue
		}
		if !bytes.Equal(imageAt(t, h, "dc2-n1", p.ID), imageAt(t, h, "dc1-n1", p.ID)) {
			t.Errorf("point %s differs between dc1 and dc2", p.ID)
		}
	}
}

// TestReplicationCold: a cold copy with raw exports gets its first point
// at once and exports it into dc2's archive directory: a sparse raw image
// per volume with a manifest and SHA256SUMS that `sha256sum -c` accepts,
// equal to the primary's volume at that point.
func TestReplicationCold(t *testing.T) {
	t.Parallel()
	archiveDir := t.TempDir()
	policy := bytes.Replace(replPolicy("cold", ""), []byte(`tier = "cold"`), []byte("tier = \"cold\"\n  schedule = \"every 1h\"\n  export = \"raw\""), 1)
	policy = bytes.Replace(policy, []byte("[[site]]\nname = \"dc2\"\n"), fmt.Appendf(nil, "[[site]]\nname = \"dc2\"\narchive_dir = %q\n", archiveDir), 1)
	h := replSites(t, policy)
	img, _ := workloadImage(t)
	startAgent(t, h, img, time.Hour)
	var w node.Watermark
	h.eventually("dc2 exported a point", 60*time.Second, func() error {
		if w = watermark(h, "dc1-n1", "dc2"); w.Export == "" {
			return fmt.Errorf("watermark %+v", w)
		}
		return nil
	})
	dirs, err := filepath.Glob(filepath.Join(archiveDir, "web", "*-"+w.Export[:12]))
	if err != nil || len(dirs) != 1 {
		t.Fatalf("export of %s in %s: %v %v", w.Export, archiveDir, dirs, err)
	}
	var m struct {
		Point   struct{ ID string }
		Volumes []struct {
			File   string
			SHA256 string
		}
	}
	b, err := os.ReadFile(filepath.Join(dirs[0], "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &m); err != nil || m.Point.ID != w.Export || len(m.Volumes) != 1 {
		t.Fatalf("manifest %s: %v", b, err)
	}
	got, err := os.ReadFile(filepath.Join(dirs[0], m.Volumes[0].File))
	if err != nil {
		t.Fatal(err)
	}
	if want := imageAt(t, h, "dc1-n1", w.Export); !bytes.Equal(got, want) {
		t.Fatal("the exported image differs from dc1's volume at that point")
	}
	if sum := sha256.Sum256(got); hex.EncodeToString(sum[:]) != m.Volumes[0].SHA256 {
		t.Fatal("the exported image does not match its manifest's sha256")
	}
	if _, err := exec.LookPath("sha256sum"); err == nil {
		cmd := exec.Command("sha256sum", "-c", "SHA256SUMS")
		cmd.Dir = dirs[0]
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sha256sum -c: %v\n%s", err, out)
		}
	}
}

// TestReplicationScheduleAndPriority: services web (hot copy) and arch
// (cold copy) share the dc1-dc2 link. While both transfer, hot gets most
// of it and cold still moves. The link runs at 2 Mbit/s with a schedule of
// 16 Mbit/s from a wall-clock minute on; the nodes' clock is set so that
// minute starts a few seconds into the test, and the new rate is in force
// within a second.
func TestReplicationScheduleAndPriority(t *testing.T) {
	t.Parallel()
	// The nodes' wall clock: real time until both copies transfer, then
	// shifted so that the schedule's minute starts 6 s later.
	switchAt := time.Now().Truncate(time.Minute).Add(3 * time.Minute)
	var offset atomic.Int64
	h := newHarness(t)
	h.opts = func(o *node.Options) {
		o.Clock = clock.WithNow(func() time.Time { return time.Now().Add(time.Duration(offset.Load())) })
	}
	h.first("dc1-n1", "dc1")
	h.add("dc2-n1", "dc2", node.RoleNode)
	h.add("dc3-w1", "dc3", node.RoleWitness)
	const size = 24 << 20
	sw := switchAt.UTC()
	policy := sites("dc1", "dc2", "dc3") + fmt.Sprintf(`[[link]]
between = ["dc1", "dc2"]
rate = "2Mbit"
timezone = "UTC"
  [[link.schedule]]
  hours = "%02d:%02d-%02d:%02d"
  rate = "16Mbit"
`, sw.Hour(), sw.Minute(), sw.Add(30*time.Minute).Hour(), sw.Add(30*time.Minute).Minute())
	for _, svc := range []struct{ name, copy string }{{"web", `tier = "hot"`}, {"arch", "tier = \"cold\"\n  schedule = \"daily 03:00\""}} {
		policy += service(svc.name, "dc1", "", server(svc.name+"1", "disk", "/dev/"+svc.name, fmt.Sprintf("%dB", size), "")+copyAt("dc2", svc.copy))
	}
	h.applyPolicy([]byte(policy))
	h.eventually("holders placed", 20*time.Second, func() error {
		cat := h.node("dc1-n1").Catalog()
		if cat.Holder("arch", "dc2") == "" || cat.Holder("web", "dc2") == "" {
			return fmt.Errorf("holders not placed")
		}
		return nil
	})
	// Both services' first points are made at once; then both transfer.
	for i, svc := range []string{"web", "arch"} {
		runAgent(t, h, "dc1-n1", svc, svc+"1", randomImage(t, size, uint64(10+i)), time.Hour)
	}
	admin := h.node("dc1-n1").AdminAddr()
	viewer := h.ca.Operator("metrics-viewer", mesh.RoleViewer)
	tierBytes := func() (hot, cold float64) {
		hot, _ = metric(viewer, admin, "lifeboat_replication_sent_bytes_total", `tier="hot"`)
		cold, _ = metric(viewer, admin, "lifeboat_replication_sent_bytes_total", `tier="cold"`)
		return hot, cold
	}
	h.eventually("both copies transferring", 20*time.Second, func() error {
		if hot, cold := tierBytes(); hot == 0 || cold == 0 {
			return fmt.Errorf("hot %.0f, cold %.0f bytes sent", hot, cold)
		}
		return nil
	})
	realSwitch := time.Now().Add(6 * time.Second)
	offset.Store(int64(switchAt.Sub(realSwitch)))
	waitLinkRate(h, viewer, 2e6/8, time.Until(realSwitch))
	// Before the switch: the time 2.5 s of the rate (625 KB) take to
	// cross. Not across by 500 ms before the switch means less than
	// about 0.9 Mbit/s, which fails below.
	h0, c0 := tierBytes()
	t0 := time.Now()
	var h1, c1 float64
	testwait.Until(time.Until(realSwitch)-500*time.Millisecond, 50*time.Millisecond, func() error {
		if h1, c1 = tierBytes(); h1-h0+c1-c0 < 2.5*2e6/8 {
			return errors.New("not yet")
		}
		return nil
	})
	el := time.Since(t0).Seconds()
	before := (h1 - h0 + c1 - c0) / el
	share := (h1 - h0) / (h1 - h0 + c1 - c0)
	t.Logf("before the schedule: %.2f Mbit/s, hot %.1f%%, cold %.1f%%", before*8/1e6, share*100, (1-share)*100)
	// Never over the rate; less only on a starved CPU.
	if before > 2.1e6/8 || before < 1e6/8 {
		t.Errorf("before the schedule: %.2f Mbit/s, want about 2 (at most 2.1)", before*8/1e6)
	}
	// 16:1 gives hot 94%; a starved hot sender leaves cold a bit more.
	if share < 0.7 || share > 0.99 {
		t.Errorf("hot got %.1f%% of the link while both waited, want most of it but not all", share*100)
	}
	// Once the throttle runs at the schedule's rate, 2 s of it (32 Mbit),
	// or 4 s at the least rate that passes (8 Mbit/s).
	waitLinkRate(h, viewer, 16e6/8, time.Until(realSwitch)+time.Second)
	h2, c2 := tierBytes()
	t2 := time.Now()
	var after float64
	h.eventually("32 Mbit sent at the schedule's rate", 4*time.Second, func() error {
		h3, c3 := tierBytes()
		sent := h3 - h2 + c3 - c2
		if sent < 2*16e6/8 {
			return fmt.Errorf("%.0f bytes sent", sent)
		}
		after = sent / time.Since(t2).Seconds()
		return nil
	})
	t.Logf("once the schedule is in force: %.2f Mbit/s", after*8/1e6)
	// The schedule is in force: far above the old 2 Mbit/s, never above
	// the new rate.
	if after < 8e6/8 || after > 16e6/8*1.05 {
		t.Errorf("once the schedule is in force: %.2f Mbit/s, want about 16 (at least 8, at most 16.8)", after*8/1e6)
	}
}

// TestPrimaryHolderFetches: dc1 has two nodes. When the one holding web
// dies, the other takes over, first fetches the newest point from dc2's
// copy, and the agent, redirected to it, then sends only what changed
// since; dc2 goes on receiving from the new holder.
func TestPrimaryHolderFetches(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.opts = func(o *node.Options) { o.HolderTimeout = 3 * time.Second }
	h.first("dc1-n1", "dc1")
	h.add("dc1-n2", "dc1", node.RoleNode)
	h.add("dc2-n1", "dc2", node.RoleNode)
	h.add("dc3-w1", "dc3", node.RoleWitness)
	h.applyPolicy(replPolicy("warm", ""))
	var holder mesh.NodeID
	h.eventually("web placed at dc1", 20*time.Second, func() error {
		if holder = h.node("dc1-n1").Catalog().Holder("web", "dc1"); holder == "" {
			return fmt.Errorf("no holder")
		}
		return nil
	})
	other := mesh.NodeID("dc1-n1")
	if holder == other {
		other = "dc1-n2"
	}
	const size = 8 << 20
	img := randomImage(t, size, 7)
	a := startAgentAt(t, h, other, img, 300*time.Millisecond)
	var p1 blockstore.Point
	h.eventually("dc2 holds web", 60*time.Second, func() error {
		var err error
		if p1, err = newest(t, h.node(holder)); err != nil {
			return err
		}
		if w := watermark(h, other, "dc2"); w.Point != p1.ID {
			return fmt.Errorf("dc2 watermark %q, want %s", w.Point, p1.ID)
		}
		return nil
	})
	h.kill(holder)
	sentBefore := a.Status().SentBytes
	b, _ := os.ReadFile(img)
	copy(b[2<<20:], bytes.Repeat([]byte("written after the holder died "), 1000))
	if err := os.WriteFile(img, b, 0o644); err != nil {
		t.Fatal(err)
	}
	var p2 blockstore.Point
	h.eventually(string(other)+" holds web with the new write, and so does dc2", 60*time.Second, func() error {
		if hd := h.node(other).Catalog().Holder("web", "dc1"); hd != other {
			return fmt.Errorf("holder at dc1 is %q", hd)
		}
		var err error
		if p2, err = newest(t, h.node(other)); err != nil {
			return err
		}
		if !bytes.Equal(imageAt(t, h, other, p2.ID), b) {
			return fmt.Errorf("newest point %s at %s is not the volume as written", p2.ID, other)
		}
		if w := watermark(h, other, "dc2"); w.Point != p2.ID {
			return fmt.Errorf("dc2 at %q, want %s", w.Point, p2.ID)
		}
		return nil
	})
	pts, err := h.node(other).Points(t.Context(), "web", "")
	if err != nil {
		t.Fatal(err)
	}
	fetched := false
	for _, p := range pts {
		fetched = fetched || p.ID == p1.ID
	}
	if !fetched {
		t.Errorf("%s does not hold %s, the point dc2 had: nothing was fetched", other, p1.ID)
	}
	sent := a.Status().SentBytes - sentBefore
	t.Logf("after the takeover the agent sent %d KiB for a %d MiB volume", sent>>10, size>>20)
	if sent > size/4 {
		t.Errorf("the agent sent %d KiB to the new holder: it resent the volume instead of what changed", sent>>10)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
