package cluster

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent"
	"github.com/lifeboat-dr/lifeboat/internal/testwait"
	"github.com/lifeboat-dr/lifeboat/node"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/test/testbin"
)

// TestSuspectPointPassedOver (issue 16 items 4 and 5): real processes, two
// sites and a witness, a scan agent at dc1. After a few points of normal
// churn (a few compressible blocks), the volume is overwritten with random
// data over 60% of its blocks between two scans, as ransomware would.
// That point is "suspect": true in points --admin within one interval of
// its commit, status and metrics say so, the clean point before it is
// pinned, and a dry-run failover at dc2 plans the point before it, saying
// what it passed over and why.
func TestSuspectPointPassedOver(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("-short: this test builds the lifeboat binary and runs four processes for about 20 s; it runs without -short (as CI does)")
	}
	const size = 4 << 20 // 1024 blocks of 4 KiB
	c, dc1, dc2, img, _ := failoverSites(t, size, 31, `rate = "200Mbit"`)
	// Points are judged one by one: a window shorter than the agent's
	// interval (the default, 5 minutes, would take 10 to warm up).
	policy := filepath.Join(c.dir, "cluster.toml")
	src, err := os.ReadFile(policy)
	if err != nil {
		t.Fatal(err)
	}
	src = []byte(strings.Replace(string(src), `rpo = "10s"`, "rpo = \"10s\"\nsuspect = { window = \"1s\" }", 1))
	os.WriteFile(policy, src, 0o644)
	c.lb(0, "policy", "apply", "--admin", dc1.admin, "--tls-dir", c.tlsAdmin, policy)
	// A scan agent with a 2 s interval: the test writes between two scans
	// (a scan of this volume takes a few ms, more on a loaded machine).
	tls := filepath.Join(c.dir, "web1-dc1-tls")
	c.lb(0, "ca", "issue", "--dir", c.ca, "--agent", "--name", "web1", "--site", "dc1", "--service", "web", "--out", tls)
	ag := testbin.Start(t, "web1", filepath.Join(c.dir, "web1-dc1.log"), c.bin, "agent", "run", "--name", "web1", "--service", "web",
		"--volume", "disk="+img, "--node", dc1.quic, "--tls-dir", tls, "--mode", "scan", "--interval", "2s",
		"--spool", filepath.Join(c.dir, "web1-dc1-spool"))
	t.Cleanup(ag.Stop)
	statusFile := filepath.Join(c.dir, "web1-dc1-spool", agent.StatusFile)
	agentStatus := func() (agent.Status, error) {
		var st agent.Status
		b, err := os.ReadFile(statusFile)
		if err == nil {
			err = json.Unmarshal(b, &st)
		}
		return st, err
	}
	// afterCommit waits for an agent's commit after seq prev and returns
	// its status: a write right after it lands between two scans (every
	// 2 s).
	afterCommit := func(what string, prev uint64) agent.Status {
		t.Helper()
		var st agent.Status
		testwait.ForEvery(t, what, 30*time.Second, 2*time.Millisecond, func() error {
			var err error
			st, err = agentStatus()
			if err == nil && (st.Seq <= prev || st.State != "idle") {
				err = fmt.Errorf("agent at seq %d (%s), want past %d", st.Seq, st.State, prev)
			}
			return err
		})
		return st
	}
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := rand.New(rand.NewPCG(31, 1))
	// Normal churn: a few blocks of text a point, for the baseline.
	text := []byte(strings.Repeat("2026-12-07 order 4711 paid in full; ", 4096/36+1)[:4096])
	var seq uint64
	for i := range 5 {
		seq = afterCommit(fmt.Sprintf("churn point %d", i), seq).Seq
		for range 4 {
			if _, err := f.WriteAt(text, r.Int64N(size/4096)*4096); err != nil {
				t.Fatal(err)
			}
		}
	}
	attack := make([]byte, size*6/10/4096*4096)
	for i := range attack {
		attack[i] = byte(r.Uint32())
	}
	before := afterCommit("the last point before the attack", seq)
	if _, err := f.WriteAt(attack, size/10/4096*4096); err != nil {
		t.Fatal(err)
	}
	wrote := time.Now()
	afterCommit("the point of the attack", before.Seq)

	points := func(admin string) []api.KeptPoint {
		t.Helper()
		out := c.lb(0, "points", "--admin", admin, "--tls-dir", c.tlsViewer, "--service", "web", "--json")
		var pts []api.KeptPoint
		if err := json.Unmarshal([]byte(out), &pts); err != nil {
			t.Fatalf("points JSON: %v\n%s", err, out)
		}
		return pts
	}
	find := func(pts []api.KeptPoint, id string) *api.KeptPoint {
		i := slices.IndexFunc(pts, func(p api.KeptPoint) bool { return p.ID == id })
		if i < 0 {
			return nil
		}
		return &pts[i]
	}
	// The attack's point is the agent's next (named AGENT/SEQ).
	var sus *api.KeptPoint
	hitName := fmt.Sprintf("web1/%d", before.Seq+1)
	testbin.Eventually(t, "the attack's point suspect at dc1", 15*time.Second, func() error {
		pts := points(dc1.admin)
		i := slices.IndexFunc(pts, func(p api.KeptPoint) bool { return p.Name == hitName })
		if i < 0 || !pts[i].Suspect {
			var names []string
			for _, p := range pts {
				names = append(names, fmt.Sprintf("%s:%v", p.Name, p.Suspect))
			}
			return fmt.Errorf("point %s not suspect: %s", hitName, strings.Join(names, " "))
		}
		sus = &pts[i]
		return nil
	})
	hit := sus.Point
	t.Logf("the attack's point %s (%s) after %s (seq %d)", hit.ID, hit.Name, before.Point, before.Seq)
	t.Logf("suspect %s after the write (the scan interval is 2 s): %+v", time.Since(wrote).Round(10*time.Millisecond), *sus.Suspicion)
	if s := sus.Suspicion; s.Volume != "web/disk" || s.Changed < 0.59 || s.Changed > 0.61 || s.Incompressible < 0.99 || s.BaselineChanged > 0.05 || s.BaselineIncompressible > 0.5 {
		t.Errorf("suspicion %+v: want web/disk, 60%% changed, all of it incompressible, against a low baseline", *s)
	}
	// Only the attack's point: never the initial copy or the churn.
	pts1 := points(dc1.admin)
	for _, p := range pts1 {
		if p.Suspect && p.ID != hit.ID {
			t.Errorf("point %s at %s is suspect too: %+v", p.ID, p.Time, *p.Suspicion)
		}
	}
	if p := find(pts1, before.Point); p == nil || !slices.Contains(p.Keep, "pinned: clean before suspect "+hit.ID) {
		t.Errorf("the clean point before the attack at dc1: %+v; want it pinned", p)
	}

	// The alert: status and metrics.
	svc, err := c.service(dc1.admin)
	if err != nil {
		t.Fatal(err)
	}
	if len(svc.Suspect) != 1 || svc.Suspect[0].Point != hit.ID {
		t.Errorf("status lists suspect points %+v, want %s", svc.Suspect, hit.ID)
	}
	if out := c.lb(0, "status", "--admin", dc1.admin, "--tls-dir", c.tlsViewer); !strings.Contains(out, "SUSPECT point "+hit.ID) {
		t.Errorf("lifeboat status does not name the suspect point:\n%s", out)
	}
	if n, err := metric(c.viewer, dc2.admin, "lifeboat_suspect_points", `service="web"`); err != nil || n != 1 {
		t.Errorf("lifeboat_suspect_points at dc2 = %v (%v), want 1", n, err)
	}

	// dc2 holds the attack's point and newer ones; failover plans the
	// point before the attack and says why.
	testbin.Eventually(t, "dc2 past the attack", 30*time.Second, func() error {
		cp, err := c.copyAt(dc1.admin, "dc2")
		if err == nil && !cp.PointTime.After(sus.Time) {
			err = fmt.Errorf("dc2 at %s, the attack at %s", cp.PointTime, sus.Time)
		}
		return err
	})
	pts2 := points(dc2.admin)
	var want *api.KeptPoint
	for i := range pts2 {
		if pts2[i].Time.Before(sus.Time) && (want == nil || pts2[i].Time.After(want.Time)) {
			want = &pts2[i]
		}
	}
	if want == nil || want.ID != before.Point {
		t.Logf("dc2's newest point before the attack is %+v, not the agent's last clean point %s (replication coalesced)", want, before.Point)
	}
	if p := find(pts2, hit.ID); p == nil || !p.Suspect {
		t.Errorf("the attack's point at dc2: %+v; want suspect (the mark is the catalog's)", p)
	}
	out := c.lb(0, "failover", "web", "--admin", dc2.admin, "--tls-dir", c.tlsOperator, "--dry-run", "--json")
	var plan *node.FailoverPlan
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var e node.FailoverEvent
		if err := json.Unmarshal([]byte(line), &e); err == nil && e.Plan != nil {
			plan = e.Plan
		}
	}
	if plan == nil {
		t.Fatalf("no plan in:\n%s", out)
	}
	t.Logf("plan: point %s (%s), passed over %s", plan.Point, plan.Chosen, api.PassedText(plan.PassedOver))
	if plan.Point != want.ID || plan.Chosen != "newest worth having" {
		t.Errorf("the plan takes %s (%s), want %s, the newest point before the attack", plan.Point, plan.Chosen, want.ID)
	}
	last := plan.PassedOver[len(plan.PassedOver)-1]
	if last.Point != hit.ID || !strings.HasPrefix(last.Why, "suspect: web/disk: 60% of blocks changed, 100% incompressible") {
		t.Errorf("the plan passed over %+v; want the attack's point last, suspect", plan.PassedOver)
	}
	if n := len(plan.PassedOver); n > 1 && !strings.HasPrefix(plan.PassedOver[0].Why, "after suspect point") {
		t.Errorf("the points after the attack were passed over as %+v", plan.PassedOver[0])
	}
	text2 := c.lb(0, "failover", "web", "--admin", dc2.admin, "--tls-dir", c.tlsOperator, "--dry-run")
	if !strings.Contains(text2, "passed over") || !strings.Contains(text2, "(newest worth having)") {
		t.Errorf("the text plan does not say what it passed over:\n%s", text2)
	}
	// --at overrides, with a warning.
	out = c.lb(0, "failover", "web", "--admin", dc2.admin, "--tls-dir", c.tlsOperator, "--dry-run", "--at", hit.ID)
	if !strings.Contains(out, "WARNING: point "+hit.ID[:12]+", named by --at, is suspect") {
		t.Errorf("a failover --at the suspect point does not warn:\n%s", out)
	}

	// Clearing the suspicion takes the admin role, is audited, and makes
	// the newest point the failover's choice again.
	c.lb(7, "points", "clear-suspect", "--admin", dc2.admin, "--tls-dir", c.tlsOperator, "web", hit.ID[:10])
	out = c.lb(0, "points", "clear-suspect", "--admin", dc2.admin, "--tls-dir", c.tlsAdmin, "web", hit.ID[:10])
	if !strings.Contains(out, "no longer suspect (cleared by ") {
		t.Errorf("clear-suspect said:\n%s", out)
	}
	testbin.Eventually(t, "the point clean at dc1", 10*time.Second, func() error {
		if p := find(points(dc1.admin), hit.ID); p == nil || p.Suspect || p.Suspicion == nil || p.Suspicion.Cleared == "" {
			return fmt.Errorf("point %+v", p)
		}
		return nil
	})
	if p := find(points(dc1.admin), before.Point); p != nil && slices.ContainsFunc(p.Keep, func(k string) bool { return strings.HasPrefix(k, "pinned: clean before") }) {
		t.Errorf("the point before a cleared suspicion is still pinned: %+v", p.Keep)
	}
	if audit := c.lb(0, "audit", "--admin", dc2.admin, "--tls-dir", c.tlsOperator); !strings.Contains(audit, "/v1/points/clear-suspect") {
		t.Errorf("the audit log lacks the clearing:\n%s", audit)
	}
	out = c.lb(0, "failover", "web", "--admin", dc2.admin, "--tls-dir", c.tlsOperator, "--dry-run")
	if strings.Contains(out, "passed over") {
		t.Errorf("after clearing, the plan still passes points over:\n%s", out)
	}
}
