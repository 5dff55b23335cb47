// Package standby keeps the hot tier's standby images: for one service, a
// directory with one raw image file per volume, all at the newest complete
// consistency point that was applied, ready for the service's start hook.
//
// Apply takes the images from the point they are at to a newer one, read
// from a Source (the site's block store). Volumes that changed a little get
// their changed blocks (store Diff) through a redo journal; volumes that are
// new, changed block size, changed more than half their used blocks or whose
// old point the store no longer holds are written whole beside the old image
// and renamed into place; volumes the point lacks are removed.
//
// # Invariants
//
//   - Atomic across volumes: after a crash (kill -9 or power loss) at any
//     moment, Open finds every image at the previous point or every image at
//     the new one, and the state file says which. Before the first point
//     completes there is no state and no image.
//   - Nothing the state names is changed before the journal's commit record
//     is durable; the commit record is written only after every other
//     journal record, every new whole image and the directory entries of
//     both are durable. So a durable commit record means a complete update
//     is on disk, and a journal without one means nothing was changed.
//   - Replaying a committed journal is idempotent (absolute writes, hole
//     punches, truncates, renames and removals), so a crash during replay,
//     or during Open's replay, is finished by the next Open.
//   - The state is written (temp file, fsync, rename, fsync directory) only
//     after every image is fsynced and the directory synced; the journal is
//     removed only after that. A failed fsync is never retried on its own:
//     the whole journal is replayed (every page rewritten) before the next.
//   - Every length read from disk is checked against a limit before
//     anything is allocated for it; a damaged state or committed journal,
//     an image the state does not list, and a listed image that is missing
//     or has the wrong size make Open fail with a *CorruptError naming the
//     file, and nothing is changed.
//   - Memory stays bounded: blocks are read and journalled in batches of at
//     most 8 MiB, and replay streams the journal.
//
// The package never writes an image the state names except by replaying a
// committed journal, never applies a point older than the images' (ErrOlder),
// and never deletes a file it did not make (it refuses instead). The images
// belong to the Set: nothing else may write them, and nothing should hold
// them open across an Apply (an image may be replaced by rename). Once a
// service was started from its images (failover), they are live disks, not
// standby images: open no Set on that directory again.
//
// # Files
//
//	lock              flock(2)ed while a Set has the directory open
//	standby.json      the state: which point the images are at
//	NAME.img          the raw image of volume SERVICE/.../NAME (the part of
//	                  the volume name after its last '/', which must not
//	                  start with '.'); no two volumes of a point may share
//	                  NAME
//	journal           the redo journal of an update in progress
//	NAME.img.new      a whole new image written by an update in progress
//	standby.json.tmp  an interrupted state write
//
// Open removes *.img.new and standby.json.tmp once any committed journal is
// replayed, discards a journal without a valid commit record (WARN), and
// removes a journal whose target is already the state's point.
//
// # State file (standby.json), format version 1
//
// One JSON object followed by a newline, at most 8 MiB:
//
//	{"state":STATE,"sha256":"HEX"}
//
// HEX is the lowercase hex SHA-256 of the bytes of STATE exactly as they
// appear in the file. STATE is
//
//	{"format":"lifeboat-standby","version":1,"point":POINT}
//
// and POINT is a blockstore.Point as the store records it: {"id": 16 hex
// digits, "name", "group" (the service), "time" (RFC 3339), "volumes":
// [{"name", "root" (64 hex digits), "size", "block_size", "used_blocks"}]}
// with 1 to 4096 volumes. Unknown fields are refused. A missing file means
// no point (and then there must be no image).
//
// # Journal file (journal), format version 1
//
// Records back to back; all integers little endian; CRC32C is CRC-32 with
// the Castagnoli polynomial. A record is a 24-byte header and a payload:
//
//	offset size  field
//	0      4     magic "LBSJ"
//	4      1     type: 1 begin, 2 truncate, 3 write, 4 zero, 5 replace,
//	             6 remove, 7 commit
//	5      1     reserved, zero
//	6      2     file: index into the begin record's file list (0 for
//	             begin and commit)
//	8      8     off: byte offset in the image (write, zero), the new size
//	             (truncate), 0 otherwise; at most 2^50
//	16     4     n: payload length (begin 1..9 MiB, write 1..1 MiB, commit
//	             40), the range length (zero, 1..2^31), 0 otherwise
//	20     4     CRC32C of bytes 0..19 followed by the payload
//	24     ...   payload: n bytes for begin, write and commit; none for
//	             the others
//
// The records, in order:
//
//	begin     exactly one, first. Payload: JSON {"version":1,"base":B,
//	          "files":[...],"state":STATE}: B is the point the images are
//	          at ("" before the first point), files the image file names
//	          the records refer to (each NAME.img, distinct, at most 8192),
//	          STATE the state object above for the point the journal
//	          leads to.
//	truncate  set the image's size to off (before the writes to it).
//	write     write the payload at off.
//	zero      make n bytes at off read as zeros (punch a hole, or write
//	          zeros where the file system cannot).
//	replace   rename NAME.img.new to NAME.img (already renamed if the
//	          .new file is gone and the image exists).
//	remove    remove NAME.img if it exists.
//	commit    exactly one, last, ending the file. Payload: the number of
//	          records before it (8 bytes), then the SHA-256 of every byte
//	          of the file before it (32 bytes).
//
// A journal is committed when its last 64 bytes are a valid commit record.
// Open then checks every record (magic, type, limits, CRC, file index) and
// the commit record's count and SHA-256 before changing anything; a
// committed journal that fails a check, or whose base is not the state's
// point (and whose target is not either), is a *CorruptError. Each file's
// records are contiguous; files are visited in the order of the list.
package standby
