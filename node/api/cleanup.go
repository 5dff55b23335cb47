package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/lifeboat-dr/lifeboat/mesh"
)

// Failover and drill images, and retiring a node (issue 15 item 6):
//
//	GET  /v1/images              viewer  []Image on this node
//	POST /v1/images/rm           admin   body: ImagesRemove → []Image removed (audited)
//	POST /v1/node/leave          admin   body: LeaveRequest → LeaveResult, then the node stops (audited)

// Image kinds.
const (
	ImageFailover = "failover"
	ImageDrill    = "drill"
)

// Image is one directory of failover or drill images on a node:
// DATA_DIR/failover/SERVICE/NAME or DATA_DIR/drills/SERVICE/NAME.
type Image struct {
	Service string    `json:"service"`
	Kind    string    `json:"kind"`            // ImageFailover or ImageDrill
	Name    string    `json:"name"`            // the directory: the point's first 12 characters (failover) or the drill's ID
	Point   string    `json:"point,omitempty"` // the point's ID, when known
	Time    time.Time `json:"time"`            // when the images were made (complete)
	Size    int64     `json:"size"`            // bytes allocated on disk
	Path    string    `json:"path"`
	InUse   bool      `json:"in_use"`
	Why     string    `json:"why"` // why it is in use, or why it is still here
}

// Ref is how `images rm` names the image: SERVICE/KIND/NAME.
func (im Image) Ref() string { return im.Service + "/" + im.Kind + "/" + im.Name }

// ImagesRemove asks a node to remove images, each named SERVICE/KIND/NAME
// (NAME may also be a unique prefix of the point's ID).
type ImagesRemove struct {
	Images []string `json:"images"`
}

// LeaveRequest asks a node to retire from the cluster.
type LeaveRequest struct {
	// Force leaves even when that loses the Raft quorum or the only copy
	// of a service's points at the node's site.
	Force bool `json:"force,omitempty"`
	// DryRun checks and reports, and changes nothing.
	DryRun bool `json:"dry_run,omitempty"`
}

// LeaveResult says what a node did (or, for a dry run, would do) to leave.
type LeaveResult struct {
	Node mesh.NodeID `json:"node"`
	Site mesh.Site   `json:"site"`
	// Raft is the node's place in the Raft configuration before: voter,
	// nonvoter or none.
	Raft string `json:"raft"`
	// Transferred is set when the node led and handed leadership on.
	Transferred bool `json:"transferred_leadership,omitempty"`
	// Holds lists the services whose copy at the node's site it holds;
	// other nodes of the site take them over.
	Holds []string `json:"holds,omitempty"`
	// Warnings are the checks --force overrode.
	Warnings []string `json:"warnings,omitempty"`
	DryRun   bool     `json:"dry_run,omitempty"`
}

// ErrUnsafe reports a request refused because acting on it would break
// something still in use: an image a service runs on or a running drill,
// or a node leave that would lose the quorum or the only copy of points.
var ErrUnsafe = errors.New("refused: unsafe")

// CodeUnsafe is ErrUnsafe's API code (HTTP 409).
const CodeUnsafe = "unsafe"

// Images lists the node's failover and drill images.
func (c *Client) Images(ctx context.Context) ([]Image, error) {
	var out []Image
	return out, c.do(ctx, http.MethodGet, "/v1/images", nil, &out)
}

// RemoveImages removes images not in use, all or none.
func (c *Client) RemoveImages(ctx context.Context, refs []string) ([]Image, error) {
	var out []Image
	return out, c.postJSON(ctx, "/v1/images/rm", ImagesRemove{Images: refs}, &out)
}

// Leave asks the node to retire from the cluster; it stops after
// answering (unless DryRun).
func (c *Client) Leave(ctx context.Context, req LeaveRequest) (*LeaveResult, error) {
	var out LeaveResult
	return &out, c.postJSON(ctx, "/v1/node/leave", req, &out)
}

func (c *Client) postJSON(ctx context.Context, path string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodPost, path, b, out)
}
