package config

import (
	"errors"
	"fmt"
)

// Load reads the config file at path and returns a *Node, an *Agent or a *Cluster,
// parsed and validated, deciding which by its top-level keys.
func Load(path string) (any, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// Kind is the kind of a config file.
type Kind int

// The kinds of config files.
const (
	KindUnknown Kind = iota
	KindNode
	KindCluster
	KindAgent
)

func (k Kind) String() string {
	switch k {
	case KindNode:
		return "node"
	case KindCluster:
		return "cluster policy"
	case KindAgent:
		return "agent"
	}
	return "unknown"
}

// ErrUnknownKind is returned (wrapped in an *Error) for a file that is
// neither a node file nor a cluster policy, or looks like both.
var ErrUnknownKind = errors.New("not a lifeboat config")

// detect decides the kind of a parsed file: a cluster policy has [[site]],
// [[link]] or [[service]] tables; a node file has name or a site string.
func detect(filename string, m map[string]any) (Kind, error) {
	_, siteTables := m["site"].([]any)
	_, siteString := m["site"].(string)
	_, hasName := m["name"]
	_, hasLink := m["link"]
	_, hasService := m["service"]
	_, serviceString := m["service"].(string)
	_, hasVolume := m["volume"]
	if (serviceString || hasVolume) && !siteTables && !siteString && !hasLink {
		return KindAgent, nil
	}
	cluster := siteTables || hasLink || hasService
	node := hasName || siteString
	const both = `want a node file (name = "dc1-n1", site = "dc1", data_dir = ...), an agent file (name, service = "erp", [[volume]]) or a cluster policy ([[site]], [[link]], [[service]] tables)`
	switch {
	case len(m) == 0:
		return KindUnknown, &Error{File: filename, Err: fmt.Errorf("%w: the file is empty: %s", ErrUnknownKind, both)}
	case cluster && node:
		return KindUnknown, &Error{File: filename, Err: fmt.Errorf("%w: the file has keys of both kinds: %s, not both", ErrUnknownKind, both)}
	case cluster:
		return KindCluster, nil
	case node:
		return KindNode, nil
	}
	return KindUnknown, &Error{File: filename, Err: fmt.Errorf("%w: no name or site key and no [[site]], [[link]] or [[service]] table: %s", ErrUnknownKind, both)}
}

// Detect returns the kind of the config in data without validating it.
func Detect(filename string, data []byte) (Kind, error) {
	m, _, err := parseTOML(filename, data)
	if err != nil {
		return KindUnknown, err
	}
	return detect(filename, m)
}

// Parse parses and validates data as a node file or a cluster policy,
// deciding which by its top-level keys, and returns a *Node or a *Cluster.
func Parse(filename string, data []byte) (any, error) {
	m, lines, err := parseTOML(filename, data)
	if err != nil {
		return nil, err
	}
	k, err := detect(filename, m)
	if err != nil {
		return nil, err
	}
	if k == KindAgent {
		a, err := decodeAgent(filename, m, lines)
		if err != nil {
			return nil, err
		}
		return a, nil
	}
	if k == KindCluster {
		c, err := decodeCluster(filename, m, lines)
		if err != nil {
			return nil, err // not a typed nil in the interface
		}
		return c, nil
	}
	n, err := decodeNode(filename, m, lines)
	if err != nil {
		return nil, err
	}
	return n, nil
}
