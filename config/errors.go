package config

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Error is one problem in a config: where it is and what is wrong. Parse and
// Validate return every problem found, joined with errors.Join, each as an
// *Error; match with errors.As or walk the joined list with Errors.
type Error struct {
	File string // file name as given to Parse, "" when validating a value built in code
	Line int    // 1-based line of the key, 0 when unknown
	Key  string // dotted key, with names for array elements: "service.erp.copy.dc2.tier"
	Err  error  // what is wrong: the bad value and what is allowed
}

// Error formats the problem as "file:line: key: what is wrong", leaving out
// the parts that are unknown.
func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			b.WriteByte(':')
			b.WriteString(strconv.Itoa(e.Line))
		}
		b.WriteString(": ")
	} else if e.Line > 0 {
		b.WriteString("line ")
		b.WriteString(strconv.Itoa(e.Line))
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

// Unwrap returns the underlying problem.
func (e *Error) Unwrap() error { return e.Err }

// Errors returns the *Error values inside err, which Parse, Load and Validate
// build with errors.Join; nil if there are none.
func Errors(err error) []*Error {
	var out []*Error
	var walk func(error)
	walk = func(err error) {
		var e *Error
		switch x := err.(type) {
		case nil:
		case *Error:
			out = append(out, x)
		case interface{ Unwrap() []error }:
			for _, err := range x.Unwrap() {
				walk(err)
			}
		default:
			if errors.As(err, &e) {
				out = append(out, e)
			}
		}
	}
	walk(err)
	return out
}

// path names a key twice: idx uses array indexes and finds the line
// ("service.0.copy.1.tier"); show is what operators read, with element names
// where they are valid ("service.erp.copy.dc2.tier").
type path struct{ idx, show string }

// key returns the path of key k inside p.
func (p path) key(k string) path {
	if p.idx == "" {
		return path{k, k}
	}
	return path{p.idx + "." + k, p.show + "." + k}
}

// elem returns the path of element i of the array at p; label names the
// element when it is a valid name.
func (p path) elem(i int, label string) path {
	is := strconv.Itoa(i)
	show := p.show + "[" + is + "]"
	if label != "" && validName(label) {
		show = p.show + "." + label
	}
	return path{p.idx + "." + is, show}
}

// problems collects the problems of one parse or validation.
type problems struct {
	file  string
	lines map[string]int // path.idx -> line; nil when there is no file
	list  []*Error
	// bad holds the keys that failed to decode; later checks say nothing
	// more about them or what is inside them.
	bad map[string]bool
}

// isBad reports whether the key at idx, or one enclosing it, failed to
// decode.
func (ps *problems) isBad(idx string) bool {
	for len(ps.bad) > 0 {
		if ps.bad[idx] {
			return true
		}
		i := strings.LastIndexByte(idx, '.')
		if i < 0 {
			return false
		}
		idx = idx[:i]
	}
	return false
}

// badKey marks the key at p as failed to decode.
func (ps *problems) badKey(p path) {
	if ps.bad == nil {
		ps.bad = map[string]bool{}
	}
	ps.bad[p.idx] = true
}

// line returns the line of the key at idx, or of the nearest enclosing key
// that has one.
func (ps *problems) line(idx string) int {
	if ps.lines == nil {
		return 0
	}
	for {
		if l, ok := ps.lines[idx]; ok {
			return l
		}
		i := strings.LastIndexByte(idx, '.')
		if i < 0 {
			return 0
		}
		idx = idx[:i]
	}
}

// add records a problem at p.
func (ps *problems) add(p path, format string, a ...any) {
	if ps.isBad(p.idx) {
		return
	}
	ps.list = append(ps.list, &Error{File: ps.file, Line: ps.line(p.idx), Key: p.show, Err: fmt.Errorf(format, a...)})
}

// addErr records err, which already says what is wrong, at p.
func (ps *problems) addErr(p path, err error) {
	if ps.isBad(p.idx) {
		return
	}
	ps.list = append(ps.list, &Error{File: ps.file, Line: ps.line(p.idx), Key: p.show, Err: err})
}

// err returns every problem, ordered by line, as one error; nil if none.
func (ps *problems) err() error {
	if len(ps.list) == 0 {
		return nil
	}
	slices.SortStableFunc(ps.list, func(a, b *Error) int { return a.Line - b.Line })
	errs := make([]error, len(ps.list))
	for i, e := range ps.list {
		errs[i] = e
	}
	return errors.Join(errs...)
}
