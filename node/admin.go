package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// The admin API is HTTPS with JSON bodies on the node's admin address,
// with mutual TLS on every address, loopback included (auth.go says how
// callers are identified and refused). Errors are JSON objects
// {"error": text, "code": one of the apiCode values}. Each route needs a
// role; mutations and data reads go into the audit log:
//
//	GET  /metrics                        viewer
//	GET  /v1/status                      viewer    Status
//	GET  /v1/policy                      viewer    PolicyRecord (404 when none)
//	GET  /v1/catalog                     viewer    Catalog
//	GET  /v1/points?service=S&volume=V   viewer    []blockstore.Point held by this node
//	GET  /v1/image?volume=S/V&at=X       operator  the volume's image at a point (audited)
//	POST /v1/failover, /v1/drill, ...    operator  see admin_failover.go (audited)
//	GET  /v1/audit?since=T&limit=N       operator  []AuditEntry
//	PUT  /v1/policy?file=NAME            admin     body: cluster policy TOML → PolicyRecord (audited)
//	POST /v1/policy/approve?version=N    admin     a pending policy's second approval (audited)
//	POST /v1/raft/recover?force=true     admin     RecoveryRecord (audited)
//	POST /v1/revoke                      admin     body: RevokeRequest → []Revocation (audited)

// maxPolicy bounds a policy file sent to the admin API.
const maxPolicy = 1 << 20

// API error codes.
const (
	apiBadRequest = "bad_request"
	apiNotFound   = "not_found"
	apiNoQuorum   = "no_quorum"
	apiNeedForce  = "need_force"
	apiHasLeader  = "has_leader"
	apiInternal   = "internal"
	apiForbidden  = "forbidden"
)

type apiError struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

func (n *Node) adminHandler() http.Handler {
	mux := http.NewServeMux()
	viewer, operator, admin := mesh.RoleViewer, mesh.RoleOperator, mesh.RoleAdmin
	n.route(mux, "GET /metrics", viewer, auditNone, n.metrics.handler().ServeHTTP)
	n.route(mux, "GET /v1/status", viewer, auditNone, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.Status())
	})
	n.route(mux, "GET /v1/catalog", viewer, auditNone, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.Catalog())
	})
	n.route(mux, "GET /v1/policy", viewer, auditNone, func(w http.ResponseWriter, r *http.Request) {
		p := n.Catalog().Policy
		if p == nil {
			writeErr(w, http.StatusNotFound, apiNotFound, "no cluster policy applied yet: lifeboat policy apply FILE")
			return
		}
		writeJSON(w, http.StatusOK, p)
	})
	n.route(mux, "PUT /v1/policy", admin, auditAlways, func(w http.ResponseWriter, r *http.Request) {
		src, err := io.ReadAll(io.LimitReader(r.Body, maxPolicy+1))
		if err != nil {
			writeErr(w, http.StatusBadRequest, apiBadRequest, "read policy: "+err.Error())
			return
		}
		if len(src) > maxPolicy {
			writeErr(w, http.StatusBadRequest, apiBadRequest, fmt.Sprintf("policy larger than %d bytes", maxPolicy))
			return
		}
		file, err := policyFileName(r.URL.Query().Get("file"))
		if err != nil {
			n.writeAPIError(w, err)
			return
		}
		p, err := n.applyPolicy(r.Context(), file, src, callerOf(r))
		if err != nil {
			n.writeAPIError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, p)
	})
	n.route(mux, "POST /v1/policy/approve", admin, auditAlways, func(w http.ResponseWriter, r *http.Request) {
		v, err := strconv.ParseUint(r.URL.Query().Get("version"), 10, 64)
		if err != nil {
			writeErr(w, http.StatusBadRequest, apiBadRequest, "version: want the pending policy's number (lifeboat policy show)")
			return
		}
		p, err := n.ApprovePolicy(r.Context(), v, callerOf(r))
		if err != nil {
			n.writeAPIError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, p)
	})
	n.route(mux, "GET /v1/points", viewer, auditNone, func(w http.ResponseWriter, r *http.Request) {
		pts, err := n.Points(r.Context(), r.URL.Query().Get("service"), r.URL.Query().Get("volume"))
		if err != nil {
			n.writeAPIError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, pts)
	})
	n.route(mux, "GET /v1/image", operator, auditData, n.serveImage)
	n.route(mux, "GET /v1/audit", operator, auditNone, n.serveAudit)
	n.registerFailoverAPI(mux)
	n.route(mux, "POST /v1/raft/recover", admin, auditAlways, func(w http.ResponseWriter, r *http.Request) {
		rec, err := n.RecoverRaft(r.Context(), callerOf(r).who(), r.URL.Query().Get("force") == "true")
		if err != nil {
			n.writeAPIError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, rec)
	})
	n.route(mux, "POST /v1/revoke", admin, auditAlways, n.serveRevoke)
	// Anything else: refused the same way, so that probes are recorded.
	n.route(mux, "/", mesh.RoleAdmin+1, auditNone, func(w http.ResponseWriter, r *http.Request) {})
	return n.hostCheck(http.NewCrossOriginProtection().Handler(mux))
}

// policyFileName checks the name a policy is recorded under: a base name,
// not a path.
func policyFileName(file string) (string, error) {
	if file == "" {
		return "policy.toml", nil
	}
	if file != filepath.Base(file) || !mesh.ValidName(file) {
		return "", fmt.Errorf("%w: file %q: want a file name like \"cluster.toml\" (1-64 of A-Z a-z 0-9 . _ -), not a path", ErrBadCommand, file)
	}
	return file, nil
}

func (n *Node) writeAPIError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrBadCommand), errors.Is(err, errBadPolicy):
		writeErr(w, http.StatusBadRequest, apiBadRequest, err.Error())
	case errors.Is(err, ErrNoQuorum):
		writeErr(w, http.StatusServiceUnavailable, apiNoQuorum, err.Error())
	case errors.Is(err, ErrNeedForce):
		writeErr(w, http.StatusPreconditionRequired, apiNeedForce, err.Error())
	case errors.Is(err, ErrHasLeader):
		writeErr(w, http.StatusConflict, apiHasLeader, err.Error())
	case errors.Is(err, blockstore.ErrNotFound), errors.Is(err, errNoStore):
		writeErr(w, http.StatusNotFound, apiNotFound, err.Error())
	default:
		n.log.Error("admin request", "err", err)
		writeErr(w, http.StatusInternalServerError, apiInternal, err.Error())
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
	writeJSON(w, code, apiError{Error: msg, Code: kind})
}

// errBadPolicy wraps a policy that does not parse or validate.
var errBadPolicy = errors.New("invalid cluster policy")

// ApplyPolicy validates a cluster policy file and writes it to the catalog.
// A policy that does not validate changes nothing.
// by names who applies it, for the record (in-process callers; the admin
// API uses the caller's certificate).
func (n *Node) ApplyPolicy(ctx context.Context, file string, src []byte, by string) (*PolicyRecord, error) {
	return n.applyPolicy(ctx, file, src, caller{id: mesh.Identity{Name: mesh.NodeID(by)}, ok: true})
}

func (n *Node) applyPolicy(ctx context.Context, file string, src []byte, by caller) (*PolicyRecord, error) {
	c, err := config.ParseCluster(file, src)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errBadPolicy, err)
	}
	if err := n.checkEncryption(c); err != nil {
		return nil, fmt.Errorf("%w: %w", errBadPolicy, err)
	}
	rec := &PolicyRecord{File: file, Source: string(src), Cluster: c, AppliedAt: n.opts.Now().UTC(), AppliedBy: by.who(), AppliedBySerial: by.id.Serial}
	cat := n.Catalog()
	if changes := sensitiveChanges(cat.PolicyCluster(), c); len(changes) > 0 && needsApprovals(cat.PolicyCluster(), c) > 1 {
		rec.Changes = changes
		if err := n.Apply(ctx, &Command{Op: catalog.OpPolicyPropose, Policy: rec}); err != nil {
			return nil, err
		}
		p := n.Catalog().PendingPolicy
		noteAudit(ctx, "pending", fmt.Sprintf("policy %s v%d waits for a second admin: %s", file, p.Version, strings.Join(changes, "; ")))
		n.log.Warn("cluster policy waits for a second admin's approval", "file", file, "by", by.who(), "version", p.Version, "changes", strings.Join(changes, "; "))
		return p, nil
	}
	if err := n.Apply(ctx, &Command{Op: catalog.OpPolicy, Policy: rec}); err != nil {
		return nil, err
	}
	n.log.Info("cluster policy applied", "file", file, "by", by.who())
	p := n.Catalog().Policy
	if p == nil {
		return rec, nil
	}
	return p, nil
}

// checkEncryption refuses a policy that asks a site to keep its stores
// encrypted while a node of that site (as gossip sees it now) keeps a plain
// one: the policy would promise what the disks do not do.
func (n *Node) checkEncryption(c *config.Cluster) error {
	want := map[mesh.Site]bool{}
	for _, s := range c.Sites {
		if s.Encrypt {
			want[mesh.Site(s.Name)] = true
		}
	}
	if len(want) == 0 {
		return nil
	}
	var plain []string
	for _, m := range n.gossip.Members() {
		if m.State == mesh.StateAlive && m.Meta.Role == RoleNode && want[m.Meta.Site] && !m.Meta.Encrypted {
			plain = append(plain, fmt.Sprintf("%s (site %s)", m.Name, m.Meta.Site))
		}
	}
	if len(plain) == 0 {
		return nil
	}
	slices.Sort(plain)
	return fmt.Errorf("encrypt = true, but these nodes keep unencrypted block stores: %s. "+
		"Give each an [encryption] kek_file or kek_command in its node file and a new, empty data dir "+
		"(a store is encrypted when it is created), or leave encrypt off for the site", strings.Join(plain, ", "))
}

// ApprovePolicy applies the pending policy with that version, approved by
// an admin other than the one who proposed it.
func (n *Node) ApprovePolicy(ctx context.Context, version uint64, by caller) (*PolicyRecord, error) {
	p := n.Catalog().PendingPolicy
	switch {
	case p == nil:
		return nil, fmt.Errorf("%w: no policy waits for approval", ErrBadCommand)
	case p.Version != version:
		return nil, fmt.Errorf("%w: the pending policy is version %d, not %d", ErrBadCommand, p.Version, version)
	case p.AppliedBy == by.who() || (p.AppliedBySerial != "" && p.AppliedBySerial == by.id.Serial):
		return nil, fmt.Errorf("%w: %s proposed policy v%d: a different admin must approve it", ErrBadCommand, by.who(), version)
	}
	rec := *p
	rec.ApprovedBy = by.who()
	if err := n.Apply(ctx, &Command{Op: catalog.OpPolicy, Policy: &rec}); err != nil {
		return nil, err
	}
	n.log.Info("cluster policy approved and applied", "file", rec.File, "by", rec.AppliedBy, "approved_by", by.who())
	return n.Catalog().Policy, nil
}

// Client talks to a node's admin API.
type Client struct {
	base  string
	http  *http.Client
	creds *mesh.Creds
}

// NewClient returns a client for the admin API at addr (host:port), which
// authenticates with creds' certificate (an operator's; a node's reads as
// a viewer). creds nil makes a client that presents none, which every
// route refuses: tests use it to see that.
func NewClient(addr string, creds *mesh.Creds) (*Client, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("admin address %q: %w", addr, err)
	}
	c := &Client{http: &http.Client{Timeout: 60 * time.Second}, base: "https://" + addr, creds: creds}
	var tc *tls.Config
	if creds != nil {
		tc = creds.ClientTLS()
	} else {
		tc = &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true} // refused anyway: no certificate
	}
	c.http.Transport = &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}
	return c, nil
}

// At returns a client for another node's admin address with the same
// credentials (a redirect to the service's holder).
func (c *Client) At(addr string) (*Client, error) { return NewClient(addr, c.creds) }

// APIError is an error the admin API returned.
type APIError struct {
	Status int
	Code   string
	Msg    string
}

func (e *APIError) Error() string { return e.Msg }

// Is maps API codes to the node's sentinels.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrNoQuorum:
		return e.Code == apiNoQuorum
	case ErrNeedForce:
		return e.Code == apiNeedForce
	case ErrHasLeader:
		return e.Code == apiHasLeader
	case errBadPolicy, ErrBadCommand:
		return e.Code == apiBadRequest
	case ErrForbidden:
		return e.Code == apiForbidden || e.Code == apiUnauthenticated || e.Code == apiRevoked
	case blockstore.ErrNotFound:
		return e.Code == apiNotFound
	}
	return false
}

// IsBadRequest reports whether err is the API refusing the input.
func IsBadRequest(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Code == apiBadRequest
}

// ErrForbidden reports an admin call refused for who made it: no
// certificate, a revoked one, or a role too low.
var ErrForbidden = errors.New("admin API refused the caller")

// ErrUnreachable reports an admin API that does not answer.
var ErrUnreachable = errors.New("admin API unreachable")

func (c *Client) do(ctx context.Context, method, path string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if body != nil {
		ct := "application/json"
		if strings.HasPrefix(path, "/v1/policy?") {
			ct = "application/toml"
		}
		req.Header.Set("Content-Type", ct)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: %s: %v", ErrUnreachable, strings.TrimPrefix(c.base, "https://"), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read admin API reply: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var ae apiError
		if json.Unmarshal(b, &ae) != nil || ae.Error == "" {
			return &APIError{Status: resp.StatusCode, Code: apiInternal, Msg: fmt.Sprintf("admin API: %s: %s", resp.Status, bytes.TrimSpace(b))}
		}
		return &APIError{Status: resp.StatusCode, Code: ae.Code, Msg: ae.Error}
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decode admin API reply: %w", err)
	}
	return nil
}

// Status returns the node's view of the cluster.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var s Status
	return &s, c.do(ctx, http.MethodGet, "/v1/status", nil, &s)
}

// Catalog returns the node's copy of the catalog.
func (c *Client) Catalog(ctx context.Context) (*Catalog, error) {
	cat := catalog.New()
	return cat, c.do(ctx, http.MethodGet, "/v1/catalog", nil, cat)
}

// Policy returns the applied cluster policy.
func (c *Client) Policy(ctx context.Context) (*PolicyRecord, error) {
	var p PolicyRecord
	return &p, c.do(ctx, http.MethodGet, "/v1/policy", nil, &p)
}

// ApplyPolicy sends a cluster policy file to be validated and applied.
func (c *Client) ApplyPolicy(ctx context.Context, file string, src []byte) (*PolicyRecord, error) {
	var p PolicyRecord
	return &p, c.do(ctx, http.MethodPut, "/v1/policy?file="+url.QueryEscape(file), src, &p)
}

// ApprovePolicy approves the pending policy with that version.
func (c *Client) ApprovePolicy(ctx context.Context, version uint64) (*PolicyRecord, error) {
	var p PolicyRecord
	return &p, c.do(ctx, http.MethodPost, "/v1/policy/approve?version="+strconv.FormatUint(version, 10), nil, &p)
}

// RecoverRaft asks the node for a forced Raft recovery.
func (c *Client) RecoverRaft(ctx context.Context, force bool) (*RecoveryRecord, error) {
	var r RecoveryRecord
	q := "false"
	if force {
		q = "true"
	}
	return &r, c.do(ctx, http.MethodPost, "/v1/raft/recover?force="+q, nil, &r)
}

// Points lists the points of a service (and volume) held by this node.
func (c *Client) Points(ctx context.Context, service, volume string) ([]blockstore.Point, error) {
	var pts []blockstore.Point
	q := url.Values{"service": {service}, "volume": {volume}}
	return pts, c.do(ctx, http.MethodGet, "/v1/points?"+q.Encode(), nil, &pts)
}

// Image streams a volume's image at a point into w, sequentially, in
// format ("" = raw; qcow2, vhdx) and returns the point it came from and the
// bytes written. Zero runs are skipped with Seek, so files stay sparse.
func (c *Client) Image(ctx context.Context, volume, at, format string, w io.WriteSeeker) (string, int64, error) {
	q := url.Values{"volume": {volume}, "at": {at}}
	if format != "" {
		q.Set("format", format)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/image?"+q.Encode(), nil)
	if err != nil {
		return "", 0, err
	}
	hc := *c.http
	hc.Timeout = 0 // images take as long as they take; ctx bounds them
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return "", 0, ctx.Err()
		}
		return "", 0, fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var ae apiError
		if json.Unmarshal(b, &ae) != nil || ae.Error == "" {
			return "", 0, &APIError{Status: resp.StatusCode, Code: apiInternal, Msg: fmt.Sprintf("admin API: %s", resp.Status)}
		}
		return "", 0, &APIError{Status: resp.StatusCode, Code: ae.Code, Msg: ae.Error}
	}
	size := resp.ContentLength
	buf := make([]byte, 1<<20)
	var off int64
	for {
		k, err := io.ReadFull(resp.Body, buf)
		if k > 0 {
			if isZeroBytes(buf[:k]) {
				if _, err := w.Seek(int64(k), io.SeekCurrent); err != nil {
					return "", 0, err
				}
			} else if _, err := w.Write(buf[:k]); err != nil {
				return "", 0, err
			}
			off += int64(k)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return "", 0, fmt.Errorf("read image: %w", err)
		}
	}
	if size >= 0 && off != size {
		return "", 0, fmt.Errorf("image cut short: %d of %d bytes", off, size)
	}
	return resp.Header.Get("X-Lifeboat-Point"), off, nil
}

func isZeroBytes(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
