package revoke

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-dr/lifeboat/internal/clock"
	"github.com/lifeboat-dr/lifeboat/internal/testlog"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// The engine runs here on a real state machine fed without Raft (the
// command codec included) and credentials that record what they are
// told.

type fsmProposer struct {
	mu    sync.Mutex
	fsm   *catalog.FSM
	index uint64
	calls int
}

func (p *fsmProposer) propose(_ context.Context, cmd *catalog.Command) error {
	data, err := catalog.EncodeCommand(cmd)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	p.index++
	if res := p.fsm.Apply(&raft.Log{Index: p.index, Type: raft.LogCommand, Data: data}).(catalog.ApplyResult); res.Err != nil {
		return res.Err
	}
	return nil
}

type fakeCreds struct{ set chan []string }

func (c fakeCreds) SetRevoked(serials []string) { c.set <- slices.Clone(serials) }

var t0 = time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)

func TestRevokeChecks(t *testing.T) {
	many := make([]catalog.Revocation, api.MaxRevoke+1)
	for i := range many {
		many[i].Serial = "ab"
	}
	tests := []struct {
		name  string
		certs []catalog.Revocation
		want  string // in the error; "" = revoked
	}{
		{"none", nil, "revoke 1 to 1000 certificates, not 0"},
		{"too many", many, "not 1001"},
		{"empty serial", []catalog.Revocation{{Serial: ""}}, `serial ""`},
		{"upper case", []catalog.Revocation{{Serial: "AB"}}, `serial "AB"`},
		{"not hex", []catalog.Revocation{{Serial: "0x12"}}, `serial "0x12"`},
		{"too long", []catalog.Revocation{{Serial: strings.Repeat("a", 65)}}, "want the certificate's serial in hex"},
		{"one bad of two", []catalog.Revocation{{Serial: "ab"}, {Serial: "zz"}}, `serial "zz"`},
		{"two", []catalog.Revocation{{Serial: "ab", Name: "mallory", Kind: "operator"}, {Serial: "0123456789abcdef"}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &fsmProposer{fsm: catalog.NewFSM()}
			e := New(Options{Catalog: p.fsm, Propose: p.propose, Clock: clock.NewFake(t0), Logger: testlog.New(t)})
			got, err := e.Revoke(t.Context(), api.RevokeRequest{Certificates: tt.certs, Reason: "lost laptop"}, "ada")
			if tt.want != "" {
				if !errors.Is(err, catalog.ErrBadCommand) || !strings.Contains(err.Error(), tt.want) || p.calls != 0 {
					t.Fatalf("Revoke = %v (%d proposals), want ErrBadCommand saying %q and nothing proposed", err, p.calls, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.certs) {
				t.Fatalf("Revoke returned %d records, want %d", len(got), len(tt.certs))
			}
			for i, r := range got {
				if r.Serial != tt.certs[i].Serial || r.By != "ada" || r.Reason != "lost laptop" || !r.At.Equal(t0) {
					t.Errorf("record %d = %+v, want serial %s by ada, the reason and the clock's time", i, r, tt.certs[i].Serial)
				}
			}
			if got := p.fsm.Catalog().RevokedSerials(); len(got) != len(tt.certs) {
				t.Errorf("catalog revokes %v", got)
			}
		})
	}
}

// TestRunApplies: Run hands the catalog's revocations to the credentials
// and closes connections when they change, sweeps connections every
// Sweep without a change, and returns when ctx ends.
func TestRunApplies(t *testing.T) {
	p := &fsmProposer{fsm: catalog.NewFSM()}
	clk := clock.NewFake(t0)
	creds := fakeCreds{set: make(chan []string, 4)}
	quic, admin := make(chan struct{}, 16), make(chan struct{}, 16)
	drop := func(c chan struct{}) func() int { return func() int { c <- struct{}{}; return 1 } }
	e := New(Options{Catalog: p.fsm, Propose: p.propose, Creds: creds, DropQUIC: drop(quic), DropAdmin: drop(admin), Clock: clk, Logger: testlog.New(t)})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	if err := clk.WaitFor(ctx, 1); err != nil { // Run waits
		t.Fatal(err)
	}
	if len(creds.set) != 0 || len(quic) != 0 {
		t.Fatal("Run changed the credentials or connections before any revocation")
	}
	if _, err := e.Revoke(ctx, api.RevokeRequest{Certificates: []catalog.Revocation{{Serial: "ab"}}}, "ada"); err != nil {
		t.Fatal(err)
	}
	if got := <-creds.set; !slices.Equal(got, []string{"ab"}) {
		t.Errorf("SetRevoked(%v), want [ab]", got)
	}
	<-quic
	<-admin
	if err := clk.WaitFor(ctx, 2); err != nil { // Run waits again (the first timer is still there)
		t.Fatal(err)
	}
	clk.Advance(5 * time.Second)
	<-quic // the sweep
	<-admin
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if len(creds.set) != 0 {
		t.Errorf("credentials set again without a change: %v", <-creds.set)
	}
}
