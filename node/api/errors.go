package api

import (
	"errors"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// MaxPolicy bounds a policy file sent to the admin API.
const MaxPolicy = 1 << 20

// API error codes.
const (
	CodeBadRequest = "bad_request"
	CodeNotFound   = "not_found"
	CodeNoQuorum   = "no_quorum"
	CodeNeedForce  = "need_force"
	CodeHasLeader  = "has_leader"
	CodeInternal   = "internal"
	CodeForbidden  = "forbidden"
)

type ErrorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// ErrBadPolicy wraps a policy that does not parse or validate.
var ErrBadPolicy = errors.New("invalid cluster policy")

// APIError is an error the admin API returned.
type APIError struct {
	Status int
	Code   string
	Msg    string
}

func (e *APIError) Error() string { return e.Msg }

// Is maps API codes to the node's sentinels.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrNoQuorum:
		return e.Code == CodeNoQuorum
	case ErrNeedForce:
		return e.Code == CodeNeedForce
	case ErrHasLeader:
		return e.Code == CodeHasLeader
	case ErrBadPolicy, catalog.ErrBadCommand:
		return e.Code == CodeBadRequest
	case ErrForbidden:
		return e.Code == CodeForbidden || e.Code == CodeUnauthenticated || e.Code == CodeRevoked
	case blockstore.ErrNotFound, ErrNoStore:
		return e.Code == CodeNotFound
	case ErrUnsafe:
		return e.Code == CodeUnsafe
	}
	return false
}

// IsBadRequest reports whether err is the API refusing the input.
func IsBadRequest(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Code == CodeBadRequest
}

// ErrForbidden reports an admin call refused for who made it: no
// certificate, a revoked one, or a role too low.
var ErrForbidden = errors.New("admin API refused the caller")

// ErrUnreachable reports an admin API that does not answer.
var ErrUnreachable = errors.New("admin API unreachable")

// ErrNoQuorum reports a write that found no leader in time: this side of
// the cluster cannot reach a majority of the voters and is read-only.
var ErrNoQuorum = errors.New("no raft leader reachable: this part of the cluster has no quorum and is read-only")

// ErrNeedForce reports a forced recovery asked for without --force.
var ErrNeedForce = errors.New("forced raft recovery needs --force")

// ErrHasLeader reports a forced recovery refused because a leader exists.
var ErrHasLeader = errors.New("the cluster has a leader: forced recovery is only for a majority lost for good")

// API error codes for authentication and authorization.
const (
	CodeUnauthenticated = "unauthenticated"
	CodeRevoked         = "revoked"
)

const CodeNotHolder = "not_holder"

// ErrNoStore reports a request for data on a witness.
var ErrNoStore = errors.New("this node is a witness and holds no data")
