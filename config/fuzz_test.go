package config

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// addSeeds adds the examples and a few broken files to the corpus.
func addSeeds(f *testing.F, extra ...string) {
	files, _ := filepath.Glob("examples/*.toml")
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range extra {
		f.Add([]byte(s))
	}
}

// FuzzParseCluster: no panic; every error is an *Error; a policy that
// parses validates again, survives JSON and is unchanged by defaults.
func FuzzParseCluster(f *testing.F) {
	addSeeds(f, baseCluster, "[[site]]\nname = \"a\"\n[[link]]\nbetween = [\"a\", \"a\"]\n",
		"[[service]]\nhooks.timeout = 5\n[[service.copy]]\ntier = \"cold\"\n")
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseCluster("f.toml", data)
		if err != nil {
			if len(Errors(err)) == 0 {
				t.Fatalf("error without an *Error: %v", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("parsed policy does not validate: %v", err)
		}
		j, err := json.Marshal(c)
		if err != nil {
			t.Fatalf("marshal parsed policy: %v", err)
		}
		var again Cluster
		if err := json.Unmarshal(j, &again); err != nil {
			t.Fatalf("unmarshal parsed policy: %v\n%s", err, j)
		}
		if !reflect.DeepEqual(&again, c) {
			t.Fatalf("JSON round trip changed the policy: %s", j)
		}
		again.SetDefaults()
		if !reflect.DeepEqual(&again, c) {
			t.Fatal("SetDefaults changed a parsed policy")
		}
		_ = c.Summary()
		_ = c.Warnings()
	})
}

// FuzzParseNode: no panic; every error is an *Error; a node that parses
// validates again.
func FuzzParseNode(f *testing.F) {
	addSeeds(f, minimalNode, minimalNode+"join = [\"[::1]:1\", \"a:65535\"]\n[listen]\nadvertise = \"::1\"\n")
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := ParseNode("f.toml", data)
		if err != nil {
			if len(Errors(err)) == 0 {
				t.Fatalf("error without an *Error: %v", err)
			}
			return
		}
		if err := n.Validate(); err != nil {
			t.Fatalf("parsed node does not validate: %v", err)
		}
		_ = n.Summary()
	})
}
