// Package agent captures volume writes on a protected server and ships them
// to a node of its site. In scan mode it re-reads each volume every
// interval and sends the blocks whose hash changed; in intercept mode every
// write passes through a FUSE file, is journaled in order in a local spool
// (agent/internal/spool) and shipped, and fsyncs mark consistency points.
// All volumes of a service share one sequence of points; cross-server
// barriers (barrier.go) make points consistent across a service's agents.
// The agent follows a node's redirect to the service's holder, spools while
// no node answers, and stops shipping (state "fenced") when the service has
// failed over to another site.
package agent
