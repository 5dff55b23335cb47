package main

import (
	"strings"

	"github.com/lifeboat-dr/lifeboat/node/api"
)

// verifiedText says how a point's verification went, one line.
func verifiedText(v *api.Verification) string {
	var parts []string
	for _, c := range v.Checks {
		s := c.Name + " " + c.Result
		if c.Result == api.VerifyFailed {
			s += ": " + strings.ReplaceAll(c.Detail, "\n", " ")
		}
		parts = append(parts, s)
	}
	res := v.Result
	if res == api.VerifyFailed {
		res = "FAILED"
	}
	return res + " (" + strings.Join(parts, "; ") + ")"
}
