package cluster

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/node"
)

// A node given a key-encryption key keeps its store encrypted; a policy that
// asks a site for encryption is refused while a node of that site keeps a
// plain store, and applies once it asks only sites that do.
func TestSiteEncryptionPolicy(t *testing.T) {
	t.Parallel()
	kek := blockstore.KEK{1, 2, 3}
	h, _ := threeNodesWith(t, func(o *node.Options) {
		if o.Site == "dc2" {
			o.KEK = &kek
		}
	})
	// dc2's store is encrypted: no plaintext key file, a keys file, and it
	// does not open without the key.
	dir := filepath.Join(h.nodes["dc2-n1"].dir, "store")
	if enc, fp, err := blockstore.Encrypted(dir); !enc || fp != kek.Fingerprint() || err != nil {
		t.Fatalf("dc2 store: encrypted %v %q %v", enc, fp, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "key")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dc2's encrypted store has a plaintext key file")
	}
	if enc, _, _ := blockstore.Encrypted(filepath.Join(h.nodes["dc3-n1"].dir, "store")); enc {
		t.Errorf("dc3's store is encrypted without a key")
	}

	policy := examplePolicy(t)
	withEncrypt := func(sites ...string) []byte {
		b := policy
		for _, s := range sites {
			// The first `name = "dcN"` is the site's.
			b = bytes.Replace(b, []byte("name = \""+s+"\"\n"), []byte("name = \""+s+"\"\nencrypt = true\n"), 1)
		}
		if n := bytes.Count(b, []byte("encrypt = true")); n != len(sites) {
			t.Fatalf("policy asks %d sites for encryption, want %d", n, len(sites))
		}
		return b
	}
	h.eventually("dc2's encrypted flag reaches dc1", 20e9, func() error {
		_, err := h.node("dc1-n1").ApplyPolicy(t.Context(), "cluster.toml", withEncrypt("dc2"), "test")
		return err
	})
	_, err := h.node("dc1-n1").ApplyPolicy(t.Context(), "cluster.toml", withEncrypt("dc2", "dc3"), "test")
	if err == nil || !strings.Contains(err.Error(), "dc3-n1 (site dc3)") || strings.Contains(err.Error(), "dc2-n1") {
		t.Fatalf("policy asking dc3 for encryption: %v", err)
	}
	if !h.node("dc1-n1").Catalog().Policy.Cluster.Sites[1].Encrypt || h.node("dc1-n1").Catalog().Policy.Cluster.Sites[2].Encrypt {
		t.Errorf("the refused policy changed the catalog")
	}
}
