package workload

import (
	"time"
)

const (
	blockSize  = 4 << 10 // unit of writes, copies and holes
	extentSize = 1 << 20 // unit of the image layout

	// Writes (Mutate and Writer).
	hotRegions     = 4  // number of hot regions
	hotPct         = 80 // percent of writes landing in a hot region
	maxWriteBlocks = 16 // longest write, in blocks (64 KiB)
)

// kind is the content of an extent or a write.
type kind uint8

const (
	kindZero kind = iota
	kindText
	kindRandom
	kindCopy
	numKinds
)

var (
	// imageMix is the percentage of extents of each kind in an image.
	imageMix = [numKinds]int{30, 30, 30, 10}
	// maxRun is the longest run of extents of each kind.
	maxRun = [numKinds]int{32, 8, 16, 8}
	// writeMix is the percentage of writes of each kind.
	writeMix = [numKinds]int{20, 35, 25, 20}
)

// Timestamps of the first text line of an image, a Mutate and a Writer.
var (
	imageEpoch  = time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC).UnixMilli()
	mutateEpoch = imageEpoch + 90*24*3600*1000
	writerEpoch = imageEpoch + 180*24*3600*1000
)

// Tags that keep the random streams of different purposes apart.
const (
	tagLayout uint64 = iota + 1
	tagCopySource
	tagText
	tagRandom
	tagMutatePlan
	tagMutateText
	tagMutateRandom
	tagWriterPlan
	tagWriterText
	tagWriterRandom
	tagPID
)
