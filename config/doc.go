// Package config will parse and validate the TOML files for nodes, agents and
// the cluster policy, with file:line errors. It imports nothing of ours.
//
// Nothing is built here yet: see issue #3.
package config
