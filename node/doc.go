// Package node is the lifeboat daemon: it wires the mesh (QUIC endpoint,
// gossip), the Raft catalog, the block store with agent ingest, the
// replicator between sites, the tier engines (hot standby images, cold
// exports), failover, failback and drills, and the admin API with
// Prometheus metrics. Only cmd and test import it.
//
// # Catalog
//
// The catalog is the Raft state machine (Catalog): nodes, the applied
// cluster policy (source and parsed form, versioned from 1), per-service
// epochs and RPO watermarks, and the record of forced recoveries. It stays
// small; points live in the holders' block stores.
//
// A log entry is one Command: a version byte (1) followed by a JSON object
// with an "op" (node_upsert, node_remove, policy_apply, watermarks,
// recovery, note, holders, progress, failover, failover_done, reprotect,
// branch, drill). Unknown versions, unknown fields and unknown ops are
// refused with ErrBadCommand and change nothing; an entry is at most 4 MiB.
// A snapshot is the bytes "LBCAT\x00\x01\n" followed by the catalog as JSON.
//
// Raft runs over the node's QUIC endpoint (mesh.KindRaft streams) with its
// log and stable store in DataDir/raft/raft.db (raft-boltdb, bbolt) and
// snapshots in DataDir/raft/snapshots. The bolt file is checked on open
// before raft sees it (raftstore.go): its page structure without bbolt's
// memory map (internal/boltcheck: bbolt faults on some damage, and a fault
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
//     events, one change at a time: alive nodes join as non-voters after
//     their QUIC certificate is verified for their gossip name; a voter that
//     rejoins without Raft state is demoted (it may have forgotten a vote);
//     voters are placed by placement.PlaceVoters (odd, at most 5, round-robin over
//     sites so that no site holds a majority when three or more sites have
//     nodes); surplus voters are demoted only when every voter is alive;
//     servers dead longer than DeadNodeTimeout (or that left) are removed.
//     No change is made that would leave the alive voters short of a quorum.
//   - Writes (Apply) go to the leader from any node: a follower forwards the
//     encoded command on a mesh.KindAdmin stream and waits until it has
//     applied the entry itself (read your writes). Without a reachable
//     leader, a write fails with ErrNoQuorum after WriteTimeout; reads
//     (Status, Catalog) always answer from the local copy.
//   - RecoverRaft (operator-forced, needs force): when a majority of voters
//     is gone for good, this node rewrites its Raft configuration with
//     itself as the only voter (raft.RecoverCluster), leads, and re-adds the
//     survivors. It refuses while a leader is reachable. The record (who,
//     when, voters before and after) goes into the catalog.
//
// # Holders, replication and tiers (issue 5)
//
//   - The leader assigns one holder per service and site that keeps it
//     (holders op): a data node of the site, the least loaded by logical
//     size held; it replaces a holder gone longer than HolderTimeout.
//     Agents are redirected to the primary site's holder.
//   - The primary's holder runs one sender per recovery site (replicate.go,
//     protocol in mesh doc.go); senders report their progress (progress op)
//     at most every second, receivers their newest point, standby and export
//     (watermarks op). A holder at the primary without points first fetches
//     the newest point from a copy (fetch.go).
//   - Received points feed the tier engines (internal/tiers): hot copies apply
//     them to standby images (internal/standby), cold copies export them
//     (internal/archive).
//
// # Failover, fencing, failback, drills (issue 6)
//
//   - Failover (failover.go) runs on the holder at the site taking over:
//     point, images (the hot standby moved, or materialized from the
//     store), a new epoch in the catalog (failover op; the catalog's
//     Service view then names the new site as primary and drops its copy),
//     start and health hooks, RPO/RTO (failover_done op). Every step is
//     idempotent; a failover not done is resumed by running it again.
//   - Fencing: a node refuses ingest for a service whose catalog record
//     says it runs at another site, also on sessions already open
//     (internal/ingest, Engine.fenced). A planned failover (planned.go)
//     first asks the old primary's holder to stop (admin stream type 5): it
//     runs the stop hook, waits for the agent's point after it and holds
//     further writes (ingest.Engine.Stop), so that point is the one
//     replicated and failed over to.
//   - A site the service failed over from lists the points it holds past
//     the failover point as a branch (branches.go, branch op) before it
//     accepts replicated points of the service again; failback (reprotect
//     op) makes it a warm copy.
//   - Drills (drill.go) materialize a point into DATA_DIR/drills and run a
//     hook; the result is a drill op.
//
// # Admin stream (mesh.KindAdmin, between nodes)
//
// Request: one frame of type 1 whose payload is an encoded Command. Reply:
// one frame of type 2 whose payload is the entry's Raft index (8 bytes,
// big-endian), or a mesh error frame: CodeBadRequest (the command is
// refused; not retried), CodeNotLeader or CodeUnavailable (retried).
// Request type 3 (empty) asks for the node's last Raft log index, answered
// by type 4 (8 bytes): the leader asks a voter whose gossip metadata says it
// has no Raft state before demoting it. Request type 5 (JSON {service, by})
// asks the service's holder at its primary site to stop it for a planned
// failover; the answer is type 6 (JSON {point, time, output}): the final
// point, or an error frame.
//
// # Admin API (HTTP, for operators and the CLI)
//
// See admin.go for the routes. On a loopback address it is plain HTTP;
// elsewhere, or with AdminTLS, it is HTTPS requiring a node certificate
// from the cluster CA (agent certificates are refused).
//
// The node must never serve a catalog it cannot trust, and never make a
// membership change that loses the quorum.
package node
