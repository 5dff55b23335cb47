package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

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
		var ae ErrorBody
		if json.Unmarshal(b, &ae) != nil || ae.Error == "" {
			return &APIError{Status: resp.StatusCode, Code: CodeInternal, Msg: fmt.Sprintf("admin API: %s: %s", resp.Status, bytes.TrimSpace(b))}
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
func (c *Client) Catalog(ctx context.Context) (*catalog.Catalog, error) {
	cat := catalog.New()
	return cat, c.do(ctx, http.MethodGet, "/v1/catalog", nil, cat)
}

// Policy returns the applied cluster policy.
func (c *Client) Policy(ctx context.Context) (*catalog.PolicyRecord, error) {
	var p catalog.PolicyRecord
	return &p, c.do(ctx, http.MethodGet, "/v1/policy", nil, &p)
}

// ApplyPolicy sends a cluster policy file to be validated and applied.
func (c *Client) ApplyPolicy(ctx context.Context, file string, src []byte) (*catalog.PolicyRecord, error) {
	var p catalog.PolicyRecord
	return &p, c.do(ctx, http.MethodPut, "/v1/policy?file="+url.QueryEscape(file), src, &p)
}

// ApprovePolicy approves the pending policy with that version.
func (c *Client) ApprovePolicy(ctx context.Context, version uint64) (*catalog.PolicyRecord, error) {
	var p catalog.PolicyRecord
	return &p, c.do(ctx, http.MethodPost, "/v1/policy/approve?version="+strconv.FormatUint(version, 10), nil, &p)
}

// RecoverRaft asks the node for a forced Raft recovery.
func (c *Client) RecoverRaft(ctx context.Context, force bool) (*catalog.RecoveryRecord, error) {
	var r catalog.RecoveryRecord
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
		var ae ErrorBody
		if json.Unmarshal(b, &ae) != nil || ae.Error == "" {
			return "", 0, &APIError{Status: resp.StatusCode, Code: CodeInternal, Msg: fmt.Sprintf("admin API: %s", resp.Status)}
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
		var ae ErrorBody
		if json.Unmarshal(rb, &ae) != nil || ae.Error == "" {
			return FailoverEvent{}, &APIError{Status: resp.StatusCode, Code: CodeInternal, Msg: fmt.Sprintf("admin API: %s", resp.Status)}
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
		if last.Code == CodeNotHolder {
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
func (c *Client) Failover(ctx context.Context, req FailoverRequest, onEvent func(FailoverEvent)) (*catalog.FailoverRecord, error) {
	e, err := c.streamPost(ctx, "/v1/failover", req, onEvent)
	return e.Result, err
}

// Drill runs a drill on the node.
func (c *Client) Drill(ctx context.Context, req DrillRequest, onEvent func(FailoverEvent)) (*catalog.DrillRecord, error) {
	e, err := c.streamPost(ctx, "/v1/drill", req, onEvent)
	return e.Drill, err
}

// CleanupDrills removes the kept drill images of service on the node.
func (c *Client) CleanupDrills(ctx context.Context, service string) ([]catalog.DrillRecord, error) {
	var out []catalog.DrillRecord
	return out, c.do(ctx, http.MethodPost, "/v1/drill/cleanup?"+url.Values{"service": {service}}.Encode(), nil, &out)
}

// Failback makes the service's old primary site a warm copy again.
func (c *Client) Failback(ctx context.Context, service string) (*catalog.ServiceState, error) {
	var st catalog.ServiceState
	return &st, c.do(ctx, http.MethodPost, "/v1/failback?"+url.Values{"service": {service}}.Encode(), nil, &st)
}

// RemoteImage reads a volume's image at a point from a node's admin API
// with HTTP range requests (serve-nbd --admin). It is pinned to the point
// it resolved when opened, and safe for concurrent use.
type RemoteImage struct {
	c      *Client
	ctx    context.Context
	volume string
	Point  string
	Time   time.Time
	size   int64
}

// OpenImage resolves volume at a point on the node and returns a reader
// of its raw image.
func (c *Client) OpenImage(ctx context.Context, volume, at string) (*RemoteImage, error) {
	r := &RemoteImage{c: c, ctx: ctx, volume: volume}
	resp, err := r.get(at, 0, 0)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	cr := resp.Header.Get("Content-Range") // bytes 0-0/SIZE
	i := strings.LastIndexByte(cr, '/')
	size, perr := strconv.ParseInt(cr[i+1:], 10, 64)
	if i < 0 || perr != nil {
		return nil, fmt.Errorf("image %s: the node answered without a size (Content-Range %q)", volume, cr)
	}
	r.size, r.Point = size, resp.Header.Get("X-Lifeboat-Point")
	r.Time, _ = time.Parse(time.RFC3339Nano, resp.Header.Get("X-Lifeboat-Point-Time"))
	return r, nil
}

// Size returns the image's size.
func (r *RemoteImage) Size() int64 { return r.size }

func (r *RemoteImage) get(at string, off, n int64) (*http.Response, error) {
	q := url.Values{"volume": {r.volume}, "at": {at}}
	req, err := http.NewRequestWithContext(r.ctx, http.MethodGet, r.c.base+"/v1/image?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	last := off + n - 1
	if n == 0 {
		last = off
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, last))
	resp, err := r.c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	if resp.StatusCode != http.StatusPartialContent {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var ae ErrorBody
		if json.Unmarshal(b, &ae) == nil && ae.Error != "" {
			return nil, &APIError{Status: resp.StatusCode, Code: ae.Code, Msg: ae.Error}
		}
		return nil, &APIError{Status: resp.StatusCode, Code: CodeInternal, Msg: fmt.Sprintf("admin API: image range: %s", resp.Status)}
	}
	return resp, nil
}

// ReadAt reads len(p) bytes at off.
func (r *RemoteImage) ReadAt(p []byte, off int64) (int, error) {
	if off >= r.size {
		return 0, io.EOF
	}
	want := len(p)
	if rest := r.size - off; int64(len(p)) > rest {
		p = p[:rest]
	}
	resp, err := r.get(r.Point, off, int64(len(p)))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.ReadFull(resp.Body, p)
	if err != nil {
		return n, fmt.Errorf("image %s at %d: %w", r.volume, off, err)
	}
	if n < want {
		return n, io.EOF
	}
	return n, nil
}

// Audit reads the cluster's audit log: entries at or after since (zero =
// all), at most limit of the newest (0 = the node's default, 1000).
func (c *Client) Audit(ctx context.Context, since time.Time, limit int) ([]catalog.AuditEntry, error) {
	q := url.Values{}
	if !since.IsZero() {
		q.Set("since", since.UTC().Format(time.RFC3339Nano))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out []catalog.AuditEntry
	return out, c.do(ctx, http.MethodGet, "/v1/audit?"+q.Encode(), nil, &out)
}

// RecordDrill records the result of a drill run on the operator's machine.
func (c *Client) RecordDrill(ctx context.Context, od OperatorDrill) (*catalog.DrillRecord, error) {
	b, err := json.Marshal(od)
	if err != nil {
		return nil, err
	}
	var d catalog.DrillRecord
	return &d, c.do(ctx, http.MethodPost, "/v1/drill/record", b, &d)
}

// Revoke asks the node to revoke certificates.
func (c *Client) Revoke(ctx context.Context, req RevokeRequest) ([]catalog.Revocation, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	var out []catalog.Revocation
	return out, c.do(ctx, http.MethodPost, "/v1/revoke", b, &out)
}
