package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// errorLines returns the message of every *Error in err.
func errorLines(t *testing.T, err error) []string {
	t.Helper()
	var out []string
	for _, e := range Errors(err) {
		out = append(out, e.Error())
	}
	return out
}

// checkErrors fails unless err holds exactly the problems want, in order.
func checkErrors(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want:\n%s", strings.Join(want, "\n"))
	}
	got := errorLines(t, err)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if err.Error() != strings.Join(want, "\n") {
		t.Fatalf("err.Error() = %q, want the problems one a line", err.Error())
	}
}

const minimalNode = `name = "dc1-n1"
site = "dc1"
data_dir = "/var/lib/lifeboat"
`

func TestParseNodeDefaults(t *testing.T) {
	t.Parallel()
	n, err := ParseNode("node.toml", []byte(minimalNode))
	if err != nil {
		t.Fatal(err)
	}
	want := &Node{
		Name: "dc1-n1", Site: "dc1", DataDir: "/var/lib/lifeboat",
		Role: RoleNode, BootstrapExpect: 1, DeadNodeTimeout: Duration(24 * time.Hour), HolderTimeout: Duration(time.Minute), LogLevel: "info", GossipProfile: "wan",
		Listen:    Listen{Gossip: "0.0.0.0:7946", QUIC: "0.0.0.0:7947", Admin: "127.0.0.1:7948"},
		TLS:       TLS{Dir: "/var/lib/lifeboat/tls"},
		Lifecycle: Lifecycle{ThinEvery: DefaultThinEvery, GCEvery: DefaultGCEvery},
	}
	if !reflect.DeepEqual(n, want) {
		t.Fatalf("got  %+v\nwant %+v", n, want)
	}

	n, err = ParseNode("node.toml", []byte(minimalNode+`join = ["10.0.1.12:7946"]`))
	if err != nil {
		t.Fatal(err)
	}
	if n.BootstrapExpect != 3 {
		t.Fatalf("bootstrap_expect with join = %d, want 3", n.BootstrapExpect)
	}
}

func TestParseNodeErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		toml string
		want []string
	}{
		{"unknown key", minimalNode + "colour = \"red\"\n",
			[]string{"node.toml:4: colour: unknown key: want one of bootstrap_expect, data_dir, dead_node_timeout, encryption, gossip_profile, holder_timeout, hooks_user, join, lifecycle, listen, log_level, name, role, site, tls"}},
		{"unknown nested key", minimalNode + "[listen]\ngossip = \"0.0.0.0:1\"\nqic = \"0.0.0.0:2\"\n",
			[]string{"node.toml:6: listen.qic: unknown key: want one of admin, advertise, gossip, quic"}},
		{"wrong type", minimalNode + "bootstrap_expect = \"three\"\n",
			[]string{`node.toml:4: bootstrap_expect: "three": want an integer, not a string`}},
		{"wrong type table", "name = \"a\"\nsite = \"dc1\"\ndata_dir = \"/d\"\nlisten = 5\n",
			[]string{"node.toml:4: listen: 5: want a table, not an integer"}},
		{"duplicate key", minimalNode + "name = \"again\"\n",
			[]string{"node.toml:4: name: invalid TOML: key name is already defined"}},
		{"syntax", minimalNode + "role = \n",
			[]string{"node.toml:4: invalid TOML: unexpected character U+000A at start of value"}},
		{"missing required", "site = \"dc1\"\n",
			[]string{
				`node.toml: name: missing: want a node name like "dc1-n1"`,
				`node.toml: data_dir: missing: want the directory for the node's data, like "/var/lib/lifeboat"`,
			}},
		{"bad name", "name = \"DC1 n1\"\nsite = \"dc1\"\ndata_dir = \"/d\"\n",
			[]string{`node.toml:1: name: "DC1 n1": want 1 to 63 of a-z, 0-9, '_', '.', '-', starting with a letter or digit`}},
		{"bad role enum", minimalNode + "role = \"voter\"\n",
			[]string{`node.toml:4: role: "voter": want "node" or "witness"`}},
		{"bad log level", minimalNode + "log_level = \"loud\"\n",
			[]string{`node.toml:4: log_level: "loud": want one of debug, info, warn, error`}},
		{"bad duration", minimalNode + "dead_node_timeout = \"soon\"\n",
			[]string{`node.toml:4: dead_node_timeout: "soon": want a duration like "15s", "1h30m" or "30d"`}},
		{"short duration", minimalNode + "dead_node_timeout = \"500ms\"\n",
			[]string{`node.toml:4: dead_node_timeout: 500ms: want at least 1s`}},
		{"bad join address", minimalNode + "join = [\n  \"10.0.1.12:7946\",\n  \"10.0.2.11\",\n]\n",
			[]string{`node.toml:6: join[1]: "10.0.2.11": want host:port, like "10.0.1.11:7946", "node1.dc1:7946" or "[::1]:7946", port 0 to 65535`}},
		{"join listed twice", minimalNode + "join = [\"a:1\", \"a:1\"]\n",
			[]string{`node.toml:4: join[1]: "a:1": listed twice`}},
		{"bad port", minimalNode + "[listen]\nquic = \"0.0.0.0:70000\"\n",
			[]string{`node.toml:5: listen.quic: "0.0.0.0:70000": want host:port, like "10.0.1.11:7946", "node1.dc1:7946" or "[::1]:7946", port 0 to 65535`}},
		{"same gossip and quic", minimalNode + "listen = { gossip = \":9000\", quic = \":9000\" }\n",
			[]string{`node.toml:4: listen.quic: ":9000": the same address as listen.gossip: want another port (gossip uses UDP too)`}},
		{"advertise with port", minimalNode + "[listen]\nadvertise = \"10.0.1.11:7946\"\n",
			[]string{`node.toml:5: listen.advertise: "10.0.1.11:7946": want a host name or IP address without a port, like "10.0.1.11"`}},
		{"bootstrap out of range", minimalNode + "bootstrap_expect = -1\n",
			[]string{`node.toml:4: bootstrap_expect: -1: want the number of raft voters to wait for, from 1 to 9`}},
		{"every problem", "name = \"X\"\nsite = 7\ndata_dir = \"/d\"\nrole = \"boss\"\nbogus = 1\n",
			[]string{
				`node.toml:1: name: "X": want 1 to 63 of a-z, 0-9, '_', '.', '-', starting with a letter or digit`,
				`node.toml:2: site: 7: want a string, not an integer`,
				`node.toml:4: role: "boss": want "node" or "witness"`,
				`node.toml:5: bogus: unknown key: want one of bootstrap_expect, data_dir, dead_node_timeout, encryption, gossip_profile, holder_timeout, hooks_user, join, lifecycle, listen, log_level, name, role, site, tls`,
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n, err := ParseNode("node.toml", []byte(tc.toml))
			if n != nil {
				t.Errorf("got a node %+v with errors", n)
			}
			checkErrors(t, err, tc.want...)
		})
	}
}

func TestNodeValidateAfterFlags(t *testing.T) {
	t.Parallel()
	n, err := ParseNode("node.toml", []byte(minimalNode))
	if err != nil {
		t.Fatal(err)
	}
	// What cmd does after applying --listen-quic and --role.
	n.Listen.QUIC = "nowhere"
	n.Role = "boss"
	checkErrors(t, n.Validate(),
		`role: "boss": want "node" or "witness"`,
		`listen.quic: "nowhere": want host:port, like "10.0.1.11:7946", "node1.dc1:7946" or "[::1]:7946", port 0 to 65535`,
	)

	// A node built from flags alone.
	f := &Node{Name: "n1", Site: "dc1", DataDir: "/data"}
	f.SetDefaults()
	if err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	if f.TLS.Dir != "/data/tls" {
		t.Fatalf("tls dir = %q, want /data/tls", f.TLS.Dir)
	}
}

func TestLoadNode(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "node.toml")
	if err := os.WriteFile(p, []byte(minimalNode+"role = \"x\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadNode(p)
	checkErrors(t, err, p+`:4: role: "x": want "node" or "witness"`)

	_, err = LoadNode(filepath.Join(dir, "missing.toml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("got %v, want a not-exist error", err)
	}

	big := filepath.Join(dir, "big.toml")
	if err := os.WriteFile(big, make([]byte, MaxFileSize+1), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadNode(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("got %v, want a too-large error", err)
	}
}
