package admin

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/mesh/meshtest"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/audit"
)

func TestPolicyFileName(t *testing.T) {
	for _, bad := range []string{"../../etc/shadow", "/etc/passwd", "a/b.toml", ".hidden", "x y"} {
		if _, err := policyFileName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if got, err := policyFileName("cluster.toml"); err != nil || got != "cluster.toml" {
		t.Errorf("cluster.toml: %q %v", got, err)
	}
}

// fakeBackend records what the handlers asked of the node.
type fakeBackend struct {
	mu    sync.Mutex
	calls []string
}

func (f *fakeBackend) called(s string) {
	f.mu.Lock()
	f.calls = append(f.calls, s)
	f.mu.Unlock()
}

func (f *fakeBackend) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeBackend) Status() api.Status { f.called("status"); return api.Status{Node: "dc1-n1"} }
func (f *fakeBackend) Catalog() *catalog.Catalog {
	f.called("catalog")
	return catalog.New()
}
func (f *fakeBackend) Audit(time.Time, int) []catalog.AuditEntry { return nil }
func (f *fakeBackend) Points(context.Context, string, string) ([]blockstore.Point, error) {
	f.called("points")
	return nil, nil
}
func (f *fakeBackend) ApplyPolicy(_ context.Context, file string, _ []byte, by Caller) (*catalog.PolicyRecord, error) {
	f.called("policy " + file + " by " + by.Who() + " " + by.ID.Serial)
	return &catalog.PolicyRecord{File: file, AppliedBy: by.Who()}, nil
}
func (f *fakeBackend) ApprovePolicy(context.Context, uint64, Caller) (*catalog.PolicyRecord, error) {
	return nil, errors.New("no")
}
func (f *fakeBackend) RecoverRaft(_ context.Context, by string, force bool) (*catalog.RecoveryRecord, error) {
	f.called("recover by " + by)
	return nil, api.ErrNeedForce
}
func (f *fakeBackend) Revoke(context.Context, api.RevokeRequest, string) ([]catalog.Revocation, error) {
	return nil, nil
}
func (f *fakeBackend) Failover(_ context.Context, req api.FailoverRequest, emit func(api.FailoverEvent)) (*catalog.FailoverRecord, error) {
	f.called("failover " + req.Service + " by " + req.By)
	emit(api.FailoverEvent{Step: "plan", Plan: &api.FailoverPlan{Service: req.Service}})
	return &catalog.FailoverRecord{Service: req.Service, Epoch: 2}, nil
}
func (f *fakeBackend) Drill(context.Context, api.DrillRequest, func(api.FailoverEvent)) (*catalog.DrillRecord, error) {
	f.called("drill")
	return nil, nil
}
func (f *fakeBackend) RecordDrill(context.Context, api.OperatorDrill, string) (*catalog.DrillRecord, error) {
	return nil, nil
}
func (f *fakeBackend) CleanupDrills(context.Context, string) ([]catalog.DrillRecord, error) {
	return nil, nil
}
func (f *fakeBackend) Failback(context.Context, string, string) (*catalog.ServiceState, error) {
	return nil, nil
}

// server starts a Server on loopback and returns its address, the fake
// behind it and where its audit entries go.
func server(t *testing.T, ca *meshtest.TestCA) (string, *fakeBackend, func() []catalog.AuditEntry) {
	t.Helper()
	fb := &fakeBackend{}
	var mu sync.Mutex
	var entries []catalog.AuditEntry
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	rec := audit.New(audit.Options{Node: "dc1-n1", Logger: log, Propose: func(_ context.Context, es []catalog.AuditEntry) error {
		mu.Lock()
		entries = append(entries, es...)
		mu.Unlock()
		return nil
	}})
	s := New(Options{Name: "dc1-n1", Creds: ca.Node("dc1-n1", "dc1"), Backend: fb, Audit: rec, Logger: log,
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "metrics\n") })})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String(), fb, func() []catalog.AuditEntry {
		if err := rec.Flush(t.Context(), time.Second); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		return append([]catalog.AuditEntry(nil), entries...)
	}
}

// call makes one request with creds (nil: no certificate) and returns the
// status and the body.
func call(t *testing.T, addr string, creds *mesh.Creds, method, path, ctype, body string, hdr ...string) (int, string) {
	t.Helper()
	tc := &tls.Config{InsecureSkipVerify: true}
	if creds != nil {
		tc = creds.ClientTLS()
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 10 * time.Second}
	req, err := http.NewRequest(method, "https://"+addr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestRolesAndRefusals: each route answers the roles it names and refuses
// the rest with the API's error object, before the backend is called;
// every mutation and refusal is in the audit log with the caller.
func TestRolesAndRefusals(t *testing.T) {
	ca := meshtest.CA(t)
	addr, fb, audited := server(t, ca)
	viewer := ca.Operator("vera", mesh.RoleViewer)
	op := ca.Operator("olga", mesh.RoleOperator)
	adm := ca.Operator("ada", mesh.RoleAdmin)
	agent := ca.Agent("web-a1", "dc1", "web")
	node := ca.Node("dc2-n1", "dc2")

	policy := "[[site]]\nname = \"dc1\"\n"
	failover := `{"service":"web"}`
	for _, tc := range []struct {
		name           string
		creds          *mesh.Creds
		method, path   string
		ctype, body    string
		status         int
		code           string // the error code of a refusal
		backendCalled  string // a prefix of the call the backend saw, "" = none
		notInBackendAs string
	}{
		{"no certificate reads status", nil, "GET", "/v1/status", "", "", 401, api.CodeUnauthenticated, "", ""},
		{"agent reads status", agent, "GET", "/v1/status", "", "", 403, api.CodeForbidden, "", ""},
		{"node reads status", node, "GET", "/v1/status", "", "", 200, "", "status", ""},
		{"viewer reads metrics", viewer, "GET", "/metrics", "", "", 200, "", "", ""},
		{"viewer fails over", viewer, "POST", "/v1/failover", "application/json", failover, 403, api.CodeForbidden, "", "failover"},
		{"node applies a policy", node, "PUT", "/v1/policy?file=p.toml", "application/toml", policy, 403, api.CodeForbidden, "", "policy"},
		{"operator applies a policy", op, "PUT", "/v1/policy?file=p.toml", "application/toml", policy, 403, api.CodeForbidden, "", "policy"},
		{"admin applies a policy as a form", adm, "PUT", "/v1/policy?file=p.toml", "application/x-www-form-urlencoded", policy, 415, api.CodeBadRequest, "", "policy"},
		{"admin applies a policy with a path", adm, "PUT", "/v1/policy?file=../../etc/shadow", "application/toml", policy, 400, api.CodeBadRequest, "", "policy"},
		{"admin applies a policy", adm, "PUT", "/v1/policy?file=p.toml", "application/toml", policy, 200, "", "policy p.toml by ada", ""},
		{"operator fails over", op, "POST", "/v1/failover", "application/json", failover, 200, "", "failover web by olga", ""},
		{"a request carries a hook", op, "POST", "/v1/drill", "application/json", `{"service":"web","hook":"id"}`, 400, api.CodeBadRequest, "", "drill"},
		{"admin recovers without force", adm, "POST", "/v1/raft/recover", "", "", 428, api.CodeNeedForce, "recover by ada", ""},
		{"unknown route", adm, "GET", "/v1/nope", "", "", 403, api.CodeForbidden, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(fb.Calls())
			status, body := call(t, addr, tc.creds, tc.method, tc.path, tc.ctype, tc.body)
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
			if tc.backendCalled != "" && (len(calls) != 1 || !strings.HasPrefix(calls[0], tc.backendCalled)) {
				t.Errorf("backend saw %q, want %q", calls, tc.backendCalled)
			}
			if tc.notInBackendAs != "" {
				for _, c := range calls {
					if strings.HasPrefix(c, tc.notInBackendAs) {
						t.Errorf("the backend ran %q for a refused call", c)
					}
				}
			}
		})
	}

	var refused, applied int
	for _, e := range audited() {
		switch {
		case e.Result == "refused":
			refused++
			if e.Status == 0 || e.Action == "" {
				t.Errorf("refusal entry without status or action: %+v", e)
			}
		case e.Action == "PUT /v1/policy" && e.Result == "ok":
			applied++
			if e.Who != "ada" || e.Role != "admin" || e.Serial == "" {
				t.Errorf("policy entry %+v, want ada, admin, a serial", e)
			}
		}
	}
	// The 7 refused above: no certificate, the agent, the viewer's
	// failover, the node's and the operator's policy, the form and the
	// unknown route (bad input is an error, not a refusal).
	if refused != 7 || applied != 1 {
		t.Errorf("audit log: %d refusals (want 7), %d applied policies (want 1)", refused, applied)
	}
}

// TestHostAndOrigin: a request naming another host, or sent cross-origin
// by a browser, is refused whatever its certificate.
func TestHostAndOrigin(t *testing.T) {
	ca := meshtest.CA(t)
	addr, fb, _ := server(t, ca)
	adm := ca.Operator("ada", mesh.RoleAdmin)
	if status, _ := call(t, addr, adm, "GET", "/v1/status", "", "", "Host", "evil.example"); status != http.StatusMisdirectedRequest {
		t.Errorf("Host evil.example: status %d, want 421", status)
	}
	status, _ := call(t, addr, adm, "PUT", "/v1/policy?file=p.toml", "application/toml", "x", "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site")
	if status != http.StatusForbidden {
		t.Errorf("cross-site policy PUT: status %d, want 403", status)
	}
	for _, c := range fb.Calls() {
		if strings.HasPrefix(c, "policy") {
			t.Errorf("the backend applied a cross-site policy")
		}
	}
}

// TestFailoverStream: a failover answers JSON lines, the last with the
// result.
func TestFailoverStream(t *testing.T) {
	ca := meshtest.CA(t)
	addr, _, _ := server(t, ca)
	status, body := call(t, addr, ca.Operator("olga", mesh.RoleOperator), "POST", "/v1/failover", "application/json", `{"service":"web"}`)
	if status != 200 {
		t.Fatalf("status %d: %s", status, body)
	}
	lines := bytes.Split(bytes.TrimSpace([]byte(body)), []byte("\n"))
	var first, last api.FailoverEvent
	if len(lines) != 2 || json.Unmarshal(lines[0], &first) != nil || json.Unmarshal(lines[1], &last) != nil {
		t.Fatalf("stream %q: want two JSON lines", body)
	}
	if first.Step != "plan" || last.Step != "done" || last.Result == nil || last.Result.Epoch != 2 {
		t.Errorf("events %+v, %+v: want the plan, then done with epoch 2", first, last)
	}
}
