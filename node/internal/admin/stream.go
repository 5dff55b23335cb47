package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/lifeboat-dr/lifeboat/node/api"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// Failover and drill requests on the admin API stream their progress as
// JSON lines (api.FailoverEvent), the last carrying the result or the error:
//
//	POST /v1/failover            body: api.FailoverRequest → JSON lines
//	POST /v1/drill               body: api.DrillRequest → JSON lines
//	POST /v1/drill/cleanup?service=S   DrillRecords cleaned up
//	POST /v1/failback?service=S  ServiceState (the old primary becomes a warm copy)

// streamEvents runs fn, writing each event it emits as a JSON line, then
// the final event.
func (s *Server) streamEvents(w http.ResponseWriter, r *http.Request, into any, fn func(ctx context.Context, emit func(api.FailoverEvent)) (api.FailoverEvent, error)) {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields() // e.g. a "hook": requests carry no commands
	if err := dec.Decode(into); err != nil {
		writeErr(w, http.StatusBadRequest, api.CodeBadRequest, "request body: "+err.Error())
		return
	}
	if b, err := json.Marshal(into); err == nil {
		Note(r.Context(), "", string(b))
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	var mu sync.Mutex
	enc := json.NewEncoder(w)
	emit := func(e api.FailoverEvent) {
		mu.Lock()
		defer mu.Unlock()
		enc.Encode(e)
		if fl != nil {
			fl.Flush()
		}
	}
	last, err := fn(r.Context(), emit)
	if err != nil {
		last = api.FailoverEvent{Error: err.Error(), Code: apiCode(err)}
		var nh *api.NotHolderError
		if errors.As(err, &nh) {
			last.Code, last.Message = api.CodeNotHolder, nh.Admin
		}
		s.log.Warn("admin request failed", "path", r.URL.Path, "err", err)
		Note(r.Context(), "error", err.Error())
	}
	emit(last)
}

// apiCode is the API code of an error.
func apiCode(err error) string {
	switch {
	case errors.Is(err, catalog.ErrBadCommand), errors.Is(err, api.ErrBadPolicy):
		return api.CodeBadRequest
	case errors.Is(err, api.ErrNoQuorum):
		return api.CodeNoQuorum
	case errors.Is(err, api.ErrNeedForce):
		return api.CodeNeedForce
	case errors.Is(err, api.ErrHasLeader):
		return api.CodeHasLeader
	case errors.Is(err, api.ErrUnsafe):
		return api.CodeUnsafe
	case errors.Is(err, blockstore.ErrNotFound), errors.Is(err, api.ErrNoStore):
		return api.CodeNotFound
	}
	return api.CodeInternal
}

func (s *Server) registerFailoverAPI(mux *http.ServeMux) {
	operator := mesh.RoleOperator
	s.route(mux, "POST /v1/failover", operator, auditAlways, func(w http.ResponseWriter, r *http.Request) {
		var req api.FailoverRequest
		s.streamEvents(w, r, &req, func(ctx context.Context, emit func(api.FailoverEvent)) (api.FailoverEvent, error) {
			req.By = callerOf(r).Who()
			rec, err := s.b.Failover(ctx, req, emit)
			return api.FailoverEvent{Step: "done", Result: rec}, err
		})
	})
	s.route(mux, "POST /v1/drill", operator, auditAlways, func(w http.ResponseWriter, r *http.Request) {
		var req api.DrillRequest
		s.streamEvents(w, r, &req, func(ctx context.Context, emit func(api.FailoverEvent)) (api.FailoverEvent, error) {
			req.By = callerOf(r).Who()
			d, err := s.b.Drill(ctx, req, emit)
			return api.FailoverEvent{Step: "done", Drill: d}, err
		})
	})
	s.route(mux, "POST /v1/drill/record", operator, auditAlways, func(w http.ResponseWriter, r *http.Request) {
		var od api.OperatorDrill
		dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&od); err != nil {
			writeErr(w, http.StatusBadRequest, api.CodeBadRequest, "request body: "+err.Error())
			return
		}
		Note(r.Context(), "", fmt.Sprintf("drill of %s at %s on the operator's machine: hook %q passed=%v", od.Service, od.Point, od.HookCommand, od.Passed))
		d, err := s.b.RecordDrill(r.Context(), od, callerOf(r).Who())
		if err != nil {
			s.writeAPIError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, d)
	})
	s.route(mux, "POST /v1/drill/cleanup", operator, auditAlways, func(w http.ResponseWriter, r *http.Request) {
		ds, err := s.b.CleanupDrills(r.Context(), r.URL.Query().Get("service"))
		if err != nil {
			s.writeAPIError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, ds)
	})
	s.route(mux, "POST /v1/failback", operator, auditAlways, func(w http.ResponseWriter, r *http.Request) {
		st, err := s.b.Failback(r.Context(), r.URL.Query().Get("service"), callerOf(r).Who())
		if err != nil {
			s.writeAPIError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, st)
	})
}
