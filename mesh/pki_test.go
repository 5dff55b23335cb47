package mesh_test

import (
	"crypto/tls"
	"errors"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/mesh/meshtest"
)

func TestInitCAAndIssue(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca")
	if err := mesh.InitCA(ca); err != nil {
		t.Fatalf("init CA: %v", err)
	}
	for name, mode := range map[string]os.FileMode{"ca.crt": 0o644, "ca.key": 0o600, "gossip.key": 0o600, "dedup.key": 0o600} {
		fi, err := os.Stat(filepath.Join(ca, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s mode %v, want %v", name, fi.Mode().Perm(), mode)
		}
	}
	if err := mesh.InitCA(ca); err == nil {
		t.Error("InitCA over an existing CA succeeded")
	}

	nodeDir := filepath.Join(dir, "n1")
	if err := mesh.Issue(ca, mesh.IssueRequest{Name: "n1", Site: "dc1", Hosts: []string{"n1.example", "10.0.0.1"}}, nodeDir); err != nil {
		t.Fatalf("issue node: %v", err)
	}
	c, err := mesh.LoadCreds(nodeDir)
	if err != nil {
		t.Fatalf("load node: %v", err)
	}
	if want := (mesh.Identity{Name: "n1", Site: "dc1"}); noSerial(c.Self) != want {
		t.Errorf("self = %+v, want %+v", c.Self, want)
	}
	if len(c.GossipKey) != 32 || len(c.DedupKey) != 32 {
		t.Errorf("keys: gossip %d bytes, dedup %d bytes; want 32 each", len(c.GossipKey), len(c.DedupKey))
	}
	if got := c.Cert.Leaf.URIs[0].String(); got != "lifeboat://node/dc1/n1" {
		t.Errorf("URI SAN = %s", got)
	}
	if fi, _ := os.Stat(filepath.Join(nodeDir, "cert.key")); fi.Mode().Perm() != 0o600 {
		t.Errorf("cert.key mode %v", fi.Mode().Perm())
	}
	if err := mesh.Issue(ca, mesh.IssueRequest{Name: "n1", Site: "dc1"}, nodeDir); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("re-issue into the same dir: err = %v, want refusal", err)
	}

	agentDir := filepath.Join(dir, "a1")
	if err := mesh.Issue(ca, mesh.IssueRequest{Name: "a1", Site: "dc1", Agent: true, Service: "erp"}, agentDir); err != nil {
		t.Fatalf("issue agent: %v", err)
	}
	a, err := mesh.LoadCreds(agentDir)
	if err != nil {
		t.Fatalf("load agent: %v", err)
	}
	if want := (mesh.Identity{Name: "a1", Site: "dc1", Agent: true, Service: "erp"}); noSerial(a.Self) != want {
		t.Errorf("agent self = %+v", a.Self)
	}
	if a.GossipKey != nil {
		t.Error("agent got the gossip key")
	}
	if _, err := os.Stat(filepath.Join(agentDir, "gossip.key")); !errors.Is(err, os.ErrNotExist) {
		t.Error("gossip.key written for an agent")
	}
}

func TestIssueRefusesBadRequests(t *testing.T) {
	t.Parallel()
	ca := meshtest.CA(t)
	cases := map[string]mesh.IssueRequest{
		"no name":             {Site: "dc1"},
		"bad name":            {Name: "a/b", Site: "dc1"},
		"no site":             {Name: "n"},
		"agent no service":    {Name: "a", Site: "dc1", Agent: true},
		"node with a service": {Name: "n", Site: "dc1", Service: "erp"},
		"negative validity":   {Name: "n", Site: "dc1", Validity: -time.Hour},
	}
	for name, req := range cases {
		if err := mesh.Issue(ca.Dir, req, filepath.Join(t.TempDir(), "out")); err == nil {
			t.Errorf("%s: issued", name)
		}
	}
}

func TestLoadCredsErrors(t *testing.T) {
	t.Parallel()
	ca := meshtest.CA(t)
	other := meshtest.CA(t)
	fresh := func() string {
		return ca.IssueDir(mesh.IssueRequest{Name: "n", Site: "dc1"})
	}
	copyFile := func(t *testing.T, from, to string) {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		os.Remove(to)
		if err := os.WriteFile(to, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  []string
	}{
		{"missing cert", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "cert.crt")) }, []string{"cert.crt", "no such file"}},
		{"cert not PEM", func(t *testing.T, dir string) { os.WriteFile(filepath.Join(dir, "cert.crt"), []byte("junk"), 0o644) }, []string{"cert.crt", "not a PEM"}},
		{"key not PEM", func(t *testing.T, dir string) { os.WriteFile(filepath.Join(dir, "cert.key"), []byte("junk"), 0o600) }, []string{"cert.key", "not PEM"}},
		{"other CA", func(t *testing.T, dir string) {
			copyFile(t, filepath.Join(other.Dir, "ca.crt"), filepath.Join(dir, "ca.crt"))
		}, []string{"cert.crt", "not signed by", "ca.crt"}},
		{"expired", func(t *testing.T, dir string) {
			ca.ExpiredFiles("n", "dc1", filepath.Join(dir, "cert.crt"), filepath.Join(dir, "cert.key"))
		}, []string{"cert.crt", "expired"}},
		{"bad gossip key", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "gossip.key"), []byte("abcd\n"), 0o600)
		}, []string{"gossip.key", "2 bytes, want 32"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := fresh()
			tc.setup(t, dir)
			_, err := mesh.LoadCreds(dir)
			if err == nil {
				t.Fatal("loaded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestTLSConfigsForHTTPS checks ServerTLS/ClientTLS/PeerIdentity the way the
// admin API uses them: HTTPS over TCP.
func TestTLSConfigsForHTTPS(t *testing.T) {
	t.Parallel()
	ca := meshtest.CA(t)
	server := ca.Node("n1", "dc1")
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := mesh.PeerIdentity(*r.TLS)
		if err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		w.Write([]byte(id.String()))
	}))
	srv.TLS = server.ServerTLS()
	srv.Config.ErrorLog = log.New(t.Output(), "", 0)
	srv.StartTLS()
	defer srv.Close()

	get := func(c *mesh.Creds) (string, error) {
		cl := &http.Client{Transport: &http.Transport{TLSClientConfig: c.ClientTLS()}, Timeout: 5 * time.Second}
		resp, err := cl.Get(srv.URL)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b := make([]byte, 256)
		n, _ := resp.Body.Read(b)
		return string(b[:n]), nil
	}
	got, err := get(ca.Agent("a1", "dc1", "erp"))
	if err != nil {
		t.Fatalf("agent GET: %v", err)
	}
	if got != "lifeboat://agent/dc1/erp/a1" {
		t.Errorf("server saw %q", got)
	}
	if _, err := get(ca.Foreign("x", "dc1")); err == nil {
		t.Error("foreign client got through")
	}

	// A client refuses a server from another CA.
	foreign := httptest.NewUnstartedServer(http.NotFoundHandler())
	foreign.TLS = ca.Foreign("y", "dc1").ServerTLS()
	foreign.Config.ErrorLog = log.New(t.Output(), "", 0)
	foreign.StartTLS()
	defer foreign.Close()
	conn, err := tls.Dial("tcp", foreign.Listener.Addr().String(), ca.Node("n2", "dc1").ClientTLS())
	if err == nil {
		err = conn.Handshake()
		conn.Close()
	}
	if err == nil {
		t.Error("client accepted a foreign server")
	}
	var _ net.Conn = conn
}

func TestIssueOperator(t *testing.T) {
	ca := meshtest.CA(t)
	out := filepath.Join(t.TempDir(), "alice")
	rec, err := mesh.IssueCert(ca.Dir, mesh.IssueRequest{Name: "alice", Operator: true, Role: mesh.RoleOperator}, out)
	if err != nil {
		t.Fatal(err)
	}
	c, err := mesh.LoadCreds(out)
	if err != nil {
		t.Fatal(err)
	}
	if want := (mesh.Identity{Name: "alice", Operator: true, Role: mesh.RoleOperator}); noSerial(c.Self) != want {
		t.Errorf("identity %+v, want %+v", c.Self, want)
	}
	if c.Self.Serial != rec.Serial || rec.Kind != "operator" || rec.Role != "operator" {
		t.Errorf("ledger record %+v, identity serial %s", rec, c.Self.Serial)
	}
	for _, f := range []string{"gossip.key", "dedup.key"} {
		if _, err := os.Stat(filepath.Join(out, f)); err == nil {
			t.Errorf("operator directory holds %s", f)
		}
	}
	for _, f := range []string{"ca-cert.pem", "client-cert.pem", "client-key.pem"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("operator directory lacks %s: %v", f, err)
		}
	}
	led, err := mesh.Ledger(ca.Dir)
	if err != nil || len(led) != 1 || led[0].Name != "alice" {
		t.Errorf("ledger %+v, %v", led, err)
	}
	if got := c.Self.AdminRole(); got != mesh.RoleOperator {
		t.Errorf("admin role %v", got)
	}
}

func TestIssueRefusesInvalid(t *testing.T) {
	ca := meshtest.CA(t)
	cases := []struct {
		name string
		req  mesh.IssueRequest
		want string
	}{
		{"expired at issue", mesh.IssueRequest{Name: "n", Site: "dc1", NotBefore: time.Now().Add(-2 * time.Hour), Validity: time.Hour}, "expired already"},
		{"not yet valid", mesh.IssueRequest{Name: "n", Site: "dc1", NotBefore: time.Now().Add(time.Hour)}, "not be valid yet"},
		{"operator without role", mesh.IssueRequest{Name: "o", Operator: true}, "needs a role"},
		{"operator and agent", mesh.IssueRequest{Name: "o", Operator: true, Agent: true, Role: mesh.RoleAdmin}, "not both"},
		{"role on a node", mesh.IssueRequest{Name: "n", Site: "dc1", Role: mesh.RoleAdmin}, "only operator certificates"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			err := mesh.Issue(ca.Dir, tc.req, out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			if _, err := os.Stat(filepath.Join(out, "cert.crt")); err == nil {
				t.Error("a certificate was written")
			}
		})
	}
	// A short validity counts from now: 20 s is valid at once.
	out := filepath.Join(t.TempDir(), "short")
	if err := mesh.Issue(ca.Dir, mesh.IssueRequest{Name: "n", Site: "dc1", Validity: 20 * time.Second}, out); err != nil {
		t.Fatal(err)
	}
	if _, err := mesh.LoadCreds(out); err != nil {
		t.Fatalf("20s certificate: %v", err)
	}
}

func TestParseRole(t *testing.T) {
	for _, r := range []mesh.Role{mesh.RoleViewer, mesh.RoleOperator, mesh.RoleAdmin} {
		got, err := mesh.ParseRole(r.String())
		if err != nil || got != r {
			t.Errorf("ParseRole(%q) = %v, %v", r, got, err)
		}
	}
	if _, err := mesh.ParseRole("root"); err == nil {
		t.Error("root parsed")
	}
}
