// Package archive writes the cold tier's exports: for one consistency point
// of one service, a directory of disk images (raw, qcow2 or vhdx) that an
// operator can check with sha256sum and boot without lifeboat.
//
// Export restores each volume of the point from a Source (the site's block
// store) into a sparse raw image and reads it back once to compute its
// SHA-256, or streams it as qcow2 or vhdx (blockstore/imgfmt) hashing it as
// written,
// and writes a manifest and a SHA256SUMS file. Verify re-reads an export
// and checks it against its manifest; List finds a service's exports; Prune
// removes those a Retention no longer keeps.
//
// # Invariants
//
//   - An export is there completely or not at all: everything is written
//     into a temporary directory, every file and the directory are fsynced,
//     then the directory is renamed into place and its parent fsynced.
//     Leftovers of an Export or Prune interrupted by a crash are removed by
//     the next Export or Prune of the service.
//   - Every digest is of the bytes the image file holds after its fsync,
//     read back in one streaming pass with a 1 MiB buffer (holes, found
//     with SEEK_HOLE, are hashed as zeros without being read).
//   - Images are sparse: blocks the store records as zero are never written.
//   - Prune never removes the newest export of a service, nor one younger
//     than the retention's Lock; an export disappears by one rename before
//     its files are deleted, so List never shows half an export.
//   - Decoders check every length and count against a limit before
//     allocating, and name the bad field; Verify names the file that does
//     not match (*CorruptError, ErrCorrupt).
//
// The package never modifies an export once it is in place (Export of a
// point already exported returns its manifest and writes nothing), never
// deletes anything outside the service's directory, and never touches the
// block store beyond reading.
//
// # Layout
//
//	DIR/SERVICE/.lock                 flock(2)ed by Export and Prune
//	DIR/SERVICE/TIME-IDPREFIX/        one export
//	DIR/SERVICE/.tmp-TIME-IDPREFIX/   an export being written
//	DIR/SERVICE/.prune-TIME-IDPREFIX/ an export being deleted
//
// TIME is the point's time in UTC as 20060102T150405Z, IDPREFIX the first
// 12 hex digits of its ID. List orders exports by that name, newest first
// (two points in the same second are ordered by ID prefix). An export
// directory holds:
//
//	NAME.img       the raw image of volume SERVICE/.../NAME (the part of the
//	               volume name after its last '/'), exactly the volume's
//	               size, sparse; NAME.qcow2 or NAME.vhdx in those formats
//	manifest.json  the manifest (below)
//	SHA256SUMS     checksums in the format `sha256sum -c` reads
//
// # manifest.json, format version 1
//
// One JSON object (indented, followed by a newline), at most 16 MiB;
// unknown fields are refused:
//
//	{
//	  "format": "lifeboat-export",
//	  "version": 1,
//	  "image_format": "raw", "qcow2" or "vhdx",
//	  "service": SERVICE,
//	  "point": {"id": 16 hex digits, "name": optional, "time": RFC 3339 UTC},
//	  "created": RFC 3339 UTC, when the export was written,
//	  "volumes": [{
//	    "name": "SERVICE/.../NAME",
//	    "file": "NAME.img",
//	    "size": bytes,
//	    "block_size": bytes, a power of two from 4 KiB to 1 MiB,
//	    "root": 64 hex digits, the volume's block map root in the store
//	            (all zeros for an all-zero volume),
//	    "sha256": 64 lowercase hex digits, of the whole image file
//	  }, ...]
//	}
//
// There are 1 to 4096 volumes; each file is the name's last element plus
// ".img" and no two are equal.
//
// # SHA256SUMS
//
// One line per file, "HEX  NAME\n" (two spaces: sha256sum's text mode,
// which reads the same bytes as binary mode on Linux): first manifest.json,
// then each image in manifest order. Verify also accepts "HEX *NAME".
// `cd EXPORT && sha256sum -c SHA256SUMS` checks an export without lifeboat.
package archive
