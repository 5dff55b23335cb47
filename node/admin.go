package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/mesh"
)

// The admin API is HTTP with JSON bodies on the node's admin address. On a
// loopback address it is plain HTTP; anywhere else it is HTTPS and needs a
// client certificate from the cluster CA. Errors are JSON objects
// {"error": text, "code": one of the apiCode values}.
//
//	GET  /v1/status                      Status
//	GET  /v1/policy                      PolicyRecord (404 when none)
//	PUT  /v1/policy?file=NAME            body: cluster policy TOML → PolicyRecord
//	POST /v1/raft/recover?force=true     RecoveryRecord
//	GET  /v1/catalog                     Catalog
//	GET  /v1/points?service=S&volume=V   []blockstore.Point held by this node
//	GET  /v1/image?volume=S/V&at=X       the volume's raw image at a point (headers name the point)

// maxPolicy bounds a policy file sent to the admin API.
const maxPolicy = 1 << 20

// operatorHeader carries who runs a command, for the record.
const operatorHeader = "X-Lifeboat-Operator"

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
	mux.Handle("GET /metrics", n.metrics.handler())
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.Status())
	})
	mux.HandleFunc("GET /v1/catalog", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.Catalog())
	})
	mux.HandleFunc("GET /v1/policy", func(w http.ResponseWriter, r *http.Request) {
		p := n.Catalog().Policy
		if p == nil {
			writeErr(w, http.StatusNotFound, apiNotFound, "no cluster policy applied yet: lifeboat policy apply FILE")
			return
		}
		writeJSON(w, http.StatusOK, p)
	})
	mux.HandleFunc("PUT /v1/policy", func(w http.ResponseWriter, r *http.Request) {
		src, err := io.ReadAll(io.LimitReader(r.Body, maxPolicy+1))
		if err != nil {
			writeErr(w, http.StatusBadRequest, apiBadRequest, "read policy: "+err.Error())
			return
		}
		if len(src) > maxPolicy {
			writeErr(w, http.StatusBadRequest, apiBadRequest, fmt.Sprintf("policy larger than %d bytes", maxPolicy))
			return
		}
		file := r.URL.Query().Get("file")
		if file == "" {
			file = "policy.toml"
		}
		p, err := n.ApplyPolicy(r.Context(), file, src, operator(r))
		if err != nil {
			n.writeAPIError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, p)
	})
	mux.HandleFunc("GET /v1/points", func(w http.ResponseWriter, r *http.Request) {
		pts, err := n.Points(r.Context(), r.URL.Query().Get("service"), r.URL.Query().Get("volume"))
		if err != nil {
			n.writeAPIError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, pts)
	})
	mux.HandleFunc("GET /v1/image", func(w http.ResponseWriter, r *http.Request) {
		n.serveImage(w, r)
	})
	n.registerFailoverAPI(mux)
	mux.HandleFunc("POST /v1/raft/recover", func(w http.ResponseWriter, r *http.Request) {
		rec, err := n.RecoverRaft(r.Context(), operator(r), r.URL.Query().Get("force") == "true")
		if err != nil {
			n.writeAPIError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, rec)
	})
	return onlyNodeCerts(mux)
}

// onlyNodeCerts refuses admin requests made with an agent certificate: an
// agent may ship its own service's volumes, nothing more.
func onlyNodeCerts(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil {
			id, err := mesh.PeerIdentity(*r.TLS)
			if err != nil || id.Agent {
				writeErr(w, http.StatusForbidden, apiForbidden, "the admin API takes node certificates, not agent ones")
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// operator names who sent the request: the client certificate's holder,
// or what the CLI says on a loopback connection, with the remote address.
func operator(r *http.Request) string {
	who := r.Header.Get(operatorHeader)
	if r.TLS != nil {
		if id, err := mesh.PeerIdentity(*r.TLS); err == nil {
			who = string(id.Name) + " (certificate)"
		}
	}
	if who == "" {
		who = "unknown"
	}
	return fmt.Sprintf("%s from %s", who, r.RemoteAddr)
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
func (n *Node) ApplyPolicy(ctx context.Context, file string, src []byte, by string) (*PolicyRecord, error) {
	c, err := config.ParseCluster(file, src)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errBadPolicy, err)
	}
	rec := &PolicyRecord{File: file, Source: string(src), Cluster: c, AppliedAt: n.opts.Now().UTC(), AppliedBy: by}
	if err := n.Apply(ctx, &Command{Op: opPolicy, Policy: rec}); err != nil {
		return nil, err
	}
	n.log.Info("cluster policy applied", "file", file, "by", by)
	p := n.Catalog().Policy
	if p == nil {
		return rec, nil
	}
	return p, nil
}

// Client talks to a node's admin API.
type Client struct {
	base     string
	http     *http.Client
	Operator string // sent with writes, for the record
}

// NewClient returns a client for the admin API at addr (host:port). With
// creds it uses HTTPS with creds' client certificate; without, only plain
// HTTP to a loopback address.
func NewClient(addr string, creds *mesh.Creds) (*Client, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("admin address %q: %w", addr, err)
	}
	c := &Client{http: &http.Client{Timeout: 60 * time.Second}}
	ip := net.ParseIP(host)
	if creds == nil && (ip != nil && ip.IsLoopback() || host == "localhost") {
		c.base = "http://" + addr
		return c, nil
	}
	if creds == nil {
		return nil, fmt.Errorf("admin address %s is not on this host: it needs a client certificate (--tls-dir)", addr)
	}
	c.base = "https://" + addr
	c.http.Transport = &http.Transport{TLSClientConfig: creds.ClientTLS()}
	return c, nil
}

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

// ErrUnreachable reports an admin API that does not answer.
var ErrUnreachable = errors.New("admin API unreachable")

func (c *Client) do(ctx context.Context, method, path string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if c.Operator != "" {
		req.Header.Set(operatorHeader, c.Operator)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: %s: %v", ErrUnreachable, strings.TrimPrefix(c.base, "http://"), err)
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
	cat := newCatalog()
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
