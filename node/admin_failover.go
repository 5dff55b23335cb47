package node

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// Failover and drill requests on the admin API stream their progress as
// JSON lines (FailoverEvent), the last carrying the result or the error:
//
//	POST /v1/failover            body: FailoverRequest → JSON lines
//	POST /v1/drill               body: DrillRequest → JSON lines
//	POST /v1/drill/cleanup?service=S   DrillRecords cleaned up
//	POST /v1/failback?service=S  ServiceState (the old primary becomes a warm copy)

const apiNotHolder = "not_holder"

// streamEvents runs fn, writing each event it emits as a JSON line, then
// the final event.
func (n *Node) streamEvents(w http.ResponseWriter, r *http.Request, into any, fn func(ctx context.Context, emit func(FailoverEvent)) (FailoverEvent, error)) {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields() // e.g. a "hook": requests carry no commands
	if err := dec.Decode(into); err != nil {
		writeErr(w, http.StatusBadRequest, apiBadRequest, "request body: "+err.Error())
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
			last.Code, last.Message = apiNotHolder, nh.Admin
		}
		n.log.Warn("admin request failed", "path", r.URL.Path, "err", err)
		noteAudit(r.Context(), "error", err.Error())
	}
	emit(last)
}

// apiCode is the API code of an error.
func apiCode(err error) string {
	switch {
	case errors.Is(err, ErrBadCommand), errors.Is(err, errBadPolicy):
		return apiBadRequest
	case errors.Is(err, ErrNoQuorum):
		return apiNoQuorum
	case errors.Is(err, ErrNeedForce):
		return apiNeedForce
	case errors.Is(err, ErrHasLeader):
		return apiHasLeader
	case errors.Is(err, blockstore.ErrNotFound), errors.Is(err, errNoStore):
		return apiNotFound
	}
	return apiInternal
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
			writeErr(w, http.StatusBadRequest, apiBadRequest, "request body: "+err.Error())
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

// streamPost posts body and reads JSON lines of events until the last.
func (c *Client) streamPost(ctx context.Context, path string, body any, onEvent func(FailoverEvent)) (FailoverEvent, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return FailoverEvent{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, strings.NewReader(string(b)))
	if err != nil {
		return FailoverEvent{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	hc := *c.http
	hc.Timeout = 0 // failovers take as long as their hooks; ctx bounds them
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return FailoverEvent{}, ctx.Err()
		}
		return FailoverEvent{}, fmt.Errorf("%w: %s: %v", ErrUnreachable, strings.TrimPrefix(c.base, "https://"), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		rb, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var ae apiError
		if json.Unmarshal(rb, &ae) != nil || ae.Error == "" {
			return FailoverEvent{}, &APIError{Status: resp.StatusCode, Code: apiInternal, Msg: fmt.Sprintf("admin API: %s", resp.Status)}
		}
		return FailoverEvent{}, &APIError{Status: resp.StatusCode, Code: ae.Code, Msg: ae.Error}
	}
	return readEvents(ctx, resp.Body, onEvent)
}

// readEvents reads JSON lines of events until the last (a "done" step or
// an error) and returns it; onEvent gets the others.
func readEvents(ctx context.Context, r io.Reader, onEvent func(FailoverEvent)) (FailoverEvent, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var last FailoverEvent
	for sc.Scan() {
		var e FailoverEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return FailoverEvent{}, fmt.Errorf("decode admin API event: %w", err)
		}
		if e.Step == "done" || e.Error != "" {
			last = e
			break
		}
		if onEvent != nil {
			onEvent(e)
		}
	}
	if err := sc.Err(); err != nil {
		if ctx.Err() != nil {
			return FailoverEvent{}, ctx.Err()
		}
		return FailoverEvent{}, fmt.Errorf("%w: the connection broke before the end (the node may still be working: run the command again to see or finish it): %v", ErrUnreachable, err)
	}
	if last.Error != "" {
		if last.Code == apiNotHolder {
			return last, &NotHolderError{Admin: last.Message, Msg: last.Error}
		}
		return last, &APIError{Status: http.StatusOK, Code: last.Code, Msg: last.Error}
	}
	if last.Step != "done" {
		return FailoverEvent{}, fmt.Errorf("%w: the answer ended without a result (the node may still be working: run the command again)", ErrUnreachable)
	}
	return last, nil
}

// Failover runs (or with DryRun plans) a failover on the node; onEvent
// gets the plan and the progress.
func (c *Client) Failover(ctx context.Context, req FailoverRequest, onEvent func(FailoverEvent)) (*FailoverRecord, error) {
	e, err := c.streamPost(ctx, "/v1/failover", req, onEvent)
	return e.Result, err
}

// Drill runs a drill on the node.
func (c *Client) Drill(ctx context.Context, req DrillRequest, onEvent func(FailoverEvent)) (*DrillRecord, error) {
	e, err := c.streamPost(ctx, "/v1/drill", req, onEvent)
	return e.Drill, err
}

// CleanupDrills removes the kept drill images of service on the node.
func (c *Client) CleanupDrills(ctx context.Context, service string) ([]DrillRecord, error) {
	var out []DrillRecord
	return out, c.do(ctx, http.MethodPost, "/v1/drill/cleanup?"+url.Values{"service": {service}}.Encode(), nil, &out)
}

// Failback makes the service's old primary site a warm copy again.
func (c *Client) Failback(ctx context.Context, service string) (*ServiceState, error) {
	var st ServiceState
	return &st, c.do(ctx, http.MethodPost, "/v1/failback?"+url.Values{"service": {service}}.Encode(), nil, &st)
}
