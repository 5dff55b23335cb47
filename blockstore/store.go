package blockstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/klauspost/compress/zstd"

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
	// CacheSize is the index cache in bytes; 0 means 64 MiB.
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
type Store struct {
	dir     string
	db      *pebble.DB
	h       *hasher
	seal    *sealer // nil: not encrypted
	enc     *zstd.Encoder
	dec     *zstd.Decoder
	lock    *flock.Lock
	log     *slog.Logger
	now     func() time.Time
	flushAt int
	reserve int64

	// gcMu keeps prune out while writers hold a lease (see Lease).
	gcMu sync.RWMutex

	// pageReaders hold blockReaders for map page loads.
	pageReaders sync.Pool

	readMu  sync.RWMutex
	readers map[uint32]*os.File

	// mu guards the write path.
	mu       sync.Mutex
	pack     *packFile
	nextPack uint32
	dirty    []*packFile // written since the last flush
	newFiles bool        // a pack file was created since the last dir sync
	pending  map[ref]location
	flushing map[ref]location // being written to the index by flush
	bgFlush  bool             // a background flush is running
	flushed  *sync.Cond       // signalled when a background flush ends
	err      error            // sticky write error
	closing  bool             // Close has begun: no new writes
	shut     atomic.Bool      // closed: reads fail with ErrClosed

	// flushMu serializes flushes; it is taken before mu.
	flushMu sync.Mutex
	closed  bool

	damage []error // found on open; reported by Verify

	corruptFile atomic.Value // string: the index file Pebble found damaged
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

func pebbleOptions(o Options, mustExist bool, el *pebble.EventListener) *pebble.Options {
	po := &pebble.Options{
		EventListener:      el,
		CacheSize:          o.CacheSize,
		MemTableSize:       16 << 20,
		ErrorIfNotExists:   mustExist,
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             pebbleLogger{logger(o.Logger)},
	}
	if po.CacheSize == 0 {
		po.CacheSize = 256 << 20
	}
	for i := range po.Levels {
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	return po
}

// pebbleLogger drops Pebble's informational chatter and logs its errors
// (background compactions that fail, for one).
type pebbleLogger struct{ log *slog.Logger }

func (pebbleLogger) Infof(string, ...any) {}
func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error("index database error", "err", fmt.Sprintf(format, args...))
}
func (pebbleLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf("pebble: "+format, args...))
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
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderCRC(false),
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)), zstd.WithWindowSize(1<<20))
	if err != nil {
		return nil, fmt.Errorf("zstd encoder: %w", err)
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)), zstd.WithDecoderMaxMemory(maxFramePlain))
	if err != nil {
		return nil, fmt.Errorf("zstd decoder: %w", err)
	}
	s := &Store{
		dir: dir, h: h, seal: seal, enc: enc, dec: dec, lock: lock,
		log: o.Logger, now: o.Now, flushAt: o.FlushEntries, reserve: o.Reserve,
		readers: map[uint32]*os.File{},
		pending: map[ref]location{},
	}
	if s.reserve == 0 {
		s.reserve = defaultReserve(dir)
	}
	s.pageReaders.New = func() any { return &blockReader{s: s} }
	s.flushed = sync.NewCond(&s.mu)
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.flushAt == 0 {
		s.flushAt = 1 << 16
	}
	// Repair the packs with the index opened read-only first: truncating
	// a tail needs no space, and it may free the space that opening the
	// index for writing (which flushes its log) needs.
	ro := pebbleOptions(o, true, s.corruptionListener())
	ro.ReadOnly = true
	db, err := pebble.Open(filepath.Join(dir, indexDir), ro)
	if err != nil {
		return nil, openIndexErr(dir, err)
	}
	s.db = db
	err = s.recoverPacks()
	db.Close()
	if err != nil {
		return nil, err
	}
	if err := checkSpace(dir, 0, s.reserve/2, "open store "+dir); err != nil {
		return nil, err
	}
	db, err = pebble.Open(filepath.Join(dir, indexDir), pebbleOptions(o, true, s.corruptionListener()))
	if err != nil {
		return nil, openIndexErr(dir, err)
	}
	s.db = db
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
func (s *Store) Encrypted() bool { return s.seal != nil }

// DedupKey returns the key block IDs are computed under.
func (s *Store) DedupKey() Key { return s.h.key }

// recoverPacks reconciles the pack directory with the committed pack lengths.
func (s *Store) recoverPacks() error {
	committed := map[uint32]int64{}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixPack}, UpperBound: []byte{prefixPack + 1}})
	if err != nil {
		return s.indexErr("open store", err)
	}
	for it.First(); it.Valid(); it.Next() {
		k, v := it.Key(), it.Value()
		if len(k) != 5 || len(v) != 8 {
			it.Close()
			return &CorruptError{Path: filepath.Join(s.dir, indexDir), Offset: -1, Err: corruptf("pack record %x", k), Hint: indexHint(s.dir)}
		}
		committed[binary.BigEndian.Uint32(k[1:])] = int64(binary.LittleEndian.Uint64(v))
	}
	if err := it.Close(); err != nil {
		return s.indexErr("open store", err)
	}
	pdir := filepath.Join(s.dir, packsDir)
	entries, err := os.ReadDir(pdir)
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	seen := map[uint32]bool{}
	changed := false
	for _, e := range entries {
		id, ok := parsePackName(e.Name())
		if !ok {
			if filepath.Ext(e.Name()) == ".tmp" {
				os.Remove(filepath.Join(pdir, e.Name()))
			}
			continue
		}
		seen[id] = true
		if id >= s.nextPack {
			s.nextPack = id + 1
		}
		path := filepath.Join(pdir, e.Name())
		want, ok := committed[id]
		if !ok {
			// Written after the last commit, so nothing acknowledged is in it.
			s.log.Warn("removing uncommitted pack left by a crash", "pack", path)
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("open store: remove uncommitted pack: %w", err)
			}
			changed = true
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return fmt.Errorf("open store: %w", err)
		}
		switch {
		case fi.Size() > want:
			s.log.Warn("truncating pack tail written after the last commit", "pack", path, "size", fi.Size(), "committed", want)
			if err := truncateDurable(path, want); err != nil {
				return fmt.Errorf("open store: %w", err)
			}
		case fi.Size() < want:
			s.damage = append(s.damage, &CorruptError{Path: path, Offset: fi.Size(), Err: fmt.Errorf("%w: pack is %d bytes, %d were committed", errCorrupt, fi.Size(), want),
				Hint: "the disk lost data after it was synced; restore this pack from another site or run prune to drop points that need it"})
		}
	}
	for id := range committed {
		if id >= s.nextPack {
			s.nextPack = id + 1
		}
		if !seen[id] {
			path := filepath.Join(pdir, packName(id))
			s.damage = append(s.damage, &CorruptError{Path: path, Offset: -1, Err: fmt.Errorf("%w: committed pack is missing", errCorrupt),
				Hint: "restore the pack file from a backup or another site"})
		}
	}
	for _, d := range s.damage {
		s.log.Error("store damage found on open", "err", d)
	}
	if changed {
		return syncDir(pdir)
	}
	return nil
}

// Dir returns the store directory.
func (s *Store) Dir() string { return s.dir }

// Close flushes buffered blocks and closes the store.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil
	}
	// No new writes; let a background flush end, then flush the rest.
	s.closing = true
	for s.bgFlush {
		s.flushed.Wait()
	}
	s.mu.Unlock()
	err := s.flush()
	s.flushMu.Lock()
	s.mu.Lock()
	s.closed = true
	s.shut.Store(true)
	if s.pack != nil {
		s.pack.f.Close()
	}
	for _, p := range s.dirty {
		p.f.Close()
	}
	s.mu.Unlock()
	s.flushMu.Unlock()
	s.readMu.Lock()
	for _, f := range s.readers {
		f.Close()
	}
	s.readers = nil
	s.readMu.Unlock()
	// Turn the index's log into a table: smaller on disk than the log, and
	// nothing to replay at the next open. Only with room to spare.
	if err == nil && checkSpace(s.dir, 32<<20, s.reserve/2, "flush index") == nil {
		err = s.db.Flush()
	}
	err = errors.Join(err, s.db.Close())
	s.enc.Close()
	s.dec.Close()
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
	return ids, s.putHashed(ctx, blocks, ids)
}

// putHashed stores the blocks whose IDs are not yet in the store. ids[i] is
// the ID of blocks[i]; ZeroID entries are skipped.
func (s *Store) putHashed(ctx context.Context, blocks [][]byte, ids []ID) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// Pick the blocks the store lacks, each once.
	var want []int
	seen := make(map[ID]struct{}, len(ids))
	for i, id := range ids {
		if id.IsZero() {
			continue
		}
		if _, dup := seen[id]; dup {
			continue
		}
		seen[id] = struct{}{}
		has, err := s.has(ref{kindBlock, id})
		if err != nil {
			return err
		}
		if !has {
			want = append(want, i)
		}
	}
	if len(want) == 0 {
		return nil
	}
	return s.writeNew(kindBlock, blocks, ids, want)
}

// writeNew compresses blocks[i] for i in want into frames and appends them
// to the current pack; their locations become pending until the next flush.
func (s *Store) writeNew(k kind, blocks [][]byte, ids []ID, want []int) error {
	// Group into frames and compress outside the lock.
	var recs [][]byte
	var recIDs [][]frameEntry
	for start := 0; start < len(want); {
		end, plain := start, 0
		for end < len(want) && (end == start || plain+len(blocks[want[end]]) <= frameTarget) && end-start < maxFrameBlocks {
			plain += len(blocks[want[end]])
			end++
		}
		entries := make([]frameEntry, 0, end-start)
		buf := getBuf(plain)
		for _, i := range want[start:end] {
			entries = append(entries, frameEntry{id: ids[i], len: uint32(len(blocks[i]))})
			buf = append(buf, blocks[i]...)
		}
		comp := s.enc.EncodeAll(buf, getBuf(len(buf)))
		codec, payload := byte(codecRaw), buf
		if len(comp) <= len(buf)-len(buf)/8 {
			codec, payload = codecZstd, comp
		}
		recBuf := getBuf(frameHeaderSize + len(entries)*frameEntrySize + len(payload) + sealOver + frameTrailerSize)
		if s.seal != nil {
			recs = append(recs, encodeSealedFrame(recBuf, s.seal, k, codec, entries, uint32(plain), payload))
		} else {
			recs = append(recs, encodeFrame(recBuf, k, codec, entries, uint32(plain), payload))
		}
		putBuf(buf)
		putBuf(comp)
		recIDs = append(recIDs, entries)
		start = end
	}
	defer func() {
		for _, rec := range recs {
			putBuf(rec)
		}
	}()
	var total int64
	for _, rec := range recs {
		total += int64(len(rec))
	}
	if err := checkSpace(s.dir, total, s.reserve, "write pack"); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.writableLocked(); err != nil {
		return err
	}
	for r, rec := range recs {
		if s.pack == nil || s.pack.size+int64(len(rec)) > maxPackSize {
			if err := s.rotateLocked(); err != nil {
				return err
			}
		}
		off := s.pack.size
		if err := s.pack.append(rec); err != nil {
			s.err = err
			return err
		}
		var plainOff uint32
		for slot, e := range recIDs[r] {
			if _, ok := s.pending[ref{k, e.id}]; !ok {
				// A copy in s.flushing is superseded: both are sound.
				s.pending[ref{k, e.id}] = location{pack: s.pack.id, offset: uint64(off), recLen: uint32(len(rec)), slot: uint16(slot), plainOff: plainOff, plainLen: e.len}
			}
			plainOff += e.len
		}
	}
	if len(s.pending) >= s.flushAt && !s.bgFlush {
		// Flush in the background so that hashing and compressing go on
		// while the packs are synced.
		s.bgFlush = true
		go func() {
			err := s.flush()
			s.mu.Lock()
			s.bgFlush = false
			if err != nil && s.err == nil {
				s.err = err
			}
			s.flushed.Broadcast()
			s.mu.Unlock()
		}()
	}
	// Back-pressure: bound memory when the disk is slower than ingest.
	for len(s.pending) >= 4*s.flushAt && s.bgFlush && s.err == nil {
		s.flushed.Wait()
	}
	return s.err
}

func (s *Store) writableLocked() error {
	if s.closing {
		return ErrClosed
	}
	if s.err != nil {
		return fmt.Errorf("store refuses writes after an earlier error (reopen it): %w", s.err)
	}
	return nil
}

// rotateLocked starts a new pack.
func (s *Store) rotateLocked() error {
	p, err := createPack(filepath.Join(s.dir, packsDir), s.nextPack)
	if err != nil {
		s.err = err
		return err
	}
	s.nextPack++
	s.pack = p
	s.dirty = append(s.dirty, p)
	s.newFiles = true
	return nil
}

// Lease keeps Prune from running until release is called. A writer that puts
// blocks and later commits a point referencing them holds a lease from the
// first Put to the CommitPoint, so that garbage collection cannot remove a
// block between the two. Snapshot takes its own lease.
func (s *Store) Lease() (release func()) {
	s.gcMu.RLock()
	return s.gcMu.RUnlock
}

// Flush makes every block put so far durable.
func (s *Store) Flush(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.flush()
}

// flush syncs the packs, then records their blocks in the index: data
// reaches the disk before anything points at it. The I/O runs without s.mu,
// so that puts go on meanwhile; flushes are serialized by flushMu.
func (s *Store) flush() error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if s.err != nil {
		s.mu.Unlock()
		return s.err
	}
	if len(s.dirty) == 0 && len(s.pending) == 0 {
		s.mu.Unlock()
		return nil
	}
	entries := s.pending
	s.pending, s.flushing = make(map[ref]location, len(entries)), entries
	type packState struct {
		p    *packFile
		size int64
	}
	var packs []packState
	for _, p := range s.dirty {
		packs = append(packs, packState{p, p.size})
	}
	// Seal a big current pack: appends go to a new one while this one is
	// synced (on ext4 an fsync stalls writers of the same file). A small
	// one goes on taking appends, so that frequent commits do not make
	// many small packs.
	s.dirty = s.dirty[:0]
	if s.pack != nil && s.pack.size < sealAt {
		s.dirty = append(s.dirty, s.pack)
	} else {
		s.pack = nil
	}
	newFiles := s.newFiles
	s.newFiles = false
	s.mu.Unlock()

	err := func() error {
		for _, ps := range packs {
			if err := ps.p.f.Sync(); err != nil {
				return fmt.Errorf("sync pack %s: %w", packName(ps.p.id), err)
			}
		}
		if newFiles {
			if err := syncDir(filepath.Join(s.dir, packsDir)); err != nil {
				return err
			}
		}
		b := s.db.NewBatchWithSize(len(entries)*(1+IDSize+maxLocationSize+16) + 1024)
		defer b.Close()
		for r, loc := range entries {
			k := r.key()
			b.Set(k, s.sealValue(k, encodeLocation(loc)), nil)
		}
		for _, ps := range packs {
			b.Set(packKey(ps.p.id), binary.LittleEndian.AppendUint64(nil, uint64(ps.size)), nil)
		}
		// Pebble's log write failing is fatal to it: check first.
		if err := checkSpace(s.dir, int64(b.Len()), 1<<20, "write index"); err != nil {
			return err
		}
		if err := b.Commit(pebble.Sync); err != nil {
			return s.indexErr("write index", err)
		}
		return nil
	}()

	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.err = err
		return err
	}
	s.flushing = nil
	for _, ps := range packs {
		if ps.p != s.pack && !slices.Contains(s.dirty, ps.p) {
			ps.p.f.Close()
		}
	}
	return nil
}

// has reports whether the store holds r (durably or pending).
func (s *Store) has(r ref) (bool, error) {
	if s.shut.Load() {
		return false, ErrClosed
	}
	s.mu.Lock()
	_, ok := s.pending[r]
	if !ok {
		_, ok = s.flushing[r]
	}
	s.mu.Unlock()
	if ok {
		return true, nil
	}
	// A prefix seek consults the bloom filters of every level, L6 included,
	// which Get does not: most lookups during ingest are misses.
	k := r.key()
	it, err := s.db.NewIter(&pebble.IterOptions{UseL6Filters: true})
	if err != nil {
		return false, s.indexErr("index lookup", err)
	}
	found := it.SeekPrefixGE(k) && bytes.Equal(it.Key(), k)
	if err := it.Close(); err != nil {
		return false, s.indexErr("index lookup", err)
	}
	return found, nil
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
		ok, err := s.has(ref{kindBlock, id})
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
	return s.has(ref{kindBlock, id})
}

// locate returns where r lives.
func (s *Store) locate(r ref) (location, error) {
	if s.shut.Load() {
		return location{}, ErrClosed
	}
	s.mu.Lock()
	loc, ok := s.pending[r]
	if !ok {
		loc, ok = s.flushing[r]
	}
	s.mu.Unlock()
	if ok {
		return loc, nil
	}
	id := r.id
	k := r.key()
	v, closer, err := s.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		what := "block"
		if r.kind == kindPage {
			what = "map page"
		}
		return location{}, fmt.Errorf("%s %s: %w", what, id, ErrNotFound)
	}
	if err != nil {
		return location{}, s.indexErr("index lookup", err)
	}
	defer closer.Close()
	if v, err = s.openValue(k, v); err == nil {
		loc, err = decodeLocation(v)
	}
	if err != nil {
		return location{}, &CorruptError{Path: filepath.Join(s.dir, indexDir), Offset: -1, Block: id, Err: err, Hint: indexHint(s.dir)}
	}
	return loc, nil
}

// packReader returns a read handle for pack id.
func (s *Store) packReader(id uint32) (*os.File, error) {
	s.readMu.RLock()
	f, ok := s.readers[id]
	s.readMu.RUnlock()
	if ok {
		return f, nil
	}
	s.readMu.Lock()
	defer s.readMu.Unlock()
	if s.readers == nil {
		return nil, ErrClosed
	}
	if f, ok := s.readers[id]; ok {
		return f, nil
	}
	f, err := os.Open(filepath.Join(s.dir, packsDir, packName(id)))
	if err != nil {
		return nil, fmt.Errorf("open pack: %w", err)
	}
	s.readers[id] = f
	return f, nil
}

// dropReader forgets the read handle of a pack that is being deleted.
func (s *Store) dropReader(id uint32) {
	s.readMu.Lock()
	if f, ok := s.readers[id]; ok {
		f.Close()
		delete(s.readers, id)
	}
	s.readMu.Unlock()
}

// Get returns the plaintext of block id. ZeroID has no length of its own and
// is an error here; callers handle holes.
func (s *Store) Get(ctx context.Context, id ID) ([]byte, error) {
	var r blockReader
	r.s = s
	b, err := r.get(ref{kindBlock, id})
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), b...), nil
}

// blockReader reads blocks and keeps the last decoded frames, so that
// sequential reads of blocks stored together decompress each frame once and
// find the frame's other blocks without an index lookup. Not safe for
// concurrent use.
type blockReader struct {
	s       *Store
	frames  [4]*cachedFrame // most recent first
	recBuf  []byte
	sealBuf []byte // an opened payload before decompression
}

type cachedFrame struct {
	kind  kind
	loc   location // of the block that loaded it; pack, offset, recLen matter
	slots map[ID]int
	offs  []uint32 // plaintext offset per slot
	fr    frame
	plain []byte
}

// get returns the plaintext of block or page x; the slice is valid until
// the next call.
func (r *blockReader) get(x ref) ([]byte, error) {
	id := x.id
	if id.IsZero() {
		return nil, fmt.Errorf("get block: zero block has no stored data")
	}
	for i, c := range r.frames {
		if c == nil {
			break
		}
		if slot, ok := c.slots[id]; ok && c.kind == x.kind {
			if i > 0 {
				copy(r.frames[1:i+1], r.frames[:i])
				r.frames[0] = c
			}
			return c.plain[c.offs[slot] : c.offs[slot]+c.fr.entries[slot].len], nil
		}
	}
	loc, err := r.s.locate(x)
	if err != nil {
		return nil, err
	}
	c, err := r.load(loc)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(r.s.dir, packsDir, packName(loc.pack))
	if int(loc.slot) >= len(c.fr.entries) || c.fr.entries[loc.slot].id != id || c.kind != x.kind {
		return nil, &CorruptError{Path: path, Offset: int64(loc.offset), Block: id, Err: fmt.Errorf("%w: frame does not hold the block at slot %d", errCorrupt, loc.slot), Hint: "run `lifeboat verify`"}
	}
	if c.offs[loc.slot] != loc.plainOff || c.fr.entries[loc.slot].len != loc.plainLen {
		return nil, &CorruptError{Path: path, Offset: int64(loc.offset), Block: id, Err: fmt.Errorf("%w: index entry disagrees with the frame", errCorrupt), Hint: "run `lifeboat verify`"}
	}
	return c.plain[loc.plainOff : loc.plainOff+loc.plainLen], nil
}

func (r *blockReader) load(loc location) (*cachedFrame, error) {
	f, err := r.s.packReader(loc.pack)
	if err != nil {
		return nil, err
	}
	if cap(r.recBuf) < int(loc.recLen) {
		r.recBuf = make([]byte, loc.recLen)
	}
	rec := r.recBuf[:loc.recLen]
	path := filepath.Join(r.s.dir, packsDir, packName(loc.pack))
	if _, err := f.ReadAt(rec, int64(loc.offset)); err != nil {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("%w: record past the end of the pack", errCorrupt)
		}
		return nil, &CorruptError{Path: path, Offset: int64(loc.offset), Err: err, Hint: "run `lifeboat verify`"}
	}
	fr, err := decodeFrame(rec)
	if err != nil {
		return nil, &CorruptError{Path: path, Offset: int64(loc.offset), Err: err, Hint: "run `lifeboat verify`; the block may be restored from another site"}
	}
	// Reuse the least recent slot's buffers.
	c := r.frames[len(r.frames)-1]
	if c == nil {
		c = &cachedFrame{slots: map[ID]int{}}
	}
	copy(r.frames[1:], r.frames[:len(r.frames)-1])
	r.frames[0] = c
	clear(c.slots)
	c.loc, c.fr, c.kind = loc, fr, fr.kind
	plain, err := r.s.framePlain(fr, c.plain[:0], &r.sealBuf)
	if err != nil {
		r.frames[0] = nil
		copy(r.frames[:], r.frames[1:])
		r.frames[len(r.frames)-1] = nil
		return nil, &CorruptError{Path: path, Offset: int64(loc.offset), Err: err, Hint: "run `lifeboat verify`; the block may be restored from another site"}
	}
	if len(plain) > 0 && len(fr.payload) > 0 && &plain[0] == &fr.payload[0] {
		plain = append(c.plain[:0], plain...) // raw: do not keep the record buffer
	}
	c.plain = plain
	// The frame aliases recBuf; keep our own copy of the entries only.
	c.fr.payload, c.fr.head = nil, nil
	c.offs = c.offs[:0]
	var off uint32
	for i, e := range fr.entries {
		c.slots[e.id] = i
		c.offs = append(c.offs, off)
		off += e.len
	}
	return c, nil
}

// framePlain returns the plaintext of fr, appended to dst, or (raw and not
// sealed) fr.payload itself. scratch holds an opened payload before
// decompression.
func (s *Store) framePlain(fr frame, dst []byte, scratch *[]byte) ([]byte, error) {
	payload := fr.payload
	if fr.codec&codecSealed != 0 {
		if s.seal == nil {
			return nil, corruptf("sealed frame in a store that is not encrypted")
		}
		if fr.codec&^codecSealed == codecRaw {
			return s.seal.openFrame(dst, payload, fr.head)
		}
		p, err := s.seal.openFrame((*scratch)[:0], payload, fr.head)
		if err != nil {
			return nil, err
		}
		*scratch, payload = p, p
	} else if s.seal != nil {
		return nil, corruptf("frame not sealed in an encrypted store")
	}
	if fr.codec&^codecSealed == codecRaw {
		return payload, nil
	}
	plain, err := s.dec.DecodeAll(payload, dst)
	if err != nil || len(plain) != int(fr.plain) {
		if err == nil {
			err = fmt.Errorf("decompressed %d bytes, want %d", len(plain), fr.plain)
		}
		return nil, fmt.Errorf("%w: frame does not decompress: %v", errCorrupt, err)
	}
	return plain, nil
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

// bufPool recycles frame-sized buffers: ingest would otherwise allocate
// several times the data it stores.
var bufPool sync.Pool

// getBuf returns an empty buffer with room for n bytes.
func getBuf(n int) []byte {
	if b, ok := bufPool.Get().(*[]byte); ok && cap(*b) >= n {
		return (*b)[:0]
	}
	return make([]byte, 0, max(n, frameTarget+frameTarget/8+4096))
}

func putBuf(b []byte) {
	if cap(b) <= 4*frameTarget {
		bufPool.Put(&b)
	}
}

// Reader reads many blocks in a row, decompressing each stored frame once
// for all the blocks it holds: blocks stored together (one volume's
// snapshot, one agent's batch) are read together by a diff. Not safe for
// concurrent use.
type Reader struct{ r blockReader }

// NewReader returns a Reader of s.
func (s *Store) NewReader() *Reader { return &Reader{r: blockReader{s: s}} }

// Get returns the plaintext of block id, valid until the next call.
func (r *Reader) Get(id ID) ([]byte, error) { return r.r.get(ref{kindBlock, id}) }
