// Package imgfmt writes a virtual disk as a raw, qcow2 or VHDX image that
// QEMU (qemu-img info, check, compare) and Hyper-V accept, for
// `lifeboat restore --format raw|qcow2|vhdx --out PATH`.
//
// # Streaming
//
// Write makes only sequential writes to an io.Writer (a pipe or stdout
// will do): it never seeks, keeps no temporary copy, and holds memory in
// proportion to the number of extents, not to the disk. That works
// because the caller names up front which extents may hold data (the
// rest reads as zero): from them alone the writer computes every table,
// writes all tables first and then the data in guest order. A cluster or
// block is allocated when it overlaps an extent, whatever it holds; the
// data cannot be inspected before the tables that map it are written.
// ReadAt is called only for ranges inside one extent, in order, at most
// 1 MiB at a time; ctx is checked between those chunks and between
// tables. Write never closes the writer; an error or cancellation leaves
// a partial image that the caller must discard.
//
// # Raw
//
// Size bytes, holes as zeros. Callers that write a regular file should
// use their own sparse path; this one is for pipes.
//
// # qcow2 (version 3)
//
// Clusters of 64 KiB, 16-bit refcounts (refcount_order 4), no backing
// file, no compression, no encryption, no snapshots, no feature bits. All
// integers big endian. The virtual size is Size rounded up to a multiple
// of 512 bytes, as qemu-img create does: QEMU reads the size in whole
// sectors and would hide a partial last one. The file is, in clusters:
//
//	header       1 cluster at offset 0: the 104-byte version 3 header,
//	             then zeros (the end-of-extensions marker):
//	               0 magic "QFI\xfb"      4 version 3
//	               8 backing offset 0    16 backing name length 0
//	              20 cluster_bits 16     24 virtual size
//	              32 crypt method 0      36 l1_size
//	              40 L1 offset           48 refcount table offset
//	              56 refcount table clusters
//	              60 snapshots 0         64 snapshot table offset 0
//	              72 incompatible, 80 compatible, 88 autoclear features 0
//	              96 refcount_order 4   100 header length 104
//	L1 table     at 64 KiB: l1_size = ceil(virtual size / 512 MiB) entries,
//	             padded to a cluster; absent (offset 0) for an empty disk
//	refcount table   entries for each refcount block, padded to a cluster
//	refcount blocks  32768 refcounts each: 1 for every cluster of the
//	                 file, 0 past its end
//	L2 tables    one for each 512 MiB of guest space that has data, in
//	             guest order
//	data         one cluster for each 64 KiB of guest space that overlaps
//	             an extent, in guest order; the last is zero-padded
//
// L1 and L2 entries carry OFLAG_COPIED (bit 63): every cluster is
// referenced once. Unallocated guest clusters have L2 entry 0 (or no L2
// table) and read as zero. The refcount blocks count the whole file,
// themselves included; their number is the least fixed point of
// blocks = ceil(clusters / 32768), found by iterating from zero. The
// file is thus exactly the clusters that are referenced, so qemu-img
// check finds no leaks. Virtual disks up to 2 PiB (QEMU's L1 limit).
//
// # VHDX (MS-VHDX version 1, dynamic)
//
// Integers little endian; GUIDs in Microsoft's layout (first three fields
// little endian); checksums CRC-32C (Castagnoli) over the structure with
// its checksum field zero. Payload blocks of 2 MiB, logical sectors of
// 512 bytes, physical sectors of 4096, so the chunk ratio is
// 2^23 * 512 / 2 MiB = 2048. Size must be a positive multiple of 512 and
// at most 64 TiB. Every region is 1 MiB aligned:
//
//	0        file type identifier: "vhdxfile", creator "lifeboat" (UTF-16LE)
//	64 KiB   header 1, sequence number 0 (4 KiB checksummed):
//	           0 "head"  4 checksum  8 sequence number
//	          16 file write GUID  32 data write GUID (random, both headers)
//	          48 log GUID zero (nothing to replay)  64 log version 0
//	          66 version 1  68 log length 1 MiB  72 log offset 1 MiB
//	128 KiB  header 2, the same with sequence number 1 (the current one)
//	192 KiB  region table 1 (64 KiB checksummed): "regi", checksum, 2
//	         entries, both required: BAT at 3 MiB, metadata at 2 MiB
//	256 KiB  region table 2, identical
//	1 MiB    log, 1 MiB of zeros: unused, but there so that QEMU and
//	         Hyper-V can later write to the image through it
//	2 MiB    metadata region, 1 MiB: table ("metadata", 5 entries) and at
//	         +64 KiB the items: file parameters (block size 2 MiB, no
//	         flags; required), virtual disk size, page 83 data (a random
//	         virtual disk ID), logical sector size 512, physical sector
//	         size 4096 (each virtual-disk and required)
//	3 MiB    BAT, padded to whole MiB: for payload block i, entry
//	         i + i/2048; after each 2048 payload entries but the last
//	         group, a sector bitmap entry (SB_BLOCK_NOT_PRESENT, 0).
//	         Allocated blocks are PAYLOAD_BLOCK_FULLY_PRESENT (6) with
//	         their file offset; the rest PAYLOAD_BLOCK_ZERO (2), which
//	         the spec defines to read as zero (NOT_PRESENT is undefined
//	         for a disk without a parent)
//	3 MiB + BAT   payload blocks, 2 MiB each, for every block that
//	         overlaps an extent, in guest order; the last is zero-padded
//
// The package must never seek, buffer a whole image, or read outside the
// extents it was given.
package imgfmt
