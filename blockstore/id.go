package blockstore

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/zeebo/blake3"
)

// IDSize is the length of a block ID in bytes.
const IDSize = 32

// ID names a block or a map page by its content: the keyed BLAKE3-256 of its
// plaintext. The all-zero ID is reserved for an all-zero block (or a map page
// that covers only zero blocks) and is never stored.
type ID [IDSize]byte

// ZeroID is the ID of an all-zero block of any length.
var ZeroID ID

// IsZero reports whether id is the zero-block ID.
func (id ID) IsZero() bool { return id == ZeroID }

// String returns the ID in lowercase hex.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first 12 hex digits, for logs and tables.
func (id ID) Short() string { return hex.EncodeToString(id[:6]) }

// ParseID parses a 64-digit hex block ID.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*IDSize {
		return id, fmt.Errorf("block id %q: want %d hex digits, got %d", s, 2*IDSize, len(s))
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("block id %q: %w", s, err)
	}
	return id, nil
}

// Key is the dedup key: the BLAKE3 key under which block IDs are computed.
// Stores that share a key deduplicate against each other.
type Key [32]byte

// NewKey returns a fresh random key.
func NewKey() (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return k, fmt.Errorf("generate dedup key: %w", err)
	}
	return k, nil
}

// ReadKeyFile reads a key file: 64 hex digits, optionally followed by a newline.
func ReadKeyFile(path string) (Key, error) {
	var k Key
	b, err := os.ReadFile(path)
	if err != nil {
		return k, fmt.Errorf("read key file: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if len(s) != 64 {
		return k, fmt.Errorf("key file %s: want 64 hex digits, got %d characters", path, len(s))
	}
	if _, err := hex.Decode(k[:], []byte(s)); err != nil {
		return k, fmt.Errorf("key file %s: %w", path, err)
	}
	return k, nil
}

// encodeKeyFile returns the key file contents for k.
func encodeKeyFile(k Key) []byte { return []byte(hex.EncodeToString(k[:]) + "\n") }

// hasher computes IDs under one key. It is safe for concurrent use.
type hasher struct {
	key  Key
	pool sync.Pool
}

func newHasher(k Key) (*hasher, error) {
	if _, err := blake3.NewKeyed(k[:]); err != nil {
		return nil, fmt.Errorf("keyed blake3: %w", err)
	}
	h := &hasher{key: k}
	h.pool.New = func() any {
		d, _ := blake3.NewKeyed(k[:])
		return d
	}
	return h, nil
}

// sum returns the ID of p. It does not special-case zero blocks.
func (h *hasher) sum(p []byte) ID {
	var id ID
	d := h.pool.Get().(*blake3.Hasher)
	d.Reset()
	d.Write(p)
	d.Sum(id[:0])
	h.pool.Put(d)
	return id
}

// zeros is a read-only buffer of the largest block size, for zero checks.
var zeros = make([]byte, MaxBlockSize)

// isZero reports whether p consists of zero bytes only.
func isZero(p []byte) bool {
	for len(p) > len(zeros) {
		if !bytes.Equal(p[:len(zeros)], zeros) {
			return false
		}
		p = p[len(zeros):]
	}
	return bytes.Equal(p, zeros[:len(p)])
}

// Hasher computes block IDs under a dedup key, as a store with that key
// does: the ID of an all-zero block is ZeroID. Agents use it to offer IDs
// before sending data. It is safe for concurrent use.
type Hasher struct{ h *hasher }

// NewHasher returns a Hasher for key k.
func NewHasher(k Key) (*Hasher, error) {
	h, err := newHasher(k)
	if err != nil {
		return nil, err
	}
	return &Hasher{h: h}, nil
}

// ID returns the ID of block p (ZeroID when p is all zeros).
func (h *Hasher) ID(p []byte) ID {
	if isZero(p) {
		return ZeroID
	}
	return h.h.sum(p)
}
