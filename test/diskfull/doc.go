// Package diskfull tests the block store and the node on a really full
// filesystem. It has no code of its own, only tests. Each test mounts a small tmpfs (which needs
// root: without it the tests skip, or fail when CI=true) and fills it with
// random, incompressible volumes and a filler file, so that writes fail with
// ENOSPC from the kernel rather than from a fake. The store keeps a reserve
// of free space for its index (blockstore/space.go), so pack writes are
// refused before the kernel runs out; the tests hold for either.
//
//   - TestSnapshotBiggerThanDisk snapshots a 48 MiB volume into a 32 MiB
//     store that already holds three small points, with 4 KiB and 64 KiB
//     blocks. The snapshot must fail with a clear error and add no point;
//     writes on the same open store must be refused clearly; reads keep
//     working. The store is closed and reopened with the disk still full (in
//     a child process with a deadline, since an open that hangs cannot be
//     stopped in process), then again after the tmpfs is grown: every earlier
//     point must restore byte-exact, Verify must find no damage, Prune must
//     work and a new snapshot must succeed.
//   - TestENOSPCPhases moves the moment of ENOSPC through a 24 MiB snapshot
//     into a store with two points, by leaving from 100 KiB to past the
//     snapshot's measured need free, so that it lands in the pack writes, the
//     index write or the point commit. Each snapshot runs in a child process
//     (re-executed test binary), so that a panic or a hang is reported rather
//     than ending the test run. After each, the filler is removed and the
//     store reopened: every acknowledged point must restore byte-exact,
//     Verify must find no damage, no point may appear that the failed
//     snapshot did not acknowledge (unless the child crashed), and a retry of
//     the same snapshot must succeed and restore byte-exact.
//   - TestInitOnFullDisk runs Init and then Open in a child process with 0
//     to 64 KiB free: Init must fail with a clear error or make a complete
//     store, Open must succeed or fail clearly, and a store Init failed to
//     make must be refused by Open, before and after space is freed.
//   - TestDiskFullRefusesByPriority runs a node whose DATA_DIR is a
//     256 MiB tmpfs and two in-process intercept agents (FUSE) of services
//     of priority 0 and 10 that keep writing. The disk is filled to 4%
//     free: the node must refuse new points of the low-priority service
//     (wire code no space), say so in its status (critical, refused
//     [low], what to do) and log it once, while the high-priority service
//     keeps committing; the low agent must keep spooling and report the
//     refusal (state nospace, the node's reason, MiB spooled). The filler
//     is removed: the node must resume by itself, the spool drain, the
//     newest point of each service restore byte-exact to the volume as
//     written, and Verify find no damage.
//
// A child that runs past its deadline is stopped with SIGQUIT, so that the
// failure names the calls it hung in; a child that panics is reported with
// the panic and the calls under it.
//
// The volumes' content comes from a seed that is logged; LIFEBOAT_SEED
// replays it.
package diskfull
