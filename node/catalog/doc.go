// Package catalog is the cluster state that Raft replicates (Catalog), the
// commands that change it (command.go: one Raft log entry each, a version
// byte then JSON, at most 4 MiB; a refused command changes nothing), and
// the Raft state machine (FSM) that applies them. The FSM publishes each
// applied state as an immutable snapshot that readers share without locks
// or copies; a command builds the next state copy-on-write. The audit log
// lives beside the catalog in the state machine, not in Catalog.
//
// The catalog holds the nodes, the applied cluster
// policy (source and parsed form, versioned from 1) and one waiting for a
// second admin, per-service epochs, holders, watermarks, replication
// progress, failovers, branches and drills, the forced Raft recoveries,
// notes and the revoked certificates. The audit log lives beside it in the
// state machine (FSM.Audit). Points live in the holders'
// block stores.
//
// A log entry is one Command: a version byte (1) followed by a JSON object
// with an "op" (node_upsert, node_remove, policy_apply, policy_propose,
// watermarks, recovery, note, holders, progress, failover, failover_done,
// reprotect, branch, drill, audit, revoke). Unknown versions, unknown
// fields and unknown ops are refused with ErrBadCommand and change
// nothing; an entry is at most 4 MiB (catalog.MaxCommand). A snapshot is
// the bytes "LBCAT\x00\x02\n" followed by a JSON object {catalog, audit};
// version 1 snapshots ("LBCAT\x00\x01\n" and the catalog alone) are still
// read.
package catalog
