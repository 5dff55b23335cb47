// Package mesh will hold the memberlist wrapper, the QUIC transport with
// mutual TLS and its stream types, the Raft stream layer, the block exchange
// protocol and link throttling. It may import blockstore for IDs only.
//
// Nothing is built here yet: see issue #3.
package mesh
