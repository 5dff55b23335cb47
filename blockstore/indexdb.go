package blockstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
)

// index is the store's Pebble database: block and page locations, points,
// scopes and committed pack lengths (key layout in index.go and doc.go).
// Values are sealed in an encrypted store. Safe for concurrent use.
type index struct {
	db   *pebble.DB
	dir  string  // the store directory
	seal *sealer // nil: not encrypted
	log  *slog.Logger

	// shut is set when the store closes: reads fail with ErrClosed.
	shut atomic.Bool
	// corruptFile is the index file Pebble found damaged (a string).
	corruptFile atomic.Value
}

// open opens the database at path (the store's index, or one being rebuilt)
// and returns Pebble's error unwrapped.
func (x *index) open(path string, o Options, mustExist, readOnly bool) error {
	po := pebbleOptions(o, mustExist, x.listener())
	po.ReadOnly = readOnly
	db, err := pebble.Open(path, po)
	if err != nil {
		return err
	}
	x.db = db
	return nil
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

// sealValue and openValue seal and open an index value under its key:
// identity when the store is not encrypted.
func (x *index) sealValue(key, value []byte) []byte {
	if x.seal == nil {
		return value
	}
	return x.seal.sealValue(key, value)
}

func (x *index) openValue(key, value []byte) ([]byte, error) {
	if x.seal == nil {
		return value, nil
	}
	return x.seal.openValue(key, value)
}

// corrupt is a CorruptError about the index database.
func (x *index) corrupt(id ID, err error) error {
	return &CorruptError{Path: filepath.Join(x.dir, indexDir), Offset: -1, Block: id, Err: err, Hint: indexHint(x.dir)}
}

// has reports whether the durable index holds r.
func (x *index) has(r ref) (bool, error) {
	// A prefix seek consults the bloom filters of every level, L6 included,
	// which Get does not: most lookups during ingest are misses.
	k := r.key()
	it, err := x.db.NewIter(&pebble.IterOptions{UseL6Filters: true})
	if err != nil {
		return false, x.err("index lookup", err)
	}
	found := it.SeekPrefixGE(k) && bytes.Equal(it.Key(), k)
	if err := it.Close(); err != nil {
		return false, x.err("index lookup", err)
	}
	return found, nil
}

// locate returns where the durable index says r lives.
func (x *index) locate(r ref) (location, error) {
	id := r.id
	k := r.key()
	v, closer, err := x.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		what := "block"
		if r.kind == kindPage {
			what = "map page"
		}
		return location{}, fmt.Errorf("%s %s: %w", what, id, ErrNotFound)
	}
	if err != nil {
		return location{}, x.err("index lookup", err)
	}
	defer closer.Close()
	var loc location
	if v, err = x.openValue(k, v); err == nil {
		loc, err = decodeLocation(v)
	}
	if err != nil {
		return location{}, x.corrupt(id, err)
	}
	return loc, nil
}

// commit records entries and the committed lengths of packs in one synced
// batch.
func (x *index) commit(entries map[ref]location, packs map[uint32]int64) error {
	b := x.db.NewBatchWithSize(len(entries)*(1+IDSize+maxLocationSize+16) + 1024)
	defer b.Close()
	for r, loc := range entries {
		k := r.key()
		b.Set(k, x.sealValue(k, encodeLocation(loc)), nil)
	}
	for id, size := range packs {
		b.Set(packKey(id), binary.LittleEndian.AppendUint64(nil, uint64(size)), nil)
	}
	// Pebble's log write failing is fatal to it: check first.
	if err := checkSpace(x.dir, int64(b.Len()), 1<<20, "write index"); err != nil {
		return err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return x.err("write index", err)
	}
	return nil
}

// scan calls fn for every block (or map page) in the durable index, in ID
// order.
func (x *index) scan(ctx context.Context, k kind, fn func(ID, location) error) error {
	if x.shut.Load() {
		return ErrClosed
	}
	prefix := ref{kind: k}.key()[0]
	it, err := x.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefix}, UpperBound: []byte{prefix + 1}})
	if err != nil {
		return x.err("scan index", err)
	}
	defer it.Close()
	n := 0
	for it.First(); it.Valid(); it.Next() {
		if n++; n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		k := it.Key()
		var id ID
		if len(k) != 1+IDSize {
			return x.corrupt(ZeroID, corruptf("index key %x", k))
		}
		copy(id[:], k[1:])
		v, err := x.openValue(k, it.Value())
		var loc location
		if err == nil {
			loc, err = decodeLocation(v)
		}
		if err != nil {
			return x.corrupt(id, err)
		}
		if err := fn(id, loc); err != nil {
			return err
		}
	}
	return x.err("scan index", it.Error())
}

// packIter iterates over the committed pack lengths.
func (x *index) packIter() (*pebble.Iterator, error) {
	return x.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixPack}, UpperBound: []byte{prefixPack + 1}})
}

// packs returns the packs with a committed length.
func (x *index) packs() ([]uint32, error) {
	it, err := x.packIter()
	if err != nil {
		return nil, x.err("list packs", err)
	}
	defer it.Close()
	var out []uint32
	for it.First(); it.Valid(); it.Next() {
		if k := it.Key(); len(k) == 5 {
			out = append(out, uint32(k[1])<<24|uint32(k[2])<<16|uint32(k[3])<<8|uint32(k[4]))
		}
	}
	if err := it.Error(); err != nil {
		return nil, x.err("list packs", err)
	}
	return out, nil
}

// packLengths returns the committed length of every pack; a record that
// does not decode is damage.
func (x *index) packLengths() (map[uint32]int64, error) {
	committed := map[uint32]int64{}
	it, err := x.packIter()
	if err != nil {
		return nil, x.err("open store", err)
	}
	for it.First(); it.Valid(); it.Next() {
		k, v := it.Key(), it.Value()
		if len(k) != 5 || len(v) != 8 {
			it.Close()
			return nil, x.corrupt(ZeroID, corruptf("pack record %x", k))
		}
		committed[binary.BigEndian.Uint32(k[1:])] = int64(binary.LittleEndian.Uint64(v))
	}
	if err := it.Close(); err != nil {
		return nil, x.err("open store", err)
	}
	return committed, nil
}
