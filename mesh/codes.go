package mesh

import (
	"errors"
	"fmt"
)

// ErrCode is an error code on the wire: in the answer to a stream header,
// in error frames and in QUIC closes by this package. doc.go has the
// table; codes is its one copy in code.
type ErrCode uint16

// The error codes. Values are part of the wire format: never renumber.
const (
	CodeOK          ErrCode = 0
	CodeBadRequest  ErrCode = 1
	CodeNotFound    ErrCode = 2
	CodeForbidden   ErrCode = 3
	CodeNotLeader   ErrCode = 4
	CodeUnavailable ErrCode = 5
	CodeInternal    ErrCode = 6
	CodeFenced      ErrCode = 7
	CodeHeld        ErrCode = 8
	CodeWrongNode   ErrCode = 9
	CodeNoSpace     ErrCode = 10
)

// Sentinels the codes stand for; a *RemoteError matches its code's with
// errors.Is. ErrRefused, ErrUnreachable and ErrNotLeader are in errors.go.
var (
	// ErrBadRequest is CodeBadRequest: the peer could not parse or does
	// not accept the request as sent. Permanent.
	ErrBadRequest = errors.New("mesh: bad request")
	// ErrNotFound is CodeNotFound: what was asked for is not there.
	// Permanent until the policy or the peer's data changes.
	ErrNotFound = errors.New("mesh: not found")
	// ErrInternal is CodeInternal: a local failure or bug on the answering
	// side. Retryable.
	ErrInternal = errors.New("mesh: internal error at the peer")
	// ErrFenced is CodeFenced: the service failed over to another site
	// (a higher epoch) and this side takes no more writes for it.
	// Permanent: only a failback changes it.
	ErrFenced = errors.New("mesh: fenced: the service failed over to another site")
	// ErrHeld is CodeHeld: the service's writes are held while it is
	// stopped for a planned failover. Retryable: the hold ends with the
	// failover (then the writes are fenced) or after its time.
	ErrHeld = errors.New("mesh: held for a planned failover")
	// ErrWrongNode is CodeWrongNode: the peer never serves this request
	// (a witness holds no data; a node of another site does not run the
	// service). Permanent: point the caller at another node.
	ErrWrongNode = errors.New("mesh: wrong node for this request")
	// ErrNoSpace is CodeNoSpace: the peer's disk is nearly full and it
	// takes no new points of this service for now (issue 15 item 5).
	// Retryable with back-off: the peer resumes by itself once space is
	// freed; the sender keeps what it has (an agent its spool).
	ErrNoSpace = errors.New("mesh: no space: the peer's disk is nearly full")
)

// codeInfo is one row of the table in doc.go.
type codeInfo struct {
	name      string
	sentinel  error
	permanent bool
}

var codes = map[ErrCode]codeInfo{
	CodeOK:          {"ok", nil, false},
	CodeBadRequest:  {"bad request", ErrBadRequest, true},
	CodeNotFound:    {"not found", ErrNotFound, true},
	CodeForbidden:   {"forbidden", ErrRefused, true},
	CodeNotLeader:   {"not leader", ErrNotLeader, false},
	CodeUnavailable: {"unavailable", ErrUnreachable, false},
	CodeInternal:    {"internal", ErrInternal, false},
	CodeFenced:      {"fenced", ErrFenced, true},
	CodeHeld:        {"held", ErrHeld, false},
	CodeWrongNode:   {"wrong node", ErrWrongNode, true},
	CodeNoSpace:     {"no space", ErrNoSpace, false},
}

// String returns the code's name.
func (c ErrCode) String() string {
	if i, ok := codes[c]; ok {
		return i.name
	}
	return fmt.Sprintf("code(%d)", uint16(c))
}

// Known reports whether c is in the table.
func (c ErrCode) Known() bool {
	_, ok := codes[c]
	return ok
}

// Permanent reports whether a refusal with code c is not worth retrying
// as is: bad request, not found, forbidden, fenced, wrong node, and any
// code this version does not know (nodes of one version talk only to each
// other, so an unknown code is a bug, not a hint to retry).
func (c ErrCode) Permanent() bool {
	if i, ok := codes[c]; ok {
		return i.permanent
	}
	return true
}

// Sentinel returns the sentinel error c stands for (nil for CodeOK and
// unknown codes).
func (c ErrCode) Sentinel() error { return codes[c].sentinel }

// RemoteError is an error the peer reported in an error frame (or a stream
// answer). errors.Is matches the sentinel of its code (ErrRefused for
// CodeForbidden, ErrUnreachable for CodeUnavailable, ErrFenced for
// CodeFenced, ...). Message is for operators; programs branch on Code.
type RemoteError struct {
	Code    ErrCode
	Message string
}

func (e *RemoteError) Error() string {
	if e.Message == "" {
		return "remote: " + e.Code.String()
	}
	return "remote: " + e.Code.String() + ": " + e.Message
}

// Is lets errors.Is match the sentinel that the code stands for.
func (e *RemoteError) Is(target error) bool {
	s := e.Code.Sentinel()
	return s != nil && s == target
}

// CodeOf returns the code of the *RemoteError in err's chain, and false
// when there is none (a local or network error).
func CodeOf(err error) (ErrCode, bool) {
	var re *RemoteError
	if errors.As(err, &re) {
		return re.Code, true
	}
	return 0, false
}
