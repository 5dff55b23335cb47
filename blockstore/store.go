package blockstore

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/lifeboat-dr/lifeboat/internal/durable"
	"github.com/lifeboat-dr/lifeboat/internal/flock"
)

// Store file and directory names inside a store directory.
const (
	configName = "lifeboat-store.json"
	keyName    = "key"
	lockName   = "lock"
	indexDir   = "index"
	packsDir   = "packs"

	storeFormat  = "lifeboat-store"
	storeVersion = 1
)

// Sentinel errors callers branch on.
var (
	// ErrNotStore means the directory holds no lifeboat store.
	ErrNotStore = errors.New("not a lifeboat store")
	// ErrLocked means another process has the store open.
	ErrLocked = errors.New("store is in use by another process")
	// ErrNotFound means a block, page, point or volume does not exist.
	ErrNotFound = errors.New("not found")
	// ErrClosed means the store was closed.
	ErrClosed = errors.New("store is closed")
)

// CorruptError reports damaged on-disk data. Hint tells the operator what to do.
type CorruptError struct {
	Path   string
	Offset int64
	Block  ID
	Hint   string
	Err    error
}

func (e *CorruptError) Error() string {
	s := e.Path
	if e.Offset >= 0 {
		s += fmt.Sprintf("@%d", e.Offset)
	}
	if !e.Block.IsZero() {
		s += ": block " + e.Block.String()
	}
	return s + ": " + e.Err.Error()
}

func (e *CorruptError) Unwrap() error { return e.Err }

// Options tune a store. The zero value is the default.
type Options struct {
	// Logger receives progress and recovery messages; nil means slog.Default().
	Logger *slog.Logger
	// CacheSize is the index cache in bytes; 0 means 256 MiB.
	CacheSize int64
	// FlushEntries is how many new blocks are buffered before the packs are
	// synced and the index written; 0 means 65536. It bounds ingest memory.
	FlushEntries int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Reserve is the free space pack writes leave for the index; 0 means a
	// tenth of the file system, between 4 and 64 MiB (see space.go).
	Reserve int64
	// KEK unwraps the keys of an encrypted store; opening one without it
	// fails with ErrEncrypted. Ignored for a store that is not encrypted.
	KEK *KEK
	// LockFor, if set, is called by CommitPoint for every new point (with
	// its ID set); a non-zero result locks the point until then, stored
	// in the same synced batch as the point (lock.go).
	LockFor func(p Point) time.Time
	// Fetch, if set, gets a copy of a block the store cannot serve (a
	// damaged record, a missing block) from elsewhere, another site say.
	// Every read path but Verify and Scrub then checks the copy's hash,
	// repairs the store with it (Repair) and serves it (repair.go).
	Fetch func(ctx context.Context, id ID) ([]byte, error)
	// OnDamage, if set, is called by a read that met a bad or missing
	// block, after the repair (repaired) or when there was none (the read
	// then fails). It runs on the reading goroutine: keep it short.
	OnDamage func(b BadBlock, repaired bool)
}

// InitOptions configure a new store.
type InitOptions struct {
	// Key is the dedup key. Nil means a new random key.
	Key *Key
	// KEK, when set, makes the store encrypted at rest: a new random data
	// key seals every frame payload and index value, and the keys file
	// holds it and the dedup key sealed under KEK (crypt.go).
	KEK *KEK
}

// Store is a deduplicating, compressing block store with point-in-time
// volume maps. It is safe for concurrent use by one process; a lock file keeps
// other processes out.
//
// Its parts: the index (indexdb.go), the frame codec (codec.go), the pack
// writer (writer.go), the pack read handles and block readers (reader.go),
// and the volume-map pages (blockmap.go).
type Store struct {
	dir   string
	h     *hasher
	idx   *index
	codec *frameCodec
	w     *packWriter
	packs *packReaders
	maps  *mapPages
	lock  *flock.Lock
	log   *slog.Logger
	now   func() time.Time

	// reserve is the free space pack writes leave for the index.
	reserve int64

	lockFor func(Point) time.Time

	// pts guards point deletion, pins and locks (pin.go).
	pts pointGuard
	// leases are the writers' leases (gc.go); roots the open images.
	leases leaseSet
	roots  imageRoots
	// gcSem admits one GC (or Verify) at a time; stop is closed by Close
	// to end a running GC.
	gcSem    chan struct{}
	stop     chan struct{}
	stopOnce sync.Once

	damage []error // found on open; reported by Verify

	// heal is the read path's repair (repair.go); scrub the state Scrub
	// keeps between slices (scrub.go).
	heal  *healer
	scrub scrubState
}

// storeConfig is the JSON file that marks a store directory.
type storeConfig struct {
	Format  string    `json:"format"`
	Version int       `json:"version"`
	Created time.Time `json:"created"`
}

// Init creates a new, empty store in dir, which must not exist or be empty.
func Init(dir string, o InitOptions) error {
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		if _, err := os.Stat(filepath.Join(dir, configName)); err == nil {
			return fmt.Errorf("init store %s: a store already exists there", dir)
		}
		return fmt.Errorf("init store %s: directory is not empty", dir)
	}
	key := o.Key
	if key == nil {
		k, err := NewKey()
		if err != nil {
			return err
		}
		key = &k
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("init store: %w", err)
	}
	if err := checkSpace(dir, 0, minInitFree, "init store "+dir); err != nil {
		return err
	}
	err := initStore(dir, *key, o.KEK)
	if err != nil {
		// Leave the directory as it was: empty.
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
	return err
}

func initStore(dir string, key Key, kek *KEK) error {
	if err := os.MkdirAll(filepath.Join(dir, packsDir), 0o700); err != nil {
		return fmt.Errorf("init store: %w", err)
	}
	name, keys := keyName, encodeKeyFile(key)
	if kek != nil {
		var dataKey [32]byte
		if _, err := rand.Read(dataKey[:]); err != nil {
			return fmt.Errorf("init store: data key: %w", err)
		}
		b, err := wrapKeys(*kek, dataKey, key, time.Now())
		if err != nil {
			return fmt.Errorf("init store: %w", err)
		}
		name, keys = keysName, b
	}
	if err := writeFileDurable(filepath.Join(dir, name), keys, 0o600); err != nil {
		return fmt.Errorf("init store: %w", err)
	}
	db, err := pebble.Open(filepath.Join(dir, indexDir), pebbleOptions(Options{}, false, nil))
	if err != nil {
		return fmt.Errorf("init store index: %w", err)
	}
	if err := db.Close(); err != nil {
		return fmt.Errorf("init store index: %w", err)
	}
	cfg, _ := json.MarshalIndent(storeConfig{Format: storeFormat, Version: storeVersion, Created: time.Now().UTC()}, "", "  ")
	// The config file is written last: its presence marks a complete store.
	if err := writeFileDurable(filepath.Join(dir, configName), append(cfg, '\n'), 0o600); err != nil {
		return fmt.Errorf("init store: %w", err)
	}
	return syncDir(dir)
}

func logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.Default()
	}
	return l
}

// Open opens the store in dir, recovering from any crash: pack tails past the
// last committed length are truncated, and packs that no index entry
// references (written but never committed) are removed.
func Open(dir string, o Options) (*Store, error) {
	lock, err := lockStore(dir)
	if err != nil {
		return nil, err
	}
	s, err := open(dir, o, lock)
	if err != nil {
		lock.Unlock()
		return nil, err
	}
	return s, nil
}

// lockStore checks that dir holds a store this lifeboat reads and takes its
// lock.
func lockStore(dir string) (*flock.Lock, error) {
	cfgBytes, err := os.ReadFile(filepath.Join(dir, configName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("open %s: %w (create one with `lifeboat store init --store %s`)", dir, ErrNotStore, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	var cfg storeConfig
	if err := json.Unmarshal(cfgBytes, &cfg); err != nil || cfg.Format != storeFormat {
		return nil, fmt.Errorf("open %s: %w: bad %s", dir, ErrNotStore, configName)
	}
	if cfg.Version != storeVersion {
		return nil, fmt.Errorf("open %s: store format version %d, this lifeboat reads version %d", dir, cfg.Version, storeVersion)
	}
	lock, err := flock.TryLock(filepath.Join(dir, lockName))
	if errors.Is(err, flock.ErrLocked) {
		return nil, fmt.Errorf("open %s: %w", dir, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	return lock, nil
}

func open(dir string, o Options, lock *flock.Lock) (*Store, error) {
	key, seal, err := openKeys(dir, o.KEK)
	if err != nil {
		return nil, err
	}
	h, err := newHasher(key)
	if err != nil {
		return nil, err
	}
	codec, err := newFrameCodec(seal, true)
	if err != nil {
		return nil, err
	}
	s := &Store{
		dir: dir, h: h, codec: codec, lock: lock,
		log: logger(o.Logger), now: o.Now, reserve: o.Reserve,
		packs:   newPackReaders(filepath.Join(dir, packsDir)),
		lockFor: o.LockFor,
		gcSem:   make(chan struct{}, 1),
		stop:    make(chan struct{}),
	}
	s.heal = &healer{s: s, fetch: o.Fetch, onDamage: o.OnDamage}
	s.pts.pins = map[string]int{}
	s.leases.init()
	s.roots.init()
	if s.reserve == 0 {
		s.reserve = defaultReserve(dir)
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.idx = &index{dir: dir, seal: seal, log: s.log}
	s.w = newPackWriter(dir, s.idx, codec, o, s.reserve)
	s.maps = newMapPages(s)
	// Repair the packs with the index opened read-only first: truncating
	// a tail needs no space, and it may free the space that opening the
	// index for writing (which flushes its log) needs.
	path := filepath.Join(dir, indexDir)
	if err := s.idx.open(path, o, true, true); err != nil {
		return nil, openIndexErr(dir, err)
	}
	s.damage, err = s.w.recover()
	s.idx.db.Close()
	if err != nil {
		return nil, err
	}
	if err := checkSpace(dir, 0, s.reserve/2, "open store "+dir); err != nil {
		return nil, err
	}
	if err := s.idx.open(path, o, true, false); err != nil {
		return nil, openIndexErr(dir, err)
	}
	return s, nil
}

// openKeys returns the dedup key of the store in dir and, for an encrypted
// store, its sealer.
func openKeys(dir string, kek *KEK) (Key, *sealer, error) {
	enc, fp, err := Encrypted(dir)
	if err != nil {
		return Key{}, nil, err
	}
	if !enc {
		key, err := ReadKeyFile(filepath.Join(dir, keyName))
		if err != nil {
			return key, nil, fmt.Errorf("open store: %w", err)
		}
		return key, nil, nil
	}
	if kek == nil {
		return Key{}, nil, fmt.Errorf("open %s: %w under key-encryption key %s: give that key (a node's [encryption] kek_file or kek_command, or --kek-file)", dir, ErrEncrypted, fp)
	}
	dataKey, key, err := unwrapKeys(dir, *kek)
	if err != nil {
		return Key{}, nil, fmt.Errorf("open store: %w", err)
	}
	seal, err := newSealer(dataKey)
	return key, seal, err
}

// Encrypted reports whether the store is encrypted at rest.
func (s *Store) Encrypted() bool { return s.codec.seal != nil }

// DedupKey returns the key block IDs are computed under.
func (s *Store) DedupKey() Key { return s.h.key }

// Dir returns the store directory.
func (s *Store) Dir() string { return s.dir }

// Close flushes buffered blocks and closes the store.
func (s *Store) Close() error {
	// End a running GC (or Verify) and wait for it.
	s.stopOnce.Do(func() { close(s.stop) })
	s.gcSem <- struct{}{}
	defer func() { <-s.gcSem }()
	first, err := s.w.close()
	if !first {
		return nil
	}
	s.packs.close()
	// Turn the index's log into a table: smaller on disk than the log, and
	// nothing to replay at the next open. Only with room to spare.
	if err == nil && checkSpace(s.dir, 32<<20, s.reserve/2, "flush index") == nil {
		err = s.idx.db.Flush()
	}
	err = errors.Join(err, s.idx.db.Close())
	s.codec.close()
	s.lock.Unlock()
	return err
}

// Put stores blocks and returns their IDs, in order. Blocks already in the
// store are not written again; all-zero blocks get ZeroID and are not stored.
// A block must be 1 byte to MaxBlockSize long. Put is safe for concurrent use;
// blocks become durable at the next Flush or CommitPoint.
func (s *Store) Put(ctx context.Context, blocks [][]byte) ([]ID, error) {
	ids := make([]ID, len(blocks))
	for i, b := range blocks {
		if len(b) == 0 || len(b) > MaxBlockSize {
			return nil, fmt.Errorf("put block %d: length %d, want 1..%d", i, len(b), MaxBlockSize)
		}
		if !isZero(b) {
			ids[i] = s.h.sum(b)
		}
	}
	return ids, s.w.putMissing(ctx, blocks, ids)
}

// Flush makes every block put so far durable.
func (s *Store) Flush(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.w.flush()
}

// Missing returns the IDs of ids that the store does not hold, in order,
// without duplicates. ZeroID is never missing.
func (s *Store) Missing(ctx context.Context, ids []ID) ([]ID, error) {
	var out []ID
	seen := map[ID]bool{}
	for _, id := range ids {
		if id.IsZero() || seen[id] {
			continue
		}
		seen[id] = true
		ok, err := s.w.has(ref{kindBlock, id})
		if err != nil {
			return nil, err
		}
		if !ok {
			out = append(out, id)
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Has reports whether the store holds the block id.
func (s *Store) Has(ctx context.Context, id ID) (bool, error) {
	if id.IsZero() {
		return true, nil
	}
	return s.w.has(ref{kindBlock, id})
}

// Get returns the plaintext of block id. ZeroID has no length of its own and
// is an error here; callers handle holes.
func (s *Store) Get(ctx context.Context, id ID) ([]byte, error) {
	r := blockReader{s: s, ctx: ctx}
	b, err := r.get(ref{kindBlock, id})
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), b...), nil
}

// writeFileDurable and syncDir are internal/durable's.
func writeFileDurable(path string, data []byte, perm os.FileMode) error {
	return durable.WriteFile(path, data, perm)
}

func syncDir(dir string) error { return durable.SyncDir(dir) }

func truncateDurable(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("truncate %s: %w", path, err)
	}
	return f.Sync()
}
