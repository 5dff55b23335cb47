// Package blockstore is lifeboat's storage engine: a crash-safe,
// deduplicating, compressing block store with point-in-time history of
// volumes. Every site runs one. It knows nothing of networks and imports
// nothing of lifeboat's but internal/durable.
//
// # Words
//
// A block is a fixed-size, aligned piece of a volume (block size a power of
// two from 4 KiB to 1 MiB; the last block of a volume may be short). Its ID
// is the keyed BLAKE3-256 of its plaintext under the store's dedup key, so
// stores that share a key (a cluster) deduplicate against each other. The
// all-zero ID stands for an all-zero block of any length and is never
// stored. A volume's state at a point is its block map (block number to ID),
// kept as a Merkle tree of pages. A point is a named, time-stamped
// consistency point over one or more volumes of a group.
//
// # Invariants
//
//   - Data is synced before anything names it: pack bytes are fsynced before
//     the index records their location, and index and map pages are durable
//     before the point that references them is committed (one synced write).
//   - A block is served only if its frame record passes its CRC32C and names
//     the block's ID in the slot the index gives; verify re-hashes the
//     plaintext against the ID.
//   - Open repairs what a crash can leave: pack bytes past the committed
//     length are truncated, and packs never committed are removed. Anything
//     else (a pack shorter than committed, a bad checksum) is damage: it is
//     logged on open, reported by Verify, and never silently served.
//   - GC (and Prune, which is DeletePoints then GC) never removes a block,
//     page or point-record copy that a point record or an open Image
//     references, nor one a writer learnt of while it held a Lease; it
//     removes a pack file only after a synced index commit names none of
//     its objects, and only while no reader is mid-read of it.
//   - A point whose lock is after the store's clock is deleted by no path.
//
// # Directory layout
//
//	lifeboat-store.json   {"format":"lifeboat-store","version":1,"created":...}; written last by init
//	key                   the dedup key: 64 hex digits and a newline (mode 0600); absent when encrypted
//	keys                  encrypted stores only: JSON {format, version, cipher, kek (fingerprint),
//	                      wrapped: base64 nonce || AES-256-GCM(data key || dedup key)} (crypt.go)
//	lock                  flock(2)ed by the process that has the store open
//	packs/NNNNNNNN.pack   append-only pack files, NNNNNNNN = pack number in hex
//	index/                a Pebble database (github.com/cockroachdb/pebble/v2)
//
// # Pack file, version 1
//
// All integers are little endian. A pack is a header followed by frame
// records. The writer starts a new pack at 128 MiB.
//
//	header (16 bytes):
//	  0  8  magic "LBPACK\x00\x01"
//	  8  4  pack number
//	 12  4  CRC32C (Castagnoli) of bytes 0..11
//
//	frame record:
//	  0  4  magic "LBF1"
//	  4  1  codec: 0 raw, 1 zstd (one zstd frame); flag 0x80: sealed, the payload
//	        is nonce(12) || AES-256-GCM(raw or zstd bytes) with bytes 0..16+36n as
//	        additional data
//	  5  1  kind: 0 volume blocks (indexed under 'b'), 1 map pages (under 'm'),
//	        2 a copy of one point record (under 'P', for RebuildIndex)
//	  6  2  n: number of blocks, 1..1024
//	  8  4  plaintext length, 1..16 MiB (= sum of the block lengths)
//	 12  4  payload length (raw: equal to the plaintext length)
//	 16  36*n  per block: ID (32 bytes), plaintext length (4)
//	  .  payload
//	  .  4  CRC32C of everything from offset 0 to the end of the payload
//
// A frame groups up to 256 KiB of new blocks (or map pages) written
// together (hash small, compress big); it is stored raw when zstd saves less
// than 1/8. A block of a frame is read by reading and checking the whole
// record; readers keep recent frames, so sequential reads decode each once.
//
// # Index keys (Pebble)
//
//	'b' ID(32)                   -> block location: version byte (1), then
//	                                minimal unsigned varints: pack, record
//	                                offset, record length, slot in the frame,
//	                                plaintext offset in the frame, block length
//	'm' ID(32)                   -> map page location, same encoding
//	'p' time(8, BE ns) pointID   -> point record, JSON: id, name, group, time,
//	                                volumes [{name, root, size, block_size, used_blocks}]
//	'P' ID(32)                   -> location of a point record's copy in a pack;
//	                                ID = keyed hash of "lifeboat point record " + point ID
//	'k' pack(4, BE)              -> committed length of the pack (8 bytes)
//	'l' pointID(16)              -> retention lock of the point: unix
//	                                nanoseconds, 8 bytes little endian, > 0;
//	                                written in the synced batch of the point
//	                                record (Options.LockFor) or raised by
//	                                LockPoint, deleted with the record
//	's', 'S'                     -> per-scope block marks (scope.go)
//
// In an encrypted store every 'b', 'm', 'P', 'p' and 'l' value is sealed:
// nonce(12) || AES-256-GCM(value) with the key as additional data, the
// nonce a keyed BLAKE3 of key and value (crypt.go).
//
// # Map page, version 1
//
// A volume of B blocks has ceil(B/256) leaves; each interior level holds up
// to 256 child IDs; the root is the single page at the top level (a leaf
// when B <= 256). A page's ID is the keyed BLAKE3-256 of its bytes; a page
// whose IDs are all zero has the zero ID and is not stored. Pages live in
// packs, in frames of kind 1, and are checked against their ID when read.
//
//	0  4  magic "LBM1"
//	4  1  kind: 0 leaf, 1 interior
//	5  1  level: 0 for leaves
//	6  2  count, 1..256
//	8  32*count  IDs (block IDs in a leaf, page IDs above)
//
// # Point IDs
//
// A point's ID is 16 hex digits: the first 8 bytes of the keyed hash of its
// JSON record without the ID.
//
// # API
//
// Store has the data path (Put, Get, Snapshot, Update, CommitPoint,
// Restore, OpenImage, Diff, ...), Scrub, Repair and Users; cohesive sets
// hang off small types: s.Holds() (Lease, Pin, Pinned, LockPoint, Locks:
// what keeps blocks and points), s.Maintenance() (GC, Prune, DeletePoints,
// Verify) and s.Scopes() (Add, In, Marked, Mark: scope.go).
//
// # Concurrency
//
// A Store is safe for concurrent use by one process. Put may be called from
// many goroutines; new blocks are flushed to the index in the background.
// Writers that Put blocks (or learn from Missing or Has that the store holds
// them) and later commit a point hold a Lease meanwhile so that GC cannot
// collect the blocks in between. A writer or reader that builds on an
// existing point (Update from a base, Snapshot's previous point, a restore
// by point ID) pins it (Pin): blocks it takes from the point without
// looking them up stay because the point cannot be deleted. Pins are in
// memory; Pin, DeletePoints, LockPoint and point commits are serialized by
// one mutex, so a pinned point is never deleted.
//
// # Damage, scrub and repair
//
// Scrub (scrub.go) checks the store in bounded slices, for a caller that
// runs it in the background at a rate: each call reads at most
// ScrubOptions.Bytes of pack records (index and map work is charged too:
// 32 bytes per index entry or block checked, a map page's length per page;
// a call always does one unit of work) and calls Wait before it reads, and
// returns a cursor (ScrubCursor, JSON) to resume from, in this or a later
// process. A cycle has three phases: 0, every committed pack record by
// record up to its committed length, every block and page re-hashed
// (keyed BLAKE3); 1, every index entry names a committed pack file that
// is there and a record within its length; 2, every block a point map
// names is in the index and every map page reads and hashes right (pages
// already walked in the cycle are skipped while the calls follow each
// other in one process). Damage counts only where the index names the
// damaged record: a record that fails its checksum, or a region of a pack
// that cannot be walked, has the index entries inside it checked one by
// one by a fresh read. Every finding is confirmed by a fresh lookup (under
// the lock GC takes to remove a pack) before it is reported, so Scrub
// runs beside ingest, readers and GC without false alarms: a pack that GC
// removed meanwhile is skipped. Findings are BadBlocks: ID, the pack and
// record offset (or the index directory and -1 when the index lacks the
// block), Missing for a block whose record or entry is gone rather than
// damaged, Page for a map page. A call stops early, resumable, after 4096
// findings.
//
// Repair(id, data) checks that the keyed hash of data is id, writes a
// fresh record to the current pack, points the index entry at it
// (replacing the damaged or missing one) and syncs; the damaged record is
// garbage that GC reclaims when it rewrites or drops the pack (GC's copy
// skips damaged records; a live entry still naming one keeps its pack).
// Users(ids) says which points, volumes and byte ranges reference ids, for
// the "lost" error when no other copy exists.
//
// With Options.Fetch set, every read path but Verify and Scrub (Get,
// Reader, Image reads, Restore, Snapshot's reads of its base) that meets a
// damaged or missing block (a CorruptError, a pack file or record gone, or
// an ID the index lacks) calls Fetch, repairs the store with the copy
// (Repair: a copy whose hash is wrong is refused), serves it and calls
// OnDamage(b, true); without Fetch, or when it fails, the read fails with
// its error (a *CorruptError naming the block, or ErrNotFound) and
// OnDamage(b, false). Stats.Repaired counts Repairs since the store was
// opened, Stats.Unrepaired the reads that could not repair.
//
// # Garbage collection
//
// GC runs beside Put, Missing, Has, CommitPoint, Update and every reader
// (gc.go has the steps). It seals the current pack: new writes go to packs
// it does not touch. It installs a run whose Bloom filter of live IDs
// (about 10 bits per index entry, seeded per run: a false positive only
// leaves a dead object for a later run) every lookup of the write path
// adds its ID to before asking the index, holding the run's lock shared.
// It waits only for the leases taken before it began (newer ones are not
// blocked, and their lookups are noted), then marks from every point record
// and open Image, with an exact set of visited map pages, and again for
// points committed meanwhile. It accounts live and dead bytes per old pack
// in one stream of the index, copies the live objects of the packs to
// rewrite through the writer (synced before the index names the copies),
// then streams the index again and deletes the dead entries of the picked
// packs in batches of 256, each re-checked against the filter while it
// holds the run's lock exclusively (well under 10 ms); an entry a writer
// resurrected meanwhile is copied too (or keeps its pack). One synced
// batch then drops the packs' committed lengths, and each file is removed
// under a lock that readers hold from an index lookup to the end of the
// read it names. A crash at any step leaves the old pack, the copies in a
// pack tail the next open truncates, or a pack no index entry names that
// the next open removes. Dead entries in packs that are not picked stay in
// the index (they are still sound and may be deduplicated against). Verify
// and GC run one at a time; Verify keeps only the set of map pages. Verify
// reports every damaged record, also a repaired block's old one, until GC
// removes it.
package blockstore
