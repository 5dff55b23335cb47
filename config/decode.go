package config

import (
	"encoding"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	toml "github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"

	"github.com/lifeboat-dr/lifeboat/internal/names"
)

// MaxFileSize is the largest config file read or parsed, so that a wrong
// path (a disk image, a log) fails fast instead of filling memory.
const MaxFileSize = 1 << 20

// Every name (node, site, service, server, volume) follows internal/names.
const nameWant = names.Want

func validName(s string) bool { return names.Valid(s) }

// readFile reads a config file of at most MaxFileSize bytes.
func readFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read config %s: %w", name, err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("read config %s: larger than %d bytes: want a TOML config file", name, MaxFileSize)
	}
	return data, nil
}

// syntaxError is a TOML syntax error: a malformed line, a key or table
// defined twice.
type syntaxError struct{ de *toml.DecodeError }

func (e *syntaxError) Error() string {
	return "invalid TOML: " + strings.TrimPrefix(e.de.Error(), "toml: ")
}
func (e *syntaxError) Unwrap() error { return e.de }

// parseTOML parses data into a generic table and maps each key to its line.
// A syntax error comes back as an *Error.
func parseTOML(filename string, data []byte) (map[string]any, map[string]int, error) {
	if len(data) > MaxFileSize {
		return nil, nil, &Error{File: filename, Err: fmt.Errorf("larger than %d bytes: want a TOML config file", MaxFileSize)}
	}
	var m map[string]any
	if err := toml.Unmarshal(data, &m); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			line, _ := de.Position()
			return nil, nil, &Error{File: filename, Line: line, Key: strings.Join(de.Key(), "."), Err: &syntaxError{de}}
		}
		return nil, nil, &Error{File: filename, Err: fmt.Errorf("invalid TOML: %w", err)}
	}
	return m, keyLines(data), nil
}

// maxKeyDepth bounds how deep keyLines records keys: the schemas are at most
// seven parts deep, and a hostile file may nest arrays thousands deep.
const maxKeyDepth = 16

// keyLines maps every key of a valid TOML document to the line where it is
// defined, keys written with array indexes: "service.0.server.1.name". An
// array of tables maps to the line of its first header, each element to
// the line of its own header.
func keyLines(data []byte) map[string]int {
	var starts []int // offsets where lines start
	starts = append(starts, 0)
	for i, c := range data {
		if c == '\n' {
			starts = append(starts, i+1)
		}
	}
	lineOf := func(n *unstable.Node) int {
		return sort.Search(len(starts), func(i int) bool { return starts[i] > int(n.Raw.Offset) })
	}
	lines := map[string]int{}
	setOnce := func(key string, n *unstable.Node) {
		if _, ok := lines[key]; !ok && n.Raw.Length > 0 {
			lines[key] = lineOf(n)
		}
	}
	next := map[string]int{} // array of tables -> number of elements so far
	var walkKV func(prefix string, depth int, kv *unstable.Node)
	var walkValue func(key string, depth int, v *unstable.Node)
	walkKV = func(prefix string, depth int, kv *unstable.Node) {
		key := prefix
		var last *unstable.Node
		for it := kv.Key(); it.Next(); {
			k := it.Node()
			key = join(key, string(k.Data))
			setOnce(key, k)
			last = k
			depth++
		}
		if last != nil {
			lines[key] = lineOf(last)
		}
		walkValue(key, depth, kv.Value())
	}
	walkValue = func(key string, depth int, v *unstable.Node) {
		if depth > maxKeyDepth {
			return
		}
		switch v.Kind {
		case unstable.InlineTable:
			for it := v.Children(); it.Next(); {
				if c := it.Node(); c.Kind == unstable.KeyValue {
					walkKV(key, depth, c)
				}
			}
		case unstable.Array:
			i := 0
			for it := v.Children(); it.Next(); {
				c := it.Node()
				if c.Kind == unstable.Comment {
					continue
				}
				ek := key + "." + strconv.Itoa(i)
				setOnce(ek, c)
				walkValue(ek, depth+1, c)
				i++
			}
		}
	}
	var p unstable.Parser
	p.Reset(data)
	table := ""
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			cur := ""
			for it := e.Key(); it.Next(); {
				k := it.Node()
				cur = join(cur, string(k.Data))
				switch {
				case it.IsLast() && e.Kind == unstable.ArrayTable:
					n := next[cur]
					next[cur] = n + 1
					setOnce(cur, k)
					cur += "." + strconv.Itoa(n)
					lines[cur] = lineOf(k)
				case next[cur] > 0:
					cur += "." + strconv.Itoa(next[cur]-1)
				default:
					setOnce(cur, k)
				}
			}
			table = cur
		case unstable.KeyValue:
			walkKV(table, strings.Count(table, ".")+1, e)
		}
	}
	return lines
}

// join joins two key parts with a dot.
func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "." + b
}

// tomlDecoder is implemented by types that take more than one TOML shape.
type tomlDecoder interface {
	decodeTOML(v any) error
}

var (
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
	tomlDecoderType     = reflect.TypeFor[tomlDecoder]()
)

// field is one struct field a TOML key decodes into.
type field struct {
	index    int
	required bool
}

// structFields maps the toml keys of a struct type to its fields.
var structFields sync.Map // reflect.Type -> map[string]field

func fieldsOf(t reflect.Type) map[string]field {
	if f, ok := structFields.Load(t); ok {
		return f.(map[string]field)
	}
	fs := map[string]field{}
	for i := range t.NumField() {
		tag := t.Field(i).Tag.Get("toml")
		name, opt, _ := strings.Cut(tag, ",")
		if name == "" || name == "-" {
			continue
		}
		fs[name] = field{index: i, required: opt == "required"}
	}
	structFields.Store(t, fs)
	return fs
}

// kindOf names the TOML type of a decoded value.
func kindOf(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return "a date or time"
}

// label returns what names an element of an array of tables in messages:
// its name, its site (copies), or its two sites (links).
func label(v any) string {
	m, ok := v.(map[string]any)
	if !ok {
		return ""
	}
	if s, ok := m["name"].(string); ok {
		return s
	}
	if s, ok := m["site"].(string); ok {
		return s
	}
	if b, ok := m["between"].([]any); ok && len(b) == 2 {
		x, ok1 := b[0].(string)
		y, ok2 := b[1].(string)
		if ok1 && ok2 && validName(x) && validName(y) {
			return x + "-" + y
		}
	}
	return ""
}

// decode stores the TOML value v at p into rv, recording every problem:
// unknown keys, wrong types, values the field's type refuses.
func (ps *problems) decode(p path, v any, rv reflect.Value) {
	pt := rv.Addr().Type()
	switch {
	case pt.Implements(tomlDecoderType):
		if err := rv.Addr().Interface().(tomlDecoder).decodeTOML(v); err != nil {
			ps.failErr(p, err)
		}
		return
	case pt.Implements(textUnmarshalerType):
		var s string
		switch x := v.(type) {
		case string:
			s = x
		case []any, map[string]any:
			ps.fail(p, "want a string, not %s", kindOf(v))
			return
		case time.Time, toml.LocalDate, toml.LocalTime, toml.LocalDateTime:
			ps.fail(p, "%v: want a string, not %s", x, kindOf(v))
			return
		case float64:
			s = strconv.FormatFloat(x, 'f', -1, 64)
		default:
			s = fmt.Sprint(x)
		}
		if err := rv.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(s)); err != nil {
			ps.failErr(p, err)
		}
		return
	}
	switch rv.Kind() {
	case reflect.String:
		s, ok := v.(string)
		if !ok {
			ps.fail(p, "%s: want a string, not %s", quote(v), kindOf(v))
			return
		}
		rv.SetString(s)
	case reflect.Bool:
		b, ok := v.(bool)
		if !ok {
			ps.fail(p, "%s: want true or false, not %s", quote(v), kindOf(v))
			return
		}
		rv.SetBool(b)
	case reflect.Int, reflect.Int64, reflect.Int32:
		n, ok := v.(int64)
		if !ok {
			ps.fail(p, "%s: want an integer, not %s", quote(v), kindOf(v))
			return
		}
		if rv.OverflowInt(n) {
			ps.fail(p, "%d: too large", n)
			return
		}
		rv.SetInt(n)
	case reflect.Float64:
		switch x := v.(type) {
		case int64:
			rv.SetFloat(float64(x))
		case float64:
			if math.IsNaN(x) || math.IsInf(x, 0) {
				ps.fail(p, "%v: want a finite number", x)
				return
			}
			rv.SetFloat(x)
		default:
			ps.fail(p, "%s: want a number, not %s", quote(v), kindOf(v))
		}
	case reflect.Slice, reflect.Array:
		a, ok := v.([]any)
		if !ok {
			ps.fail(p, "%s: want an array, not %s", quote(v), kindOf(v))
			return
		}
		if rv.Kind() == reflect.Array && len(a) != rv.Len() {
			ps.fail(p, "%s: want an array of %d, not %d", quote(v), rv.Len(), len(a))
			return
		}
		if rv.Kind() == reflect.Slice {
			if len(a) == 0 {
				rv.SetZero()
				return
			}
			rv.Set(reflect.MakeSlice(rv.Type(), len(a), len(a)))
		}
		for i, e := range a {
			ps.decode(p.elem(i, label(e)), e, rv.Index(i))
		}
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			ps.fail(p, "%s: want a table, not %s", quote(v), kindOf(v))
			return
		}
		fs := fieldsOf(rv.Type())
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			f, ok := fs[k]
			if !ok {
				ps.fail(p.key(k), "unknown key: want one of %s", strings.Join(slices.Sorted(maps.Keys(fs)), ", "))
				continue
			}
			ps.decode(p.key(k), m[k], rv.Field(f.index))
		}
		for _, k := range slices.Sorted(maps.Keys(fs)) {
			if _, ok := m[k]; fs[k].required && !ok {
				ps.fail(p.key(k), "missing: this key is required")
			}
		}
	default:
		panic(fmt.Sprintf("config: cannot decode into %s", rv.Type()))
	}
}

// fail records a problem at p found while decoding and marks p bad.
func (ps *problems) fail(p path, format string, a ...any) {
	ps.add(p, format, a...)
	ps.badKey(p)
}

// failErr records err at p found while decoding and marks p bad.
func (ps *problems) failErr(p path, err error) {
	ps.addErr(p, err)
	ps.badKey(p)
}
