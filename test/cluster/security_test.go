package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node"
	"github.com/lifeboat-dr/lifeboat/test/testbin"
)

// securityPolicy protects web and db (one 1 MiB volume each) at dc1, with
// hook as web's drill and start hook when given.
func securityPolicy(hook string) []byte {
	hooks := ""
	if hook != "" {
		hooks = fmt.Sprintf("  [service.hooks]\n  start = %q\n  drill = %q\n", hook, hook)
	}
	return []byte(sites("dc1", "dc2") +
		service("web", "dc1", hooks, server("web1", "disk", "/dev/web", "1MiB", "")+copyAt("dc2", `tier = "warm"`)) +
		service("db", "dc1", "", server("db1", "disk", "/dev/db", "1MiB", "")))
}

// agentFor starts a scan agent of service on path at dc1-n1 and returns
// its credentials.
func agentFor(t *testing.T, h *harness, service, name, path string) *mesh.Creds {
	t.Helper()
	_, creds := runAgent(t, h, "dc1-n1", service, name, path, 200*time.Millisecond)
	return creds
}

// TestAdminAPIRefusesWhoWasNotLetIn: on a real cluster (real QUIC, Raft,
// memberlist and HTTPS), a client with no certificate, a viewer, an agent
// certificate and a revoked operator each try a drill, a failover, a
// policy with a new hook, an image read and an NBD-style ranged read. Each
// is refused with a clear error, the hook never runs, and the audit log
// holds every attempt with the identity that made it. An admin and an
// operator, for contrast, get through.
func TestAdminAPIRefusesWhoWasNotLetIn(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.first("dc1-n1", "dc1")
	h.add("dc2-n1", "dc2", node.RoleNode)
	h.applyPolicy(securityPolicy(""))
	webAgent := agentFor(t, h, "web", "web1", randomImage(t, 1<<20, 7))
	h.eventually("a point of web", 30*time.Second, func() error {
		_, err := newest(t, h.node("dc1-n1"))
		return err
	})
	addr := h.node("dc1-n1").AdminAddr()
	dial := func(c *mesh.Creds) *node.Client {
		cl, err := node.NewClient(addr, c)
		if err != nil {
			t.Fatal(err)
		}
		return cl
	}
	admin := dial(h.ca.Operator("root-admin", mesh.RoleAdmin))
	operator := dial(h.ca.Operator("olga", mesh.RoleOperator))
	malloryCreds := h.ca.Operator("mallory", mesh.RoleOperator)
	mallory := dial(malloryCreds)

	// Before revocation mallory reads an image like any operator.
	if _, err := mallory.Points(t.Context(), "web", ""); err != nil {
		t.Fatalf("mallory before revocation: %v", err)
	}
	if _, err := admin.Revoke(t.Context(), node.RevokeRequest{Certificates: []node.Revocation{{Serial: malloryCreds.Self.Serial, Name: "mallory", Kind: "operator"}}, Reason: "test"}); err != nil {
		t.Fatalf("revoke: %v", err)
	}

	marker := filepath.Join(t.TempDir(), "hook-ran")
	hookPolicy := securityPolicy("touch " + marker)
	callers := []struct {
		name string
		cl   *node.Client
	}{
		{"anonymous", dial(nil)},
		{"vera", dial(h.ca.Operator("vera", mesh.RoleViewer))},
		{"web1", dial(h.ca.Agent("web1", "dc1", "web"))},
		{"mallory", mallory},
	}
	attempts := []struct {
		name string
		do   func(*node.Client) error
	}{
		{"drill", func(c *node.Client) error {
			_, err := c.Drill(t.Context(), node.DrillRequest{Service: "web"}, nil)
			return err
		}},
		{"failover", func(c *node.Client) error {
			_, err := c.Failover(t.Context(), node.FailoverRequest{Service: "web", Site: "dc2"}, nil)
			return err
		}},
		{"policy with a hook", func(c *node.Client) error {
			_, err := c.ApplyPolicy(t.Context(), "cluster.toml", hookPolicy)
			return err
		}},
		{"image", func(c *node.Client) error {
			f, err := os.CreateTemp(t.TempDir(), "img")
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			_, _, err = c.Image(t.Context(), "web/disk", "latest", "", f)
			return err
		}},
		{"nbd read", func(c *node.Client) error {
			im, err := c.OpenImage(t.Context(), "web/disk", "latest")
			if err != nil {
				return err
			}
			_, err = im.ReadAt(make([]byte, 4096), 0)
			return err
		}},
	}
	for _, c := range callers {
		for _, a := range attempts {
			err := a.do(c.cl)
			if err == nil {
				t.Errorf("%s: %s succeeded", c.name, a.name)
				continue
			}
			if !errors.Is(err, node.ErrForbidden) {
				t.Errorf("%s: %s: %v, want a refusal (ErrForbidden)", c.name, a.name, err)
			}
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("a refused caller's hook ran")
	}
	if p := h.node("dc1-n1").Catalog().Policy; strings.Contains(p.Source, marker) {
		t.Error("a refused policy was applied")
	}

	// The permitted: an operator reads the image, an admin applies the
	// policy with the hook (the hook still runs only on a failover).
	if _, err := operator.OpenImage(t.Context(), "web/disk", "latest"); err != nil {
		t.Errorf("operator image read: %v", err)
	}
	if _, err := operator.ApplyPolicy(t.Context(), "cluster.toml", hookPolicy); !errors.Is(err, node.ErrForbidden) {
		t.Errorf("operator policy apply: %v, want refused (admin only)", err)
	}
	if _, err := admin.ApplyPolicy(t.Context(), "../../etc/shadow", hookPolicy); err == nil || !node.IsBadRequest(err) {
		t.Errorf("policy file name with a path: %v, want a bad request", err)
	}
	if _, err := admin.ApplyPolicy(t.Context(), "cluster.toml", hookPolicy); err != nil {
		t.Errorf("admin policy apply: %v", err)
	}
	// A request carrying a command is refused whoever sends it, and so is
	// a form post a browser page could make.
	olga := h.ca.Operator("olga2", mesh.RoleOperator)
	if code, body := postRaw(t, olga, addr, "/v1/drill", "application/json", `{"service":"web","hook":"touch `+marker+`"}`); !strings.Contains(body, "unknown field") {
		t.Errorf("drill request with a hook: %d %s, want refused for its unknown field", code, body)
	}
	if code, _ := postRaw(t, olga, addr, "/v1/failback?service=web", "application/x-www-form-urlencoded", "a=b"); code != http.StatusUnsupportedMediaType {
		t.Errorf("form post: %d, want %d", code, http.StatusUnsupportedMediaType)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("a hook in a request ran")
	}

	// The audit log holds every refused attempt with its identity.
	var log []node.AuditEntry
	h.eventually("the attempts in the audit log", 20*time.Second, func() error {
		var err error
		if log, err = admin.Audit(t.Context(), time.Time{}, 0); err != nil {
			return err
		}
		for _, c := range callers {
			for _, path := range []string{"POST /v1/drill", "POST /v1/failover", "PUT /v1/policy", "GET /v1/image"} {
				if !hasEntry(log, c.name, path, "refused") {
					return fmt.Errorf("no refused %s by %s among %d entries", path, c.name, len(log))
				}
			}
		}
		if !hasEntry(log, "root-admin", "PUT /v1/policy", "ok") || !hasEntry(log, "root-admin", "POST /v1/revoke", "ok") || !hasEntry(log, "olga", "GET /v1/image", "ok") {
			return errors.New("the permitted calls are not all in the log")
		}
		return nil
	})

	// A revoked agent certificate: the node closes its connection and
	// refuses its new handshakes, within seconds.
	if _, err := admin.Revoke(t.Context(), node.RevokeRequest{Certificates: []node.Revocation{{Serial: webAgent.Self.Serial, Name: "web1", Kind: "agent"}}}); err != nil {
		t.Fatalf("revoke the agent: %v", err)
	}
	revoked := time.Now()
	h.eventually("the revoked agent refused", 10*time.Second, func() error {
		pc, err := h.net.Node("web1", "dc1").ListenPacket("127.0.0.1:0")
		if err != nil {
			return err
		}
		ep, err := mesh.NewEndpoint(mesh.EndpointOptions{Creds: webAgent, Conn: pc, Logger: h.logger("web1-revoked")})
		if err != nil {
			return err
		}
		defer ep.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		s, err := ep.Dial(ctx, h.node("dc1-n1").QUICAddr(), mesh.KindIngest)
		if err == nil {
			s.Close()
			return errors.New("the revoked agent still connects")
		}
		return nil
	})
	t.Logf("revoked agent refused %s after the revocation", time.Since(revoked).Round(time.Millisecond))

	// Four-eyes: under approvals = 2 a hook change waits for a second,
	// different admin.
	fourEyes := []byte(strings.Replace(string(hookPolicy), "[[site]]", "approvals = 2\n[[site]]", 1))
	if _, err := admin.ApplyPolicy(t.Context(), "cluster.toml", fourEyes); err != nil {
		t.Fatalf("apply approvals = 2: %v", err)
	}
	changed := []byte(strings.ReplaceAll(string(fourEyes), "touch "+marker, "touch "+marker+".2"))
	p, err := admin.ApplyPolicy(t.Context(), "cluster.toml", changed)
	if err != nil || p.ApprovedBy != "" || len(p.Changes) == 0 {
		t.Fatalf("hook change under four-eyes: %+v, %v; want it pending", p, err)
	}
	if cur := h.node("dc1-n1").Catalog().Policy; strings.Contains(cur.Source, ".2") {
		t.Fatal("the hook change applied without a second admin")
	}
	if _, err := admin.ApprovePolicy(t.Context(), p.Version); err == nil {
		t.Error("the proposer approved its own policy")
	}
	second := dial(h.ca.Operator("second-admin", mesh.RoleAdmin))
	if a, err := second.ApprovePolicy(t.Context(), p.Version); err != nil || a.ApprovedBy != "second-admin" || !strings.Contains(a.Source, ".2") {
		t.Fatalf("second admin's approval: %+v, %v", a, err)
	}

	for _, e := range log {
		if e.Who == "web1" && e.Kind != "agent" || e.Who == "mallory" && e.Result == "refused" && !strings.Contains(e.Detail, "revoked") {
			b, _ := json.Marshal(e)
			t.Errorf("audit entry does not say who or why: %s", b)
		}
	}
}

// postRaw posts body to path at addr with creds, for requests the typed
// client does not make, and returns the status and the body.
func postRaw(t *testing.T, creds *mesh.Creds, addr, path, ctype, body string) (int, string) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: creds.ClientTLS()}, Timeout: 10 * time.Second}
	resp, err := hc.Post("https://"+addr+path, ctype, strings.NewReader(body))
	if err != nil {
		t.Fatalf("post %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func hasEntry(log []node.AuditEntry, who, action, result string) bool {
	for _, e := range log {
		if e.Who == who && e.Action == action && e.Result == result {
			return true
		}
	}
	return false
}

// TestAgentCannotReachAnotherServicesBlocks: service web's agent tries the
// three ways to learn or read service db's blocks: ask which of db's block
// IDs the node lacks (an existence oracle), commit a web point naming db's
// blocks without sending them, and read db's image. All are refused; db's
// own agent, for contrast, is told the node holds them.
func TestAgentCannotReachAnotherServicesBlocks(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.first("dc1-n1", "dc1")
	h.applyPolicy(securityPolicy(""))
	dbImg := randomImage(t, 1<<20, 11)
	agentFor(t, h, "db", "db1", dbImg)
	h.eventually("a point of db", 30*time.Second, func() error {
		pts, err := h.node("dc1-n1").Points(t.Context(), "db", "")
		if err != nil || len(pts) == 0 {
			return fmt.Errorf("no point of db (%v)", err)
		}
		return nil
	})
	// db's block IDs, as anyone holding the cluster's dedup key computes them.
	webCreds := h.ca.Agent("web1", "dc1", "web")
	var key blockstore.Key
	copy(key[:], webCreds.DedupKey)
	hasher, err := blockstore.NewHasher(key)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(dbImg)
	if err != nil {
		t.Fatal(err)
	}
	var ids []blockstore.ID
	for off := 0; off < len(data); off += 64 << 10 {
		ids = append(ids, hasher.ID(data[off:off+64<<10]))
	}

	// 1. The oracle: web's agent offers db's IDs; the node wants them all.
	s, fr := ingestStream(t, h, webCreds, "web", "web1")
	if err := mesh.WriteFrame(s, mesh.FrameOffer, mesh.AppendOffer(nil, ids)); err != nil {
		t.Fatal(err)
	}
	p, err := fr.Expect(mesh.FrameWant)
	if err != nil {
		t.Fatal(err)
	}
	want, err := mesh.DecodeWant(p, len(ids))
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range want {
		if !w {
			t.Fatalf("web's agent learned that the node holds db's block %d", i)
		}
	}
	// Control: db's own agent is told they are held.
	ds, dfr := ingestStream(t, h, h.ca.Agent("db1", "dc1", "db"), "db", "db1")
	mesh.WriteFrame(ds, mesh.FrameOffer, mesh.AppendOffer(nil, ids))
	if p, err = dfr.Expect(mesh.FrameWant); err != nil {
		t.Fatal(err)
	}
	if want, _ = mesh.DecodeWant(p, len(ids)); want[0] {
		t.Fatal("db's own agent is asked for a block db holds: the control is broken")
	}
	ds.Close()

	// 2. A web point naming db's blocks, none of them sent: refused.
	cs := make([]mesh.BlockChange, len(ids))
	for i, id := range ids {
		cs[i] = mesh.BlockChange{Block: int64(i), ID: id}
	}
	mesh.WriteFrame(s, mesh.FrameChanges, mesh.AppendChanges(nil, "disk", cs))
	c, _ := json.Marshal(mesh.Commit{Seq: 1, Time: time.Now()})
	mesh.WriteFrame(s, mesh.FrameCommit, c)
	_, err = fr.Expect(mesh.FrameCommitted)
	var re *mesh.RemoteError
	if !errors.As(err, &re) || re.Code != mesh.CodeForbidden {
		t.Fatalf("commit naming db's blocks: %v, want refused as forbidden", err)
	}
	if pts, _ := h.node("dc1-n1").Points(t.Context(), "web", ""); len(pts) != 0 {
		t.Fatalf("web has %d points", len(pts))
	}

	// 3. Reading db's image with the agent's certificate: refused.
	cl, err := node.NewClient(h.node("dc1-n1").AdminAddr(), webCreds)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.OpenImage(t.Context(), "db/disk", "latest"); !errors.Is(err, node.ErrForbidden) {
		t.Fatalf("agent image read: %v, want refused", err)
	}
}

// ingestStream opens an ingest stream to dc1-n1 with creds and says hello
// for service's 1 MiB disk.
func ingestStream(t *testing.T, h *harness, creds *mesh.Creds, service, agent string) (*mesh.Stream, *mesh.FrameReader) {
	t.Helper()
	pc, err := h.net.Node(mesh.NodeID(agent), "dc1").ListenPacket("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ep, err := mesh.NewEndpoint(mesh.EndpointOptions{Creds: creds, Conn: pc, Logger: h.logger(agent)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	s, err := ep.Dial(t.Context(), h.node("dc1-n1").QUICAddr(), mesh.KindIngest)
	if err != nil {
		t.Fatal(err)
	}
	hello, _ := json.Marshal(mesh.Hello{Version: mesh.IngestVersion, Service: service, Agent: agent, Volumes: []mesh.HelloVolume{{Name: "disk", Size: 1 << 20}}})
	if err := mesh.WriteFrame(s, mesh.FrameHello, hello); err != nil {
		t.Fatal(err)
	}
	fr := mesh.NewFrameReader(s, mesh.KindIngest.MaxFrame())
	if _, err := fr.Expect(mesh.FrameWelcome); err != nil {
		t.Fatalf("hello as %s: %v", agent, err)
	}
	return s, fr
}

// TestDrillHookRunsOnOperatorMachine: `lifeboat drill --hook CMD` runs CMD
// here, as the operator, against the point served over NBD from the node
// through the admin API (qemu-img reads it whole and it equals the
// volume); the node records the drill with the hook's text and runs
// nothing itself.
func TestDrillHookRunsOnOperatorMachine(t *testing.T) {
	t.Parallel()
	qemuImg := testbin.NeedTool(t, "qemu-img", "qemu-utils")
	bin := testbin.Build(t)
	h := newHarness(t)
	h.first("dc1-n1", "dc1")
	h.applyPolicy(securityPolicy(""))
	img := randomImage(t, 1<<20, 5)
	agentFor(t, h, "web", "web1", img)
	h.eventually("a point of web", 30*time.Second, func() error {
		_, err := newest(t, h.node("dc1-n1"))
		return err
	})
	out := filepath.Join(t.TempDir(), "read.raw")
	hook := fmt.Sprintf(`%s convert -f raw -O raw "$LIFEBOAT_NBD_DISK" %s && echo read "$LIFEBOAT_POINT"`, qemuImg, out)
	opDir := h.ca.OperatorDir("olga", mesh.RoleOperator)
	res := testbin.Run(t, bin, 0, "drill", "web", "--admin", h.node("dc1-n1").AdminAddr(), "--tls-dir", opDir, "--hook", hook)
	if !strings.Contains(res, "PASSED") {
		t.Fatalf("drill output:\n%s", res)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(img)
	if !bytes.Equal(got, want) {
		t.Fatal("the image the hook read over NBD differs from the volume")
	}
	d := h.node("dc1-n1").Catalog().Services["web"].Drills
	if len(d) != 1 || d[0].Where != "operator" || d[0].HookCommand != hook || d[0].By != "olga" || !d[0].Passed {
		t.Fatalf("drill record %+v", d)
	}
	// A failing hook is a failed drill, recorded as such.
	testbin.Run(t, bin, 1, "drill", "web", "--admin", h.node("dc1-n1").AdminAddr(), "--tls-dir", opDir, "--hook", "exit 3")
	if d := h.node("dc1-n1").Catalog().Services["web"].Drills; len(d) != 2 || d[1].Passed {
		t.Fatalf("failed drill record %+v", d)
	}
}

// TestHooksRunAsHooksUser: a node with hooks_user runs the policy's hooks
// as that user, with none of the node's groups.
func TestHooksRunAsHooksUser(t *testing.T) {
	t.Parallel()
	if os.Getuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root to switch users (CI runs as root)")
		}
		t.Skip("needs root to switch users")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	// A directory the hooks user may write in (t.TempDir's parent is 0700).
	out, err := os.MkdirTemp("", "lifeboat-hooks-user-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(out) })
	if err := os.Chmod(out, 0o777); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t)
	h.opts = func(o *node.Options) { o.HooksUser = "nobody" }
	h.first("dc1-n1", "dc1")
	h.add("dc2-n1", "dc2", node.RoleNode)
	hook := fmt.Sprintf(`echo "$(id -u) $(id -G)" > %s/ids`, out)
	pol := strings.Replace(string(securityPolicy("")), "  [[service.server]]\n  name = \"web1\"", fmt.Sprintf("  [service.hooks]\n  drill = %q\n  [[service.server]]\n  name = \"web1\"", hook), 1)
	h.applyPolicy([]byte(pol))
	agentFor(t, h, "web", "web1", randomImage(t, 1<<20, 3))
	h.eventually("web's point at dc2", 30*time.Second, func() error {
		pts, err := h.node("dc2-n1").Points(t.Context(), "web", "")
		if err != nil || len(pts) == 0 {
			return fmt.Errorf("no point at dc2 (%v)", err)
		}
		return nil
	})
	cl, err := node.NewClient(h.node("dc2-n1").AdminAddr(), h.ca.Operator("olga", mesh.RoleOperator))
	if err != nil {
		t.Fatal(err)
	}
	d, err := cl.Drill(t.Context(), node.DrillRequest{Service: "web"}, nil)
	if err != nil || !d.Passed {
		t.Fatalf("drill: %+v, %v", d, err)
	}
	b, err := os.ReadFile(filepath.Join(out, "ids"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(string(b)), nobody.Uid+" "+nobody.Gid; got != want {
		t.Fatalf("the hook ran as uid and groups %q, want %q", got, want)
	}
	if d.HookCommand != hook || d.Where != "node" {
		t.Errorf("drill record names hook %q where %q", d.HookCommand, d.Where)
	}
}
