package blockstore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/cockroachdb/pebble/v2"
)

// Damage to the index database (a Pebble table whose checksum fails, a
// manifest that does not parse) surfaces as a CorruptError naming the file,
// never as a panic: Pebble reports it to the event listener set up here and
// returns an error that index.err classifies.

// indexHint is the way out of a damaged index.
func indexHint(dir string) string {
	return fmt.Sprintf("the index can be rebuilt from the packs: `lifeboat store rebuild-index --store %s` "+
		"(stop the node using the store first); then run `lifeboat verify --store %s`", dir, dir)
}

// err wraps an error of the index database: corruption becomes a
// CorruptError naming the damaged file (when Pebble said which) and the way
// out; anything else is wrapped with what was being done.
func (x *index) err(what string, err error) error {
	if err == nil {
		return nil
	}
	if !pebble.IsCorruptionError(err) {
		return fmt.Errorf("%s: %w", what, err)
	}
	path := filepath.Join(x.dir, indexDir)
	if p, ok := x.corruptFile.Load().(string); ok && p != "" {
		path = p
	}
	return &CorruptError{Path: path, Offset: -1, Err: fmt.Errorf("%w: %s: index database: %s", errCorrupt, what, shortPebbleErr(err)), Hint: indexHint(x.dir)}
}

// openIndexErr classifies an error of pebble.Open.
func openIndexErr(dir string, err error) error {
	path := filepath.Join(dir, indexDir)
	if _, serr := os.Stat(path); errors.Is(serr, os.ErrNotExist) {
		return &CorruptError{Path: path, Offset: -1, Err: fmt.Errorf("%w: the index directory is missing", errCorrupt), Hint: indexHint(dir)}
	}
	// Errors of the file system (permissions, I/O) are what they are; any
	// other refusal of Pebble's to open an index that is there (a bad
	// checksum, a manifest or options file that does not parse) is damage.
	var pe *fs.PathError
	var errno syscall.Errno
	if !pebble.IsCorruptionError(err) && (errors.As(err, &pe) || errors.As(err, &errno)) {
		return fmt.Errorf("open store index %s: %w", path, err)
	}
	return &CorruptError{Path: path, Offset: -1, Err: fmt.Errorf("%w: open index database: %s", errCorrupt, shortPebbleErr(err)), Hint: indexHint(dir)}
}

// shortPebbleErr is the first line of a Pebble error, without the key bounds
// (binary keys make unreadable messages).
func shortPebbleErr(err error) string {
	msg := err.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	if i := strings.Index(msg, "; bounds: "); i >= 0 {
		if j := strings.Index(msg[i:], "; details: "); j >= 0 {
			msg = msg[:i] + "; " + msg[i+j+len("; details: "):]
		}
	}
	if len(msg) > 300 {
		msg = msg[:300] + "..."
	}
	return msg
}

// listener records the file Pebble found damaged. Pebble's default would
// call the logger's Fatalf, ending the process.
func (x *index) listener() *pebble.EventListener {
	return &pebble.EventListener{
		DataCorruption: func(info pebble.DataCorruptionInfo) {
			x.corruptFile.Store(info.Path)
			x.log.Error("index database damaged", "file", info.Path, "err", shortPebbleErr(info.Details))
		},
		BackgroundError: func(err error) {
			x.log.Error("index database error", "err", shortPebbleErr(err))
		},
	}
}
