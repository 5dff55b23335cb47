package policy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-dr/lifeboat/internal/clock"
	"github.com/lifeboat-dr/lifeboat/internal/testpolicy"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// engine returns an Engine over a real catalog state machine (commands
// applied directly in place of Raft) and the gossip members given.
func engine(t *testing.T, members []mesh.Member) (*Engine, *catalog.FSM, *[]string) {
	t.Helper()
	fsm := catalog.NewFSM()
	var idx atomic.Uint64
	var notes []string
	e := New(Options{Catalog: fsm, Members: func() []mesh.Member { return members },
		Clock: clock.NewFake(time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)),
		Note:  func(_ context.Context, result, detail string) { notes = append(notes, result+": "+detail) },
		Propose: func(_ context.Context, c *catalog.Command) error {
			b, err := catalog.EncodeCommand(c)
			if err != nil {
				return err
			}
			return fsm.Apply(&raft.Log{Index: idx.Add(1), Type: raft.LogCommand, Data: b}).(catalog.ApplyResult).Err
		},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	return e, fsm, &notes
}

func policy(approvals int, encrypt bool, hook string) []byte {
	src := fmt.Sprintf("approvals = %d\n[[site]]\nname = \"dc1\"\n", approvals)
	if encrypt {
		src += "encrypt = true\n"
	}
	return []byte(src + testpolicy.Service("web", "dc1", "1MiB", fmt.Sprintf("  [service.hooks]\n  start = %q", hook)))
}

// TestApply: a policy applies with who applied it and the clock's time; a
// policy that does not parse changes nothing and names the line.
func TestApply(t *testing.T) {
	e, fsm, _ := engine(t, nil)
	p, err := e.Apply(t.Context(), "cluster.toml", policy(1, false, "true"), "ada", "01ab")
	if err != nil {
		t.Fatal(err)
	}
	if p.Version != 1 || p.AppliedBy != "ada" || p.AppliedBySerial != "01ab" || !p.AppliedAt.Equal(time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)) {
		t.Errorf("record %+v", p)
	}
	if _, err := e.Apply(t.Context(), "bad.toml", []byte("[[site]]\nname = 7\n"), "ada", ""); !errors.Is(err, api.ErrBadPolicy) || !strings.Contains(err.Error(), "bad.toml:2") {
		t.Errorf("bad policy: %v, want ErrBadPolicy naming bad.toml:2", err)
	}
	if v := fsm.Catalog().Policy.Version; v != 1 {
		t.Errorf("after a bad policy the catalog is at version %d, want 1", v)
	}
}

// TestEncryptionCheck: encrypt = true is refused while an alive node of the
// site keeps a plain store, naming it; with every node encrypted (or the
// plain one dead) it applies.
func TestEncryptionCheck(t *testing.T) {
	members := []mesh.Member{
		{Name: "dc1-n1", State: mesh.StateAlive, Meta: mesh.Meta{Site: "dc1", Role: "node", Encrypted: true}},
		{Name: "dc1-n2", State: mesh.StateAlive, Meta: mesh.Meta{Site: "dc1", Role: "node"}},
		{Name: "dc1-w", State: mesh.StateAlive, Meta: mesh.Meta{Site: "dc1", Role: "witness"}},
	}
	e, fsm, _ := engine(t, members)
	_, err := e.Apply(t.Context(), "p.toml", policy(1, true, "true"), "ada", "")
	if !errors.Is(err, api.ErrBadPolicy) || !strings.Contains(err.Error(), "dc1-n2 (site dc1)") || strings.Contains(err.Error(), "dc1-n1") || strings.Contains(err.Error(), "dc1-w") {
		t.Fatalf("encrypt with a plain node: %v, want a refusal naming dc1-n2 only", err)
	}
	if fsm.Catalog().Policy != nil {
		t.Fatal("a refused policy reached the catalog")
	}
	members[1].State = mesh.StateDead
	if _, err := e.Apply(t.Context(), "p.toml", policy(1, true, "true"), "ada", ""); err != nil {
		t.Fatalf("encrypt with the plain node dead: %v", err)
	}
}

// TestFourEyes: under approvals = 2 a hook change waits for a second admin
// (the proposer, by name or by certificate serial, cannot approve it); a
// change of nothing sensitive applies at once.
func TestFourEyes(t *testing.T) {
	e, fsm, notes := engine(t, nil)
	ctx := t.Context()
	if _, err := e.Apply(ctx, "p.toml", policy(2, false, "true"), "ada", "01"); err != nil {
		t.Fatal(err)
	}
	p, err := e.Apply(ctx, "p.toml", policy(2, false, "rm -rf /"), "ada", "01")
	if err != nil {
		t.Fatal(err)
	}
	cat := fsm.Catalog()
	if cat.PendingPolicy == nil || cat.PendingPolicy.Version != p.Version || cat.Policy.Cluster.Service("web").Hooks.Start != "true" {
		t.Fatalf("hook change: pending %+v, applied hook %q; want it pending, the old hook applied", cat.PendingPolicy, cat.Policy.Cluster.Service("web").Hooks.Start)
	}
	if len(p.Changes) == 0 || !strings.Contains(strings.Join(p.Changes, " "), "hooks.start") || len(*notes) != 1 || !strings.HasPrefix((*notes)[0], "pending") {
		t.Errorf("changes %v, audit notes %v: want hooks.start listed and a pending note", p.Changes, *notes)
	}
	for _, who := range [][2]string{{"ada", "99"}, {"eve", "01"}} {
		if _, err := e.Approve(ctx, p.Version, who[0], who[1]); !errors.Is(err, catalog.ErrBadCommand) {
			t.Errorf("approval by %s (serial %s): %v, want refused", who[0], who[1], err)
		}
	}
	if _, err := e.Approve(ctx, p.Version+1, "bob", "02"); !errors.Is(err, catalog.ErrBadCommand) {
		t.Errorf("approval of another version: %v", err)
	}
	got, err := e.Approve(ctx, p.Version, "bob", "02")
	if err != nil {
		t.Fatal(err)
	}
	if got.ApprovedBy != "bob" || got.Cluster.Service("web").Hooks.Start != "rm -rf /" || fsm.Catalog().PendingPolicy != nil {
		t.Errorf("after approval: %+v", got)
	}
	if _, err := e.Approve(ctx, got.Version, "bob", "02"); !errors.Is(err, catalog.ErrBadCommand) {
		t.Errorf("approval with nothing pending: %v", err)
	}
}
