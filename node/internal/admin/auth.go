package admin

import (
	"context"
	"crypto/tls"
	"fmt"
	"mime"
	"net"
	"net/http"
	"strings"
	"sync"

	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// Admin API authentication and authorization (issue 13).
//
// The admin API is HTTPS with mutual TLS on every address, loopback
// included. The listener requests a client certificate and verifies any it
// gets against the cluster CA (a foreign, expired or revoked certificate
// fails the handshake); a request that comes without one is answered 401
// and recorded, so that the audit log shows the attempt. Each route needs
// a role (mesh.Role): operators hold their certificate's role, nodes
// viewer (monitoring), agents none. Mutating requests must carry a
// non-form Content-Type and pass http.CrossOriginProtection, and every
// request must name the node by an IP literal, localhost, or a name in the
// node's certificate in its Host header, so that a browser page can
// neither forge a request nor reach the API through DNS rebinding.

// Caller is who sent an admin request, from the TLS connection alone.
type Caller struct {
	ID   mesh.Identity
	OK   bool // a verified certificate was presented
	Role mesh.Role
	Addr string
}

// Who names the caller: the certificate's name, or "anonymous".
func (c Caller) Who() string {
	if !c.OK {
		return "anonymous"
	}
	return string(c.ID.Name)
}

// callerOf identifies the sender of r.
func callerOf(r *http.Request) Caller {
	c := Caller{Addr: r.RemoteAddr}
	if r.TLS == nil {
		return c
	}
	id, err := mesh.PeerIdentity(*r.TLS)
	if err != nil {
		return c
	}
	c.ID, c.OK, c.Role = id, true, id.AdminRole()
	return c
}

// auditHow says whether and how a route's calls go into the audit log.
type auditHow int

const (
	auditNone   auditHow = iota // metadata reads: status, points, metrics
	auditAlways                 // mutations: every call
	auditData                   // reads of data: once per Caller and target every auditRepeat
)

// route registers h for pattern, callable by callers holding at least role.
func (s *Server) route(mux *http.ServeMux, pattern string, role mesh.Role, how auditHow, h http.HandlerFunc) {
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		c := callerOf(r)
		e := &catalog.AuditEntry{
			Who: c.Who(), Kind: "none", From: c.Addr, Action: r.Method + " " + r.URL.Path,
			Target: auditTarget(r),
		}
		if c.OK {
			e.Kind, e.Role, e.Serial = c.ID.Kind(), c.Role.String(), c.ID.Serial
		}
		refuse := func(status int, code, msg string) {
			e.Result, e.Status, e.Detail = "refused", status, msg
			s.o.Audit.Record(e, how == auditNone)
			writeErr(w, status, code, msg)
		}
		switch {
		case !c.OK:
			refuse(http.StatusUnauthorized, api.CodeUnauthenticated, "the admin API needs a client certificate: an operator certificate from `lifeboat ca issue --operator NAME --role ROLE`, given with --tls-dir or LIFEBOAT_TLS_DIR")
			return
		case s.o.Creds.Revoked(c.ID.Serial):
			refuse(http.StatusForbidden, api.CodeRevoked, fmt.Sprintf("certificate %s of %s %s is revoked", c.ID.Serial, c.ID.Kind(), c.ID.Name))
			return
		case c.Role < role:
			refuse(http.StatusForbidden, api.CodeForbidden, fmt.Sprintf("%s %s has role %s: %s needs role %s", c.ID.Kind(), c.ID.Name, c.Role, e.Action, role))
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && r.ContentLength != 0 {
			if err := checkContentType(r); err != nil {
				refuse(http.StatusUnsupportedMediaType, api.CodeBadRequest, err.Error())
				return
			}
		}
		rec := &statusWriter{ResponseWriter: w}
		ctx := context.WithValue(r.Context(), auditKey{}, e)
		h(rec, r.WithContext(ctx))
		if how == auditNone {
			return
		}
		e.Status = rec.code()
		if e.Result == "" {
			e.Result = "ok"
			if e.Status >= 400 {
				e.Result = "error"
			}
		}
		s.o.Audit.Record(e, how == auditData)
	})
}

// auditKey finds a request's audit entry in its context.
type auditKey struct{}

// Note lets a handler (or the backend it calls) add to its request's audit entry: the result
// ("ok", "error") and a detail (bounded).
func Note(ctx context.Context, result, detail string) {
	if e, ok := ctx.Value(auditKey{}).(*catalog.AuditEntry); ok {
		if result != "" {
			e.Result = result
		}
		if detail != "" {
			e.Detail = detail
		}
	}
}

// auditTarget is what a request names: its query, which carries the
// service, volume, point or file.
func auditTarget(r *http.Request) string {
	return r.URL.RawQuery
}

// checkContentType refuses the content types a browser form may send
// across origins without asking (HTML forms and text/plain).
func checkContentType(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if ct == "" || err != nil {
		return fmt.Errorf("request body without a Content-Type: send application/json (or application/toml for a policy)")
	}
	switch mt {
	case "application/json", "application/toml", "application/octet-stream":
		return nil
	}
	return fmt.Errorf("Content-Type %q is not accepted: send application/json (or application/toml for a policy)", mt)
}

// statusWriter remembers the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusWriter) code() int {
	if s.status == 0 {
		return http.StatusOK
	}
	return s.status
}

// hostCheck refuses requests whose Host header names anything but an IP
// literal, localhost, or a DNS name in the node's certificate.
func (s *Server) hostCheck(h http.Handler) http.Handler {
	names := map[string]bool{"localhost": true, string(s.o.Name): true}
	if leaf := s.o.Creds.Cert.Leaf; leaf != nil {
		for _, d := range leaf.DNSNames {
			names[strings.ToLower(d)] = true
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.ToLower(strings.Trim(host, "[]"))
		if net.ParseIP(host) == nil && !names[host] {
			writeErr(w, http.StatusMisdirectedRequest, api.CodeForbidden, fmt.Sprintf("Host %q is not this node: use its address or a name in its certificate", r.Host))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// conns tracks the admin API's open TLS connections, so that a
// revocation can close the ones a revoked certificate opened.
type conns struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (a *conns) track(c net.Conn, s http.ConnState) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch s {
	case http.StateNew:
		if a.conns == nil {
			a.conns = map[net.Conn]struct{}{}
		}
		a.conns[c] = struct{}{}
	case http.StateClosed, http.StateHijacked:
		delete(a.conns, c)
	}
}

// dropRevoked closes the connections whose client certificate is revoked.
func (a *conns) dropRevoked(creds *mesh.Creds) int {
	a.mu.Lock()
	var drop []net.Conn
	for c := range a.conns {
		tc, ok := c.(*tls.Conn)
		if !ok {
			continue
		}
		cs := tc.ConnectionState()
		if !cs.HandshakeComplete {
			continue
		}
		if id, err := mesh.PeerIdentity(cs); err == nil && creds.Revoked(id.Serial) {
			drop = append(drop, c)
		}
	}
	a.mu.Unlock()
	for _, c := range drop {
		c.Close()
	}
	return len(drop)
}
