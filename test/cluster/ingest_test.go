package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node"
)

// TestIngestRefusesOtherServices: an agent certificate is scoped to one
// service; the node refuses a hello for another service, a volume that is
// not the service's, a wrong size, and a node certificate on an ingest
// stream. Each refusal names the reason.
func TestIngestRefusesOtherServices(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	m := h.add("dc1-n1", "dc1", node.RoleNode)
	h.eventually("leader", 20*time.Second, func() error {
		if m.node.Status().Leader == "" {
			return errors.New("no leader")
		}
		return nil
	})
	policy := []byte(sites("dc1", "dc2") +
		service("web", "dc1", "", server("web1", "disk", "/dev/web", "1MiB", "")) +
		service("db", "dc1", "", server("db1", "data", "/dev/db", "1MiB", "")) +
		service("far", "dc2", "", server("far1", "d", "/dev/far", "1MiB", "")))
	if _, err := m.node.ApplyPolicy(t.Context(), "p.toml", policy, "test"); err != nil {
		t.Fatal(err)
	}
	h.eventually("holders placed", 20*time.Second, func() error {
		if h := m.node.Catalog().Holder("db", "dc1"); h != "dc1-n1" {
			return fmt.Errorf("holder of db at dc1: %q", h)
		}
		return nil
	})
	dial := func(creds *mesh.Creds, hello mesh.Hello) error {
		pc, err := mesh.OS().ListenPacket("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ep, err := mesh.NewEndpoint(mesh.EndpointOptions{Creds: creds, Conn: pc})
		if err != nil {
			t.Fatal(err)
		}
		defer ep.Close()
		s, err := ep.Dial(t.Context(), m.node.QUICAddr(), mesh.KindIngest)
		if err != nil {
			return err
		}
		defer s.Close()
		b, _ := json.Marshal(hello)
		if err := mesh.WriteFrame(s, mesh.FrameHello, b); err != nil {
			return err
		}
		typ, p, err := mesh.NewFrameReader(s, 1<<20).Next()
		if err != nil {
			return err
		}
		if typ == mesh.FrameTypeError {
			re, err := mesh.ParseError(p)
			if err != nil {
				return err
			}
			return re
		}
		return nil
	}
	web := h.ca.Agent("web1", "dc1", "web")
	hello := func(svc, vol string, size int64) mesh.Hello {
		return mesh.Hello{Version: mesh.IngestVersion, Service: svc, Agent: "web1", Volumes: []mesh.HelloVolume{{Name: vol, Size: size}}}
	}
	if err := dial(web, hello("web", "disk", 1<<20)); err != nil {
		t.Fatalf("the agent's own volume was refused: %v", err)
	}
	cases := []struct {
		name  string
		creds *mesh.Creds
		hello mesh.Hello
		want  string
	}{
		{"another service", web, hello("db", "data", 1<<20), "certificate is for web1 of service web"},
		{"another service's volume", web, hello("web", "data", 1<<20), "not a volume of service web"},
		{"wrong size", web, hello("web", "disk", 2<<20), "the policy says"},
		{"service of another site", h.ca.Agent("web1", "dc2", "far"), mesh.Hello{Version: 1, Service: "far", Agent: "web1", Volumes: []mesh.HelloVolume{{Name: "d", Size: 1 << 20}}}, "runs at site dc2"},
		{"node certificate", h.ca.Node("dc1-x", "dc1"), hello("web", "disk", 1<<20), "refused"},
	}
	for _, tc := range cases {
		err := dial(tc.creds, tc.hello)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want a refusal containing %q", tc.name, err, tc.want)
		}
	}
}
