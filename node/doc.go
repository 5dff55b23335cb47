// Package node is the lifeboat daemon: it wires the block store, the mesh,
// the Raft catalog and the tier engines (replicator, hot applier, cold
// exporter), failover and the admin API. Only cmd and test import it.
//
// Nothing is built here yet: the daemon arrives with issue #3 (mesh and
// catalog); today lifeboat works on a local store through cmd/lifeboat.
package node
