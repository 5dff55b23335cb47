package node

import (
	"time"
)

// The audit log (issue 13): every mutating admin call, every read of data
// (image, restore, NBD through the API) and every refused attempt, with the
// identity from the caller's certificate, its role, its address, what it
// asked and what came of it. Entries are Raft log entries (op audit), so no
// caller can forge or erase them and every node holds the same log; they
// live beside the catalog in the state machine, not in Catalog, so that
// reading the catalog does not copy them. The policy's [audit] table says
// how long they are kept.

// Audit returns the audit entries at or after since, at most limit (the
// newest), oldest first. The slice is shared: do not change it.
func (n *Node) Audit(since time.Time, limit int) []AuditEntry {
	return n.fsm.Audit(since, limit)
}
