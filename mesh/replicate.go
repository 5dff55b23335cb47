package mesh

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
)

// The replication protocol (KindBlocks streams, node to node; see doc.go).
// The sender (the holder of a service's points at one site) opens a
// stream to the holder at another site and says ReplHello; the receiver
// answers ReplWelcome with the newest points it holds. Then, per point:
// ReplBegin names the base point (one the receiver holds, or none) and the
// new point; Offer/Want/Blocks move the blocks the receiver lacks and
// Changes frames carry the map diff from base to point, volume by volume;
// ReplCommit asks the receiver to commit, answered by ReplCommitted. The
// Offer, Want, Blocks and Changes frames are the ingest protocol's.
//
// A stream opened with ReplHello.Fetch set runs the other way: the node
// that opened it receives, the node that accepted it sends its newest
// point and closes. A holder that takes over a service uses it to fetch
// what it lacks from the nearest copy.
//
// A stream opened with ReplHello.Repair set asks for blocks by ID: the
// opener sends Offer frames (the IDs it wants, at most MaxRepairIDs a
// frame), the acceptor answers each with the blocks it can read soundly in
// Blocks frames and ends the answer with a Want frame whose bit i is set
// when it sent block i. A node whose scrub or read found a block damaged
// uses it to fetch a sound copy (node/internal/scrub).
const (
	FrameReplHello     FrameType = 20 // opener → acceptor: JSON ReplHello
	FrameReplWelcome   FrameType = 21 // receiver → sender: JSON ReplWelcome
	FrameReplBegin     FrameType = 22 // sender → receiver: JSON ReplBegin
	FrameReplCommit    FrameType = 23 // sender → receiver: empty
	FrameReplCommitted FrameType = 24 // receiver → sender: JSON ReplCommitted
	// FrameBlocksPacked is a Blocks frame whose whole payload is one zstd
	// frame: blocks compressed together compress better than one by one
	// ("hash small, compress big"). Its records are raw.
	FrameBlocksPacked FrameType = 25 // sender → receiver: zstd(Blocks payload)
)

// ReplVersion is the version of the replication protocol in ReplHello.
const ReplVersion = 1

// Limits of the replication protocol.
const (
	MaxWelcomePoints = 64      // point IDs in a ReplWelcome
	MaxPointVolumes  = 256     // volumes of one point
	MaxBlocksFrame   = 1 << 20 // raw bytes a sender packs into one Blocks frame (one bigger block goes alone)
	MaxPackedPlain   = 4 << 20 // a packed frame's payload once decompressed, at most
	MaxRepairIDs     = 256     // block IDs in one repair request
)

// ReplHello opens a replication stream for one service. Site is the
// opener's site; Tier the copy's tier at the receiving site.
type ReplHello struct {
	Version int    `json:"version"`
	Service string `json:"service"`
	Site    Site   `json:"site"`
	Tier    string `json:"tier"`
	Fetch   bool   `json:"fetch,omitempty"`
	// Repair asks for blocks by ID; Service is then the service whose
	// points use them, or "" when the opener does not know it, and Tier
	// is "".
	Repair bool `json:"repair,omitempty"`
}

// ReplWelcome answers ReplHello: the receiver and the IDs of the newest
// points it holds for the service, newest first.
type ReplWelcome struct {
	Node   NodeID   `json:"node"`
	Points []string `json:"points"`
}

// ReplBegin starts one point: Base is a point the receiver holds (from its
// Welcome or an earlier commit on this stream), "" for none; Point is the
// new point as the sender has it (ID, name, group, time, volumes with their
// roots). The receiver rebuilds each volume from Base's state plus the
// Changes that follow and must arrive at the same roots and ID.
type ReplBegin struct {
	Base  string           `json:"base,omitempty"`
	Point blockstore.Point `json:"point"`
}

// ReplCommitted says a point is durable at the receiver.
type ReplCommitted struct {
	Point string    `json:"point"`
	Time  time.Time `json:"time"`
}

// DecodeReplHello decodes and checks a ReplHello frame.
func DecodeReplHello(p []byte) (*ReplHello, error) {
	var h ReplHello
	if err := json.Unmarshal(p, &h); err != nil {
		return nil, ingestErr("repl hello: %v", err)
	}
	if h.Version != ReplVersion {
		return nil, ingestErr("repl hello: version %d, want %d", h.Version, ReplVersion)
	}
	if h.Repair {
		if h.Fetch || h.Tier != "" || (h.Service != "" && !ValidName(h.Service)) || !ValidName(string(h.Site)) {
			return nil, ingestErr("repl hello: a repair hello wants a site, no tier, no fetch and a valid service or none")
		}
		return &h, nil
	}
	if !ValidName(h.Service) || !ValidName(string(h.Site)) {
		return nil, ingestErr("repl hello: service %q or site %q is not a valid name", h.Service, h.Site)
	}
	switch h.Tier {
	case "hot", "warm", "cold", "primary":
	default:
		return nil, ingestErr("repl hello: tier %q, want hot, warm, cold or primary", h.Tier)
	}
	return &h, nil
}

// DecodeReplWelcome decodes and checks a ReplWelcome frame.
func DecodeReplWelcome(p []byte) (*ReplWelcome, error) {
	var w ReplWelcome
	if err := json.Unmarshal(p, &w); err != nil {
		return nil, ingestErr("repl welcome: %v", err)
	}
	if len(w.Points) > MaxWelcomePoints {
		return nil, ingestErr("repl welcome: %d points, at most %d", len(w.Points), MaxWelcomePoints)
	}
	for i, id := range w.Points {
		if !validPointID(id) {
			return nil, ingestErr("repl welcome: points[%d]: %q is not a point ID", i, id)
		}
	}
	return &w, nil
}

// DecodeReplBegin decodes and checks a ReplBegin frame.
func DecodeReplBegin(p []byte) (*ReplBegin, error) {
	var b ReplBegin
	if err := json.Unmarshal(p, &b); err != nil {
		return nil, ingestErr("repl begin: %v", err)
	}
	if b.Base != "" && !validPointID(b.Base) {
		return nil, ingestErr("repl begin: base %q is not a point ID", b.Base)
	}
	pt := b.Point
	if !validPointID(pt.ID) {
		return nil, ingestErr("repl begin: point ID %q", pt.ID)
	}
	if pt.Time.IsZero() || pt.Group == "" || len(pt.Group) > MaxVolumeName || len(pt.Name) > 2*MaxVolumeName {
		return nil, ingestErr("repl begin: point %s: group %q, name %q, time %v", pt.ID, pt.Group, pt.Name, pt.Time)
	}
	if len(pt.Volumes) == 0 || len(pt.Volumes) > MaxPointVolumes {
		return nil, ingestErr("repl begin: point %s: %d volumes, want 1 to %d", pt.ID, len(pt.Volumes), MaxPointVolumes)
	}
	for i, v := range pt.Volumes {
		if v.Name == "" || len(v.Name) > MaxVolumeName {
			return nil, ingestErr("repl begin: volumes[%d]: name %q", i, v.Name)
		}
		if i > 0 && pt.Volumes[i-1].Name >= v.Name {
			return nil, ingestErr("repl begin: volumes[%d]: %q not after %q", i, v.Name, pt.Volumes[i-1].Name)
		}
		if v.BlockSize < 512 || v.BlockSize > MaxBlockSize || v.BlockSize&(v.BlockSize-1) != 0 {
			return nil, ingestErr("repl begin: volume %s: block size %d", v.Name, v.BlockSize)
		}
		if v.Size <= 0 || v.Size > 1<<56 || v.Used < 0 || v.Used > (v.Size+int64(v.BlockSize)-1)/int64(v.BlockSize) {
			return nil, ingestErr("repl begin: volume %s: size %d with %d used blocks", v.Name, v.Size, v.Used)
		}
	}
	return &b, nil
}

// DecodeReplCommitted decodes a ReplCommitted frame.
func DecodeReplCommitted(p []byte) (*ReplCommitted, error) {
	var c ReplCommitted
	if err := json.Unmarshal(p, &c); err != nil {
		return nil, ingestErr("repl committed: %v", err)
	}
	if !validPointID(c.Point) {
		return nil, ingestErr("repl committed: point %q", c.Point)
	}
	return &c, nil
}

// validPointID reports whether s looks like a point ID: lowercase hex,
// 8 to 64 digits.
func validPointID(s string) bool {
	if len(s) < 8 || len(s) > 64 {
		return false
	}
	return !slices.ContainsFunc([]byte(s), func(c byte) bool {
		return (c < '0' || c > '9') && (c < 'a' || c > 'f')
	})
}

// VolumeFromPoint returns the state of the named volume in p, or an empty
// volume of the given geometry when p lacks it or has another geometry:
// the base a receiver and a sender both diff against.
func VolumeFromPoint(p *blockstore.Point, v blockstore.VolumeState) blockstore.VolumeState {
	if p != nil {
		if b, ok := p.Volume(v.Name); ok && b.Size == v.Size && b.BlockSize == v.BlockSize {
			return b
		}
	}
	return blockstore.VolumeState{Name: v.Name, Size: v.Size, BlockSize: v.BlockSize}
}

func (b *ReplBegin) String() string {
	return fmt.Sprintf("point %s (%s) on base %q", b.Point.ID, b.Point.Name, b.Base)
}
