package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/api"
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
			writeErr(w, http.StatusNotFound, api.CodeNotFound, "no cluster policy applied yet: lifeboat policy apply FILE")
			return
		}
		writeJSON(w, http.StatusOK, p)
	})
	n.route(mux, "PUT /v1/policy", admin, auditAlways, func(w http.ResponseWriter, r *http.Request) {
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
			writeErr(w, http.StatusBadRequest, api.CodeBadRequest, "version: want the pending policy's number (lifeboat policy show)")
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
	case errors.Is(err, ErrBadCommand), errors.Is(err, api.ErrBadPolicy):
		writeErr(w, http.StatusBadRequest, api.CodeBadRequest, err.Error())
	case errors.Is(err, ErrNoQuorum):
		writeErr(w, http.StatusServiceUnavailable, api.CodeNoQuorum, err.Error())
	case errors.Is(err, ErrNeedForce):
		writeErr(w, http.StatusPreconditionRequired, api.CodeNeedForce, err.Error())
	case errors.Is(err, ErrHasLeader):
		writeErr(w, http.StatusConflict, api.CodeHasLeader, err.Error())
	case errors.Is(err, blockstore.ErrNotFound), errors.Is(err, errNoStore):
		writeErr(w, http.StatusNotFound, api.CodeNotFound, err.Error())
	default:
		n.log.Error("admin request", "err", err)
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
		return nil, fmt.Errorf("%w: %w", api.ErrBadPolicy, err)
	}
	if err := n.checkEncryption(c); err != nil {
		return nil, fmt.Errorf("%w: %w", api.ErrBadPolicy, err)
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
