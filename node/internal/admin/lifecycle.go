package admin

import (
	"net/http"

	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/api"
)

// The lifecycle routes (lifeboat points, prune, stats and verify with
// --admin):
//
//	GET  /v1/points?service=S&volume=V   viewer    []api.KeptPoint: each point and why it is kept
//	GET  /v1/prune?service=S             viewer    api.PruneResult of a dry run
//	POST /v1/prune?service=S             admin     thin now, then collect garbage (audited)
//	GET  /v1/stats                       viewer    api.StoreStats
//	POST /v1/verify                      operator  api.VerifyResult of the whole store (audited)
func (s *Server) registerLifecycleAPI(mux *http.ServeMux) {
	l := s.o.Lifecycle
	s.route(mux, "GET /v1/points", mesh.RoleViewer, auditNone, func(w http.ResponseWriter, r *http.Request) {
		service := r.URL.Query().Get("service")
		pts, err := s.b.Points(r.Context(), service, r.URL.Query().Get("volume"))
		if err == nil && l != nil {
			var kept []api.KeptPoint
			if kept, err = l.Explain(r.Context(), service, pts); err == nil {
				writeJSON(w, http.StatusOK, kept)
				return
			}
		}
		if err != nil {
			s.writeAPIError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, pts)
	})
	if l == nil {
		return
	}
	prune := func(w http.ResponseWriter, r *http.Request) {
		res, err := l.Prune(r.Context(), r.URL.Query().Get("service"), r.Method == http.MethodGet)
		if err != nil {
			s.writeAPIError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, res)
	}
	s.route(mux, "GET /v1/prune", mesh.RoleViewer, auditNone, prune)
	s.route(mux, "POST /v1/prune", mesh.RoleAdmin, auditAlways, prune)
	s.route(mux, "GET /v1/stats", mesh.RoleViewer, auditNone, func(w http.ResponseWriter, r *http.Request) {
		st, err := l.Stats(r.Context())
		if err != nil {
			s.writeAPIError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, st)
	})
	s.route(mux, "POST /v1/verify", mesh.RoleOperator, auditAlways, func(w http.ResponseWriter, r *http.Request) {
		rep, err := l.Verify(r.Context())
		if err != nil {
			s.writeAPIError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, api.NewVerifyResult(rep))
	})
}
