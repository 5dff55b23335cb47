package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/mesh/meshtest"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/audit"
)

// cleanupBackend is fakeBackend with images and leave.
type cleanupBackend struct {
	fakeBackend
	left atomic.Int32
}

func (f *cleanupBackend) Images(context.Context) ([]api.Image, error) {
	f.called("images")
	return []api.Image{{Service: "web", Kind: api.ImageFailover, Name: "abcdef012345", InUse: true, Why: "web runs at dc2 on these images"}}, nil
}

func (f *cleanupBackend) RemoveImages(_ context.Context, refs []string, by string) ([]api.Image, error) {
	f.called("rm " + strings.Join(refs, " ") + " by " + by)
	if refs[0] == "web/failover/abcdef012345" {
		return nil, fmt.Errorf("%w: images in use, nothing removed: web/failover/abcdef012345: web runs at dc2", api.ErrUnsafe)
	}
	return []api.Image{{Service: "web", Kind: api.ImageDrill, Name: refs[0]}}, nil
}

func (f *cleanupBackend) Leave(_ context.Context, req api.LeaveRequest, by string) (*api.LeaveResult, func(), error) {
	f.called(fmt.Sprintf("leave force=%v dry=%v by %s", req.Force, req.DryRun, by))
	if !req.Force {
		return nil, nil, fmt.Errorf("%w: leaving loses the quorum", api.ErrUnsafe)
	}
	res := &api.LeaveResult{Node: "dc1-n1", Raft: "voter", DryRun: req.DryRun}
	if req.DryRun {
		return res, nil, nil
	}
	return res, func() { f.left.Add(1) }, nil
}

func serverWith(t *testing.T, ca *meshtest.TestCA, b Backend) (string, func() []catalog.AuditEntry) {
	t.Helper()
	var mu sync.Mutex
	var entries []catalog.AuditEntry
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	rec := audit.New(audit.Options{Node: "dc1-n1", Logger: log, Propose: func(_ context.Context, es []catalog.AuditEntry) error {
		mu.Lock()
		entries = append(entries, es...)
		mu.Unlock()
		return nil
	}})
	s := New(Options{Name: "dc1-n1", Creds: ca.Node("dc1-n1", "dc1"), Backend: b, Audit: rec, Logger: log, Metrics: http.NotFoundHandler()})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String(), func() []catalog.AuditEntry {
		if err := rec.Flush(t.Context(), time.Second); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		return append([]catalog.AuditEntry(nil), entries...)
	}
}

// TestImagesAndLeaveRoles: a viewer lists images but removes none and
// cannot make the node leave (403, before the backend is asked); an admin
// removes, and an image in use is refused 409 with the reason; every
// removal and leave, refused or not, is in the audit log; a node leaves
// only after it answered.
func TestImagesAndLeaveRoles(t *testing.T) {
	ca := meshtest.CA(t)
	fb := &cleanupBackend{}
	addr, audited := serverWith(t, ca, fb)
	viewer := ca.Operator("vera", mesh.RoleViewer)
	op := ca.Operator("olga", mesh.RoleOperator)
	adm := ca.Operator("ada", mesh.RoleAdmin)
	js := "application/json"
	for _, tc := range []struct {
		name         string
		creds        *mesh.Creds
		method, path string
		body         string
		status       int
		code         string
		backend      string // the call the backend saw, "" = none
	}{
		{"viewer lists", viewer, "GET", "/v1/images", "", 200, "", "images"},
		{"viewer removes", viewer, "POST", "/v1/images/rm", `{"images":["web/drill/d1"]}`, 403, api.CodeForbidden, ""},
		{"operator removes", op, "POST", "/v1/images/rm", `{"images":["web/drill/d1"]}`, 403, api.CodeForbidden, ""},
		{"admin removes an image in use", adm, "POST", "/v1/images/rm", `{"images":["web/failover/abcdef012345"]}`, 409, api.CodeUnsafe, "rm web/failover/abcdef012345 by ada"},
		{"admin removes", adm, "POST", "/v1/images/rm", `{"images":["web/drill/d1"]}`, 200, "", "rm web/drill/d1 by ada"},
		{"admin removes with a bad body", adm, "POST", "/v1/images/rm", `{"image":"x"}`, 400, api.CodeBadRequest, ""},
		{"viewer makes the node leave", viewer, "POST", "/v1/node/leave", `{}`, 403, api.CodeForbidden, ""},
		{"operator makes the node leave", op, "POST", "/v1/node/leave", `{}`, 403, api.CodeForbidden, ""},
		{"admin leave refused", adm, "POST", "/v1/node/leave", `{}`, 409, api.CodeUnsafe, "leave force=false dry=false by ada"},
		{"admin leave dry run", adm, "POST", "/v1/node/leave", `{"force":true,"dry_run":true}`, 200, "", "leave force=true dry=true by ada"},
		{"admin leaves", adm, "POST", "/v1/node/leave", `{"force":true}`, 200, "", "leave force=true dry=false by ada"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(fb.Calls())
			ctype := ""
			if tc.body != "" {
				ctype = js
			}
			status, body := call(t, addr, tc.creds, tc.method, tc.path, ctype, tc.body)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %s", status, tc.status, body)
			}
			if tc.code != "" {
				var e api.ErrorBody
				if err := json.Unmarshal([]byte(body), &e); err != nil || e.Code != tc.code || e.Error == "" {
					t.Errorf("refusal %q, want code %s with a message", body, tc.code)
				}
			}
			calls := fb.Calls()[before:]
			if tc.backend == "" && len(calls) != 0 || tc.backend != "" && (len(calls) != 1 || calls[0] != tc.backend) {
				t.Errorf("backend saw %q, want %q", calls, tc.backend)
			}
		})
	}
	if n := fb.left.Load(); n != 1 {
		t.Errorf("the node left %d times, want once (not on the dry run or refusals)", n)
	}
	var rm, leave, refused int
	for _, e := range audited() {
		switch {
		case e.Action == "POST /v1/images/rm":
			rm++
			if e.Result == "ok" && (e.Who != "ada" || !strings.Contains(e.Detail, "web/drill/d1")) {
				t.Errorf("rm entry %+v, want ada naming the image", e)
			}
		case e.Action == "POST /v1/node/leave":
			leave++
		}
		if e.Result == "refused" {
			refused++
		}
	}
	if rm != 5 || leave != 5 || refused != 4 {
		t.Errorf("audit log: %d rm entries (want 5), %d leave entries (want 5), %d refusals (want 4)", rm, leave, refused)
	}
}
