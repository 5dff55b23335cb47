package api

import "github.com/lifeboat-dr/lifeboat/node/catalog"

// Verification is a point's check run (issue 16, verified points).
type Verification = catalog.Verification

// VerifyFailed is the result of a verification or check that failed.
const VerifyFailed = catalog.VerifyFailed
