package mesh

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// Meta is what a node publishes about itself through gossip. It is encoded
// compactly and versioned (see doc.go); the encoding is at most
// MaxMetaSize bytes.
type Meta struct {
	Site  Site
	QUIC  string // host:port of the QUIC endpoint
	Admin string // host:port of the admin API; may be empty
	Role  string // RoleNode or RoleWitness
	Raft  bool   // has raft state
	// Encrypted says the node's block store is encrypted at rest, so that
	// a policy asking it of a site can be checked before it is applied.
	Encrypted bool
}

// Roles.
const (
	RoleNode    = "node"
	RoleWitness = "witness"
)

// Meta encoding limits.
const (
	MetaVersion   = 1
	MaxMetaSize   = 512 // memberlist's limit
	maxMetaString = 255
)

const (
	metaFlagRaft    = 1 << 0
	metaFlagLeaving = 1 << 1
	metaFlagEncrypt = 1 << 2
	metaFlagsKnown  = metaFlagRaft | metaFlagLeaving | metaFlagEncrypt
)

var roleCodes = map[string]byte{RoleNode: 1, RoleWitness: 2}

// MetaError reports a bad field in an encoded or to-be-encoded Meta.
type MetaError struct {
	Field  string
	Reason string
}

func (e *MetaError) Error() string { return fmt.Sprintf("gossip meta: %s: %s", e.Field, e.Reason) }

// MarshalBinary encodes m (version 1).
func (m Meta) MarshalBinary() ([]byte, error) { return m.encode(false) }

func (m Meta) encode(leaving bool) ([]byte, error) {
	role, ok := roleCodes[m.Role]
	if !ok {
		return nil, &MetaError{Field: "role", Reason: fmt.Sprintf("%q: want %q or %q", m.Role, RoleNode, RoleWitness)}
	}
	var flags byte
	if m.Raft {
		flags |= metaFlagRaft
	}
	if leaving {
		flags |= metaFlagLeaving
	}
	if m.Encrypted {
		flags |= metaFlagEncrypt
	}
	b := make([]byte, 0, 3+3*2+len(m.Site)+len(m.QUIC)+len(m.Admin))
	b = append(b, MetaVersion, flags, role)
	for _, f := range []struct{ name, v string }{{"site", string(m.Site)}, {"quic", m.QUIC}, {"admin", m.Admin}} {
		if len(f.v) > maxMetaString {
			return nil, &MetaError{Field: f.name, Reason: fmt.Sprintf("%d bytes, limit %d", len(f.v), maxMetaString)}
		}
		if !utf8.ValidString(f.v) {
			return nil, &MetaError{Field: f.name, Reason: "not UTF-8"}
		}
		b = binary.AppendUvarint(b, uint64(len(f.v)))
		b = append(b, f.v...)
	}
	if len(b) > MaxMetaSize {
		return nil, &MetaError{Field: "meta", Reason: fmt.Sprintf("%d bytes, limit %d", len(b), MaxMetaSize)}
	}
	return b, nil
}

// UnmarshalBinary decodes b into m.
func (m *Meta) UnmarshalBinary(b []byte) error {
	d, _, err := decodeMeta(b)
	if err != nil {
		return err
	}
	*m = d
	return nil
}

// decodeMeta decodes an encoded Meta and its leaving flag.
func decodeMeta(b []byte) (Meta, bool, error) {
	if len(b) > MaxMetaSize {
		return Meta{}, false, &MetaError{Field: "meta", Reason: fmt.Sprintf("%d bytes, limit %d", len(b), MaxMetaSize)}
	}
	if len(b) < 3 {
		return Meta{}, false, &MetaError{Field: "meta", Reason: fmt.Sprintf("%d bytes, need at least 3", len(b))}
	}
	version, flags, role := b[0], b[1], b[2]
	if version == 0 {
		return Meta{}, false, &MetaError{Field: "version", Reason: "0"}
	}
	if version == MetaVersion && flags&^metaFlagsKnown != 0 {
		return Meta{}, false, &MetaError{Field: "flags", Reason: fmt.Sprintf("unknown bits %#x", flags&^metaFlagsKnown)}
	}
	var m Meta
	for name, code := range roleCodes {
		if code == role {
			m.Role = name
		}
	}
	if m.Role == "" {
		return Meta{}, false, &MetaError{Field: "role", Reason: fmt.Sprintf("unknown code %d", role)}
	}
	m.Raft = flags&metaFlagRaft != 0
	m.Encrypted = flags&metaFlagEncrypt != 0
	rest := b[3:]
	var strs [3]string
	for i, name := range []string{"site", "quic", "admin"} {
		n, k := binary.Uvarint(rest)
		if k <= 0 {
			return Meta{}, false, &MetaError{Field: name, Reason: "bad length"}
		}
		if n > maxMetaString {
			return Meta{}, false, &MetaError{Field: name, Reason: fmt.Sprintf("length %d, limit %d", n, maxMetaString)}
		}
		rest = rest[k:]
		if uint64(len(rest)) < n {
			return Meta{}, false, &MetaError{Field: name, Reason: fmt.Sprintf("length %d, only %d bytes left", n, len(rest))}
		}
		if !utf8.Valid(rest[:n]) {
			return Meta{}, false, &MetaError{Field: name, Reason: "not UTF-8"}
		}
		strs[i] = string(rest[:n])
		rest = rest[n:]
	}
	if version == MetaVersion && len(rest) > 0 {
		return Meta{}, false, &MetaError{Field: "meta", Reason: fmt.Sprintf("%d trailing bytes", len(rest))}
	}
	m.Site, m.QUIC, m.Admin = Site(strs[0]), strs[1], strs[2]
	return m, flags&metaFlagLeaving != 0, nil
}
