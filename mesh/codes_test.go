package mesh

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestCodeTable checks every row of the table in doc.go: a unique name, the
// sentinel errors.Is matches, and whether the code is permanent.
func TestCodeTable(t *testing.T) {
	t.Parallel()
	cases := []struct {
		code      ErrCode
		name      string
		sentinel  error
		permanent bool
	}{
		{CodeOK, "ok", nil, false},
		{CodeBadRequest, "bad request", ErrBadRequest, true},
		{CodeNotFound, "not found", ErrNotFound, true},
		{CodeForbidden, "forbidden", ErrRefused, true},
		{CodeNotLeader, "not leader", ErrNotLeader, false},
		{CodeUnavailable, "unavailable", ErrUnreachable, false},
		{CodeInternal, "internal", ErrInternal, false},
		{CodeFenced, "fenced", ErrFenced, true},
		{CodeHeld, "held", ErrHeld, false},
		{CodeWrongNode, "wrong node", ErrWrongNode, true},
		{CodeNoSpace, "no space", ErrNoSpace, false},
	}
	if len(cases) != len(codes) {
		t.Fatalf("the test lists %d codes, the table %d", len(cases), len(codes))
	}
	sentinels := []error{ErrBadRequest, ErrNotFound, ErrRefused, ErrNotLeader, ErrUnreachable, ErrInternal, ErrFenced, ErrHeld, ErrWrongNode, ErrNoSpace}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.code.String(); got != tc.name {
				t.Errorf("String = %q, want %q", got, tc.name)
			}
			if got := tc.code.Permanent(); got != tc.permanent {
				t.Errorf("Permanent = %v, want %v", got, tc.permanent)
			}
			// Wrapped, as senders return it.
			err := fmt.Errorf("replicate to n2: %w", &RemoteError{Code: tc.code, Message: "m"})
			for _, s := range sentinels {
				if got, want := errors.Is(err, s), s == tc.sentinel; got != want {
					t.Errorf("errors.Is(%v) = %v, want %v", s, got, want)
				}
			}
			if tc.code != CodeOK && IsRetryable(err) == tc.permanent {
				t.Errorf("IsRetryable = %v, want %v", IsRetryable(err), !tc.permanent)
			}
			if c, ok := CodeOf(err); !ok || c != tc.code {
				t.Errorf("CodeOf = %v, %v", c, ok)
			}
		})
	}
	unknown := ErrCode(4711)
	if unknown.Known() || !unknown.Permanent() || !strings.HasPrefix(unknown.String(), "code(") || IsRetryable(&RemoteError{Code: unknown}) {
		t.Errorf("an unknown code must be permanent and named code(n)")
	}
}

func TestIsRetryable(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		err  error
		want bool
	}{
		"nil":                  {nil, false},
		"unreachable":          {fmt.Errorf("dial: %w", ErrUnreachable), true},
		"refused handshake":    {fmt.Errorf("dial: %w: x509", ErrRefused), false},
		"closed endpoint":      {ErrClosed, false},
		"our cancellation":     {fmt.Errorf("dial: %w", context.Canceled), false},
		"deadline":             {fmt.Errorf("dial: %w: %w", ErrUnreachable, context.DeadlineExceeded), true},
		"stream ended":         {errors.New("read: EOF"), true},
		"held":                 {&RemoteError{Code: CodeHeld}, true},
		"fenced":               {&RemoteError{Code: CodeFenced}, false},
		"refusal beats reason": {fmt.Errorf("%w: %w", ErrUnreachable, &RemoteError{Code: CodeForbidden}), false},
	}
	for name, tc := range cases {
		if got := IsRetryable(tc.err); got != tc.want {
			t.Errorf("%s: IsRetryable(%v) = %v, want %v", name, tc.err, got, tc.want)
		}
	}
}
