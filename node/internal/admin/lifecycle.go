package admin

import (
	"errors"
	"net/http"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/api"
)

// The lifecycle routes (lifeboat points, prune, stats and verify with
// --admin):
//
//	GET  /v1/points?service=S&volume=V   viewer    []api.KeptPoint: each point and why it is kept
//	GET  /v1/prune?service=S             viewer    api.PruneResult of a dry run
//	POST /v1/prune?service=S             admin     thin now, then collect garbage (audited)
//	GET  /v1/stats                       viewer    api.StoreStats, with the scrub's progress
//	POST /v1/verify                      operator  api.VerifyResult of the whole store (audited)
//	POST /v1/verify?repair=true          operator  api.ScrubResult: a full scrub pass now, damaged blocks
//	                                               repaired from other nodes, then api.VerifyResult (audited)
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
		out := api.StoreStats{Stats: st}
		if s.o.Scrub != nil {
			out.Scrub = s.o.Scrub.Status()
		}
		writeJSON(w, http.StatusOK, out)
	})
	s.route(mux, "POST /v1/verify", mesh.RoleOperator, auditAlways, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("repair") == "true" {
			if s.o.Scrub == nil {
				s.writeAPIError(w, errors.New("this node holds no store to repair (a witness)"))
				return
			}
			res, err := s.o.Scrub.Pass(r.Context(), true)
			if err == nil {
				var rep blockstore.VerifyReport
				rep, err = l.Verify(r.Context())
				after := api.NewVerifyResult(rep)
				res.After = &after
				res.OK = res.OK && after.OK
			}
			if err != nil {
				s.writeAPIError(w, err)
				return
			}
			writeJSON(w, http.StatusOK, res)
			return
		}
		rep, err := l.Verify(r.Context())
		if err != nil {
			s.writeAPIError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, api.NewVerifyResult(rep))
	})
}
