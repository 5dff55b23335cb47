package mesh

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lifeboat-dr/lifeboat/internal/names"
)

// NodeID is a node's (or an agent's) name, unique in the cluster.
type NodeID string

// Site is the name of a data center.
type Site string

// Files in a CA directory and in a credentials directory (see Issue).
const (
	FileCA        = "ca.crt"
	FileCAKey     = "ca.key"
	FileCert      = "cert.crt"
	FileKey       = "cert.key"
	FileGossipKey = "gossip.key"
	FileDedupKey  = "dedup.key"
)

// Default certificate lifetimes.
const (
	DefaultCAValidity   = 10 * 365 * 24 * time.Hour
	DefaultCertValidity = 5 * 365 * 24 * time.Hour
)

// identityScheme is the URI scheme of the identity SAN (see doc.go).
const identityScheme = "lifeboat"

// Role is what an operator certificate allows on the admin API. Roles are
// ordered: each allows what the ones below it allow.
type Role int

// Roles, lowest first. RoleNone is no role at all (agents).
const (
	RoleNone     Role = iota
	RoleViewer        // reads status, points, metrics
	RoleOperator      // runs drills, failovers, failbacks, restores, image reads
	RoleAdmin         // applies policies, recovers raft, revokes certificates
)

var roleNames = [...]string{"none", "viewer", "operator", "admin"}

func (r Role) String() string {
	if r < 0 || int(r) >= len(roleNames) {
		return fmt.Sprintf("role(%d)", int(r))
	}
	return roleNames[r]
}

// ParseRole parses viewer, operator or admin.
func ParseRole(s string) (Role, error) {
	for i, n := range roleNames[1:] {
		if s == n {
			return Role(i + 1), nil
		}
	}
	return RoleNone, fmt.Errorf("role %q: want viewer, operator or admin", s)
}

// Identity is what a verified certificate says about its holder. It is
// encoded in a URI SAN: lifeboat://node/<site>/<name>,
// lifeboat://agent/<site>/<service>/<name> or
// lifeboat://operator/<role>/<name>.
type Identity struct {
	Name     NodeID
	Site     Site // "" for operators
	Agent    bool
	Service  string
	Operator bool
	Role     Role   // operators only
	Serial   string // the certificate's serial number, hex; "" when not from a certificate
}

// Kind is "node", "agent" or "operator".
func (id Identity) Kind() string {
	switch {
	case id.Agent:
		return "agent"
	case id.Operator:
		return "operator"
	}
	return "node"
}

// AdminRole is the role id holds on the admin API: an operator's own,
// viewer for a node (monitoring), none for an agent.
func (id Identity) AdminRole() Role {
	switch {
	case id.Operator:
		return id.Role
	case id.Agent:
		return RoleNone
	}
	return RoleViewer
}

// String returns the identity's URI form.
func (id Identity) String() string { return id.URI().String() }

// URI returns the URI SAN that encodes id.
func (id Identity) URI() *url.URL {
	if id.Operator {
		return &url.URL{Scheme: identityScheme, Host: "operator", Path: "/" + id.Role.String() + "/" + string(id.Name)}
	}
	if id.Agent {
		return &url.URL{Scheme: identityScheme, Host: "agent", Path: "/" + string(id.Site) + "/" + id.Service + "/" + string(id.Name)}
	}
	return &url.URL{Scheme: identityScheme, Host: "node", Path: "/" + string(id.Site) + "/" + string(id.Name)}
}

// ValidName reports whether s may be used as a name, site or service in an
// identity: the project's one name rule (internal/names).
func ValidName(s string) bool { return names.Valid(s) }

// parseIdentity decodes an identity URI SAN.
func parseIdentity(u *url.URL) (Identity, error) {
	if u.Scheme != identityScheme {
		return Identity{}, fmt.Errorf("identity %q: scheme is not %q", u, identityScheme)
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	var id Identity
	switch {
	case u.Host == "node" && len(parts) == 2:
		id = Identity{Site: Site(parts[0]), Name: NodeID(parts[1])}
	case u.Host == "agent" && len(parts) == 3:
		id = Identity{Site: Site(parts[0]), Service: parts[1], Name: NodeID(parts[2]), Agent: true}
	case u.Host == "operator" && len(parts) == 2:
		r, err := ParseRole(parts[0])
		if err != nil {
			return Identity{}, fmt.Errorf("identity %q: %w", u, err)
		}
		if !ValidName(parts[1]) {
			return Identity{}, fmt.Errorf("identity %q: bad operator name", u)
		}
		return Identity{Name: NodeID(parts[1]), Operator: true, Role: r}, nil
	default:
		return Identity{}, fmt.Errorf("identity %q: want lifeboat://node/SITE/NAME, lifeboat://agent/SITE/SERVICE/NAME or lifeboat://operator/ROLE/NAME", u)
	}
	if !ValidName(string(id.Site)) || !ValidName(string(id.Name)) || (id.Agent && !ValidName(id.Service)) {
		return Identity{}, fmt.Errorf("identity %q: bad name, site or service", u)
	}
	return id, nil
}

// identityOf returns the identity encoded in cert's URI SANs. Exactly one
// lifeboat URI SAN must be present and it must match the CN.
func identityOf(cert *x509.Certificate) (Identity, error) {
	var found []Identity
	for _, u := range cert.URIs {
		if u.Scheme != identityScheme {
			continue
		}
		id, err := parseIdentity(u)
		if err != nil {
			return Identity{}, err
		}
		found = append(found, id)
	}
	switch len(found) {
	case 0:
		return Identity{}, errors.New("certificate has no lifeboat identity (URI SAN)")
	case 1:
	default:
		return Identity{}, fmt.Errorf("certificate has %d lifeboat identities, want 1", len(found))
	}
	if cert.Subject.CommonName != string(found[0].Name) {
		return Identity{}, fmt.Errorf("certificate CN %q does not match identity %s", cert.Subject.CommonName, found[0])
	}
	found[0].Serial = SerialString(cert.SerialNumber)
	return found[0], nil
}

// SerialString is how a certificate serial number is written everywhere
// (revocation list, audit log, ca issue): lowercase hex.
func SerialString(n *big.Int) string { return n.Text(16) }

// PeerIdentity extracts the Identity from the verified chain of a TLS
// connection. It needs cs.VerifiedChains, which crypto/tls fills when it
// verified the peer itself (the server side of ServerTLS); for the client side
// of ClientTLS, use Creds.VerifyPeer.
func PeerIdentity(cs tls.ConnectionState) (Identity, error) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return Identity{}, errors.New("peer identity: no verified certificate chain")
	}
	return identityOf(cs.VerifiedChains[0][0])
}

// Creds are the credentials of one node, agent or operator, loaded by
// LoadCreds.
type Creds struct {
	CA        *x509.CertPool
	Cert      tls.Certificate // Leaf is set
	Self      Identity
	GossipKey []byte // nil for agents and operators
	DedupKey  []byte // nil if absent

	revoked atomic.Pointer[map[string]bool] // serials refused on new handshakes
}

// SetRevoked replaces the set of revoked certificate serials (SerialString
// form). Every handshake made afterwards with a config from ServerTLS or
// ClientTLS refuses a peer whose serial is in it. Safe for concurrent use.
func (c *Creds) SetRevoked(serials []string) {
	m := make(map[string]bool, len(serials))
	for _, s := range serials {
		m[s] = true
	}
	c.revoked.Store(&m)
}

// Revoked reports whether serial is in the set given to SetRevoked.
func (c *Creds) Revoked(serial string) bool {
	m := c.revoked.Load()
	return m != nil && (*m)[serial]
}

// ErrRevoked reports a peer whose certificate has been revoked.
var ErrRevoked = errors.New("certificate revoked")

// checkRevoked refuses id when its serial is revoked.
func (c *Creds) checkRevoked(id Identity) error {
	if id.Serial != "" && c.Revoked(id.Serial) {
		return fmt.Errorf("%s (serial %s): %w", id, id.Serial, ErrRevoked)
	}
	return nil
}

// VerifyPeer verifies the peer certificates of cs against the cluster CA (for
// TLS client or server authentication, whichever fits the peer) and returns
// the peer's identity.
func (c *Creds) VerifyPeer(cs tls.ConnectionState) (Identity, error) {
	if len(cs.PeerCertificates) == 0 {
		return Identity{}, errors.New("peer sent no certificate")
	}
	return c.verifyChain(cs.PeerCertificates, x509.ExtKeyUsageAny)
}

// verifyChain verifies certs[0] (with certs[1:] as intermediates) against
// the CA for usage and returns its identity.
func (c *Creds) verifyChain(certs []*x509.Certificate, usage x509.ExtKeyUsage) (Identity, error) {
	inter := x509.NewCertPool()
	for _, ic := range certs[1:] {
		inter.AddCert(ic)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         c.CA,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	}); err != nil {
		return Identity{}, fmt.Errorf("verify certificate %q: %w", certs[0].Subject.CommonName, err)
	}
	return identityOf(certs[0])
}

// ServerTLS returns a TLS 1.3 server config presenting c's certificate and
// requiring a client certificate signed by the cluster CA that carries a
// lifeboat identity. The caller may set NextProtos.
func (c *Creds) ServerTLS() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{c.Cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    c.CA,
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := PeerIdentity(cs)
			if err != nil {
				return err
			}
			return c.checkRevoked(id)
		},
	}
}

// AdminServerTLS is ServerTLS for the admin API: a client certificate is
// requested and, when sent, verified against the CA (a foreign or expired
// one fails the handshake), but a client may come without one, and a
// revoked one passes the handshake, so that the API can refuse them with
// an answer they can read and record the attempt in the audit log.
func (c *Creds) AdminServerTLS() *tls.Config {
	cfg := c.ServerTLS()
	cfg.ClientAuth = tls.VerifyClientCertIfGiven
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return nil
		}
		_, err := PeerIdentity(cs)
		return err
	}
	return cfg
}

// ClientTLS returns a TLS 1.3 client config presenting c's certificate and
// requiring the server to hold a node certificate signed by the cluster CA.
// Host names are not checked (nodes are dialed by address); the identity in
// the certificate is what counts.
func (c *Creds) ClientTLS() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{c.Cert},
		InsecureSkipVerify: true, // replaced by VerifyConnection below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("server sent no certificate")
			}
			id, err := c.verifyChain(cs.PeerCertificates, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			if id.Agent || id.Operator {
				return fmt.Errorf("server %s holds an %s certificate, want a node", id, id.Kind())
			}
			return c.checkRevoked(id)
		},
	}
}
