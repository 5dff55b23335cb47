package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestExamples loads every file in examples/: each must be valid, free of
// warnings, and summarise.
func TestExamples(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("examples/*.toml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 3 {
		t.Fatalf("found %d example files, want at least 3", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			t.Parallel()
			v, err := Load(f)
			if err != nil {
				t.Fatal(err)
			}
			switch x := v.(type) {
			case *Cluster:
				if w := x.Warnings(); len(w) != 0 {
					t.Errorf("warnings: %q", w)
				}
				if s := x.Summary(); !strings.HasPrefix(s, "cluster policy: ") {
					t.Errorf("summary: %q", s)
				}
			case *Node:
				if s := x.Summary(); !strings.Contains(s, x.Name) || !strings.Contains(s, x.TLS.Dir) {
					t.Errorf("summary lacks name or tls dir: %q", s)
				}
			case *Agent:
				if s := x.Summary(); !strings.Contains(s, x.Name) || !strings.Contains(s, x.Volumes[0].Path) {
					t.Errorf("summary lacks name or a volume: %q", s)
				}
			default:
				t.Fatalf("Load returned %T", v)
			}
		})
	}
}

func TestExampleCluster(t *testing.T) {
	t.Parallel()
	c, err := LoadCluster("examples/cluster.toml")
	if err != nil {
		t.Fatal(err)
	}
	tiers := map[Tier]bool{}
	for _, s := range c.Services {
		for _, cp := range s.Copies {
			tiers[cp.Tier] = true
		}
	}
	if len(c.Sites) != 3 || len(c.Links) != 1 || len(tiers) != 3 {
		t.Fatalf("got %d sites, %d links, tiers %v; want 3 sites, 1 link, every tier", len(c.Sites), len(c.Links), tiers)
	}
	want := "cluster policy: 3 sites, 1 link, 3 services\n"
	if s := c.Summary(); !strings.HasPrefix(s, want) || !strings.Contains(s, "dc1:cold (daily 02:00)") || !strings.Contains(s, "160GiB") {
		t.Fatalf("summary:\n%s", s)
	}
	n, err := LoadNode("examples/node-witness.toml")
	if err != nil {
		t.Fatal(err)
	}
	if n.Role != RoleWitness || n.TLS.Dir != "/var/lib/lifeboat/tls" || n.BootstrapExpect != 3 {
		t.Fatalf("witness: %+v", n)
	}
}

func TestDetect(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, toml string
		want       Kind
		err        string
	}{
		{"node", minimalNode, KindNode, ""},
		{"node name only", "name = \"x\"\n", KindNode, ""},
		{"cluster", baseCluster, KindCluster, ""},
		{"cluster services only", "[[service]]\nname = \"x\"\n", KindCluster, ""},
		{"empty", "# nothing here\n", KindUnknown, "f.toml: not a lifeboat config: the file is empty"},
		{"both", minimalNode + "[[service]]\nname = \"x\"\n", KindUnknown, "f.toml: not a lifeboat config: the file has keys of both kinds"},
		{"neither", "colour = \"red\"\n", KindUnknown, "f.toml: not a lifeboat config: no name or site key"},
		{"syntax", "[[site]\n", KindUnknown, "f.toml:1: invalid TOML"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			k, err := Detect("f.toml", []byte(tc.toml))
			if k != tc.want {
				t.Errorf("kind = %s, want %s", k, tc.want)
			}
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.err) {
				t.Fatalf("got error %v, want one starting %q", err, tc.err)
			}
			if _, perr := Parse("f.toml", []byte(tc.toml)); perr == nil || perr.Error() != err.Error() {
				t.Fatalf("Parse error %v differs from Detect error %v", perr, err)
			}
			if tc.want == KindUnknown && !strings.Contains(tc.err, "invalid TOML") && !errors.Is(err, ErrUnknownKind) {
				t.Errorf("error %v is not ErrUnknownKind", err)
			}
		})
	}
}

func TestLoadKinds(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, s string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	v, err := Load(write("n.toml", minimalNode))
	if _, ok := v.(*Node); !ok || err != nil {
		t.Fatalf("Load(node) = %T, %v", v, err)
	}
	v, err = Load(write("c.toml", baseCluster))
	if _, ok := v.(*Cluster); !ok || err != nil {
		t.Fatalf("Load(cluster) = %T, %v", v, err)
	}
	v, err = Load(write("bad.toml", minimalNode+"role = 1\n"))
	if v != nil || err == nil {
		t.Fatalf("Load(bad node) = %#v, %v; want nil and an error", v, err)
	}
	var e *Error
	if !errors.As(err, &e) || e.Line != 4 || e.Key != "role" || e.File != filepath.Join(dir, "bad.toml") {
		t.Fatalf("error %#v, want an *Error at line 4, key role", e)
	}
}

func TestParseIsPure(t *testing.T) {
	t.Parallel()
	data := []byte(baseCluster)
	orig := append([]byte(nil), data...)
	a, err := ParseCluster("c.toml", data)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseCluster("c.toml", data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, b) || string(data) != string(orig) {
		t.Fatal("two parses of the same data differ, or the input changed")
	}
}
