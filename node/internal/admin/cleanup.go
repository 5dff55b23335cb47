package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/api"
)

// Images and leaving (issue 15 item 6):
//
//	GET  /v1/images        viewer  []api.Image: the node's failover and drill images
//	POST /v1/images/rm     admin   body: api.ImagesRemove → []api.Image removed (audited)
//	POST /v1/node/leave    admin   body: api.LeaveRequest → api.LeaveResult (audited); the node then retires
//
// The backend serves them when it implements ImagesBackend and
// LeaveBackend; otherwise they answer 404.

// ImagesBackend lists and removes a node's failover and drill images.
type ImagesBackend interface {
	Images(ctx context.Context) ([]api.Image, error)
	// RemoveImages removes all of refs or none; an image in use is
	// refused with api.ErrUnsafe.
	RemoveImages(ctx context.Context, refs []string, by string) ([]api.Image, error)
}

// LeaveBackend retires the node from the cluster. Leave checks and
// answers; when it returns a result that is not a dry run, the node
// leaves after the answer is sent (start is called then).
type LeaveBackend interface {
	Leave(ctx context.Context, req api.LeaveRequest, by string) (res *api.LeaveResult, start func(), err error)
}

func (s *Server) registerCleanupAPI(mux *http.ServeMux) {
	ib, _ := s.b.(ImagesBackend)
	lb, _ := s.b.(LeaveBackend)
	viewer, admin := mesh.RoleViewer, mesh.RoleAdmin
	s.route(mux, "GET /v1/images", viewer, auditNone, func(w http.ResponseWriter, r *http.Request) {
		if ib == nil {
			writeErr(w, http.StatusNotFound, api.CodeNotFound, "this node keeps no images")
			return
		}
		ims, err := ib.Images(r.Context())
		if err != nil {
			s.writeAPIError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, ims)
	})
	s.route(mux, "POST /v1/images/rm", admin, auditAlways, func(w http.ResponseWriter, r *http.Request) {
		var req api.ImagesRemove
		if !decodeBody(w, r, &req) {
			return
		}
		Note(r.Context(), "", "images "+strings.Join(req.Images, " "))
		if ib == nil {
			writeErr(w, http.StatusNotFound, api.CodeNotFound, "this node keeps no images")
			return
		}
		ims, err := ib.RemoveImages(r.Context(), req.Images, callerOf(r).Who())
		if err != nil {
			Note(r.Context(), "", "images "+strings.Join(req.Images, " ")+": "+err.Error())
			s.writeAPIError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, ims)
	})
	s.route(mux, "POST /v1/node/leave", admin, auditAlways, func(w http.ResponseWriter, r *http.Request) {
		var req api.LeaveRequest
		if !decodeBody(w, r, &req) {
			return
		}
		if lb == nil {
			writeErr(w, http.StatusNotFound, api.CodeNotFound, "this node cannot leave through the admin API")
			return
		}
		res, start, err := lb.Leave(r.Context(), req, callerOf(r).Who())
		if err != nil {
			Note(r.Context(), "", fmt.Sprintf("leave force=%v: %v", req.Force, err))
			s.writeAPIError(w, err)
			return
		}
		Note(r.Context(), "", fmt.Sprintf("leave force=%v dry_run=%v raft=%s holds=%v warnings=%v", req.Force, req.DryRun, res.Raft, res.Holds, res.Warnings))
		writeJSON(w, http.StatusOK, res)
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		if start != nil {
			start()
		}
	})
}

// decodeBody reads a JSON request body into v (unknown fields refused),
// answering 400 when it does not decode.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && err != io.EOF {
		writeErr(w, http.StatusBadRequest, api.CodeBadRequest, "request body: "+err.Error())
		return false
	}
	return true
}
