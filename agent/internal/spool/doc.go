// Package spool is the agent's durable, ordered local journal (issue #4).
//
// All volumes of one service share one spool and one sequence: every record
// gets the next sequence number, starting at 1. A block record holds the
// full content of one block of a volume after a write; a mark record is a
// consistency point (the application flushed). The agent appends, syncs
// (group commit: concurrent Sync calls share one fdatasync), ships records
// read with Read to its node, and acknowledges with Ack what the node
// committed; whole segment files below the acknowledgement are deleted.
// When the spool is full (Options.MaxBytes) AppendBlocks returns ErrFull
// and appends nothing: the agent then records the blocks in the volume's
// dirty bitmap (MarkDirty) and resyncs them from the volume later.
//
// # Invariants
//
//   - Every record appended before a successful Sync survives a crash
//     (kill -9 or power loss), as do all records before it; sequence
//     numbers have no gaps between Acked()+1 and Last().
//   - Open repairs only a torn tail: a bad record no later record claims was
//     durable. Anything else (a bad record that was durable, a missing
//     segment, a bad acknowledgement or bitmap file) is a *CorruptError
//     naming the file and offset, and nothing is changed.
//   - Every length read from disk is checked against a limit (and the bytes
//     present) before anything is allocated for it.
//   - A failed fdatasync is never retried (the kernel may have dropped the
//     pages): the spool returns the error from then on.
//   - MarkDirty and Bitmap.Clear are durable when they return.
//
// It never drops a record silently and never reuses a sequence number that
// a successful Sync or Ack covered. Records above the last Sync may be lost
// in a crash and their numbers given to new records: consumers drop what
// they have not committed when the agent restarts.
//
// # Files
//
// A spool directory holds:
//
//	lock                      flock(2)ed while a Spool has the directory open
//	00000000000000000001.seg  segment files, named by the first sequence
//	                          number they hold (20 decimal digits)
//	acked                     the acknowledgement
//	dirty-<hex>.bm            a dirty bitmap per volume; <hex> is the first
//	                          16 bytes of SHA-256(volume name), in hex
//	*.tmp                     interrupted atomic writes, removed by Open
//
// All integers are little-endian. CRC32C is CRC-32 with the Castagnoli
// polynomial. Format version 1.
//
// # Segment file
//
// A 32-byte header, then records back to back:
//
//	offset size  field
//	0      8     magic "LBSPOOL\x00"
//	8      4     version (1)
//	12     4     reserved, zero
//	16     8     first: sequence number of the first record (>= 1); equals
//	             the number in the file name
//	24     4     CRC32C of bytes 0..23
//	28     4     reserved, zero
//
// A record is a 28-byte header and a payload:
//
//	offset size  field
//	0      4     CRC32C of bytes 4 to the end of the payload
//	4      4     length: payload bytes
//	8      1     kind: 1 block, 2 mark
//	9      3     reserved, zero
//	12     8     seq: sequence number; the records of a segment are
//	             first, first+1, ... and the next segment continues
//	20     8     durable: the highest sequence number that was synced when
//	             this record was appended (0 if none)
//	28     n     payload
//
// A block payload (kind 1), length 2 + L + 8 + B, at most 2+1024+8+2^20:
//
//	0      2     L: volume name length, 1..1024
//	2      L     volume name (UTF-8)
//	2+L    8     block number (< 2^62); the block's offset in the volume is
//	             block number × B
//	10+L   B     the block's content; B, the block size, is a power of two
//	             from 512 to 1 MiB
//
// A mark payload (kind 2), length 8:
//
//	0      8     wall-clock time of the consistency point, Unix nanoseconds
//
// Recovery (Open) reads every segment in order and checks every header
// field, length, sequence number and CRC. At the first bad record (or a bad
// or short segment header) with expected sequence number e, it scans the
// rest of that file byte by byte, and all later segment files, for a valid
// record whose durable field is >= e. If one exists, e was synced and is
// now damaged: Open fails with a *CorruptError. Otherwise the bad record
// and everything after it were never synced (a crash during an append): the
// file is truncated there (removed if no record remains), later segment
// files are removed, and a WARN spool_torn_tail_truncated names file,
// offset and bytes dropped. Open then fdatasyncs what it kept, so that the
// durable fields written afterwards are true.
//
// Segment files wholly below the acknowledgement (the next segment starts
// at or below acked+1) are deleted by Ack and again by Open if an
// interrupted Ack left them. When Ack covers every record the spool starts
// a new segment so that the space of the old one returns.
//
// # Acknowledgement file (acked)
//
// Exactly 32 bytes, replaced atomically (write temp, fsync, rename, fsync
// directory):
//
//	0      8     magic "LBSPACK\x00"
//	8      4     version (1)
//	12     4     reserved, zero
//	16     8     acked: the highest sequence number the node committed
//	24     4     CRC32C of bytes 0..23
//	28     4     reserved, zero
//
// A missing file means nothing was acknowledged.
//
// # Dirty bitmap file (dirty-<hex>.bm)
//
// A header, then records; the first record is a snapshot:
//
//	0      8     magic "LBDIRTY\x00"
//	8      4     version (1)
//	12     2     L: volume name length, 1..1024
//	14     2     reserved, zero
//	16     8     N: the volume's block count, 1..2^36
//	24     L     volume name
//	24+L   4     CRC32C of bytes 0..23+L
//
// A record is a 12-byte header and a payload:
//
//	0      4     CRC32C of bytes 4 to the end of the payload
//	4      4     length: payload bytes
//	8      1     op: 1 set, 2 clear, 3 snapshot
//	9      3     reserved, zero
//	12     n     payload
//
// Set and clear (length 16) set or clear blocks first..first+count-1:
// first (8 bytes), count (8 bytes), inside 0..N-1. A snapshot (length
// 8×ceil(N/64)) replaces the whole bitmap: words of 64 blocks, block i is
// bit i%64 of word i/64; bits past N are ignored. Each MarkDirty or Clear
// appends its records with one write and fdatasyncs them, so only the last
// record can be torn: a bad record that reaches the end of the file, or is
// followed by zeros only, is truncated with a WARN; any other bad record is
// a *CorruptError. When the records outgrow twice the snapshot (plus 64
// KiB), and when the block count changes, the file is rewritten atomically
// as header and snapshot.
package spool
