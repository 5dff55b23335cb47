// Package node is the lifeboat daemon: it wires the mesh (QUIC endpoint,
// gossip), the Raft catalog, the block store with agent ingest, the
// replicator between sites, the tier engines (hot standby images, cold
// exports) and the admin API with Prometheus metrics. Failover comes with
// issue 6. Only cmd and test import it.
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
// recovery, note, holders, progress). Unknown versions, unknown fields and unknown ops are
// refused with ErrBadCommand and change nothing; an entry is at most 4 MiB.
// A snapshot is the bytes "LBCAT\x00\x01\n" followed by the catalog as JSON.
//
// Raft runs over the node's QUIC endpoint (mesh.KindRaft streams) with its
// log and stable store in DataDir/raft/raft.db (raft-boltdb, bbolt) and
// snapshots in DataDir/raft/snapshots. The bolt file is consistency-checked
// on open: damage is a RaftStateError, whose hint says to restart with
// --reset-raft (the state is moved aside and the node rejoins as new).
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
//     voters are placed by placeVoters (odd, at most 5, round-robin over
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
//   - Received points feed the tier engines (tiers.go): hot copies apply
//     them to standby images (internal/standby), cold copies export them
//     (internal/archive).
//
// # Admin stream (mesh.KindAdmin, between nodes)
//
// Request: one frame of type 1 whose payload is an encoded Command. Reply:
// one frame of type 2 whose payload is the entry's Raft index (8 bytes,
// big-endian), or a mesh error frame: CodeBadRequest (the command is
// refused; not retried), CodeNotLeader or CodeUnavailable (retried).
// Request type 3 (empty) asks for the node's last Raft log index, answered
// by type 4 (8 bytes): the leader asks a voter whose gossip metadata says it
// has no Raft state before demoting it.
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
