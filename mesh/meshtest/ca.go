package meshtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/mesh"
)

// TestCA is a throw-away cluster CA in a test's temporary directory.
// Its methods fail the test on error. Safe for concurrent use.
type TestCA struct {
	t   testing.TB
	Dir string // the CA directory (InitCA)

	mu         sync.Mutex
	n          int
	foreign    *TestCA
	expiredOut func(cert, key []byte) // set by ExpiredFiles while it runs Expired
}

// CA creates a new CA for t.
func CA(t testing.TB) *TestCA {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	if err := mesh.InitCA(dir); err != nil {
		t.Fatalf("init test CA: %v", err)
	}
	return &TestCA{t: t, Dir: dir}
}

// IssueDir issues req into a new directory and returns it.
func (c *TestCA) IssueDir(req mesh.IssueRequest) string {
	c.t.Helper()
	c.mu.Lock()
	c.n++
	out := filepath.Join(filepath.Dir(c.Dir), "creds-"+strings.ReplaceAll(req.Name, "/", "_")+"-"+strconv.Itoa(c.n))
	c.mu.Unlock()
	if err := mesh.Issue(c.Dir, req, out); err != nil {
		c.t.Fatalf("issue %s: %v", req.Name, err)
	}
	return out
}

// Creds issues req and loads the result with mesh.LoadCreds.
func (c *TestCA) Creds(req mesh.IssueRequest) *mesh.Creds {
	c.t.Helper()
	cr, err := mesh.LoadCreds(c.IssueDir(req))
	if err != nil {
		c.t.Fatalf("load credentials of %s: %v", req.Name, err)
	}
	return cr
}

// Node returns credentials for a node.
func (c *TestCA) Node(name mesh.NodeID, site mesh.Site) *mesh.Creds {
	c.t.Helper()
	return c.Creds(mesh.IssueRequest{Name: string(name), Site: string(site)})
}

// Agent returns credentials for an agent of service.
func (c *TestCA) Agent(name mesh.NodeID, site mesh.Site, service string) *mesh.Creds {
	c.t.Helper()
	return c.Creds(mesh.IssueRequest{Name: string(name), Site: string(site), Agent: true, Service: service})
}

// Foreign returns node credentials from another CA (one per TestCA), which
// this CA's nodes must refuse and which refuse them.
func (c *TestCA) Foreign(name mesh.NodeID, site mesh.Site) *mesh.Creds {
	c.t.Helper()
	c.mu.Lock()
	if c.foreign == nil {
		c.foreign = CA(c.t)
	}
	f := c.foreign
	c.mu.Unlock()
	return f.Node(name, site)
}

// Operator returns credentials for an operator with role.
func (c *TestCA) Operator(name string, role mesh.Role) *mesh.Creds {
	c.t.Helper()
	return c.Creds(mesh.IssueRequest{Name: name, Operator: true, Role: role})
}

// OperatorDir issues an operator certificate with role and returns its
// directory (what --tls-dir takes).
func (c *TestCA) OperatorDir(name string, role mesh.Role) string {
	c.t.Helper()
	return c.IssueDir(mesh.IssueRequest{Name: name, Operator: true, Role: role})
}

// Expired returns node credentials whose certificate expired an hour ago.
// mesh.Issue refuses to write such a certificate and LoadCreds to load
// one, so it is signed here directly with the CA's key.
func (c *TestCA) Expired(name mesh.NodeID, site mesh.Site) *mesh.Creds {
	c.t.Helper()
	caPEM, err := os.ReadFile(filepath.Join(c.Dir, mesh.FileCA))
	if err != nil {
		c.t.Fatalf("read CA: %v", err)
	}
	blk, _ := pem.Decode(caPEM)
	caCert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		c.t.Fatalf("parse CA: %v", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(c.Dir, mesh.FileCAKey))
	if err != nil {
		c.t.Fatalf("read CA key: %v", err)
	}
	kb, _ := pem.Decode(keyPEM)
	caKey, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		c.t.Fatalf("parse CA key: %v", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		c.t.Fatal(err)
	}
	id := mesh.Identity{Name: name, Site: site}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: string(name)},
		NotBefore:    time.Now().Add(-2 * time.Hour),
		NotAfter:     time.Now().Add(-time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		URIs:         []*url.URL{id.URI()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		c.t.Fatalf("sign expired certificate: %v", err)
	}
	if c.expiredOut != nil {
		keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
		c.expiredOut(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		c.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return &mesh.Creds{
		CA: pool, Cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
		Self:      id,
		GossipKey: c.GossipKey(),
	}
}

// ExpiredFiles writes an expired node certificate and its key (PEM) to
// certPath and keyPath.
func (c *TestCA) ExpiredFiles(name mesh.NodeID, site mesh.Site, certPath, keyPath string) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expiredOut = func(cert, key []byte) {
		if err := os.WriteFile(certPath, cert, 0o644); err != nil {
			c.t.Fatal(err)
		}
		if err := os.WriteFile(keyPath, key, 0o600); err != nil {
			c.t.Fatal(err)
		}
	}
	defer func() { c.expiredOut = nil }()
	c.Expired(name, site)
}

// GossipKey returns the cluster's gossip key.
func (c *TestCA) GossipKey() []byte {
	c.t.Helper()
	b, err := os.ReadFile(filepath.Join(c.Dir, mesh.FileGossipKey))
	if err != nil {
		c.t.Fatalf("read gossip key: %v", err)
	}
	k, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		c.t.Fatalf("decode gossip key: %v", err)
	}
	return k
}
