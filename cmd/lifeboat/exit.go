package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/internal/flock"
	"github.com/lifeboat-dr/lifeboat/node"
)

// Exit codes. This is the only place that decides them; the README copies
// this table.
//
//	code  name         meaning
//	----  -----------  ---------------------------------------------------------
//	   0  ok           the command did what was asked
//	   1  error        anything not listed below (I/O error, refused overwrite, ...)
//	   2  usage        unknown command or flag, bad flag value, missing argument
//	   3  damage       verify found damage, or a command met corrupt store data
//	   4  not found    no store at --store, or no such volume or point
//	   5  locked       another process has the store open (or is restoring to --out)
//	   6  unavailable  no node answers at --admin, or the cluster has no quorum
//	   7  refused      the admin API refused the caller: no certificate, a revoked
//	                   one, or a role too low for what was asked
//	   8  unsafe       refused because it would break what is in use: an image a
//	                   service runs on or a running drill (images rm), or a node
//	                   leave that loses the quorum or the only copy of points
//	                   (node leave without --force); nothing changed
//	 130  interrupted  Ctrl-C or SIGTERM stopped the command
const (
	exitOK          = 0
	exitError       = 1
	exitUsage       = 2
	exitDamage      = 3
	exitNotFound    = 4
	exitLocked      = 5
	exitUnavailable = 6
	exitRefused     = 7
	exitUnsafe      = 8
	exitInterrupted = 130
)

// usageError marks a mistake in how lifeboat was called.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// usagef returns a usageError.
func usagef(format string, a ...any) error {
	return &usageError{fmt.Errorf(format, a...)}
}

// damageError reports that verify found damage; the damage itself has been
// printed already.
type damageError struct{ n int }

func (e *damageError) Error() string {
	if e.n == 1 {
		return "verify found 1 problem"
	}
	return fmt.Sprintf("verify found %d problems", e.n)
}

// hintError attaches what the operator should try next to an error.
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return e.err.Error() }
func (e *hintError) Unwrap() error { return e.err }

// exitCode maps err to the exit code table above. ctx is the command's
// context: a cancellation counts as an interruption only when it ended.
func exitCode(ctx context.Context, err error) int {
	var (
		ue  *usageError
		de  *damageError
		ce  *blockstore.CorruptError
		rse *node.RaftStateError
	)
	switch {
	case err == nil:
		return exitOK
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		return exitInterrupted
	case errors.As(err, &ue):
		return exitUsage
	case errors.Is(err, blockstore.ErrLocked), errors.Is(err, flock.ErrLocked):
		return exitLocked
	case errors.Is(err, node.ErrForbidden):
		return exitRefused
	case errors.Is(err, node.ErrUnsafe):
		return exitUnsafe
	case errors.Is(err, node.ErrNoQuorum), errors.Is(err, node.ErrUnreachable):
		return exitUnavailable
	case errors.As(err, &de), errors.As(err, &ce), errors.As(err, &rse):
		return exitDamage
	case errors.Is(err, blockstore.ErrNotFound), errors.Is(err, blockstore.ErrNotStore):
		return exitNotFound
	default:
		return exitError
	}
}

// errorHint returns what the operator should try about err, or "".
func errorHint(err error) string {
	var (
		he  *hintError
		ce  *blockstore.CorruptError
		rse *node.RaftStateError
	)
	switch {
	case errors.As(err, &he):
		return he.hint
	case errors.As(err, &ce) && ce.Hint != "":
		return ce.Hint
	case errors.Is(err, blockstore.ErrNotStore):
		return "check the --store path, or create a store with `lifeboat store init --store DIR`"
	case errors.Is(err, blockstore.ErrLocked):
		return "wait for the other lifeboat process using this store to finish"
	case errors.As(err, &rse):
		return rse.Hint()
	case errors.Is(err, node.ErrForbidden):
		return "the certificate given with --tls-dir (or LIFEBOAT_TLS_DIR) lacks the role this needs, or is revoked: ask an admin for one with `lifeboat ca issue --operator NAME --role ROLE`"
	case errors.Is(err, node.ErrUnreachable):
		return "check that a node runs there (`lifeboat node run`) and that --admin names its admin address"
	case errors.Is(err, node.ErrNoQuorum):
		return "this side of the cluster cannot reach a majority of the voters; `lifeboat status` shows which are gone. If they are lost for good: `lifeboat raft recover --force`"
	case errors.Is(err, node.ErrNeedForce):
		return "add --force once you are sure the lost voters will not come back"
	case errors.Is(err, node.ErrUnsafe):
		return "`lifeboat images list` says why an image is in use; `lifeboat status` shows the voters and holders a leave would lose (node leave --force overrides, at that cost)"
	}
	return ""
}

// printError writes err the way every command reports failure:
//
//	lifeboat: <error>
//	Try: <hint>
//
// For usage errors, helpCmd names the command whose --help to read.
func printError(ctx context.Context, w io.Writer, err error, helpCmd string) {
	if exitCode(ctx, err) == exitInterrupted {
		fmt.Fprintln(w, "lifeboat: interrupted")
		return
	}
	fmt.Fprintf(w, "lifeboat: %v\n", err)
	if h := errorHint(err); h != "" {
		fmt.Fprintf(w, "Try: %s\n", h)
	}
	var ue *usageError
	if errors.As(err, &ue) && helpCmd != "" {
		fmt.Fprintf(w, "Run '%s --help' for usage.\n", helpCmd)
	}
}
