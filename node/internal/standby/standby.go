package standby

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/internal/durable"
	"github.com/lifeboat-dr/lifeboat/internal/flock"
)

// Sentinel errors callers branch on.
var (
	// ErrOlder means Apply was given a point that is not newer than the
	// one the images are at.
	ErrOlder = errors.New("point is not newer than the standby's")
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("standby set closed")
	// ErrCorrupt marks damaged state or journal files.
	ErrCorrupt = errors.New("corrupt standby file")
	// ErrLocked means another process has the directory open.
	ErrLocked = errors.New("standby directory is in use by another process")
)

// CorruptError reports a damaged or unexpected file that Open refuses to
// repair. Hint tells the operator what to do.
type CorruptError struct {
	Path   string
	Offset int64 // -1 when not about one place in the file
	Err    error
	Hint   string
}

func (e *CorruptError) Error() string {
	s := e.Path
	if e.Offset >= 0 {
		s += fmt.Sprintf("@%d", e.Offset)
	}
	return s + ": " + e.Err.Error()
}

func (e *CorruptError) Unwrap() error { return e.Err }

// Source is what Apply reads points from. *blockstore.Store satisfies it;
// it must be safe for concurrent use (Get is called from several
// goroutines).
type Source interface {
	// Diff calls fn for every block whose ID differs between a and b, in
	// block order.
	Diff(ctx context.Context, a, b blockstore.VolumeState, fn func(blockstore.Change) error) error
	// Get returns the plaintext of a block (never ZeroID).
	Get(ctx context.Context, id blockstore.ID) ([]byte, error)
	// Restore writes a volume state to w; holes are skipped unless
	// o.WriteZeros.
	Restore(ctx context.Context, v blockstore.VolumeState, w io.WriterAt, o blockstore.RestoreOptions) error
}

var _ Source = (*blockstore.Store)(nil)

// Options configure a Set. The zero value gives the defaults.
type Options struct {
	// Logger receives recovery messages; nil means slog.Default().
	Logger *slog.Logger
}

// Stats describe what an Apply did.
type Stats struct {
	// Volumes is the number of images changed, created or removed.
	Volumes int
	// Blocks is the number of blocks written or zeroed, including the
	// non-zero blocks of images written whole.
	Blocks int64
	// Bytes is the number of data bytes written to images.
	Bytes int64
	// Journal is the size of the journal in bytes.
	Journal int64
	// Duration is the wall-clock time Apply took.
	Duration time.Duration
}

// Set is the standby images of one service in one directory, all at one
// point. Apply and Close serialize; Point and Path are safe for concurrent
// use with them. One process at a time may have a directory open (flock).
type Set struct {
	dir  string
	log  *slog.Logger
	lock *flock.Lock
	// hook, when set (by tests), is called at each step of an update; an
	// error it returns fails the update there.
	hook func(step string) error

	mu      sync.Mutex // serializes Apply and Close
	pending *journal   // a committed journal whose replay failed
	closed  bool

	smu  sync.RWMutex
	cur  blockstore.Point
	have bool // cur is valid and the images are at it
}

const lockName = "lock"

// Open opens (creating if needed) the standby directory dir and brings it
// to a consistent state: a journal with a valid commit record is replayed
// (finishing an Apply interrupted by a crash), one without is discarded,
// and temporary files are removed. It refuses, with a *CorruptError naming
// the file, a damaged state or committed journal, image files the state
// does not list, and listed images that are missing or have the wrong size.
func Open(dir string, o Options) (*Set, error) {
	return open(dir, o, nil)
}

func open(dir string, o Options, hook func(string) error) (*Set, error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	if err := durable.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open standby: %w", err)
	}
	lock, err := flock.TryLock(filepath.Join(dir, lockName))
	if errors.Is(err, flock.ErrLocked) {
		return nil, fmt.Errorf("open standby %s: %w", dir, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open standby: %w", err)
	}
	s := &Set{dir: dir, log: log, lock: lock, hook: hook}
	if err := s.recover(); err != nil {
		lock.Unlock()
		return nil, err
	}
	return s, nil
}

// recover brings the directory to a consistent state (see Open).
func (s *Set) recover() error {
	cur, have, err := readState(s.dir)
	if err != nil {
		return err
	}
	s.cur, s.have = cur, have
	jpath := filepath.Join(s.dir, journalName)
	j, err := loadJournal(jpath)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case errors.Is(err, errUncommitted):
		s.log.Warn("discarding uncommitted standby journal left by a crash", "path", jpath)
		if err := os.Remove(jpath); err != nil {
			return fmt.Errorf("open standby: %w", err)
		}
	case err != nil:
		return err
	case have && j.target.ID == cur.ID:
		// The state was written, the journal not yet removed.
		if err := os.Remove(jpath); err != nil {
			return fmt.Errorf("open standby: %w", err)
		}
	case j.base == "" && !have || have && j.base == cur.ID:
		s.log.Info("finishing standby update interrupted by a crash", "service", j.target.Group, "point", j.target.ID)
		if err := s.finish(j); err != nil {
			return fmt.Errorf("open standby: finish point %s: %w", j.target.ID, err)
		}
	default:
		at := "no point"
		if have {
			at = "point " + cur.ID
		}
		return &CorruptError{Path: jpath, Offset: -1, Hint: journalHint,
			Err: fmt.Errorf("%w: journal goes from point %q to %s, but the state is at %s", ErrCorrupt, j.base, j.target.ID, at)}
	}
	return s.check()
}

// check removes temporary files and checks that the directory holds
// exactly the state's images, each of its volume's size.
func (s *Set) check() error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("open standby: %w", err)
	}
	want := map[string]int64{}
	if s.have {
		for _, v := range s.cur.Volumes {
			f, _ := fileName(v.Name)
			want[f] = v.Size
		}
	}
	removed := false
	for _, e := range entries {
		name, path := e.Name(), filepath.Join(s.dir, e.Name())
		switch {
		case strings.HasSuffix(name, imageExt+newExt) || name == stateName+".tmp":
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("open standby: remove temporary file: %w", err)
			}
			removed = true
		case strings.HasSuffix(name, imageExt):
			size, ok := want[name]
			if !ok {
				return &CorruptError{Path: path, Offset: -1, Err: errors.New("image file that the standby state does not list"),
					Hint: "move the file out of the standby directory"}
			}
			fi, err := e.Info()
			if err != nil {
				return fmt.Errorf("open standby: %w", err)
			}
			if !fi.Mode().IsRegular() || fi.Size() != size {
				return &CorruptError{Path: path, Offset: -1, Err: fmt.Errorf("%w: image is %d bytes (%s), the state says %d", ErrCorrupt, fi.Size(), fi.Mode().Type(), size),
					Hint: stateHint}
			}
			delete(want, name)
		}
	}
	for name := range want {
		return &CorruptError{Path: filepath.Join(s.dir, name), Offset: -1, Err: fmt.Errorf("%w: image listed in the state is missing", ErrCorrupt), Hint: stateHint}
	}
	if removed {
		return durable.SyncDir(s.dir)
	}
	return nil
}

// Close releases the directory. It does not stop an Apply in progress; it
// waits for it.
func (s *Set) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.lock.Unlock()
}

// Point returns the point every image is at; ok is false before the first
// Apply, and while an interrupted Apply has left the images between two
// points (a later Apply, or Open, finishes it).
func (s *Set) Point() (p blockstore.Point, ok bool) {
	s.smu.RLock()
	defer s.smu.RUnlock()
	if !s.have {
		return blockstore.Point{}, false
	}
	p = s.cur
	p.Volumes = slices.Clone(p.Volumes)
	return p, true
}

// Path returns the image path of a volume (its full name, SERVICE/VOLUME),
// whether or not the image exists yet; "" for a name that makes no image
// file name.
func (s *Set) Path(volume string) string {
	f, err := fileName(volume)
	if err != nil {
		return ""
	}
	return filepath.Join(s.dir, f)
}

func (s *Set) step(name string) error {
	if s.hook != nil {
		return s.hook(name)
	}
	return nil
}

func (s *Set) setPoint(p blockstore.Point, have bool) {
	s.smu.Lock()
	s.cur, s.have = p, have
	s.smu.Unlock()
}
