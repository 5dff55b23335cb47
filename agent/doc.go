// Package agent will capture volume writes on protected servers (scan and
// intercept modes), spool them and ship them to a node.
//
// Nothing is built here yet: see issue #4.
package agent
