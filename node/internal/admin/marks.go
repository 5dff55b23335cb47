package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// The point marks routes (issue 16):
//
//	POST /v1/points/clear-suspect?service=S&point=P   admin   catalog.PointMark: the point's suspicion cleared (audited)
//	GET  /v1/points/choose?service=S&at=X             viewer  api.PointChoice: the point a drill here takes for --at X
//
// An operator who found a suspect point's writes expected (a re-encrypted
// volume, a restore of compressed data) declares it clean: failover and
// drill take it again and its clean point before stops being pinned. The
// figures stay in the mark, with who cleared it.
func (s *Server) registerMarksAPI(mux *http.ServeMux) {
	s.route(mux, "POST /v1/points/clear-suspect", mesh.RoleAdmin, auditAlways, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		m, err := s.clearSuspect(r.Context(), q.Get("service"), q.Get("point"), callerOf(r).Who())
		if err != nil {
			s.writeAPIError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, m)
	})
	s.route(mux, "GET /v1/points/choose", mesh.RoleViewer, auditNone, func(w http.ResponseWriter, r *http.Request) {
		if s.o.ChoosePoint == nil {
			s.writeAPIError(w, api.ErrNoStore)
			return
		}
		c, err := s.o.ChoosePoint(r.Context(), r.URL.Query().Get("service"), r.URL.Query().Get("at"))
		if err != nil {
			s.writeAPIError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, c)
	})
}

// clearSuspect clears the suspicion of service's point (a unique prefix
// of its ID of at least 8 characters), as by.
func (s *Server) clearSuspect(ctx context.Context, service, point, by string) (catalog.PointMark, error) {
	if s.o.Propose == nil {
		return catalog.PointMark{}, errors.New("this node serves no catalog changes")
	}
	if service == "" || len(point) < 8 {
		return catalog.PointMark{}, fmt.Errorf("%w: want service=SERVICE and point=ID (at least 8 characters of it)", catalog.ErrBadCommand)
	}
	st := s.b.Catalog().Services[service]
	var found []catalog.PointMark
	if st != nil {
		for _, m := range st.Marks {
			if m.Suspect != nil && len(m.Point) >= len(point) && m.Point[:len(point)] == point {
				found = append(found, m)
			}
		}
	}
	switch {
	case len(found) == 0:
		return catalog.PointMark{}, fmt.Errorf("%w: service %s has no suspect point %s (lifeboat status lists them)", blockstore.ErrNotFound, service, point)
	case len(found) > 1:
		return catalog.PointMark{}, fmt.Errorf("%w: %s matches %d suspect points of %s; give more of the ID", catalog.ErrBadCommand, point, len(found), service)
	case !found[0].IsSuspect():
		return found[0], nil // cleared already: nothing to do
	}
	m := found[0]
	sus := *m.Suspect
	sus.Cleared = by
	m.Suspect = &sus
	if err := s.o.Propose(ctx, &catalog.Command{Op: catalog.OpMarks, Marks: []catalog.PointMark{{Service: service, Point: m.Point, Suspect: &sus}}}); err != nil {
		return catalog.PointMark{}, fmt.Errorf("clear the suspicion of point %s in the catalog: %w", m.Point, err)
	}
	s.log.Info("suspect point cleared", "service", service, "point", m.Point, "by", by)
	return m, nil
}
