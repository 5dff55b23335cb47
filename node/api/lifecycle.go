package api

import (
	"context"
	"errors"
	"net/http"
	"net/url"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/lifecycle"
)

// The lifecycle engine's reports, as the admin API serves them.
type (
	// KeptPoint is a point and why its site keeps it.
	KeptPoint = lifecycle.KeptPoint
	// PruneResult is what thinning (and the collection after it) did or
	// would do.
	PruneResult = lifecycle.PruneResult
	// StoreStats is a node's store, disk and per-service points.
	StoreStats = lifecycle.Stats
	// Suspicion is the ransomware signal's figures of a suspect point.
	Suspicion = catalog.Suspicion
)

// VerifyResult is a store's verify report with its damage spelled out.
type VerifyResult struct {
	OK bool `json:"ok"`
	blockstore.VerifyReport
	Damage []Damage `json:"damage"`
}

// Damage is one thing verify found.
type Damage struct {
	Error  string `json:"error"`
	Path   string `json:"path,omitempty"`
	Offset *int64 `json:"offset,omitempty"`
	Block  string `json:"block,omitempty"`
	Hint   string `json:"hint,omitempty"`
}

// NewVerifyResult spells out r's damage.
func NewVerifyResult(r blockstore.VerifyReport) VerifyResult {
	out := VerifyResult{OK: len(r.Damage) == 0, VerifyReport: r, Damage: []Damage{}}
	for _, d := range r.Damage {
		j := Damage{Error: d.Error()}
		var ce *blockstore.CorruptError
		if errors.As(d, &ce) {
			j.Path, j.Hint = ce.Path, ce.Hint
			if ce.Offset >= 0 {
				j.Offset = &ce.Offset
			}
			if !ce.Block.IsZero() {
				j.Block = ce.Block.String()
			}
		}
		out.Damage = append(out.Damage, j)
	}
	return out
}

// KeptPoints lists the points of a service (and volume) held by this node,
// each with why it is kept.
func (c *Client) KeptPoints(ctx context.Context, service, volume string) ([]KeptPoint, error) {
	var pts []KeptPoint
	q := url.Values{"service": {service}, "volume": {volume}}
	return pts, c.do(ctx, http.MethodGet, "/v1/points?"+q.Encode(), nil, &pts)
}

// Prune thins the node's points of service ("" = all) now and collects
// the garbage; with dryRun it only says what that would do.
func (c *Client) Prune(ctx context.Context, service string, dryRun bool) (*PruneResult, error) {
	var r PruneResult
	method := http.MethodPost
	if dryRun {
		method = http.MethodGet
	}
	return &r, c.do(ctx, method, "/v1/prune?"+url.Values{"service": {service}}.Encode(), nil, &r)
}

// Stats returns the node's store statistics.
func (c *Client) Stats(ctx context.Context) (*StoreStats, error) {
	var st StoreStats
	return &st, c.do(ctx, http.MethodGet, "/v1/stats", nil, &st)
}

// Verify checks the node's whole store.
func (c *Client) Verify(ctx context.Context) (*VerifyResult, error) {
	var r VerifyResult
	return &r, c.do(ctx, http.MethodPost, "/v1/verify", []byte("{}"), &r)
}

// ClearSuspect declares a suspect point of service clean (admin role):
// failover and drill take it again. point is its ID or a unique prefix of
// at least 8 characters.
func (c *Client) ClearSuspect(ctx context.Context, service, point string) (*catalog.PointMark, error) {
	var m catalog.PointMark
	q := url.Values{"service": {service}, "point": {point}}
	return &m, c.do(ctx, http.MethodPost, "/v1/points/clear-suspect?"+q.Encode(), []byte("{}"), &m)
}

// ChoosePoint returns the point of service a failover or drill at the
// node's site takes for at ("" or "latest": the newest worth having).
func (c *Client) ChoosePoint(ctx context.Context, service, at string) (*PointChoice, error) {
	var pc PointChoice
	q := url.Values{"service": {service}, "at": {at}}
	return &pc, c.do(ctx, http.MethodGet, "/v1/points/choose?"+q.Encode(), nil, &pc)
}
