package config

import (
	"fmt"
	"net"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Role is what a node does in the cluster.
type Role string

// The node roles.
const (
	// RoleNode holds data, replicates and runs services; the default.
	RoleNode Role = "node"
	// RoleWitness is a small tie-breaker: it votes in raft and holds no data.
	RoleWitness Role = "witness"
)

// Node defaults.
const (
	DefaultGossip          = "0.0.0.0:7946"
	DefaultQUIC            = "0.0.0.0:7947"
	DefaultAdmin           = "127.0.0.1:7948"
	DefaultDeadNodeTimeout = Duration(24 * time.Hour)
	DefaultHolderTimeout   = Duration(time.Minute)
	DefaultLogLevel        = "info"
)

// GossipProfiles are the values gossip_profile takes: failure detection
// timings for links between sites (wan, the default), within one site
// (lan), or on one host for demos and tests (test).
var GossipProfiles = []string{"wan", "lan", "test"}

// LogLevels are the values log_level takes.
var LogLevels = []string{"debug", "info", "warn", "error"}

// Node is a node file: one `lifeboat node` daemon. doc.go describes every
// key. ParseNode and LoadNode return it with defaults applied and
// validated; the cmd package may then override fields from flags and call
// SetDefaults and Validate again.
type Node struct {
	Name            string   `toml:"name" json:"name"`
	Site            string   `toml:"site" json:"site"`
	DataDir         string   `toml:"data_dir" json:"data_dir"`
	Join            []string `toml:"join" json:"join"`
	Role            Role     `toml:"role" json:"role"`
	BootstrapExpect int      `toml:"bootstrap_expect" json:"bootstrap_expect"`
	DeadNodeTimeout Duration `toml:"dead_node_timeout" json:"dead_node_timeout"`
	HolderTimeout   Duration `toml:"holder_timeout" json:"holder_timeout"`
	LogLevel        string   `toml:"log_level" json:"log_level"`
	GossipProfile   string   `toml:"gossip_profile" json:"gossip_profile"`
	Listen          Listen   `toml:"listen" json:"listen"`
	TLS             TLS      `toml:"tls" json:"tls"`
	// HooksUser is the local user the node runs the policy's hooks as;
	// "" = the node's own user.
	HooksUser  string     `toml:"hooks_user" json:"hooks_user"`
	Encryption Encryption `toml:"encryption" json:"encryption"`
	Lifecycle  Lifecycle  `toml:"lifecycle" json:"lifecycle"`
}

// Lifecycle says how often the node thins points by retention and
// collects the garbage deleted points leave.
type Lifecycle struct {
	ThinEvery Duration `toml:"thin_every" json:"thin_every"` // default 30s
	GCEvery   Duration `toml:"gc_every" json:"gc_every"`     // least time between collections; default 15m
	GCRate    Rate     `toml:"gc_rate" json:"gc_rate"`       // pack rewriting; default unlimited
}

// Lifecycle defaults.
const (
	DefaultThinEvery = Duration(30 * time.Second)
	DefaultGCEvery   = Duration(15 * time.Minute)
)

// Encryption names the key-encryption key of an encrypted store: a file
// holding 32 bytes in hex, or a command (an argv, no shell) that prints
// them. One of the two is needed at sites whose policy says encrypt.
type Encryption struct {
	KEKFile    string   `toml:"kek_file" json:"kek_file"`
	KEKCommand []string `toml:"kek_command" json:"kek_command"`
}

// Listen holds the addresses a node listens on.
type Listen struct {
	Gossip    string `toml:"gossip" json:"gossip"`       // memberlist, host:port (TCP and UDP)
	QUIC      string `toml:"quic" json:"quic"`           // data, raft and agents, host:port (UDP)
	Admin     string `toml:"admin" json:"admin"`         // admin API, host:port
	Advertise string `toml:"advertise" json:"advertise"` // host peers reach this node at; "" = the listen host
}

// TLS says where the node's certificates are.
type TLS struct {
	Dir string `toml:"dir" json:"dir"` // what `lifeboat ca issue --out` wrote
}

// LoadNode reads, parses and validates the node file at path.
func LoadNode(path string) (*Node, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return ParseNode(path, data)
}

// ParseNode parses and validates a node file; filename names it in errors.
// It applies defaults and returns every problem found.
func ParseNode(filename string, data []byte) (*Node, error) {
	m, lines, err := parseTOML(filename, data)
	if err != nil {
		return nil, err
	}
	return decodeNode(filename, m, lines)
}

func decodeNode(filename string, m map[string]any, lines map[string]int) (*Node, error) {
	ps := &problems{file: filename, lines: lines}
	var n Node
	ps.decode(path{}, m, reflect.ValueOf(&n).Elem())
	n.SetDefaults()
	n.validate(ps)
	if err := ps.err(); err != nil {
		return nil, err
	}
	return &n, nil
}

// SetDefaults fills every unset field with its default. The TLS directory
// defaults to <data_dir>/tls, so set DataDir first.
func (n *Node) SetDefaults() {
	if n.Role == "" {
		n.Role = RoleNode
	}
	if n.BootstrapExpect == 0 {
		n.BootstrapExpect = 3
		if len(n.Join) == 0 {
			n.BootstrapExpect = 1
		}
	}
	if n.DeadNodeTimeout == 0 {
		n.DeadNodeTimeout = DefaultDeadNodeTimeout
	}
	if n.HolderTimeout == 0 {
		n.HolderTimeout = DefaultHolderTimeout
	}
	if n.LogLevel == "" {
		n.LogLevel = DefaultLogLevel
	}
	if n.Lifecycle.ThinEvery == 0 {
		n.Lifecycle.ThinEvery = DefaultThinEvery
	}
	if n.Lifecycle.GCEvery == 0 {
		n.Lifecycle.GCEvery = DefaultGCEvery
	}
	if n.GossipProfile == "" {
		n.GossipProfile = GossipProfiles[0]
	}
	if n.Listen.Gossip == "" {
		n.Listen.Gossip = DefaultGossip
	}
	if n.Listen.QUIC == "" {
		n.Listen.QUIC = DefaultQUIC
	}
	if n.Listen.Admin == "" {
		n.Listen.Admin = DefaultAdmin
	}
	if n.TLS.Dir == "" && n.DataDir != "" {
		n.TLS.Dir = filepath.Join(n.DataDir, "tls")
	}
}

// Validate checks every field and returns every problem, each an *Error
// naming the key ("listen.quic") without a file or line.
func (n *Node) Validate() error {
	ps := &problems{}
	n.validate(ps)
	return ps.err()
}

func (n *Node) validate(ps *problems) {
	root := path{}
	checkName(ps, root.key("name"), n.Name, "node", "dc1-n1")
	checkName(ps, root.key("site"), n.Site, "site", "dc1")
	if n.Encryption.KEKFile != "" && len(n.Encryption.KEKCommand) > 0 {
		ps.add(root.key("encryption").key("kek_command"), "set with kek_file: want one source of the key-encryption key")
	}
	if n.HooksUser != "" && strings.ContainsAny(n.HooksUser, " \t:/") {
		ps.add(root.key("hooks_user"), "%q: want a local user name, like \"lifeboat-hooks\"", n.HooksUser)
	}
	if n.DataDir == "" {
		ps.add(root.key("data_dir"), `missing: want the directory for the node's data, like "/var/lib/lifeboat"`)
	}
	seen := map[string]bool{}
	for i, j := range n.Join {
		p := root.key("join").elem(i, "")
		if err := checkHostPort(j); err != nil {
			ps.addErr(p, err)
		} else if seen[j] {
			ps.add(p, "%q: listed twice", j)
		}
		seen[j] = true
	}
	switch n.Role {
	case RoleNode, RoleWitness:
	default:
		ps.add(root.key("role"), "%q: want %q or %q", string(n.Role), RoleNode, RoleWitness)
	}
	if n.BootstrapExpect < 1 || n.BootstrapExpect > 9 {
		ps.add(root.key("bootstrap_expect"), "%d: want the number of raft voters to wait for, from 1 to 9", n.BootstrapExpect)
	}
	if n.DeadNodeTimeout < Duration(time.Second) {
		ps.add(root.key("dead_node_timeout"), "%s: want at least 1s", n.DeadNodeTimeout)
	}
	if n.HolderTimeout < Duration(time.Second) {
		ps.add(root.key("holder_timeout"), "%s: want at least 1s", n.HolderTimeout)
	}
	lc := root.key("lifecycle")
	if n.Lifecycle.ThinEvery < Duration(time.Second) {
		ps.add(lc.key("thin_every"), "%s: want at least 1s", n.Lifecycle.ThinEvery)
	}
	if n.Lifecycle.GCEvery < Duration(time.Second) {
		ps.add(lc.key("gc_every"), "%s: want at least 1s", n.Lifecycle.GCEvery)
	}
	checkRate(ps, lc.key("gc_rate"), n.Lifecycle.GCRate)
	if !slices.Contains(LogLevels, n.LogLevel) {
		ps.add(root.key("log_level"), "%q: want one of %s", n.LogLevel, strings.Join(LogLevels, ", "))
	}
	if !slices.Contains(GossipProfiles, n.GossipProfile) {
		ps.add(root.key("gossip_profile"), "%q: want one of %s", n.GossipProfile, strings.Join(GossipProfiles, ", "))
	}
	l := root.key("listen")
	for _, a := range []struct{ key, addr string }{{"gossip", n.Listen.Gossip}, {"quic", n.Listen.QUIC}, {"admin", n.Listen.Admin}} {
		if err := checkHostPort(a.addr); err != nil {
			ps.addErr(l.key(a.key), err)
		}
	}
	if n.Listen.Gossip == n.Listen.QUIC && n.Listen.Gossip != "" {
		ps.add(l.key("quic"), "%q: the same address as listen.gossip: want another port (gossip uses UDP too)", n.Listen.QUIC)
	}
	if a := n.Listen.Advertise; a != "" && !validHost(a) {
		ps.add(l.key("advertise"), "%q: want a host name or IP address without a port, like \"10.0.1.11\"", a)
	}
	if n.TLS.Dir == "" && n.DataDir != "" {
		ps.add(root.key("tls").key("dir"), "missing: want the directory `lifeboat ca issue --out` wrote")
	}
}

// checkName records a problem when s is not a valid name of the kind.
func checkName(ps *problems, p path, s, kind, example string) {
	switch {
	case s == "":
		article := "a"
		if strings.ContainsRune("aeiou", rune(kind[0])) {
			article = "an"
		}
		ps.add(p, "missing: want %s %s name like %q", article, kind, example)
	case !validName(s):
		ps.add(p, "%s: %s", quote(s), nameWant)
	}
}

// checkHostPort checks a "host:port" address.
func checkHostPort(a string) error {
	const want = `want host:port, like "10.0.1.11:7946", "node1.dc1:7946" or "[::1]:7946", port 0 to 65535`
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("%s: %s", quote(a), want)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 || (host != "" && !validHost(host)) {
		return fmt.Errorf("%s: %s", quote(a), want)
	}
	return nil
}

// validHost reports whether h is an IP address or a DNS name.
func validHost(h string) bool {
	if net.ParseIP(h) != nil {
		return true
	}
	if len(h) == 0 || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
