package catalog

import (
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/mesh"
)

// AuditEntry is one recorded call.
type AuditEntry struct {
	Time   time.Time   `json:"time"`
	Node   mesh.NodeID `json:"node"`             // the node that answered
	Who    string      `json:"who"`              // the certificate's name; "anonymous" without one
	Kind   string      `json:"kind"`             // operator, node, agent or none
	Role   string      `json:"role,omitempty"`   // the role the certificate holds
	Serial string      `json:"serial,omitempty"` // the certificate's serial
	From   string      `json:"from"`             // the caller's address
	Action string      `json:"action"`           // e.g. "POST /v1/drill"
	Target string      `json:"target,omitempty"` // service, volume, point, file asked for
	Result string      `json:"result"`           // ok, error or refused
	Status int         `json:"status,omitempty"` // the HTTP status answered
	Detail string      `json:"detail,omitempty"` // the error, or what was done
	Count  int         `json:"count,omitempty"`  // >1: this many identical calls in the entry's window
}

// auditAdd returns log with es appended, trimmed by the policy's retention
// measured from the newest entry's time (not the clock: every node must
// trim alike). It never changes log's elements in place: it appends past
// the end of log (which no older state reaches, their lengths being
// shorter) and trims by reslicing, so states that share the array stay as
// they were. The FSM's single writer makes that safe.
func auditAdd(log, es []AuditEntry, pol *config.Audit) []AuditEntry {
	log = append(log, es...)
	keep, max := config.DefaultAuditKeep, config.DefaultAuditMaxEntries
	if pol != nil {
		if pol.Keep > 0 {
			keep = pol.Keep
		}
		if pol.MaxEntries > 0 {
			max = pol.MaxEntries
		}
	}
	if len(log) == 0 {
		return log
	}
	cut := log[len(log)-1].Time.Add(-time.Duration(keep))
	i := 0
	for i < len(log) && log[i].Time.Before(cut) {
		i++
	}
	if over := len(log) - i - max; over > 0 {
		i += over
	}
	return log[i:]
}
