package mesh

// The cluster CA: creating one, issuing certificates into credentials
// directories, and the ledger of what it issued (doc.go, Identities).

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/lifeboat-dr/lifeboat/internal/durable"
)

// InitCA creates dir (which must not exist or be empty) holding a new
// cluster CA: ca.crt, ca.key (0600), and the cluster-wide gossip.key and
// dedup.key (32 random bytes each, hex, 0600).
func InitCA(dir string) error {
	if err := ensureEmptyDir(dir); err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "lifeboat cluster CA", Organization: []string{"lifeboat"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(DefaultCAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("create CA certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("marshal CA key: %w", err)
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{FileCA, pemBytes("CERTIFICATE", der), 0o644},
		{FileCAKey, pemBytes("PRIVATE KEY", keyDER), 0o600},
		{FileGossipKey, randomHexKey(), 0o600},
		{FileDedupKey, randomHexKey(), 0o600},
	}
	for _, f := range files {
		if err := writeNewFile(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	return syncDir(dir)
}

// IssueRequest describes a certificate for Issue.
type IssueRequest struct {
	Name     string        // node, agent or operator name (the certificate's CN and identity)
	Site     string        // site of the node or agent; not used for operators
	Agent    bool          // an agent certificate, scoped to Service
	Service  string        // required for agents, refused for nodes
	Operator bool          // an operator certificate for the admin API, with Role
	Role     Role          // required for operators
	Hosts    []string      // optional extra DNS names / IPs
	Validity time.Duration // zero = DefaultCertValidity; negative is refused
	// NotBefore is the start of validity; zero = now minus one minute (for
	// clock skew). Tests use it to make expired certificates.
	NotBefore time.Time
}

// Identity returns the identity the request asks for, or an error naming
// the bad field.
func (r IssueRequest) Identity() (Identity, error) {
	var errs []error
	if !ValidName(r.Name) {
		errs = append(errs, fmt.Errorf("name %q: want 1-64 characters from [A-Za-z0-9._-]", r.Name))
	}
	if r.Validity < 0 {
		errs = append(errs, fmt.Errorf("validity %v: must not be negative", r.Validity))
	}
	if r.Operator {
		switch {
		case r.Agent:
			errs = append(errs, errors.New("a certificate is for an operator or for an agent, not both"))
		case r.Service != "":
			errs = append(errs, fmt.Errorf("service %q: only agent certificates are scoped to a service", r.Service))
		case r.Role < RoleViewer || r.Role > RoleAdmin:
			errs = append(errs, errors.New("an operator certificate needs a role: viewer, operator or admin"))
		}
		if err := errors.Join(errs...); err != nil {
			return Identity{}, err
		}
		return Identity{Name: NodeID(r.Name), Operator: true, Role: r.Role}, nil
	}
	if r.Role != RoleNone {
		errs = append(errs, fmt.Errorf("role %s: only operator certificates have a role", r.Role))
	}
	if !ValidName(r.Site) {
		errs = append(errs, fmt.Errorf("site %q: want 1-64 characters from [A-Za-z0-9._-]", r.Site))
	}
	switch {
	case r.Agent && !ValidName(r.Service):
		errs = append(errs, fmt.Errorf("service %q: an agent certificate needs a service (1-64 characters from [A-Za-z0-9._-])", r.Service))
	case !r.Agent && r.Service != "":
		errs = append(errs, fmt.Errorf("service %q: only agent certificates are scoped to a service", r.Service))
	}
	if err := errors.Join(errs...); err != nil {
		return Identity{}, err
	}
	return Identity{Name: NodeID(r.Name), Site: Site(r.Site), Agent: r.Agent, Service: r.Service}, nil
}

// Issue signs a new key pair with the CA in caDir and writes into outDir
// (created if missing): ca.crt, cert.crt, cert.key (0600); for agents a
// copy of dedup.key (agents hash blocks to offer their IDs); for nodes
// copies of dedup.key and gossip.key; for operators nothing more but the
// GnuTLS names qemu and libnbd look for (ca-cert.pem, client-cert.pem,
// client-key.pem, symbolic links). It refuses to overwrite existing
// files, and to write a certificate that is already expired or not yet
// valid. Every certificate issued is appended to the CA's ledger
// (issued.jsonl), which `ca revoke NAME` reads.
func Issue(caDir string, req IssueRequest, outDir string) error {
	_, err := IssueCert(caDir, req, outDir)
	return err
}

// IssueCert is Issue, returning the record of what it issued.
func IssueCert(caDir string, req IssueRequest, outDir string) (*IssuedCert, error) {
	id, err := req.Identity()
	if err != nil {
		return nil, fmt.Errorf("issue certificate: %w", err)
	}
	caPEM, caCert, caKey, err := loadCA(caDir)
	if err != nil {
		return nil, err
	}
	type file struct {
		name string
		data []byte
		mode os.FileMode
	}
	var keys []string
	switch {
	case id.Agent:
		keys = []string{FileDedupKey}
	case !id.Operator:
		keys = []string{FileDedupKey, FileGossipKey}
	}
	var extra []file
	for _, name := range keys {
		b, err := os.ReadFile(filepath.Join(caDir, name))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", filepath.Join(caDir, name), err)
		}
		extra = append(extra, file{name, b, 0o600})
	}
	cert, certPEM, keyPEM, err := signCert(caCert, caKey, id, req)
	if err != nil {
		return nil, err
	}
	links := map[string]string{}
	if id.Operator {
		links = map[string]string{"ca-cert.pem": FileCA, "client-cert.pem": FileCert, "client-key.pem": FileKey}
	}
	if err := os.MkdirAll(outDir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", outDir, err)
	}
	files := append([]file{{FileCA, caPEM, 0o644}, {FileCert, certPEM, 0o644}, {FileKey, keyPEM, 0o600}}, extra...)
	names := slices.Collect(maps.Keys(links))
	for _, f := range files {
		names = append(names, f.name)
	}
	for _, n := range names {
		p := filepath.Join(outDir, n)
		if _, err := os.Lstat(p); err == nil {
			return nil, fmt.Errorf("issue certificate: %s already exists; refusing to overwrite", p)
		}
	}
	for _, f := range files {
		if err := writeNewFile(filepath.Join(outDir, f.name), f.data, f.mode); err != nil {
			return nil, err
		}
	}
	for link, target := range links {
		if err := os.Symlink(target, filepath.Join(outDir, link)); err != nil {
			return nil, fmt.Errorf("issue certificate: %w", err)
		}
	}
	if err := syncDir(outDir); err != nil {
		return nil, err
	}
	rec := &IssuedCert{
		Serial: SerialString(cert.SerialNumber), Kind: id.Kind(), Name: string(id.Name), Site: string(id.Site),
		Service: id.Service, NotBefore: cert.NotBefore.UTC(), NotAfter: cert.NotAfter.UTC(), Issued: time.Now().UTC(),
	}
	if id.Operator {
		rec.Role = id.Role.String()
	}
	if err := appendLedger(caDir, rec); err != nil {
		return nil, err
	}
	return rec, nil
}

// IssuedCert is one line of a CA's ledger (issued.jsonl).
type IssuedCert struct {
	Serial    string    `json:"serial"`
	Kind      string    `json:"kind"` // node, agent or operator
	Name      string    `json:"name"`
	Site      string    `json:"site,omitempty"`
	Service   string    `json:"service,omitempty"`
	Role      string    `json:"role,omitempty"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	Issued    time.Time `json:"issued"`
}

// FileLedger is the CA directory's record of issued certificates.
const FileLedger = "issued.jsonl"

func appendLedger(caDir string, rec *IssuedCert) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	path := filepath.Join(caDir, FileLedger)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("record issued certificate: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("record issued certificate in %s: %w", path, err)
	}
	return nil
}

// Ledger reads the certificates a CA issued, oldest first. A CA made
// before the ledger existed has none (not an error).
func Ledger(caDir string) ([]IssuedCert, error) {
	path := filepath.Join(caDir, FileLedger)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []IssuedCert
	for i, line := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var rec IssuedCert
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, i+1, err)
		}
		out = append(out, rec)
	}
	return out, nil
}

// signCert creates a key and a certificate for id signed by the CA.
func signCert(caCert *x509.Certificate, caKey any, id Identity, req IssueRequest) (cert *x509.Certificate, certPEM, keyPEM []byte, err error) {
	validity := req.Validity
	if validity == 0 {
		validity = DefaultCertValidity
	}
	now := time.Now()
	nb, na := req.NotBefore, req.NotBefore.Add(validity)
	if nb.IsZero() {
		// A minute back for clock skew; the lifetime counts from now.
		nb, na = now.Add(-time.Minute), now.Add(validity)
	}
	switch {
	case !na.After(now):
		return nil, nil, nil, fmt.Errorf("issue certificate: it would be expired already (valid until %s)", na.UTC().Format(time.RFC3339))
	case nb.After(now):
		return nil, nil, nil, fmt.Errorf("issue certificate: it would not be valid yet (from %s)", nb.UTC().Format(time.RFC3339))
	case na.After(caCert.NotAfter):
		return nil, nil, nil, fmt.Errorf("issue certificate: valid until %s, past the CA's own expiry %s", na.UTC().Format(time.RFC3339), caCert.NotAfter.UTC().Format(time.RFC3339))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("generate key: %w", err)
	}
	ou := string(id.Site)
	if id.Operator {
		ou = "operator " + id.Role.String()
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: string(id.Name), Organization: []string{"lifeboat"}, OrganizationalUnit: []string{ou}},
		NotBefore:    nb,
		NotAfter:     na,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id.URI()},
	}
	if !id.Agent {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	hosts := req.Hosts
	if id.Operator {
		// An operator may serve a point over NBD with TLS on its own
		// host (serve-nbd --tls-dir), where clients check these names.
		hosts = append([]string{"127.0.0.1", "::1", "localhost"}, hosts...)
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("sign certificate for %s: %w", id, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("marshal key: %w", err)
	}
	if cert, err = x509.ParseCertificate(der); err != nil {
		return nil, nil, nil, err
	}
	return cert, pemBytes("CERTIFICATE", der), pemBytes("PRIVATE KEY", keyDER), nil
}

// loadCA reads ca.crt and ca.key from caDir.
func loadCA(caDir string) (caPEM []byte, cert *x509.Certificate, key any, err error) {
	caPath := filepath.Join(caDir, FileCA)
	caPEM, err = os.ReadFile(caPath)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("read CA certificate: %w", err)
	}
	cert, err = parseCertPEM(caPath, caPEM)
	if err != nil {
		return nil, nil, nil, err
	}
	if !cert.IsCA {
		return nil, nil, nil, fmt.Errorf("%s: not a CA certificate", caPath)
	}
	keyPath := filepath.Join(caDir, FileCAKey)
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("read CA key: %w", err)
	}
	blk, _ := pem.Decode(keyPEM)
	if blk == nil {
		return nil, nil, nil, fmt.Errorf("%s: not PEM", keyPath)
	}
	key, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: parse key: %w", keyPath, err)
	}
	if _, err := tls.X509KeyPair(caPEM, keyPEM); err != nil {
		return nil, nil, nil, fmt.Errorf("%s does not match %s: %w", keyPath, caPath, err)
	}
	return caPEM, cert, key, nil
}

// LoadCreds reads a credentials directory written by Issue and checks it:
// the certificate is signed by ca.crt, currently valid, carries exactly one
// identity, and matches cert.key. Errors name the file and what is wrong.
func LoadCreds(dir string) (*Creds, error) {
	caPath := filepath.Join(dir, FileCA)
	caPEM, err := os.ReadFile(caPath)
	if err != nil {
		return nil, fmt.Errorf("load credentials: %w", err)
	}
	caCert, err := parseCertPEM(caPath, caPEM)
	if err != nil {
		return nil, fmt.Errorf("load credentials: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)

	certPath, keyPath := filepath.Join(dir, FileCert), filepath.Join(dir, FileKey)
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("load credentials: %w", err)
	}
	leaf, err := parseCertPEM(certPath, certPEM)
	if err != nil {
		return nil, fmt.Errorf("load credentials: %w", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("load credentials: %w", err)
	}
	if blk, _ := pem.Decode(keyPEM); blk == nil {
		return nil, fmt.Errorf("load credentials: %s: not PEM", keyPath)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load credentials: %s does not match %s: %w", keyPath, certPath, err)
	}
	pair.Leaf = leaf
	now := time.Now()
	if now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("load credentials: %s: certificate expired at %s", certPath, leaf.NotAfter.Format(time.RFC3339))
	}
	if now.Before(leaf.NotBefore) {
		return nil, fmt.Errorf("load credentials: %s: certificate not valid before %s", certPath, leaf.NotBefore.Format(time.RFC3339))
	}
	c := &Creds{CA: pool, Cert: pair}
	id, err := c.verifyChain([]*x509.Certificate{leaf}, x509.ExtKeyUsageClientAuth)
	if err != nil {
		if _, idErr := identityOf(leaf); idErr != nil {
			return nil, fmt.Errorf("load credentials: %s: wrong identity: %w", certPath, idErr)
		}
		return nil, fmt.Errorf("load credentials: %s: not signed by %s: %w", certPath, caPath, err)
	}
	c.Self = id
	if c.DedupKey, err = readHexKey(filepath.Join(dir, FileDedupKey), true); err != nil {
		return nil, fmt.Errorf("load credentials: %w", err)
	}
	if !id.Agent && !id.Operator {
		if c.GossipKey, err = readHexKey(filepath.Join(dir, FileGossipKey), false); err != nil {
			return nil, fmt.Errorf("load credentials: %w", err)
		}
	}
	return c, nil
}

// readHexKey reads a 32-byte hex key file. A missing file is an error
// unless optional (then it returns nil).
func readHexKey(path string, optional bool) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if optional && errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	k, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("%s: not hex: %w", path, err)
	}
	if len(k) != 32 {
		return nil, fmt.Errorf("%s: key is %d bytes, want 32", path, len(k))
	}
	return k, nil
}

func parseCertPEM(path string, b []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: not a PEM certificate", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: parse certificate: %w", path, err)
	}
	return c, nil
}

func pemBytes(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func randomHexKey() []byte {
	k := make([]byte, 32)
	rand.Read(k)
	return []byte(hex.EncodeToString(k) + "\n")
}

func randomSerial() *big.Int {
	b := make([]byte, 16)
	rand.Read(b)
	b[0] &= 0x7f
	return new(big.Int).SetBytes(b)
}

// ensureEmptyDir creates dir or checks that it is empty.
func ensureEmptyDir(dir string) error {
	ents, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("read %s: %w", dir, err)
	case len(ents) > 0:
		return fmt.Errorf("%s is not empty; refusing to create a CA there", dir)
	}
	return nil
}

// writeNewFile durably creates path with data, refusing to overwrite.
func writeNewFile(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func syncDir(dir string) error { return durable.SyncDir(dir) }
