// Package nbd serves one point-in-time disk image over the Network Block
// Device protocol, so that a VM (qemu, the Linux nbd client, libnbd tools)
// can boot from a point straight out of the blockstore before any copy is
// made: `lifeboat serve-nbd --volume V --at POINT [--listen ADDR]
// [--writable] [--tls-dir DIR]`. The caller supplies the image as an
// io.ReaderAt, and for TLS a server config and an Authorize check; this
// package knows nothing of the store or of lifeboat's certificates.
//
// Invariants:
//   - The point is never written: Export.Data is only read. With
//     Export.Writable, writes go to an overlay (below) and are lost when the
//     Server is closed.
//   - Nothing a client sends makes the server allocate without bound:
//     option data is capped at 64 KiB (longer options are drained and
//     refused), READ and WRITE at 32 MiB, and the requests in flight on one
//     connection at 64 MiB (or 256 requests).
//   - With Export.TLS, no byte of the export, not even its size or name,
//     goes to a client before it has completed a TLS handshake with a
//     verified client certificate and passed Export.Authorize; until
//     then option data is drained, never buffered, and the connection
//     lives at most Export.AuthTimeout (30 s).
//   - A refused request leaves the connection usable; only a broken
//     message (bad magic, unknown client flags, an unknown name in
//     NBD_OPT_EXPORT_NAME, a short read) or a refusal for TLS closes it.
//   - Every goroutine Serve starts is joined before it returns.
//
// # Protocol (NetworkBlockDevice/nbd doc/proto.md)
//
// Handshake: fixed newstyle only (NBDMAGIC, IHAVEOPT, handshake flags
// FIXED_NEWSTYLE|NO_ZEROES); client flags FIXED_NEWSTYLE and NO_ZEROES,
// any other bit closes the connection. Options:
//
//	NBD_OPT_EXPORT_NAME  the export; an unknown name closes the connection
//	NBD_OPT_INFO, _GO    NBD_INFO_EXPORT and NBD_INFO_BLOCK_SIZE (min 1,
//	                     preferred 4096, max 32 MiB, always sent), and
//	                     NBD_INFO_NAME when asked; unknown name:
//	                     NBD_REP_ERR_UNKNOWN; malformed: NBD_REP_ERR_INVALID
//	NBD_OPT_LIST         one NBD_REP_SERVER, then NBD_REP_ACK
//	NBD_OPT_ABORT        NBD_REP_ACK, then close
//	NBD_OPT_STARTTLS     with Export.TLS: below; without: NBD_REP_ERR_UNSUP
//	anything else        NBD_REP_ERR_UNSUP: no structured replies (so no
//	                     block status or meta contexts), no extended
//	                     headers
//
// The name "" selects the export whatever its Name. Transmission flags:
// HAS_FLAGS and SEND_FLUSH always; READ_ONLY and CAN_MULTI_CONN for a
// read-only export; SEND_FUA, SEND_TRIM and SEND_WRITE_ZEROES for a
// writable one.
//
// TLS (proto.md "TLS support"): with Export.TLS the server is in
// FORCEDTLS mode on every connection. Before TLS:
//
//	NBD_OPT_STARTTLS     no data: NBD_REP_ACK, then the TLS handshake on
//	                     the same connection (the server's config, which
//	                     must require and verify client certificates,
//	                     TLS 1.2 or later), then Export.Authorize with the
//	                     connection state; with data: NBD_REP_ERR_INVALID
//	NBD_OPT_ABORT        NBD_REP_ACK, then close
//	NBD_OPT_EXPORT_NAME  close (it cannot be answered with an error)
//	anything else        NBD_REP_ERR_TLS_REQD, its data drained unread
//
// A client without the FIXED_NEWSTYLE client flag is closed at once
// (STARTTLS needs fixed newstyle). A failed handshake or Authorize closes
// the connection. Once TLS is up, option haggling starts over inside it
// as without TLS, and a second NBD_OPT_STARTTLS gets NBD_REP_ERR_INVALID;
// NBD_CMD_DISC sends TLS close_notify before closing. Each refused client
// is logged at WARN and given to Export.OnRefused with an error matching
// ErrTLSRequired (no STARTTLS: EXPORT_NAME first, no fixed newstyle, or
// the client left after NBD_REP_ERR_TLS_REQD), ErrHandshake or
// ErrUnauthorized, and counted in Stats.Refused. A client that connects
// and leaves without sending an option is not a refusal.
//
// Transmission uses simple replies. Requests run concurrently per
// connection and replies go out as they complete, one at a time.
//
//	READ          from the overlay or the point; a failed read of either
//	              is EIO (no payload follows)
//	WRITE         into the overlay
//	WRITE_ZEROES  whole blocks become holes in the overlay file unless
//	              NO_HOLE is set; partial blocks are written with zeroes
//	FLUSH         succeeds at once: the overlay is scratch that dies
//	              with the server, there is nothing to make durable
//	TRIM, CACHE   succeed and do nothing (both are hints)
//	DISC          waits for the requests in flight, then closes
//
// Errors, all leaving the connection open: unknown commands and flags,
// READ or WRITE over 32 MiB, READ, TRIM or CACHE past the end: EINVAL;
// WRITE or WRITE_ZEROES past the end: ENOSPC; WRITE, WRITE_ZEROES or TRIM
// on a read-only export: EPERM. A WRITE's payload is always read, and
// dropped when the write is refused. The command flag FUA is accepted
// everywhere and needs no work, for the reason FLUSH needs none.
//
// # Overlay
//
// A writable export keeps a sparse temporary file as large as the export
// (created in Export.OverlayDir and unlinked at once, so it never outlives
// the process) and an in-memory bitmap with one bit per 4 KiB block, set
// when the file holds that block's full content. A read takes each run of
// blocks from the file or the point as the bitmap says. A write that
// covers part of a block whose bit is clear first completes the block from
// the point (read-modify-write), so unaligned writes of any size are
// exact. Writers are serialized; readers are not blocked by them.
//
// # What it must never do
//
// Write to Export.Data; trust a length from the wire before checking it
// against a limit; keep the overlay after Close; answer anything but
// STARTTLS and ABORT, or buffer option data, for a client of a
// TLS-required server that has not passed the handshake and Authorize.
package nbd
