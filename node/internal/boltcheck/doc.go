// Package boltcheck checks the structure of a bbolt database file before
// bbolt maps it, so that damage is an error and not a crash.
//
// bbolt reads its pages through a memory map and trusts every page number,
// count, offset and length it finds: a flipped byte can make it read past
// the map or the file, which is a fault (SIGSEGV, SIGBUS) that kills the
// process, not a panic that recover sees, and bbolt's own Tx.Check runs in
// a goroutine of its own. Check reads the file with ReadAt and verifies,
// against the bytes present, everything bbolt dereferences without a
// bounds check:
//
//   - the meta pages: magic, version 2 and checksum; the one bbolt would use
//     (the valid one with the higher transaction ID) must have a power-of-two
//     page size, a high-water mark inside the file, and root and freelist
//     page numbers below it;
//   - the freelist page: its type, page number, overflow and count, and
//     every free page number;
//   - every page reachable from the root bucket, nested buckets included
//     (inline ones too): its page number and type, its overflow inside the
//     high-water mark, its element array and every key and value inside
//     the page, at most one reference to each page (so no cycles), and a
//     depth of at most 64.
//
// What Check does not see: bbolt keeps no checksum of data pages, so a
// changed byte inside a key or value that leaves the structure valid goes
// unnoticed here (and by bbolt). Key order, free pages that are also in use
// and pages neither reachable nor free are left to bbolt's Tx.Check, which
// is safe to run once Check has passed.
//
// The format is bbolt's (go.etcd.io/bbolt, file format version 2): a page is
// a 16-byte header (id uint64, flags uint16, count uint16, overflow uint32;
// flags 0x01 branch, 0x02 leaf, 0x04 meta, 0x10 freelist) and its body;
// integers are in the machine's byte order, little-endian on every platform
// lifeboat supports.
//
// Check never writes, never allocates more than the file's size, and never
// panics.
package boltcheck
