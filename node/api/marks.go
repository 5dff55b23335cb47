package api

import (
	"context"
	"net/http"
	"net/url"

	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// Point marks through the admin API (issue 16): clearing a suspicion, and
// the point a drill or failover would take.

// Suspicion is the ransomware signal's figures of a suspect point.
type Suspicion = catalog.Suspicion

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
