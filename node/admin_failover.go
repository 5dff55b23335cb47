package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// Failover and drill requests on the admin API stream their progress as
// JSON lines (FailoverEvent), the last carrying the result or the error:
//
//	POST /v1/failover            body: FailoverRequest → JSON lines
//	POST /v1/drill               body: DrillRequest → JSON lines
//	POST /v1/drill/cleanup?service=S   DrillRecords cleaned up
//	POST /v1/failback?service=S  ServiceState (the old primary becomes a warm copy)

// streamEvents runs fn, writing each event it emits as a JSON line, then
// the final event.
func (n *Node) streamEvents(w http.ResponseWriter, r *http.Request, into any, fn func(ctx context.Context, emit func(FailoverEvent)) (FailoverEvent, error)) {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields() // e.g. a "hook": requests carry no commands
	if err := dec.Decode(into); err != nil {
		writeErr(w, http.StatusBadRequest, api.CodeBadRequest, "request body: "+err.Error())
		return
	}
	if b, err := json.Marshal(into); err == nil {
		noteAudit(r.Context(), "", string(b))
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	var mu sync.Mutex
	enc := json.NewEncoder(w)
	emit := func(e FailoverEvent) {
		mu.Lock()
		defer mu.Unlock()
		enc.Encode(e)
		if fl != nil {
			fl.Flush()
		}
	}
	last, err := fn(r.Context(), emit)
	if err != nil {
		last = FailoverEvent{Error: err.Error(), Code: apiCode(err)}
		var nh *NotHolderError
		if errors.As(err, &nh) {
			last.Code, last.Message = api.CodeNotHolder, nh.Admin
		}
		n.log.Warn("admin request failed", "path", r.URL.Path, "err", err)
		noteAudit(r.Context(), "error", err.Error())
	}
	emit(last)
}

// apiCode is the API code of an error.
func apiCode(err error) string {
	switch {
	case errors.Is(err, ErrBadCommand), errors.Is(err, api.ErrBadPolicy):
		return api.CodeBadRequest
	case errors.Is(err, ErrNoQuorum):
		return api.CodeNoQuorum
	case errors.Is(err, ErrNeedForce):
		return api.CodeNeedForce
	case errors.Is(err, ErrHasLeader):
		return api.CodeHasLeader
	case errors.Is(err, blockstore.ErrNotFound), errors.Is(err, errNoStore):
		return api.CodeNotFound
	}
	return api.CodeInternal
}

func (n *Node) registerFailoverAPI(mux *http.ServeMux) {
	operator := mesh.RoleOperator
	n.route(mux, "POST /v1/failover", operator, auditAlways, func(w http.ResponseWriter, r *http.Request) {
		var req FailoverRequest
		n.streamEvents(w, r, &req, func(ctx context.Context, emit func(FailoverEvent)) (FailoverEvent, error) {
			req.By = callerOf(r).who()
			rec, err := n.Failover(ctx, req, emit)
			return FailoverEvent{Step: "done", Result: rec}, err
		})
	})
	n.route(mux, "POST /v1/drill", operator, auditAlways, func(w http.ResponseWriter, r *http.Request) {
		var req DrillRequest
		n.streamEvents(w, r, &req, func(ctx context.Context, emit func(FailoverEvent)) (FailoverEvent, error) {
			req.By = callerOf(r).who()
			d, err := n.Drill(ctx, req, emit)
			return FailoverEvent{Step: "done", Drill: d}, err
		})
	})
	n.route(mux, "POST /v1/drill/record", operator, auditAlways, func(w http.ResponseWriter, r *http.Request) {
		var od OperatorDrill
		dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&od); err != nil {
			writeErr(w, http.StatusBadRequest, api.CodeBadRequest, "request body: "+err.Error())
			return
		}
		noteAudit(r.Context(), "", fmt.Sprintf("drill of %s at %s on the operator's machine: hook %q passed=%v", od.Service, od.Point, od.HookCommand, od.Passed))
		d, err := n.RecordDrill(r.Context(), od, callerOf(r).who())
		if err != nil {
			n.writeAPIError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, d)
	})
	n.route(mux, "POST /v1/drill/cleanup", operator, auditAlways, func(w http.ResponseWriter, r *http.Request) {
		ds, err := n.CleanupDrills(r.Context(), r.URL.Query().Get("service"))
		if err != nil {
			n.writeAPIError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, ds)
	})
	n.route(mux, "POST /v1/failback", operator, auditAlways, func(w http.ResponseWriter, r *http.Request) {
		st, err := n.Failback(r.Context(), r.URL.Query().Get("service"), callerOf(r).who())
		if err != nil {
			n.writeAPIError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, st)
	})
}

// Failback makes the site the service last failed over from a warm copy
// of it: it receives the blocks that differ from what it holds, and a
// planned failover then brings the service home.
func (n *Node) Failback(ctx context.Context, service, by string) (*ServiceState, error) {
	st := n.Catalog().Services[service]
	last := st.LastFailover()
	if st == nil || st.Active == "" || last == nil {
		return nil, fmt.Errorf("%w: service %s has not failed over: nothing to fail back", ErrBadCommand, service)
	}
	if err := n.Apply(ctx, &Command{Op: catalog.OpReprotect, Service: service, On: true}); err != nil {
		return nil, err
	}
	n.log.Warn("failback: the old primary site becomes a warm copy", "service", service, "site", last.From, "by", by)
	return n.Catalog().Services[service], nil
}
