package replicate

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/internal/testlog"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/mesh/meshtest"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/streams"
)

// fixedCatalog serves one snapshot that never changes.
type fixedCatalog struct{ cat *catalog.Catalog }

func (c fixedCatalog) Catalog() *catalog.Catalog { return c.cat }
func (c fixedCatalog) View() (*catalog.Catalog, <-chan struct{}) {
	return c.cat, nil
}

// TestReceiveRefuses checks the receiver's refusals of a replication
// stream before any point: each is a Refusal with the code the sender
// classifies on.
func TestReceiveRefuses(t *testing.T) {
	ca := meshtest.CA(t)
	from := meshtest.Endpoint(t, ca.Node("dc1-n1", "dc1"))
	to := meshtest.Endpoint(t, ca.Node("dc2-n1", "dc2"))
	dir := t.TempDir()
	if err := blockstore.Init(dir, blockstore.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	store, err := blockstore.Open(dir, blockstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	holders := []catalog.Holder{
		{Service: "web", Site: "dc1", Node: "dc1-n1"},
		{Service: "web", Site: "dc2", Node: "dc2-n1"},
		{Service: "db", Site: "dc2", Node: "dc2-n1"},
	}
	hello := func(service, site string) []byte {
		b, _ := json.Marshal(mesh.ReplHello{Version: mesh.ReplVersion, Service: service, Site: mesh.Site(site), Tier: "warm"})
		return b
	}
	tests := []struct {
		name    string
		witness bool
		holders []catalog.Holder
		due     bool // a branch check is due
		frame   mesh.FrameType
		payload []byte
		want    mesh.ErrCode
	}{
		{"witness", true, holders, false, mesh.FrameReplHello, hello("web", "dc1"), mesh.CodeWrongNode},
		{"first frame not a hello", false, holders, false, mesh.FrameReplBegin, []byte("{}"), mesh.CodeBadRequest},
		{"bad hello", false, holders, false, mesh.FrameReplHello, []byte("{"), mesh.CodeBadRequest},
		{"hello names another site", false, holders, false, mesh.FrameReplHello, hello("web", "dc3"), mesh.CodeForbidden},
		{"service not in the policy", false, holders, false, mesh.FrameReplHello, hello("mail", "dc1"), mesh.CodeNotFound},
		{"no copy at this site", false, holders, false, mesh.FrameReplHello, hello("db", "dc1"), mesh.CodeForbidden},
		{"sender is not the primary's holder", false, []catalog.Holder{holders[0], holders[1], {Service: "web", Site: "dc1", Node: "dc1-n9"}},
			false, mesh.FrameReplHello, hello("web", "dc1"), mesh.CodeForbidden},
		{"branch check due", false, holders, true, mesh.FrameReplHello, hello("web", "dc1"), mesh.CodeUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := Options{Name: "dc2-n1", Site: "dc2", Store: store, Catalog: fixedCatalog{testCatalog(t, false, tt.holders...)},
				Logger: testlog.New(t),
				BranchCheckDue: func(*catalog.Catalog, string) *catalog.FailoverRecord {
					if tt.due {
						return &catalog.FailoverRecord{Epoch: 2}
					}
					return nil
				}}
			if tt.witness {
				o.Store = nil
			}
			e := New(o)
			got := make(chan error, 1)
			go func() {
				s, err := to.Accept(t.Context(), mesh.KindBlocks)
				if err != nil {
					got <- err
					return
				}
				defer s.Close()
				got <- e.Receive(t.Context(), s)
			}()
			s, err := from.Dial(t.Context(), to.Addr().String(), mesh.KindBlocks)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			// A witness refuses before reading: the write may fail then.
			_ = mesh.WriteFrame(s, tt.frame, tt.payload)
			err = <-got
			var r *streams.Refusal
			if !errors.As(err, &r) {
				t.Fatalf("Receive = %v, want a refusal with code %s", err, tt.want)
			}
			if r.Code != tt.want {
				t.Errorf("refusal code = %s (%s), want %s", r.Code, r.Msg, tt.want)
			}
		})
	}
}
