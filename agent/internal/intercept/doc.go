// Package intercept captures the writes of protected volumes in order
// (issue #4, DESIGN.md Data path step 1, intercept mode), on Linux with
// go-fuse.
//
// Mount exposes each volume as a regular file, Mountpoint/NAME, backed by
// the real image file or block device. Anything that reads and writes the
// file (a loop device made with losetup, dd, qemu) goes through this
// package: reads are served from the backing file; a write is applied to
// the backing file (pwritev), then the full content of every block it
// touched is read back and handed to the Sink, all under the volume's
// write lock, and only then is the write acknowledged. So the Sink sees the
// volume's writes in exactly the order they were applied, and replaying its
// calls onto a zero image reproduces the backing file. fsync, fdatasync and
// the close of a handle that wrote sync the backing file and call
// Sink.Flush: a consistency point.
//
// Invariants and what it must never do:
//   - No passthrough: go-fuse's loopback file hands the kernel a backing fd
//     (FUSE passthrough), and then no read or write reaches Go. The volume
//     files here implement the node interfaces themselves and return no
//     passthrough fd.
//   - Writev is implemented: go-fuse >= 2.12 sends writes there (Write only
//     on ENOSYS).
//   - Every handle is FOPEN_DIRECT_IO: the kernel keeps no page cache for
//     the files, so reads never see stale data and a loop device's writes
//     go straight through, one request per write up to 1 MiB.
//   - A write is never acknowledged before the Sink accepted its blocks; a
//     Sink error fails the write with EIO (the backing file still holds
//     it: the Sink must resync those blocks).
//   - Files are never created, removed, renamed, resized or fallocated
//     (EPERM/EOPNOTSUPP); opening with O_TRUNC is refused. Writes past the
//     end are cut at the end (ENOSPC when nothing fits).
//   - A last block that the volume covers only in part is passed padded
//     with zeros to the block size.
//
// A killed agent leaves a stale mount (stat fails with ENOTCONN); Mount
// detaches it lazily before mounting again, and UnmountStale does it on
// request.
package intercept
