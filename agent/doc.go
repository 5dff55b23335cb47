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
//
// Refusals: the agent acts on the node's wire code (mesh doc.go, error
// codes), never on the message. A retryable failure (a network error,
// unavailable, held for a planned failover: state "held"; the node's disk
// nearly full, code no space: state "nospace", whose detail carries the
// node's reason and the MiB spooled, and Status.Refusal the code) is
// retried with back-off (internal/retry) while the spool keeps the writes;
// a permanent
// one (fenced; forbidden, not found, bad request, wrong node: state
// "refused") stops shipping until the next interval. A failure state that
// repeats is logged once at WARN with what to do, then counted
// (internal/logpolicy), and the next connection logs the recovery.
//
// The status (status.go: the state, the refusal while it lasts, the
// totals) is kept by a board of its own, which writes SPOOL/status.json
// (temp file, rename) on each state change that matters and every second
// while the agent runs; `lifeboat agent status` reads it (ReadStatus).
package agent
