// Package workload makes lifeboat's own synthetic disk content for tests,
// demos and benchmarks: deterministic disk images, a "day" of writes to
// apply to them, and a steady stream of writes for end-to-end tests. It uses
// only the standard library.
//
// # Images
//
// [Image] lays a disk out in 1 MiB extents, grouped in runs of one kind (as
// files and free space are) placed in shuffled order, with exact counts per
// kind:
//
//   - 30% zero: unallocated space, never written, so a file stays sparse;
//   - 30% text: generated log lines (access logs, key=value and JSON
//     application logs, prose from a word list, kernel messages) with
//     advancing timestamps, addresses, ids and numbers; it compresses about
//     3.6x with zstd -3;
//   - 30% random: incompressible bytes (media, encrypted or compressed files);
//   - 10% copies: a copy of an earlier window of non-zero extents that starts
//     at a 4 KiB-aligned (usually not 1 MiB-aligned) offset, so a block-level
//     deduplicator finds it and an extent-level one mostly does not. A run
//     of copy extents copies one window if one fits, else each extent copies
//     its own; an extent that nothing earlier fits (near the start of a small
//     image) gets random data instead.
//
// # Writes
//
// [Mutate] applies a fixed sequence of writes to an image in place, about a
// given percentage of its size, as a day of changes between two backups, and
// a [Writer] produces an endless sequence of the same kind for tests that
// write while something else runs. Writes are 4 KiB-aligned and 4-64 KiB
// long (most are small); 80% of them land in 4 hot regions (database pages,
// journals), the rest anywhere. Their content is 20% zeros, 35% new text,
// 25% new random bytes and 20% copies of other content of the image, so that
// deduplication matters.
//
// # Determinism
//
// Every byte is a pure function of the arguments (and, for the copies that
// Mutate makes, of the image it starts from), on every platform and Go
// release: the package draws its numbers only from the PCG generator of
// math/rand/v2, whose output is specified, bounds them itself and uses
// integer arithmetic for every decision.
package workload
