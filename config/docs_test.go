package config

import (
	"fmt"
	"maps"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// docFile is the config reference, relative to this package's directory.
const docFile = "../docs/config.md"

// docKinds are the sections of docs/config.md that document a file kind,
// with the root type that file decodes into.
var docKinds = []struct {
	heading string
	kind    Kind
	root    reflect.Type
}{
	{"## Node file", KindNode, reflect.TypeFor[Node]()},
	{"## Agent file", KindAgent, reflect.TypeFor[Agent]()},
	{"## Cluster policy file", KindCluster, reflect.TypeFor[Cluster]()},
}

// TestDocKeys checks that docs/config.md documents every key of every file
// kind and no key that does not exist. In each kind's section, every table
// whose first header cell is "Key" has one row per key, its first cell the
// backquoted dotted path: `listen.quic`, `service.server.volume.size`.
func TestDocKeys(t *testing.T) {
	t.Parallel()
	d := readDoc(t)
	for _, k := range docKinds {
		t.Run(k.kind.String(), func(t *testing.T) {
			t.Parallel()
			rows := d.keys[k.heading]
			want := tomlKeys(k.root)
			if len(want) == 0 {
				t.Fatalf("found no TOML keys in %s", k.root)
			}
			t.Logf("%d keys, %d documented", len(want), len(rows))
			for _, key := range want {
				if _, ok := rows[key]; !ok {
					t.Errorf("%s: %s: key %s is not documented: add a row whose first cell is `%s` to a Key table", docFile, k.heading, key, key)
				}
			}
			for _, key := range slices.Sorted(maps.Keys(rows)) {
				if !slices.Contains(want, key) {
					t.Errorf("%s:%d: `%s` is not a key of the %s file (renamed or removed?)", docFile, rows[key], key, k.kind)
				}
			}
		})
	}
	for _, p := range d.problems {
		t.Error(p)
	}
}

// TestDocExamples checks that every ```toml block in docs/config.md is a
// complete file that parses without errors, and that each kind's section
// has one, of its kind.
func TestDocExamples(t *testing.T) {
	t.Parallel()
	d := readDoc(t)
	perSection := map[string]int{}
	for _, b := range d.blocks {
		perSection[b.section]++
		kind, err := Detect(docFile, []byte(b.text))
		if err != nil {
			t.Errorf("%s:%d: toml block: %v", docFile, b.line, err)
			continue
		}
		for _, k := range docKinds {
			if k.heading == b.section && k.kind != kind {
				t.Errorf("%s:%d: toml block in %q is a %s, want a %s", docFile, b.line, b.section, kind, k.kind)
			}
		}
		switch kind {
		case KindNode:
			_, err = ParseNode(docFile, []byte(b.text))
		case KindAgent:
			_, err = ParseAgent(docFile, []byte(b.text))
		case KindCluster:
			_, err = ParseCluster(docFile, []byte(b.text))
		}
		for _, e := range Errors(err) {
			// e.Line counts from the block's first line, after the fence.
			t.Errorf("%s:%d: %s: %v", docFile, b.line+e.Line, e.Key, e.Err)
		}
		if err != nil && len(Errors(err)) == 0 {
			t.Errorf("%s:%d: toml block: %v", docFile, b.line, err)
		}
	}
	for _, k := range docKinds {
		if perSection[k.heading] == 0 {
			t.Errorf("%s: %s has no ```toml example", docFile, k.heading)
		}
	}
}

// TestTOMLKeys checks the walk over the config structs on a small type.
func TestTOMLKeys(t *testing.T) {
	t.Parallel()
	type leaf struct {
		Name string `toml:"name"`
		Size Size   `toml:"size"`
	}
	type table struct {
		Days   Days      `toml:"days"`
		Hours  Window    `toml:"hours"`
		When   Cadence   `toml:"when"`
		Leaves []leaf    `toml:"leaf"`
		Pair   [2]string `toml:"pair,required"`
	}
	type root struct {
		Name     string   `toml:"name"`
		Skipped  string   `toml:"-"`
		Untagged string   // no tag: the decoder skips it
		Table    table    `toml:"table"`
		Tables   []table  `toml:"tables"`
		Join     []string `toml:"join"`
	}
	got := tomlKeys(reflect.TypeFor[root]())
	want := []string{
		"join", "name",
		"table", "table.days", "table.hours", "table.leaf", "table.leaf.name", "table.leaf.size", "table.pair", "table.when",
		"tables", "tables.days", "tables.hours", "tables.leaf", "tables.leaf.name", "tables.leaf.size", "tables.pair", "tables.when",
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

// TestParseDocFormat checks the reader of docs/config.md on small documents.
func TestParseDocFormat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		doc      string
		keys     map[string][]string // section -> keys
		blocks   []string            // section of each toml block
		problems []string            // substrings, one per problem
	}{
		{
			name: "key rows and blocks",
			doc: "# T\n## Node file\n```toml\nname = \"a\"\n```\n" +
				"| Key | Type |\n| --- | --- |\n| `name` | name |\n| `listen.quic` | address |\n\n" +
				"| Flag | Key |\n| --- | --- |\n| `--name` | `name` |\n" +
				"## Agent file\n| Key |\n| --- |\n| `name` |\n",
			keys:   map[string][]string{"## Node file": {"listen.quic", "name"}, "## Agent file": {"name"}},
			blocks: []string{"## Node file"},
		},
		{
			name:   "tables inside fences are not tables",
			doc:    "## Node file\n```text\n| Key |\n| --- |\n| `x` |\n```\n",
			keys:   map[string][]string{},
			blocks: nil,
		},
		{
			name:     "bad first cell",
			doc:      "## Node file\n| Key |\n| --- |\n| listen.quic |\n| `[[volume]]` |\n",
			keys:     map[string][]string{},
			problems: []string{":4: ", ":5: "},
		},
		{
			name:     "key twice",
			doc:      "## Node file\n| Key |\n| --- |\n| `name` |\n| `name` |\n",
			keys:     map[string][]string{"## Node file": {"name"}},
			problems: []string{"documented twice"},
		},
		{
			name:     "key table outside a kind section",
			doc:      "## Units\n| Key |\n| --- |\n| `size` |\n",
			keys:     map[string][]string{},
			problems: []string{"outside"},
		},
		{
			name:     "unclosed fence",
			doc:      "## Node file\n```toml\nname = \"a\"\n",
			keys:     map[string][]string{},
			problems: []string{"not closed"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := parseDoc(tt.doc)
			got := map[string][]string{}
			for section, rows := range d.keys {
				for key := range rows {
					got[section] = append(got[section], key)
				}
				slices.Sort(got[section])
			}
			if !reflect.DeepEqual(got, tt.keys) {
				t.Errorf("keys: got %q, want %q", got, tt.keys)
			}
			var sections []string
			for _, b := range d.blocks {
				sections = append(sections, b.section)
			}
			if !slices.Equal(sections, tt.blocks) {
				t.Errorf("blocks in sections: got %q, want %q", sections, tt.blocks)
			}
			if len(d.problems) != len(tt.problems) {
				t.Fatalf("problems: got %q, want %d like %q", d.problems, len(tt.problems), tt.problems)
			}
			for i, p := range d.problems {
				if !strings.Contains(p, tt.problems[i]) {
					t.Errorf("problem %d: got %q, want it to contain %q", i, p, tt.problems[i])
				}
			}
		})
	}
}

// tomlKeys returns the dotted path of every TOML key a file decoding into
// root accepts, sorted: the keys of tables and of arrays of tables too,
// with no index ("service.server.volume.size"). It follows the decoder:
// fields tagged toml:"-" or untagged are no keys, and a type that decodes
// itself (Size, Rate, Days, Window, Cadence, ...) is a value.
func tomlKeys(root reflect.Type) []string {
	var keys []string
	var walk func(prefix string, t reflect.Type)
	walk = func(prefix string, t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			if name == "" || name == "-" || !f.IsExported() {
				continue
			}
			key := join(prefix, name)
			keys = append(keys, key)
			if sub, ok := tableOf(f.Type); ok {
				walk(key, sub)
			}
		}
	}
	walk("", root)
	slices.Sort(keys)
	return keys
}

// tableOf returns the struct type whose fields are the keys of a value of
// type t: t itself, or the element type of a slice or array of tables.
func tableOf(t reflect.Type) (reflect.Type, bool) {
	for !decodesItself(t) && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array || t.Kind() == reflect.Pointer) {
		t = t.Elem()
	}
	return t, t.Kind() == reflect.Struct && !decodesItself(t)
}

// decodesItself reports whether the decoder hands a TOML value to t's own
// method instead of walking its fields.
func decodesItself(t reflect.Type) bool {
	p := reflect.PointerTo(t)
	return p.Implements(textUnmarshalerType) || p.Implements(tomlDecoderType)
}

// doc is what the tests read from docs/config.md.
type doc struct {
	keys     map[string]map[string]int // section heading -> documented key -> line
	blocks   []tomlBlock
	problems []string // rows and fences that break the conventions
}

// tomlBlock is a fenced ```toml block.
type tomlBlock struct {
	section string // the "## " heading above it
	line    int    // line of the opening fence
	text    string
}

// keyCell is the first cell of a key row: one backquoted dotted path.
var keyCell = regexp.MustCompile("^`([a-z0-9_]+(?:\\.[a-z0-9_]+)*)`$")

// readDoc reads and parses docs/config.md.
func readDoc(t *testing.T) *doc {
	t.Helper()
	data, err := os.ReadFile(docFile)
	if err != nil {
		t.Fatalf("read the config reference: %v", err)
	}
	return parseDoc(string(data))
}

// parseDoc finds the key rows and toml blocks of the config reference.
func parseDoc(text string) *doc {
	d := &doc{keys: map[string]map[string]int{}}
	kindSection := func(s string) bool {
		for _, k := range docKinds {
			if k.heading == s {
				return true
			}
		}
		return false
	}
	var (
		section  string
		fence    *tomlBlock // open fence; nil outside one
		fenceArg string
		body     []string
		inTable  bool // the previous line was a table row
		keyTable bool // the current table's first header cell is "Key"
		header   int  // table lines seen so far, header and delimiter
	)
	for i, line := range strings.Split(text, "\n") {
		n := i + 1
		trim := strings.TrimSpace(line)
		if fence != nil {
			if strings.HasPrefix(trim, "```") {
				if fenceArg == "toml" {
					fence.text = strings.Join(body, "\n") + "\n"
					d.blocks = append(d.blocks, *fence)
				}
				fence, body = nil, nil
				continue
			}
			body = append(body, line)
			continue
		}
		if strings.HasPrefix(trim, "```") {
			fence = &tomlBlock{section: section, line: n}
			fenceArg = strings.TrimSpace(strings.TrimPrefix(trim, "```"))
			inTable = false
			continue
		}
		if strings.HasPrefix(line, "# ") || strings.HasPrefix(line, "## ") {
			section = strings.TrimSpace(line)
		}
		if !strings.HasPrefix(trim, "|") {
			inTable = false
			continue
		}
		first, _, _ := strings.Cut(strings.TrimPrefix(trim, "|"), "|")
		first = strings.TrimSpace(first)
		if !inTable {
			inTable, keyTable, header = true, first == "Key", 0
			if keyTable && !kindSection(section) {
				d.problems = append(d.problems, fmt.Sprintf("%s:%d: a Key table outside the sections of a file kind (%s)", docFile, n, section))
				keyTable = false
			}
		}
		if header < 2 { // the header row and the delimiter row
			header++
			continue
		}
		if !keyTable {
			continue
		}
		m := keyCell.FindStringSubmatch(first)
		if m == nil {
			d.problems = append(d.problems, fmt.Sprintf("%s:%d: %s: want a Key row's first cell to be a backquoted dotted key path like `listen.quic`", docFile, n, first))
			continue
		}
		rows := d.keys[section]
		if rows == nil {
			rows = map[string]int{}
			d.keys[section] = rows
		}
		if at, dup := rows[m[1]]; dup {
			d.problems = append(d.problems, fmt.Sprintf("%s:%d: `%s` documented twice in %s (first at line %d)", docFile, n, m[1], section, at))
			continue
		}
		rows[m[1]] = n
	}
	if fence != nil {
		d.problems = append(d.problems, fmt.Sprintf("%s:%d: code block not closed", docFile, fence.line))
	}
	return d
}
