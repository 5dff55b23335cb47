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
//   - node/catalog: the catalog, its commands and the Raft state machine;
//     readers share immutable snapshots (Node.Catalog, FSM.View).
//   - node/api: the admin API as its callers see it (types, codes, the
//     Client); types.go keeps aliases so callers are unchanged.
//   - node/internal/membership: gossip join, bootstrap, reconnect and the
//     leader's reconcile (Raft changes, holder placement).
//   - node/internal/forward: catalog writes through the leader (Apply,
//     forwarded by followers), the admin stream server between nodes and
//     its Raft state query, peer verification.
//   - node/internal/leave: node leave (the checks, the leave, the
//     leader's removal of a leaving node) and the LEFT marker.
//   - node/internal/revoke: certificate revocation (op revoke) and closing
//     revoked peers' connections.
//   - node/internal/placement: voter and holder placement (pure).
//   - node/internal/ingest: agents' ingest sessions, fencing, barriers and
//     the planned-failover hold; node/internal/streams accepts the typed
//     streams, node/internal/blockframe stores Blocks frames.
//   - node/internal/replicate: senders per recovery site, receivers, link
//     throttles and the fetch of a new holder's newest point.
//   - node/internal/watermark: newest points batched into the catalog.
//   - node/internal/tiers: hot standby images and cold exports
//     (node/internal/standby and node/internal/archive hold their formats).
//   - node/internal/recovery: failover (planned, unplanned, forced),
//     failback, drills, branches, the points listing.
//   - node/internal/admin, audit, policy, status, metrics: the admin API
//     server behind a Backend, its audit log, policy apply and approval,
//     the Status view, the Prometheus registry.
//   - node/internal/raftstore: raft.db and snapshots, checked for damage.
//   - node/internal/scrub: the store read back at the site's pace, damaged
//     blocks repaired from other nodes, lost ones marked (issue 16);
//     node/internal/repair moves blocks by ID between nodes (repair
//     streams, and the store's Fetch for reads that meet damage).
//   - node/internal/raftnode: the Raft instance over them (replaced on a
//     forced recovery), its start, transport, config and quorum check.
//   - node/nbd: the NBD server (run by the CLI, not by the node).
//
// Shared mechanisms come from the repository's internal packages: clock
// (one injected clock), retry (back-off that stops on permanent errors),
// logpolicy (repeating failures: one WARN with a hint, then counted
// summaries), durable, flock and names. Peer refusals carry mesh wire
// codes (mesh/codes.go), classified by mesh.IsRetryable.
//
// # Files
//
//   - node.go: Options, New (the wiring), Run, shutdown.
//   - cluster.go: Apply (node/internal/forward), RecoverRaft
//     (node/internal/raftnode, then the record), Catalog, Status.
//   - ingest.go, replicate.go: the block store's opening and the adapters
//     over the ingest engine's services for replication and tiers.
//   - leave.go: ErrLeft and the admin Backend's Leave
//     (node/internal/leave).
//   - revoke.go: Revoke (node/internal/revoke).
//   - admin.go, audit.go, failover.go: the node's side of the admin and
//     recovery engines (the Backend, delegating calls, standby images).
//   - types.go: aliases of the catalog's and the API's types.
//
// The catalog's format is in package catalog's doc comment, raft.db's
// checks in package raftstore's.
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
//   - The primary's holder runs one sender per recovery site
//     (node/internal/replicate, protocol in mesh doc.go); senders report their progress (progress
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
//     already open (node/internal/ingest). A planned failover (node/internal/recovery)
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
//     result is a drill op. The images go when the drill ends unless it
//     keeps them. Failover images (DataDir/failover) go once the service
//     failed back; none the catalog says a service runs on (recovery's
//     images.go, issue 15 item 6).
//
// # Leaving
//
//   - node leave (node/internal/leave): checked while the admin request waits (a
//     reachable leader, a quorum of the other voters, no service whose
//     points only this node keeps at its site; --force overrides), then,
//     after the answer, DataDir/LEFT, the gossip's leaving flag, a
//     leadership transfer, the gossip leave (peers record it left), the
//     leader asked to remove it from the catalog and Raft (admin stream
//     type 7; placement then moves its holders), a wait to see itself out
//     of the configuration, and Run ends.
//   - With Options.AnnounceStop (node run), the end of Run tells the
//     gossip the node stops (mesh.Gossip.Stop): peers see it dead at once
//     and it keeps its place.
//
// # Disk space (node/internal/ingest space.go; issue 15 item 5)
//
// The space guard reads the free space (statfs: blocks available over the
// size) of the block store's file system and of DataDir's when that is
// another one, at most once per second on the node's clock (a ticker,
// and on a check when the reading is older). The worst file system
// counts. Under 20% free the state is "low" (one WARN with what to do;
// "ok" again at 21%). Under 5% it is "critical" and the node refuses new
// points of the services it holds (primary at its site, or a copy there)
// of the lowest priority (config priority, default 0, higher = more
// important); under 3% of every priority but the highest; under 1% of
// all. Refusals only grow until the disk is back at 7% free; then every
// service is taken again, by itself. A refusal is mesh.CodeNoSpace
// (retryable) on an agent's Hello, Blocks or Commit and on a replication
// stream's ReplHello or ReplCommit: received replication points are
// refused too, by the same priorities, and the sender retries with
// back-off, its progress error naming the reason; agents keep spooling
// (agent state "nospace"). Nothing of a refused commit is acknowledged.
// The status (api.SpaceStatus) and the metrics show it. The block store's
// own reserve for its index is set to a hundredth of the file system (4
// to 64 MiB), under these marks, and stays the last line (ENOSPC errors
// that commit nothing) if the disk fills anyway.
//
// # Suspect points (node/internal/ingest suspect.go; issue 16 items 4, 5)
//
// The ingest engine judges each point an agent commits, per volume, by
// the share of blocks changed and the share of those that did not
// compress (blockframe.Incompressible) against an in-memory baseline per
// volume; a jump marks the point suspect (catalog.PointMark, op marks,
// sent with the watermarks). Status, metrics, the lifecycle pins ("pinned:
// clean before suspect P") and the recovery engine's choice of point (the
// newest not suspect, not after a suspect point, not damaged at the site,
// verified where required) read the mark from the catalog. An admin clears
// it with POST /v1/points/clear-suspect.
//
// # Admin stream (mesh.KindAdmin, between nodes)
//
// Each stream carries one request frame and one answer. Error answers are
// mesh error frames with the codes of mesh/codes.go. node/internal/forward
// serves the streams and types 1 and 3; it hands type 5 to the recovery
// engine and type 7 to node leave's.
//
//   - Type 1, an encoded Command (read up to catalog.MaxCommand), asks the
//     leader to apply it. The answer is type 2, the entry's Raft index (8
//     bytes, big-endian), or an error: CodeBadRequest (the frame or the
//     command is refused: ErrBadCommand, not retried), CodeNotLeader or
//     CodeUnavailable (retried by Apply); any other permanent code stops
//     Apply.
//
//   - Type 3 (empty) asks for the node's last Raft log index, answered by
//     type 4 (8 bytes, big-endian): the leader asks a voter whose gossip
//     metadata says it has no Raft state before demoting it.
//
//   - Type 5 (JSON {"service", "by"}) asks the service's holder at its
//     primary site to stop it for a planned failover. The answer is type 6
//     (JSON {"point", "time", "output"}: the final point, its time and the
//     stop hook's output) or an error: CodeBadRequest (the request does not
//     decode), CodeForbidden (sent with an agent certificate),
//     CodeWrongNode (this node is not the service's primary holder),
//     CodeUnavailable (the stop hook failed, or no point came within a
//     minute after it).
//
//   - Type 7 (empty) is sent by a node that leaves the cluster (node
//     leave) to the leader: remove me. The leader removes the sender (its
//     certificate's name) from the catalog's nodes and from Raft and
//     answers type 8 (8 bytes, big-endian: its applied index), or an error:
//     CodeForbidden (an agent certificate), CodeNotLeader, CodeUnavailable
//     (the removal did not commit).
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
