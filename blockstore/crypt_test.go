package blockstore

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lifeboat-dr/lifeboat/blockstore/blockstoretest"
)

func testKEK(t testing.TB, b byte) *KEK {
	t.Helper()
	var k KEK
	for i := range k {
		k[i] = b + byte(i)
	}
	return &k
}

func newEncryptedStore(t *testing.T, key *Key, kek *KEK) (*Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	if err := Init(dir, InitOptions{Key: key, KEK: kek}); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, Options{Logger: testLogger(t), FlushEntries: 1024, KEK: kek})
	if err != nil {
		t.Fatal(err)
	}
	return s, dir
}

// marker is a block of text that must never appear on disk in an
// encrypted store, compressed or not.
func markerImage() []byte {
	img := genImage(11, 4<<20)
	line := []byte("CONFIDENTIAL payroll row: employee=4711 salary=123456\n")
	for off := 0; off+4096 <= 1<<20; off += 4096 {
		for i := off; i < off+4096; i += len(line) {
			copy(img[i:off+4096], line)
		}
	}
	return img
}

func TestEncryptedStoreRoundTrip(t *testing.T) {
	key := Key{7}
	kek := testKEK(t, 1)
	s, dir := newEncryptedStore(t, &key, kek)
	img := markerImage()
	p, _, err := s.Snapshot(t.Context(), blockstoretest.Image(img), SnapshotOptions{Volume: "payroll-db", BlockSize: 4096, Name: "before-upgrade"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Nothing readable is left on disk: not the text (raw or as zstd would
	// keep its literals), not the point's name, not the dedup key.
	var files int
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		files++
		for _, secret := range [][]byte{[]byte("CONFIDENTIAL"), []byte("salary="), []byte("before-upgrade"), []byte("payroll-db"), key[:], []byte("0700000000")} {
			if bytes.Contains(b, secret) {
				t.Errorf("%s holds %q in the clear", path, secret)
			}
		}
		return nil
	})
	if files < 4 {
		t.Fatalf("walked %d files", files)
	}
	if _, err := os.Stat(filepath.Join(dir, keyName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an encrypted store has a plaintext key file: %v", err)
	}

	s, err = Open(dir, Options{Logger: testLogger(t), KEK: kek})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.Encrypted() {
		t.Fatal("Encrypted() = false")
	}
	got, v, err := s.Resolve(t.Context(), "payroll-db", "before-upgrade")
	if err != nil || got.ID != p.ID {
		t.Fatalf("resolve: %v %v", got.ID, err)
	}
	if !bytes.Equal(restoreBytes(t, s, v), img) {
		t.Fatal("restored image differs")
	}
	rep, err := s.Maintenance().Verify(t.Context(), VerifyOptions{})
	if err != nil || len(rep.Damage) > 0 || rep.Hashed == 0 {
		t.Fatalf("verify: %+v %v", rep, err)
	}
}

// The same dedup key gives the same block IDs with and without
// encryption: sites dedup and repair each other whatever their settings.
func TestEncryptedStoreKeepsBlockIDs(t *testing.T) {
	key := Key{9}
	plain := filepath.Join(t.TempDir(), "plain")
	if err := Init(plain, InitOptions{Key: &key}); err != nil {
		t.Fatal(err)
	}
	ps, err := Open(plain, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	es, _ := newEncryptedStore(t, &key, testKEK(t, 3))
	defer es.Close()
	blocks := [][]byte{bytes.Repeat([]byte("a"), 4096), bytes.Repeat([]byte("lifeboat"), 1024)}
	a, err := ps.Put(t.Context(), blocks)
	if err != nil {
		t.Fatal(err)
	}
	b, err := es.Put(t.Context(), blocks)
	if err != nil {
		t.Fatal(err)
	}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("block %d: ID %s plain, %s encrypted", i, a[i].Short(), b[i].Short())
		}
		got, err := es.Get(t.Context(), b[i])
		if err != nil || !bytes.Equal(got, blocks[i]) {
			t.Fatalf("get %d: %v", i, err)
		}
	}
}

func TestEncryptedStoreKeys(t *testing.T) {
	kek, other := testKEK(t, 1), testKEK(t, 50)
	s, dir := newEncryptedStore(t, nil, kek)
	img := genImage(5, 1<<20)
	p, _, err := s.Snapshot(t.Context(), blockstoretest.Image(img), SnapshotOptions{Volume: "vol"})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	cfgBefore, _ := os.ReadFile(filepath.Join(dir, configName))

	_, err = Open(dir, Options{Logger: testLogger(t)})
	if !errors.Is(err, ErrEncrypted) || !strings.Contains(err.Error(), kek.Fingerprint()) {
		t.Errorf("open without a KEK: %v", err)
	}
	_, err = Open(dir, Options{Logger: testLogger(t), KEK: other})
	if !errors.Is(err, ErrWrongKEK) || !strings.Contains(err.Error(), kek.Fingerprint()) || !strings.Contains(err.Error(), other.Fingerprint()) {
		t.Errorf("open with the wrong KEK: %v", err)
	}
	if enc, fp, err := Encrypted(dir); !enc || fp != kek.Fingerprint() || err != nil {
		t.Errorf("Encrypted = %v %q %v", enc, fp, err)
	}

	// Rekey: the wrong old key changes nothing; the right one moves the
	// store to the new key without touching the data.
	if err := Rekey(dir, *other, *kek); !errors.Is(err, ErrWrongKEK) {
		t.Errorf("rekey with the wrong old key: %v", err)
	}
	packsBefore := dirDigest(t, filepath.Join(dir, packsDir))
	if err := Rekey(dir, *kek, *other); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{Logger: testLogger(t), KEK: kek}); !errors.Is(err, ErrWrongKEK) {
		t.Errorf("old KEK after rekey: %v", err)
	}
	s, err = Open(dir, Options{Logger: testLogger(t), KEK: other})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, v, err := s.Resolve(t.Context(), "vol", p.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(restoreBytes(t, s, v), img) {
		t.Fatal("restored image differs after rekey")
	}
	if dirDigest(t, filepath.Join(dir, packsDir)) != packsBefore {
		t.Error("rekey rewrote packs")
	}
	if cfg, _ := os.ReadFile(filepath.Join(dir, configName)); !bytes.Equal(cfg, cfgBefore) {
		t.Error("rekey changed the store config")
	}

	// A plain store cannot be rekeyed.
	plain, _ := newTestStore(t)
	if err := Rekey(plain.Dir(), *kek, *other); err == nil || !strings.Contains(err.Error(), "not encrypted") {
		t.Errorf("rekey of a plain store: %v", err)
	}
}

func dirDigest(t *testing.T, dir string) string {
	t.Helper()
	var sb strings.Builder
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		h, _ := newHasher(Key{})
		sb.WriteString(e.Name() + "=" + h.sum(b).String() + ";")
	}
	return sb.String()
}

// A byte flipped in a sealed frame is damage that names the pack, as in a
// plain store; so is a damaged keys file.
func TestEncryptedStoreDamage(t *testing.T) {
	kek := testKEK(t, 1)
	s, dir := newEncryptedStore(t, nil, kek)
	img := genImage(6, 1<<20)
	p, _, err := s.Snapshot(t.Context(), blockstoretest.Image(img), SnapshotOptions{Volume: "vol", BlockSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	pack := filepath.Join(dir, packsDir, packName(0))
	b, err := os.ReadFile(pack)
	if err != nil {
		t.Fatal(err)
	}
	// Flip a payload byte and fix the CRC, as a deliberate forger would:
	// only the AEAD tag catches it.
	fr, err := decodeFrame(b[packHeaderSize : packHeaderSize+mustFrameSize(t, b[packHeaderSize:])])
	if err != nil {
		t.Fatal(err)
	}
	rec := b[packHeaderSize : packHeaderSize+len(fr.head)+len(fr.payload)+frameTrailerSize]
	rec[len(fr.head)+20] ^= 1
	copy(rec[len(rec)-4:], encodeFrame(nil, fr.kind, fr.codec, fr.entries, fr.plain, rec[len(fr.head):len(rec)-4])[len(rec)-4:])
	if err := os.WriteFile(pack, b, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, Options{Logger: testLogger(t), KEK: kek})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Get(t.Context(), fr.entries[0].id)
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.Path != pack || !strings.Contains(err.Error(), "authenticate") {
		t.Errorf("get from a forged frame: %v", err)
	}
	rep, err := s.Maintenance().Verify(t.Context(), VerifyOptions{})
	if err != nil || len(rep.Damage) == 0 {
		t.Errorf("verify of a forged frame: %v, %d problems", err, len(rep.Damage))
	}
	_, v, _ := s.Resolve(t.Context(), "vol", p.ID)
	if err := s.Restore(t.Context(), v, make(blockstoretest.Image, v.Size), RestoreOptions{}); !errors.As(err, &ce) {
		t.Errorf("restore from a forged frame: %v", err)
	}
	s.Close()

	keys := filepath.Join(dir, keysName)
	for _, junk := range [][]byte{nil, []byte("{"), []byte(`{"format":"lifeboat-keys","version":1,"cipher":"aes-256-gcm","wrapped":"AAAA"}`)} {
		if err := os.WriteFile(keys, junk, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Open(dir, Options{Logger: testLogger(t), KEK: kek})
		if !errors.As(err, &ce) || ce.Path != keys {
			t.Errorf("keys file %q: %v", junk, err)
		}
	}
}

func mustFrameSize(t *testing.T, b []byte) int {
	t.Helper()
	n, err := frameSizeFromHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestParseKEK(t *testing.T) {
	k := testKEK(t, 1)
	hex := "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20"
	got, err := ParseKEK([]byte("  " + hex + "\n"))
	if err != nil || got != *k {
		t.Fatalf("ParseKEK: %v %v", got, err)
	}
	for _, bad := range []string{"", "abc", strings.Repeat("g", 64), hex + "00"} {
		if _, err := ParseKEK([]byte(bad)); err == nil {
			t.Errorf("ParseKEK(%q) accepted", bad)
		}
	}
	if strings.Contains(k.String(), "0102") {
		t.Errorf("KEK.String reveals the key: %s", k)
	}
}
