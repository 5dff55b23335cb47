package mesh

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
)

// The ingest protocol (KindIngest streams, agent to node; see doc.go).
// An agent opens a stream, says Hello, and then repeats: Offer the IDs of
// changed blocks, receive Want (which of them the node lacks), send the
// wanted Blocks, send the Changes (block number to ID) of a volume, and
// Commit a consistency point, answered by Committed.
const (
	FrameHello     FrameType = 1 // agent → node: JSON Hello
	FrameWelcome   FrameType = 2 // node → agent: JSON Welcome
	FrameOffer     FrameType = 3 // agent → node: n × 32-byte block IDs
	FrameWant      FrameType = 4 // node → agent: bitmap, bit i set = send offer i
	FrameBlocks    FrameType = 5 // agent → node: block records
	FrameChanges   FrameType = 6 // agent → node: one volume's map changes
	FrameCommit    FrameType = 7 // agent → node: JSON Commit
	FrameCommitted FrameType = 8 // node → agent: JSON Committed

	// The barrier stream: an agent of a service with several agents opens
	// a second ingest stream with BarrierJoin; the node then runs
	// barriers on it (see doc.go).
	FrameBarrierJoin    FrameType = 9  // agent → node: JSON Hello (volumes may be empty)
	FrameBarrierPrepare FrameType = 10 // node → agent: JSON Barrier
	FrameBarrierMarked  FrameType = 11 // agent → node: JSON Barrier with Seq
	FrameBarrierRelease FrameType = 12 // node → agent: JSON Barrier with OK
)

// Barrier is one step of a cross-agent barrier: Prepare (ID), Marked (ID
// and the agent's mark Seq, 0 when it cannot mark), Release (ID and OK:
// every agent marked, so the marks form a consistent point of the service).
type Barrier struct {
	ID   uint64 `json:"id"`
	Seq  uint64 `json:"seq,omitempty"`
	OK   bool   `json:"ok,omitempty"`
	Hold int64  `json:"hold_ms,omitempty"` // Prepare: longest time to hold acknowledgements
}

// IngestVersion is the version of the ingest protocol in Hello.
const IngestVersion = 1

// Limits of the ingest protocol, checked by both sides.
const (
	MaxOffer         = 4096    // IDs in one Offer
	MaxChanges       = 65536   // changes in one Changes frame
	MaxVolumeName    = 255     // bytes
	MaxIngestVolumes = 256     // volumes in one Hello
	MaxBlockSize     = 1 << 20 // bytes of one block
)

// Hello opens an ingest stream: who the agent is and which volumes of its
// service it ships, with their sizes.
type Hello struct {
	Version int           `json:"version"`
	Service string        `json:"service"`
	Agent   string        `json:"agent"`
	Volumes []HelloVolume `json:"volumes"`
}

// HelloVolume is a volume an agent ships.
type HelloVolume struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

// Welcome answers Hello: the geometry the node keeps for each volume and
// the newest point it committed for this agent (Seq 0 = none), so that a
// restarted agent resumes where the node is.
type Welcome struct {
	Node string `json:"node"`
	// Redirect, when set, is the QUIC address of the node that holds the
	// service at this site: the agent closes the stream and ships there.
	// Nothing else in such a Welcome is meaningful.
	Redirect  string          `json:"redirect,omitempty"`
	Volumes   []WelcomeVolume `json:"volumes"`
	Seq       uint64          `json:"seq"`
	Point     string          `json:"point,omitempty"`
	PointTime time.Time       `json:"point_time,omitzero"`
}

// WelcomeVolume is a volume's geometry at the node.
type WelcomeVolume struct {
	Name      string `json:"name"`
	Size      int64  `json:"size"`
	BlockSize int    `json:"block_size"`
}

// Commit asks the node to make a consistency point of everything sent on
// this stream so far. Seq is the agent's sequence number of the point.
type Commit struct {
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
}

// Committed says a point is durable at the node.
type Committed struct {
	Seq   uint64    `json:"seq"`
	Point string    `json:"point"`
	Time  time.Time `json:"time"`
}

// ErrIngest reports a malformed ingest frame; the message names the field.
var ErrIngest = errors.New("ingest protocol")

func ingestErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrIngest, fmt.Sprintf(format, a...))
}

// DecodeHello decodes and checks a Hello frame.
func DecodeHello(p []byte) (*Hello, error) {
	var h Hello
	if err := json.Unmarshal(p, &h); err != nil {
		return nil, ingestErr("hello: %v", err)
	}
	if h.Version != IngestVersion {
		return nil, ingestErr("hello: version %d, want %d", h.Version, IngestVersion)
	}
	if !ValidName(h.Service) || !ValidName(h.Agent) {
		return nil, ingestErr("hello: service %q or agent %q is not a valid name", h.Service, h.Agent)
	}
	if len(h.Volumes) == 0 || len(h.Volumes) > MaxIngestVolumes {
		return nil, ingestErr("hello: %d volumes, want 1 to %d", len(h.Volumes), MaxIngestVolumes)
	}
	for i, v := range h.Volumes {
		if !ValidName(v.Name) {
			return nil, ingestErr("hello: volumes[%d]: name %q is not a valid name", i, v.Name)
		}
		if v.Size <= 0 {
			return nil, ingestErr("hello: volumes[%d]: size %d", i, v.Size)
		}
	}
	return &h, nil
}

// AppendOffer encodes an Offer frame payload.
func AppendOffer(b []byte, ids []blockstore.ID) []byte {
	for _, id := range ids {
		b = append(b, id[:]...)
	}
	return b
}

// DecodeOffer decodes an Offer frame payload.
func DecodeOffer(p []byte) ([]blockstore.ID, error) {
	if len(p)%blockstore.IDSize != 0 {
		return nil, ingestErr("offer: %d bytes is not a multiple of %d", len(p), blockstore.IDSize)
	}
	n := len(p) / blockstore.IDSize
	if n == 0 || n > MaxOffer {
		return nil, ingestErr("offer: %d ids, want 1 to %d", n, MaxOffer)
	}
	ids := make([]blockstore.ID, n)
	for i := range ids {
		copy(ids[i][:], p[i*blockstore.IDSize:])
	}
	return ids, nil
}

// AppendWant encodes a Want bitmap for n offered IDs.
func AppendWant(b []byte, want []bool) []byte {
	start := len(b)
	b = append(b, make([]byte, (len(want)+7)/8)...)
	for i, w := range want {
		if w {
			b[start+i/8] |= 1 << (i % 8)
		}
	}
	return b
}

// DecodeWant decodes a Want bitmap answering an offer of n IDs.
func DecodeWant(p []byte, n int) ([]bool, error) {
	if len(p) != (n+7)/8 {
		return nil, ingestErr("want: %d bytes for %d ids, want %d", len(p), n, (n+7)/8)
	}
	want := make([]bool, n)
	for i := range want {
		want[i] = p[i/8]&(1<<(i%8)) != 0
	}
	return want, nil
}

// Block codecs in a Blocks frame. Agents send S2 (cheap on the protected
// server's CPU, which matters more than LAN bytes); zstd is accepted.
const (
	CodecRaw  = 0
	CodecZstd = 1
	CodecS2   = 2
)

// BlockRecord is one block in a Blocks frame: its ID, its length, and the
// data as sent (raw, or zstd-compressed).
type BlockRecord struct {
	ID     blockstore.ID
	Codec  byte
	RawLen int
	Data   []byte
}

// blockRecordHeader: ID, codec, raw length, data length.
const blockRecordHeader = blockstore.IDSize + 1 + 4 + 4

// AppendBlock encodes one block record.
func AppendBlock(b []byte, r BlockRecord) []byte {
	b = append(b, r.ID[:]...)
	b = append(b, r.Codec)
	b = binary.BigEndian.AppendUint32(b, uint32(r.RawLen))
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.Data)))
	return append(b, r.Data...)
}

// DecodeBlocks decodes a Blocks frame payload; Data aliases p.
func DecodeBlocks(p []byte) ([]BlockRecord, error) {
	var out []BlockRecord
	for i := 0; len(p) > 0; i++ {
		if len(p) < blockRecordHeader {
			return nil, ingestErr("blocks[%d]: %d bytes left, header is %d", i, len(p), blockRecordHeader)
		}
		var r BlockRecord
		copy(r.ID[:], p)
		r.Codec = p[blockstore.IDSize]
		r.RawLen = int(binary.BigEndian.Uint32(p[blockstore.IDSize+1:]))
		n := int(binary.BigEndian.Uint32(p[blockstore.IDSize+5:]))
		if r.Codec != CodecRaw && r.Codec != CodecZstd && r.Codec != CodecS2 {
			return nil, ingestErr("blocks[%d]: codec %d", i, r.Codec)
		}
		if r.RawLen < 1 || r.RawLen > MaxBlockSize {
			return nil, ingestErr("blocks[%d]: raw length %d, want 1 to %d", i, r.RawLen, MaxBlockSize)
		}
		if n > len(p)-blockRecordHeader || n > MaxBlockSize+MaxBlockSize/8 {
			return nil, ingestErr("blocks[%d]: data length %d with %d bytes left", i, n, len(p)-blockRecordHeader)
		}
		if r.Codec == CodecRaw && n != r.RawLen {
			return nil, ingestErr("blocks[%d]: raw block of %d bytes says %d", i, n, r.RawLen)
		}
		r.Data = p[blockRecordHeader : blockRecordHeader+n]
		p = p[blockRecordHeader+n:]
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, ingestErr("blocks: empty frame")
	}
	return out, nil
}

// BlockChange sets one block of a volume to an ID (ZeroID = zeros).
type BlockChange struct {
	Block int64
	ID    blockstore.ID
}

// AppendChanges encodes a Changes frame: volume name length (1 byte), the
// name, a count (4 bytes), then per change the block number (8 bytes) and
// the ID. Changes must be sorted by block, without repeats.
func AppendChanges(b []byte, volume string, cs []BlockChange) []byte {
	b = append(b, byte(len(volume)))
	b = append(b, volume...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(cs)))
	for _, c := range cs {
		b = binary.BigEndian.AppendUint64(b, uint64(c.Block))
		b = append(b, c.ID[:]...)
	}
	return b
}

// DecodeChanges decodes and checks a Changes frame.
func DecodeChanges(p []byte) (string, []BlockChange, error) {
	if len(p) < 1 {
		return "", nil, ingestErr("changes: empty")
	}
	nl := int(p[0])
	if len(p) < 1+nl+4 {
		return "", nil, ingestErr("changes: %d bytes, name needs %d", len(p), nl)
	}
	name := string(p[1 : 1+nl])
	if !ValidName(name) {
		return "", nil, ingestErr("changes: volume %q is not a valid name", name)
	}
	n := int(binary.BigEndian.Uint32(p[1+nl:]))
	rest := p[1+nl+4:]
	const rec = 8 + blockstore.IDSize
	if n == 0 || n > MaxChanges || len(rest) != n*rec {
		return "", nil, ingestErr("changes: count %d with %d bytes, want 1 to %d records of %d", n, len(rest), MaxChanges, rec)
	}
	cs := make([]BlockChange, n)
	for i := range cs {
		r := rest[i*rec:]
		blk := binary.BigEndian.Uint64(r)
		if blk > 1<<48 {
			return "", nil, ingestErr("changes[%d]: block %d", i, blk)
		}
		cs[i].Block = int64(blk)
		copy(cs[i].ID[:], r[8:])
		if i > 0 && cs[i-1].Block >= cs[i].Block {
			return "", nil, ingestErr("changes[%d]: block %d not after %d", i, cs[i].Block, cs[i-1].Block)
		}
	}
	return name, cs, nil
}

// DecodeCommit decodes a Commit frame.
func DecodeCommit(p []byte) (*Commit, error) {
	var c Commit
	if err := json.Unmarshal(p, &c); err != nil {
		return nil, ingestErr("commit: %v", err)
	}
	if c.Seq == 0 {
		return nil, ingestErr("commit: seq 0")
	}
	return &c, nil
}
