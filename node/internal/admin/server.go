// Package admin is the server side of the admin API. It is HTTPS with JSON bodies on the node's admin address,
// with mutual TLS on every address, loopback included (auth.go says how
// callers are identified and refused). Errors are JSON objects
// {"error": text, "code": one of the apiCode values}. Each route needs a
// role; mutations and data reads go into the audit log:
//
//	GET  /metrics                        viewer
//	GET  /v1/status                      viewer    Status
//	GET  /v1/policy                      viewer    PolicyRecord (404 when none)
//	GET  /v1/catalog                     viewer    Catalog
//	GET  /v1/points?service=S&volume=V   viewer    []api.KeptPoint held by this node (lifecycle.go)
//	GET, POST /v1/prune, GET /v1/stats, POST /v1/verify: lifecycle.go
//	GET  /v1/image?volume=S/V&at=X       operator  the volume's image at a point (audited)
//	POST /v1/failover, /v1/drill, /v1/drill/record, /v1/drill/cleanup, /v1/failback
//	                                     operator  see stream.go (audited)
//	GET  /v1/audit?since=T&limit=N       operator  []catalog.AuditEntry
//	PUT  /v1/policy?file=NAME            admin     body: cluster policy TOML → PolicyRecord (audited)
//	POST /v1/policy/approve?version=N    admin     a pending policy's second approval (audited)
//	POST /v1/raft/recover?force=true     admin     RecoveryRecord (audited)
//	POST /v1/revoke                      admin     body: api.RevokeRequest → []Revocation (audited)
//	GET  /v1/images                      viewer    []api.Image: failover and drill images (cleanup.go)
//	POST /v1/images/rm, /v1/node/leave   admin     see cleanup.go (audited)
//	POST /v1/points/clear-suspect        admin     see marks.go (audited)
//	GET  /v1/points/choose               viewer    see marks.go
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"time"

	"github.com/lifeboat-dr/lifeboat/node/api"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/audit"
	"github.com/lifeboat-dr/lifeboat/node/internal/lifecycle"
)

// Backend is what the admin API serves: the node, seen from its handlers.
type Backend interface {
	Status() api.Status
	Catalog() *catalog.Catalog
	Audit(since time.Time, limit int) []catalog.AuditEntry
	Points(ctx context.Context, service, volume string) ([]blockstore.Point, error)
	// ApplyPolicy and ApprovePolicy take who asks: the certificate's name
	// and serial.
	ApplyPolicy(ctx context.Context, file string, src []byte, by Caller) (*catalog.PolicyRecord, error)
	ApprovePolicy(ctx context.Context, version uint64, by Caller) (*catalog.PolicyRecord, error)
	RecoverRaft(ctx context.Context, by string, force bool) (*catalog.RecoveryRecord, error)
	Revoke(ctx context.Context, req api.RevokeRequest, by string) ([]catalog.Revocation, error)
	Failover(ctx context.Context, req api.FailoverRequest, emit func(api.FailoverEvent)) (*catalog.FailoverRecord, error)
	Drill(ctx context.Context, req api.DrillRequest, emit func(api.FailoverEvent)) (*catalog.DrillRecord, error)
	RecordDrill(ctx context.Context, od api.OperatorDrill, by string) (*catalog.DrillRecord, error)
	CleanupDrills(ctx context.Context, service string) ([]catalog.DrillRecord, error)
	Failback(ctx context.Context, service, by string) (*catalog.ServiceState, error)
}

// Options configure a Server.
type Options struct {
	Name    mesh.NodeID // the node's, for the Host check
	Creds   *mesh.Creds // the node's certificate, CA and revocations
	Backend Backend
	Store   *blockstore.Store // image reads come from it; nil on a witness
	Audit   *audit.Recorder
	Metrics http.Handler // GET /metrics
	// Lifecycle serves points' keep reasons, prune, stats and verify; nil
	// on a witness.
	Lifecycle *lifecycle.Engine
	// Propose writes a command to the catalog (marks.go); nil = the
	// routes that change point marks refuse.
	Propose func(context.Context, *catalog.Command) error
	// ChoosePoint is the recovery engine's choice of point (marks.go);
	// nil on a witness.
	ChoosePoint func(ctx context.Context, service, at string) (api.PointChoice, error)
	Logger      *slog.Logger
}

// Server is the admin API of one node.
type Server struct {
	o      Options
	b      Backend
	log    *slog.Logger
	conns  conns
	images imageCache // block maps of images read through the API
}

// New returns the admin API server.
func New(o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Server{o: o, b: o.Backend, log: o.Logger}
}

// Serve answers HTTPS on ln until ctx ends, then shuts down gracefully
// (for up to 5 s) and returns.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         s.o.Creds.AdminServerTLS(),
		ConnState:         s.conns.track,
		ErrorLog:          slog.NewLogLogger(s.log.With("component", "admin").Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.ServeTLS(ln, "", "") }()
	select {
	case err := <-errc:
		return fmt.Errorf("admin API: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := hs.Shutdown(sctx)
	<-errc
	return err
}

// DropRevoked closes the open connections whose client certificate is
// revoked, and returns how many.
func (s *Server) DropRevoked() int {
	if s == nil {
		return 0
	}
	return s.conns.dropRevoked(s.o.Creds)
}

// Handler returns the API's routes behind the Host and cross-origin checks.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	viewer, operator, admin := mesh.RoleViewer, mesh.RoleOperator, mesh.RoleAdmin
	s.route(mux, "GET /metrics", viewer, auditNone, s.o.Metrics.ServeHTTP)
	s.route(mux, "GET /v1/status", viewer, auditNone, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.b.Status())
	})
	s.route(mux, "GET /v1/catalog", viewer, auditNone, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.b.Catalog())
	})
	s.route(mux, "GET /v1/policy", viewer, auditNone, func(w http.ResponseWriter, r *http.Request) {
		p := s.b.Catalog().Policy
		if p == nil {
			writeErr(w, http.StatusNotFound, api.CodeNotFound, "no cluster policy applied yet: lifeboat policy apply FILE")
			return
		}
		writeJSON(w, http.StatusOK, p)
	})
	s.route(mux, "PUT /v1/policy", admin, auditAlways, func(w http.ResponseWriter, r *http.Request) {
		src, err := io.ReadAll(io.LimitReader(r.Body, api.MaxPolicy+1))
		if err != nil {
			writeErr(w, http.StatusBadRequest, api.CodeBadRequest, "read policy: "+err.Error())
			return
		}
		if len(src) > api.MaxPolicy {
			writeErr(w, http.StatusBadRequest, api.CodeBadRequest, fmt.Sprintf("policy larger than %d bytes", api.MaxPolicy))
			return
		}
		file, err := policyFileName(r.URL.Query().Get("file"))
		if err != nil {
			s.writeAPIError(w, err)
			return
		}
		p, err := s.b.ApplyPolicy(r.Context(), file, src, callerOf(r))
		if err != nil {
			s.writeAPIError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, p)
	})
	s.route(mux, "POST /v1/policy/approve", admin, auditAlways, func(w http.ResponseWriter, r *http.Request) {
		v, err := strconv.ParseUint(r.URL.Query().Get("version"), 10, 64)
		if err != nil {
			writeErr(w, http.StatusBadRequest, api.CodeBadRequest, "version: want the pending policy's number (lifeboat policy show)")
			return
		}
		p, err := s.b.ApprovePolicy(r.Context(), v, callerOf(r))
		if err != nil {
			s.writeAPIError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, p)
	})
	s.registerLifecycleAPI(mux)
	s.registerMarksAPI(mux)
	s.route(mux, "GET /v1/image", operator, auditData, s.serveImage)
	s.route(mux, "GET /v1/audit", operator, auditNone, s.serveAudit)
	s.registerFailoverAPI(mux)
	s.route(mux, "POST /v1/raft/recover", admin, auditAlways, func(w http.ResponseWriter, r *http.Request) {
		rec, err := s.b.RecoverRaft(r.Context(), callerOf(r).Who(), r.URL.Query().Get("force") == "true")
		if err != nil {
			s.writeAPIError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, rec)
	})
	s.route(mux, "POST /v1/revoke", admin, auditAlways, s.serveRevoke)
	s.registerCleanupAPI(mux) // images list|rm, node leave: cleanup.go
	// Anything else: refused the same way, so that probes are recorded.
	s.route(mux, "/", mesh.RoleAdmin+1, auditNone, func(w http.ResponseWriter, r *http.Request) {})
	return s.hostCheck(http.NewCrossOriginProtection().Handler(mux))
}

// policyFileName checks the name a policy is recorded under: a base name,
// not a path.
func policyFileName(file string) (string, error) {
	if file == "" {
		return "policy.toml", nil
	}
	if file != filepath.Base(file) || !mesh.ValidName(file) {
		return "", fmt.Errorf("%w: file %q: want a file name like \"cluster.toml\" (1-64 of A-Z a-z 0-9 . _ -), not a path", catalog.ErrBadCommand, file)
	}
	return file, nil
}

func (s *Server) writeAPIError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, catalog.ErrBadCommand), errors.Is(err, api.ErrBadPolicy):
		writeErr(w, http.StatusBadRequest, api.CodeBadRequest, err.Error())
	case errors.Is(err, api.ErrNoQuorum):
		writeErr(w, http.StatusServiceUnavailable, api.CodeNoQuorum, err.Error())
	case errors.Is(err, api.ErrNeedForce):
		writeErr(w, http.StatusPreconditionRequired, api.CodeNeedForce, err.Error())
	case errors.Is(err, api.ErrHasLeader):
		writeErr(w, http.StatusConflict, api.CodeHasLeader, err.Error())
	case errors.Is(err, api.ErrUnsafe):
		writeErr(w, http.StatusConflict, api.CodeUnsafe, err.Error())
	case errors.Is(err, blockstore.ErrNotFound), errors.Is(err, api.ErrNoStore):
		writeErr(w, http.StatusNotFound, api.CodeNotFound, err.Error())
	default:
		s.log.Error("admin request", "err", err)
		writeErr(w, http.StatusInternalServerError, api.CodeInternal, err.Error())
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeErr(w http.ResponseWriter, code int, kind, msg string) {
	writeJSON(w, code, api.ErrorBody{Error: msg, Code: kind})
}

func (s *Server) serveAudit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var since time.Time
	if s := q.Get("since"); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			writeErr(w, http.StatusBadRequest, api.CodeBadRequest, fmt.Sprintf("since %q: want an RFC 3339 time", s))
			return
		}
		since = t
	}
	limit := 1000
	if s := q.Get("limit"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			writeErr(w, http.StatusBadRequest, api.CodeBadRequest, fmt.Sprintf("limit %q: want a positive number", s))
			return
		}
		limit = v
	}
	writeJSON(w, http.StatusOK, s.b.Audit(since, limit))
}

func (s *Server) serveRevoke(w http.ResponseWriter, r *http.Request) {
	var req api.RevokeRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, api.CodeBadRequest, "request body: "+err.Error())
		return
	}
	out, err := s.b.Revoke(r.Context(), req, callerOf(r).Who())
	if err != nil {
		s.writeAPIError(w, err)
		return
	}
	var serials []string
	for _, c := range out {
		serials = append(serials, c.Serial)
	}
	Note(r.Context(), "", fmt.Sprintf("revoked %v (%s)", serials, req.Reason))
	writeJSON(w, http.StatusOK, out)
}
