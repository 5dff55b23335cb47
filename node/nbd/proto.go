package nbd

import "time"

// Wire constants of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md).
// All integers on the wire are big-endian.

const (
	magicNBD      uint64 = 0x4e42444d41474943 // "NBDMAGIC"
	magicOpt      uint64 = 0x49484156454F5054 // "IHAVEOPT"
	magicOptReply uint64 = 0x3e889045565a9
	magicRequest  uint32 = 0x25609513
	magicReply    uint32 = 0x67446698 // simple reply
)

// Handshake flags (server) and client flags.
const (
	flagFixedNewstyle  uint16 = 1 << 0
	flagNoZeroes       uint16 = 1 << 1
	cflagFixedNewstyle uint32 = 1 << 0
	cflagNoZeroes      uint32 = 1 << 1
)

// Options.
const (
	optExportName      uint32 = 1
	optAbort           uint32 = 2
	optList            uint32 = 3
	optStartTLS        uint32 = 5
	optInfo            uint32 = 6
	optGo              uint32 = 7
	optStructuredReply uint32 = 8
)

// Option reply types.
const (
	repAck         uint32 = 1
	repServer      uint32 = 2
	repInfo        uint32 = 3
	repErrUnsup    uint32 = 1<<31 + 1
	repErrInvalid  uint32 = 1<<31 + 3
	repErrTLSReqd  uint32 = 1<<31 + 5
	repErrUnknown  uint32 = 1<<31 + 6
	repErrTooBig   uint32 = 1<<31 + 9
	infoExport     uint16 = 0
	infoName       uint16 = 1
	infoBlockSize  uint16 = 3
	infoExportLen         = 2 + 8 + 2
	infoBlockLen          = 2 + 4 + 4 + 4
	optHeaderLen          = 8 + 4 + 4
	optReplyHdrLen        = 8 + 4 + 4 + 4
)

// Transmission flags.
const (
	tflagHasFlags        uint16 = 1 << 0
	tflagReadOnly        uint16 = 1 << 1
	tflagSendFlush       uint16 = 1 << 2
	tflagSendFUA         uint16 = 1 << 3
	tflagSendTrim        uint16 = 1 << 5
	tflagSendWriteZeroes uint16 = 1 << 6
	tflagCanMultiConn    uint16 = 1 << 8
)

// Commands.
const (
	cmdRead        uint16 = 0
	cmdWrite       uint16 = 1
	cmdDisc        uint16 = 2
	cmdFlush       uint16 = 3
	cmdTrim        uint16 = 4
	cmdCache       uint16 = 5
	cmdWriteZeroes uint16 = 6
)

// Command flags.
const (
	cmdFlagFUA    uint16 = 1 << 0
	cmdFlagNoHole uint16 = 1 << 1
)

// Error values carried in replies.
const (
	errPerm  uint32 = 1
	errIO    uint32 = 5
	errInval uint32 = 22
	errNoSpc uint32 = 28
)

const (
	requestLen = 4 + 2 + 2 + 8 + 8 + 4
	replyLen   = 4 + 4 + 8
)

// Limits. maxRequest is what NBD_INFO_BLOCK_SIZE advertises as the maximum
// block size: READ and WRITE longer than it are refused with EINVAL (a
// WRITE's payload is read and dropped first, so the connection survives).
// maxOption bounds the data of one option; longer options are drained and
// refused with NBD_REP_ERR_TOO_BIG, never buffered.
const (
	maxRequestShift = 25
	maxRequest      = 1 << maxRequestShift // 32 MiB
	maxOption       = 64 << 10
	minBlock        = 1
	preferredBlock  = 4096
	maxExportName   = 4096
	inflightBudget  = 64 << 20  // bytes of requests in flight per connection
	minRequestCost  = 256 << 10 // so at most 256 requests are in flight

	// defaultAuthTimeout is Export.AuthTimeout's default: how long a
	// client of a TLS-required server has from connecting to passing
	// Authorize.
	defaultAuthTimeout = 30 * time.Second
)
