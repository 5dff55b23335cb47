package meshtest

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
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

	mu      sync.Mutex
	n       int
	foreign *TestCA
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

// Expired returns node credentials whose certificate expired an hour ago.
// LoadCreds refuses them, so they are assembled here directly.
func (c *TestCA) Expired(name mesh.NodeID, site mesh.Site) *mesh.Creds {
	c.t.Helper()
	dir := c.IssueDir(mesh.IssueRequest{
		Name: string(name), Site: string(site),
		NotBefore: time.Now().Add(-2 * time.Hour), Validity: time.Hour,
	})
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, mesh.FileCert), filepath.Join(dir, mesh.FileKey))
	if err != nil {
		c.t.Fatalf("load expired pair: %v", err)
	}
	pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		c.t.Fatalf("parse expired certificate: %v", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, mesh.FileCA))
	if err != nil {
		c.t.Fatalf("read CA: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &mesh.Creds{
		CA: pool, Cert: pair,
		Self:      mesh.Identity{Name: name, Site: site},
		GossipKey: c.GossipKey(),
	}
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
