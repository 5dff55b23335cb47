// Package node is the lifeboat daemon's composition root: New builds the
// mesh endpoint and gossip, the Raft node over the catalog's state machine,
// the block store, and the engines below, and wires each engine's seams
// (its Options: a Propose func, a catalog reader, clocks, loggers, hooks
// into the other engines); Run starts their goroutines under one errgroup.
// What is not an engine of its own yet lives here too (see "Files"). Only
// cmd and test import it.
//
// # Engines (each with its own Options and unit tests)
//
//   - node/catalog: the catalog, its commands (Command, one op per entry)
//     and the Raft state machine (FSM). The FSM publishes every applied
//     state as an immutable snapshot (an atomic pointer; each command
//     builds the next state copy-on-write) with a channel closed at the
//     next change (FSM.View). Node.Catalog returns that snapshot, shared:
//     callers must not change it.
//   - node/api: the admin API as its callers see it: request, reply and
//     event types, error codes and sentinels, the Client the CLI uses.
//     This package keeps aliases (types.go) so callers are unchanged.
//   - node/internal/admin: the admin API's server behind a Backend
//     interface (the node, seen from the handlers: adminBackend here).
//   - node/internal/audit: the audit recorder (op audit).
//   - node/internal/policy: applying and approving cluster policies.
//   - node/internal/recovery: failover, failback, drills, divergent
//     branches and the points listing; the node's public calls delegate
//     to it (failover.go).
//   - node/internal/tiers: the hot standby and cold export engines on
//     the points replication commits here (node/internal/standby,
//     node/internal/archive hold their formats).
//   - node/internal/watermark: the queue that batches the newest points
//     and the tier engines' news into one watermarks entry per interval.
//   - node/internal/placement: voter placement and the membership change
//     plan (pure; cluster.go applies the changes).
//   - node/internal/raftstore: raft.db and the snapshots, checked for
//     damage before bbolt opens them (with node/internal/boltcheck).
//   - node/nbd: the NBD server (run by the CLI, not by the node).
//
// Shared mechanisms come from the repository's internal packages: retry
// (back-off that stops on permanent errors; Apply, fetch and the
// replication senders use it), logpolicy (repeating failures: one WARN
// with a hint, then counted summaries; Node.repeats), durable, flock and
// names. Peer refusals carry mesh wire codes (mesh/codes.go), classified
// by mesh.IsRetryable.
//
// # Files
//
//   - node.go: Options, New (the wiring above), Run, shutdown.
//   - cluster.go: bootstrap, the leader's membership reconcile (on
//     placement.Plan), reconnecting dead peers, Apply (writes on
//     retry.Do, forwarded when this node does not lead), RecoverRaft,
//     Catalog and Status.
//   - forward.go: the admin stream server (forwarded writes, Raft state
//     queries; stop requests go to planned.go).
//   - planned.go: the primary holder's side of a planned failover: the
//     stop hook, the final point, the hold on further writes.
//   - ingest.go, barrier.go: agent ingest sessions (redirects, fencing,
//     holds) and cross-server barriers.
//   - replicate.go, fetch.go: replication senders and receivers, and the
//     fetch of a newest point by a new primary holder.
//   - holders.go: the leader's holder placement (holders op).
//   - revoke.go: certificate revocation (op revoke) and closing revoked
//     peers' connections.
//   - metrics.go: the Prometheus metrics behind GET /metrics.
//   - admin.go, audit.go, failover.go: the node's side of the admin,
//     policy, audit and recovery engines (the Backend, delegating calls,
//     the standby images the recovery engine takes from the tier engine).
//   - types.go: aliases of the catalog's and the API's types.
//
// # Catalog
//
// The catalog (package catalog) holds the nodes, the applied cluster
// policy (source and parsed form, versioned from 1) and one waiting for a
// second admin, per-service epochs, holders, watermarks, replication
// progress, failovers, branches and drills, the forced Raft recoveries,
// notes and the revoked certificates. The audit log lives beside it in the
// state machine (FSM.Audit), not in Catalog. Points live in the holders'
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
//
// Raft runs over the node's QUIC endpoint (mesh.KindRaft streams) with its
// log and stable store in DataDir/raft/raft.db (raft-boltdb, bbolt) and
// snapshots in DataDir/raft/snapshots (package raftstore). The bolt file
// is checked on open before raft sees it: its page structure without
// bbolt's memory map (boltcheck: bbolt faults on some damage, and a fault
// is no panic), bbolt's own check, only the logs and conf buckets with
// 8-byte log keys and no gap, and every log entry read and decoded as raft
// will. Damage is a RaftStateError naming raft.db, whose hint says to
// restart with --reset-raft (the state is moved aside and the node rejoins
// as new); an empty raft.db is damage too (its term and vote are lost).
// bbolt keeps no checksum of data pages: a changed byte inside an entry
// that still decodes goes unnoticed, and damage to the newer meta page
// makes bbolt use the older one, losing the last write.
//
// # Forming and changing the cluster
//
//   - Bootstrap: a node without Raft state waits until it has joined the
//     gossip and sees BootstrapExpect alive nodes, none of which already has
//     Raft state, on two checks in a row; the one with the smallest name
//     then bootstraps a one-voter cluster. Everyone else waits to be added.
//   - The leader reconciles every ReconcileInterval and on membership
//     events, one change at a time (placement.Plan): alive nodes join as
//     non-voters after their QUIC certificate is verified for their gossip
//     name; a voter that rejoins without Raft state is demoted (it may have
//     forgotten a vote); voters are placed by placement.PlaceVoters (odd,
//     at most 5, round-robin over sites so that no site holds a majority
//     when three or more sites have nodes); surplus voters are demoted only
//     when every voter is alive; servers dead longer than DeadNodeTimeout
//     (or that left) are removed. No change is made that would leave the
//     alive voters short of a quorum.
//   - Writes (Apply) go to the leader from any node: a follower forwards the
//     encoded command on a mesh.KindAdmin stream and waits until it has
//     applied the entry itself (read your writes). Retryable failures (not
//     leader, unavailable) are retried with back-off; a refused command
//     or a permanent code stops at once. Without a reachable leader, a
//     write fails with ErrNoQuorum after WriteTimeout; reads (Status,
//     Catalog) always answer from the local copy.
//   - RecoverRaft (operator-forced, needs force): when a majority of voters
//     is gone for good, this node rewrites its Raft configuration with
//     itself as the only voter (raft.RecoverCluster), leads, and re-adds the
//     survivors. It refuses while a leader is reachable. The record (who,
//     when, voters before and after) goes into the catalog.
//
// # Holders, replication and tiers
//
//   - The leader assigns one holder per service and site that keeps it
//     (holders op): a data node of the site, the least loaded by logical
//     size held; it replaces a holder gone longer than HolderTimeout.
//     Agents are redirected to the primary site's holder.
//   - The primary's holder runs one sender per recovery site (node/internal/replicate,
//     protocol in mesh doc.go); senders report their progress (progress
//     op), and committed points reach the catalog through the watermark
//     queue (watermarks op). A sender refused with a permanent code parks
//     until the catalog's policy or holders change. A holder at the
//     primary without points first fetches the newest point from a copy
//     (node/internal/replicate/fetch.go).
//   - Received points feed the tier engine (node/internal/tiers): hot
//     copies apply them to standby images, cold copies export them.
//
// # Failover, fencing, failback, drills
//
//   - Failover (node/internal/recovery) runs on the holder at the site
//     taking over: point, images (the hot standby moved, or materialized
//     from the store), a new epoch in the catalog (failover op; the
//     catalog's Service view then names the new site as primary and drops
//     its copy), start and health hooks, RPO/RTO (failover_done op). Every
//     step is idempotent; a failover not done is resumed by running it
//     again.
//   - Fencing: a node refuses ingest for a service whose catalog record
//     says it runs at another site (mesh.CodeFenced), also on sessions
//     already open (node/internal/ingest). A planned failover (planned.go)
//     first asks the old primary's holder to stop (admin stream type 5): it
//     runs the stop hook, waits for the agent's point after it and then
//     holds further writes (mesh.CodeHeld, ingest.Engine.Stop) for at most
//     15 minutes or until the epoch moves on, so that point is the one
//     replicated and failed over to.
//   - A site the service failed over from lists the points it holds past
//     the failover point as a branch (branch op) before it accepts
//     replicated points of the service again; failback (reprotect op)
//     makes it a warm copy.
//   - Drills materialize a point into DataDir/drills and run a hook; the
//     result is a drill op.
//
// # Admin stream (mesh.KindAdmin, between nodes)
//
// Each stream carries one request frame and one answer. Error answers are
// mesh error frames with the codes of mesh/codes.go.
//
//   - Type 1, an encoded Command (read up to catalog.MaxCommand), asks the
//     leader to apply it. The answer is type 2, the entry's Raft index (8
//     bytes, big-endian), or an error: CodeBadRequest (the frame or the
//     command is refused: ErrBadCommand, not retried), CodeNotLeader or
//     CodeUnavailable (retried by Apply); any other permanent code stops
//     Apply.
//   - Type 3 (empty) asks for the node's last Raft log index, answered by
//     type 4 (8 bytes, big-endian): the leader asks a voter whose gossip
//     metadata says it has no Raft state before demoting it.
//   - Type 5 (JSON {"service", "by"}) asks the service's holder at its
//     primary site to stop it for a planned failover. The answer is type 6
//     (JSON {"point", "time", "output"}: the final point, its time and the
//     stop hook's output) or an error: CodeBadRequest (the request does not
//     decode), CodeForbidden (sent with an agent certificate),
//     CodeWrongNode (this node is not the service's primary holder),
//     CodeUnavailable (the stop hook failed, or no point came within a
//     minute after it).
//
// Any other request type is answered CodeBadRequest.
//
// # Admin API (HTTPS, for operators and the CLI)
//
// Served by node/internal/admin (routes and roles in its doc comment):
// mutual TLS on every address, loopback included; each route needs a role
// from the caller's certificate; every mutating call and every read of
// data is audited.
//
// The node must never serve a catalog it cannot trust, and never make a
// membership change that loses the quorum.
package node
