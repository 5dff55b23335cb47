package blockstore

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/zeebo/blake3"
)

// Encryption at rest. An encrypted store has a keys file instead of a
// plaintext key file. It holds the store's data key and its dedup key,
// sealed together with AES-256-GCM under the key-encryption key (KEK) that
// the operator keeps outside the store (a file, or a KMS behind a command).
// From the data key three keys are derived: one seals frame payloads, one
// seals index values, one makes the index values' nonces. Block IDs stay the
// keyed hashes of the plaintext under the dedup key, so stores that share a
// dedup key still deduplicate and repair each other whatever their
// encryption. Rekey seals the same two keys under a new KEK: no data is
// rewritten.
//
// What is sealed: the payload of every frame (blocks, map pages) and every
// index value (block and page locations, point records). What is not: frame
// headers (kind, lengths, and the block IDs, which are keyed hashes and say
// nothing without the dedup key), index keys (the same IDs, point times),
// pack lengths, and the store's config file.

// KEK is a key-encryption key: 32 bytes.
type KEK [32]byte

// ParseKEK parses a KEK from 64 hex digits, surrounded by white space or not.
func ParseKEK(b []byte) (KEK, error) {
	var k KEK
	s := strings.TrimSpace(string(b))
	if len(s) != 2*len(k) {
		return k, fmt.Errorf("key-encryption key: want %d hex digits, got %d characters", 2*len(k), len(s))
	}
	if _, err := hex.Decode(k[:], []byte(s)); err != nil {
		return k, fmt.Errorf("key-encryption key: %w", err)
	}
	return k, nil
}

// NewKEK returns a random KEK.
func NewKEK() (KEK, error) {
	var k KEK
	if _, err := rand.Read(k[:]); err != nil {
		return k, fmt.Errorf("generate key-encryption key: %w", err)
	}
	return k, nil
}

// Fingerprint names the KEK without revealing it: 16 hex digits.
func (k KEK) Fingerprint() string {
	var out [8]byte
	d := blake3.NewDeriveKey("lifeboat 2026-12 kek fingerprint")
	d.Write(k[:])
	d.Digest().Read(out[:])
	return hex.EncodeToString(out[:])
}

// String hides the key.
func (k KEK) String() string { return "kek:" + k.Fingerprint() }

var (
	// ErrEncrypted means the store is encrypted and no KEK was given.
	ErrEncrypted = errors.New("store is encrypted")
	// ErrWrongKEK means the KEK given does not unwrap the store's keys.
	ErrWrongKEK = errors.New("wrong key-encryption key")
)

const (
	keysName    = "keys"
	keysFormat  = "lifeboat-keys"
	keysVersion = 1
	keysCipher  = "aes-256-gcm"
	keysAAD     = "lifeboat keys v1"
	sealOver    = 12 + 16 // nonce and tag
)

// keysFile is the JSON of the keys file.
type keysFile struct {
	Format  string    `json:"format"`
	Version int       `json:"version"`
	Cipher  string    `json:"cipher"`
	KEK     string    `json:"kek"`     // fingerprint of the KEK that wraps
	Wrapped string    `json:"wrapped"` // base64 nonce || GCM(data key || dedup key)
	Sealed  time.Time `json:"sealed"`  // when Wrapped was last written
}

// sealer seals frame payloads and index values of one store.
type sealer struct {
	frames  cipher.AEAD
	index   cipher.AEAD
	nonceIx *blake3.Hasher // keyed; cloned per use
}

func newSealer(dataKey [32]byte) (*sealer, error) {
	derive := func(ctx string) []byte {
		out := make([]byte, 32)
		d := blake3.NewDeriveKey(ctx)
		d.Write(dataKey[:])
		d.Sum(out[:0])
		return out
	}
	frames, err := newGCM(derive("lifeboat 2026-12 frame payloads"))
	if err != nil {
		return nil, err
	}
	index, err := newGCM(derive("lifeboat 2026-12 index values"))
	if err != nil {
		return nil, err
	}
	nk, err := blake3.NewKeyed(derive("lifeboat 2026-12 index nonces"))
	if err != nil {
		return nil, err
	}
	return &sealer{frames: frames, index: index, nonceIx: nk}, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// sealFrame appends nonce || sealed payload to dst. aad is the frame header
// and entries. Nonces are random: 2^32 frames (about 1 PiB of 256 KiB
// frames) per data key keep the collision chance below 2^-32.
func (c *sealer) sealFrame(dst, payload, aad []byte) []byte {
	n := len(dst)
	dst = append(dst, make([]byte, 12)...)
	if _, err := rand.Read(dst[n:]); err != nil {
		panic("blockstore: crypto/rand failed: " + err.Error()) // never returns an error on Linux
	}
	return c.frames.Seal(dst, dst[n:n+12], payload, aad)
}

// openFrame returns the payload of a sealed one, appended to dst.
func (c *sealer) openFrame(dst, sealed, aad []byte) ([]byte, error) {
	if len(sealed) < sealOver {
		return nil, corruptf("sealed payload of %d bytes", len(sealed))
	}
	out, err := c.frames.Open(dst, sealed[:12], sealed[12:], aad)
	if err != nil {
		return nil, corruptf("frame does not authenticate (damaged, or sealed under another data key)")
	}
	return out, nil
}

// sealValue seals an index value under its key. The nonce is a keyed hash
// of key and value (a synthetic IV): the same value under the same key
// seals the same way, and distinct values never share a nonce short of a
// 96-bit hash collision, however many values are written.
func (c *sealer) sealValue(key, value []byte) []byte {
	d := c.nonceIx.Clone()
	d.Write(key)
	d.Write([]byte{0})
	d.Write(value)
	out := make([]byte, 12, 12+len(value)+16)
	d.Digest().Read(out)
	return c.index.Seal(out, out[:12], value, key)
}

func (c *sealer) openValue(key, sealed []byte) ([]byte, error) {
	if len(sealed) < sealOver {
		return nil, corruptf("sealed index value of %d bytes", len(sealed))
	}
	out, err := c.index.Open(nil, sealed[:12], sealed[12:], key)
	if err != nil {
		return nil, corruptf("index value does not authenticate")
	}
	return out, nil
}

// wrapKeys seals the data key and the dedup key under kek.
func wrapKeys(kek KEK, dataKey [32]byte, dedup Key, now time.Time) ([]byte, error) {
	g, err := newGCM(kek[:])
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, 12, 12+64+16)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	plain := append(append(make([]byte, 0, 64), dataKey[:]...), dedup[:]...)
	sealed := g.Seal(nonce, nonce, plain, []byte(keysAAD))
	kf := keysFile{Format: keysFormat, Version: keysVersion, Cipher: keysCipher, KEK: kek.Fingerprint(),
		Wrapped: base64.StdEncoding.EncodeToString(sealed), Sealed: now.UTC().Round(time.Second)}
	b, _ := json.MarshalIndent(kf, "", "  ")
	return append(b, '\n'), nil
}

// unwrapKeys reads the keys file of dir and unwraps it with kek.
func unwrapKeys(dir string, kek KEK) (dataKey [32]byte, dedup Key, err error) {
	path := filepath.Join(dir, keysName)
	b, err := os.ReadFile(path)
	if err != nil {
		return dataKey, dedup, fmt.Errorf("read keys file: %w", err)
	}
	var kf keysFile
	if err := json.Unmarshal(b, &kf); err != nil || kf.Format != keysFormat {
		return dataKey, dedup, &CorruptError{Path: path, Offset: -1, Err: corruptf("not a lifeboat keys file"), Hint: "restore the keys file from a backup of this store: without it the store cannot be read"}
	}
	if kf.Version != keysVersion || kf.Cipher != keysCipher {
		return dataKey, dedup, fmt.Errorf("keys file %s: version %d cipher %q, this lifeboat reads version %d %s", path, kf.Version, kf.Cipher, keysVersion, keysCipher)
	}
	sealed, err := base64.StdEncoding.DecodeString(kf.Wrapped)
	if err != nil || len(sealed) != 12+64+16 {
		return dataKey, dedup, &CorruptError{Path: path, Offset: -1, Err: corruptf("wrapped keys do not decode"), Hint: "restore the keys file from a backup of this store: without it the store cannot be read"}
	}
	g, err := newGCM(kek[:])
	if err != nil {
		return dataKey, dedup, err
	}
	plain, err := g.Open(nil, sealed[:12], sealed[12:], []byte(keysAAD))
	if err != nil {
		if kf.KEK != kek.Fingerprint() {
			return dataKey, dedup, fmt.Errorf("store %s is sealed under key-encryption key %s, the key given is %s: %w", dir, kf.KEK, kek.Fingerprint(), ErrWrongKEK)
		}
		return dataKey, dedup, &CorruptError{Path: path, Offset: -1, Err: corruptf("wrapped keys do not authenticate under key-encryption key %s", kf.KEK), Hint: "restore the keys file from a backup of this store"}
	}
	copy(dataKey[:], plain[:32])
	copy(dedup[:], plain[32:])
	return dataKey, dedup, nil
}

// Encrypted reports whether the store in dir is encrypted at rest and, if
// so, the fingerprint of the KEK its keys are sealed under.
func Encrypted(dir string) (bool, string, error) {
	b, err := os.ReadFile(filepath.Join(dir, keysName))
	if errors.Is(err, os.ErrNotExist) {
		return false, "", nil
	}
	if err != nil {
		return false, "", err
	}
	var kf keysFile
	if err := json.Unmarshal(b, &kf); err != nil {
		return true, "", &CorruptError{Path: filepath.Join(dir, keysName), Offset: -1, Err: corruptf("not a lifeboat keys file")}
	}
	return true, kf.KEK, nil
}

// Rekey seals the keys of the encrypted store in dir under newKEK instead of
// oldKEK. No data is rewritten; it may run while the store is open (the
// keys file is read only by Open) and is atomic: a crash leaves the old or
// the new keys file.
func Rekey(dir string, oldKEK, newKEK KEK) error {
	if _, err := os.Stat(filepath.Join(dir, configName)); err != nil {
		return fmt.Errorf("rekey %s: %w", dir, ErrNotStore)
	}
	if enc, _, err := Encrypted(dir); err != nil {
		return err
	} else if !enc {
		return fmt.Errorf("rekey %s: the store is not encrypted", dir)
	}
	dataKey, dedup, err := unwrapKeys(dir, oldKEK)
	if err != nil {
		return fmt.Errorf("rekey: %w", err)
	}
	b, err := wrapKeys(newKEK, dataKey, dedup, time.Now())
	if err != nil {
		return err
	}
	if err := writeFileDurable(filepath.Join(dir, keysName), b, 0o600); err != nil {
		return fmt.Errorf("rekey: %w", err)
	}
	return nil
}
