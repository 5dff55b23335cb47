// Package raftstore keeps a node's Raft state on disk: the log and stable
// store (raft.db, bbolt through raft-boltdb) and the snapshots, checked
// before bbolt opens them so that damage is an error naming the file, never
// a crash.
//
// Raft runs over the node's QUIC endpoint (mesh.KindRaft streams) with its
// log and stable store in DataDir/raft/raft.db (raft-boltdb, bbolt) and
// snapshots in DataDir/raft/snapshots. The bolt file
// is checked on open before raft sees it: its page structure without
// bbolt's memory map (boltcheck: bbolt faults on some damage, and a fault
// is no panic), bbolt's own check, only the logs and conf buckets with
// 8-byte log keys and no gap, and every log entry read and decoded as raft
// will. Damage is a RaftStateError naming raft.db, whose hint says to
// restart with --reset-raft (the state is moved aside and the node rejoins
// as new); an empty raft.db is damage too (its term and vote are lost).
// bbolt keeps no checksum of data pages: a changed byte inside an entry
// that still decodes goes unnoticed, and damage to the newer meta page
// makes bbolt use the older one, losing the last write.
package raftstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/lifeboat-dr/lifeboat/node/internal/boltcheck"
)

// RaftStateError reports Raft state on disk that this node cannot use: a
// corrupt log database or snapshot. Hint tells the operator how to rejoin.
type RaftStateError struct {
	Path string
	Err  error
}

func (e *RaftStateError) Error() string {
	return fmt.Sprintf("raft state %s is unusable: %v", e.Path, e.Err)
}

func (e *RaftStateError) Unwrap() error { return e.Err }

// Hint says how to rejoin the cluster as a new member.
func (e *RaftStateError) Hint() string {
	return "this node's copy of the catalog cannot be trusted. The cluster still has it: " +
		"restart with --reset-raft to move " + e.Path + " aside and rejoin as a new member " +
		"(the leader sends it a fresh copy)"
}

// Stores are the durable parts of a node's Raft.
type Stores struct {
	Dir   string
	Bolt  *raftboltdb.BoltStore // the log and the stable store
	Snaps *raft.FileSnapshotStore
}

// Close closes the log database; it is safe to call more than once.
func (s *Stores) Close() error {
	if s.Bolt == nil {
		return nil
	}
	err := s.Bolt.Close()
	s.Bolt = nil
	return err
}

// Reset moves dir aside to dir.reset-TIMESTAMP and returns the new
// name, or "" when there was nothing to move.
func Reset(dir string, now time.Time) (string, error) {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	aside := fmt.Sprintf("%s.reset-%s", dir, now.UTC().Format("20060102T150405Z"))
	if err := os.Rename(dir, aside); err != nil {
		return "", fmt.Errorf("move raft state aside: %w", err)
	}
	return aside, nil
}

// Open opens (creating) the Raft log, stable store and snapshots
// in dir, after checking the log database page by page and reading every
// entry: damage must be a RaftStateError naming raft.db at start, not a
// crash (bbolt faults on some damage) or a panic inside raft later.
func Open(dir string, logOut io.Writer) (*Stores, error) {
	if err := os.MkdirAll(filepath.Join(dir, "snapshots"), 0o700); err != nil {
		return nil, fmt.Errorf("create raft dir: %w", err)
	}
	path := filepath.Join(dir, "raft.db")
	if err := checkBolt(path); err != nil {
		return nil, err
	}
	bad := func(err error) error {
		return &RaftStateError{Path: dir, Err: fmt.Errorf("%s: %w", path, err)}
	}
	// checkBolt has bounded every page bbolt will touch; should it have
	// missed something, a fault in this goroutine is a panic we recover
	// (bbolt maps the file) instead of the end of the process.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	bolt, err := newBoltStore(path)
	if err != nil {
		if errors.Is(err, bbolt.ErrTimeout) {
			return nil, fmt.Errorf("raft log %s is locked: is another lifeboat node running on this data dir?", path)
		}
		return nil, bad(err)
	}
	st := &Stores{Dir: dir, Bolt: bolt}
	if err := checkLog(bolt); err != nil {
		st.Close()
		return nil, bad(err)
	}
	snaps, err := raft.NewFileSnapshotStore(filepath.Join(dir, "snapshots"), 2, logOut)
	if err != nil {
		st.Close()
		return nil, &RaftStateError{Path: dir, Err: err}
	}
	st.Snaps = snaps
	return st, nil
}

// newBoltStore opens raft-boltdb's store, turning a panic into an error.
func newBoltStore(path string) (s *raftboltdb.BoltStore, err error) {
	defer func() {
		if p := recover(); p != nil {
			s, err = nil, fmt.Errorf("open: %v", p)
		}
	}()
	return raftboltdb.New(raftboltdb.Options{
		Path:        path,
		BoltOptions: &bbolt.Options{Timeout: time.Second},
	})
}

// The buckets and stable-store keys raft-boltdb and raft use.
var (
	boltLogs     = []byte("logs")
	boltConf     = []byte("conf")
	uint64Stable = [][]byte{[]byte("CurrentTerm"), []byte("LastVoteTerm")}
)

// checkBolt checks an existing database before raft-boltdb opens it: the
// structure of every page (boltcheck, without bbolt's memory map), then
// bbolt's own consistency check, then what raft-boltdb assumes without
// checking: only the logs and conf buckets, 8-byte log keys with no gap
// between the first and the last, and 8-byte terms.
func checkBolt(path string) (err error) {
	fi, serr := os.Stat(path)
	if errors.Is(serr, os.ErrNotExist) {
		return nil
	}
	if serr != nil {
		return fmt.Errorf("raft log: %w", serr)
	}
	bad := func(err error) error {
		return &RaftStateError{Path: filepath.Dir(path), Err: fmt.Errorf("%s: %w", path, err)}
	}
	if fi.Size() == 0 {
		// Not a new database: bbolt writes its first pages before Open
		// returns. Starting afresh could forget a vote.
		return bad(errors.New("empty file: the node's term, vote and log are lost"))
	}
	defer func() {
		if p := recover(); p != nil {
			err = bad(fmt.Errorf("%v", p))
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	// Opening read-only takes a shared lock (so a running node is reported
	// as such, not as damage) and maps only the two meta pages.
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		if errors.Is(err, bbolt.ErrTimeout) {
			return fmt.Errorf("raft log %s is locked: is another lifeboat node running on this data dir?", path)
		}
		if cerr := boltcheck.Check(path); cerr != nil {
			err = cerr
		}
		return bad(err)
	}
	defer db.Close()
	if err := boltcheck.Check(path); err != nil {
		return bad(err)
	}
	var errs []error
	if verr := db.View(func(tx *bbolt.Tx) error {
		for e := range tx.Check() {
			if len(errs) < 10 {
				errs = append(errs, e)
			}
		}
		if len(errs) > 0 {
			return nil
		}
		return checkRaftBuckets(tx)
	}); verr != nil {
		errs = append(errs, verr)
	}
	if len(errs) > 0 {
		return bad(errors.Join(errs...))
	}
	return nil
}

// checkRaftBuckets checks what raft-boltdb reads without checking.
func checkRaftBuckets(tx *bbolt.Tx) error {
	c := tx.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if v != nil || (!bytes.Equal(k, boltLogs) && !bytes.Equal(k, boltConf)) {
			return fmt.Errorf("unexpected top-level key %q", k)
		}
	}
	logs, conf := tx.Bucket(boltLogs), tx.Bucket(boltConf)
	if logs == nil && conf == nil {
		return nil // created but not yet initialised: no state
	}
	if logs == nil {
		return errors.New("the logs bucket is missing")
	}
	if conf == nil {
		return errors.New("the conf bucket is missing")
	}
	var prev uint64
	c = logs.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(k) != 8 || v == nil {
			return fmt.Errorf("log key %x: want an 8-byte index with a value", k)
		}
		i := binary.BigEndian.Uint64(k)
		if prev != 0 && i != prev+1 {
			return fmt.Errorf("log entries %d to %d are missing", prev+1, i-1)
		}
		prev = i
	}
	for _, k := range uint64Stable {
		if v := conf.Get(k); v != nil && len(v) != 8 {
			return fmt.Errorf("stable key %s holds %d bytes, want 8", k, len(v))
		}
	}
	return nil
}

// checkLog reads every entry of the log, as raft will: each must decode,
// say it is the entry at its index, have a term no lower than the one
// before, and a configuration entry must decode as one (raft panics on one
// that does not).
func checkLog(s *raftboltdb.BoltStore) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("raft log: %v", p)
		}
	}()
	first, err := s.FirstIndex()
	if err != nil {
		return fmt.Errorf("raft log first index: %w", err)
	}
	last, err := s.LastIndex()
	if err != nil {
		return fmt.Errorf("raft log last index: %w", err)
	}
	if last == 0 {
		return nil
	}
	if first > last {
		return fmt.Errorf("raft log: first index %d after last %d", first, last)
	}
	var l raft.Log
	var term uint64
	for i := first; i <= last; i++ {
		if err := s.GetLog(i, &l); err != nil {
			return fmt.Errorf("raft log entry %d: %w", i, err)
		}
		if l.Index != i {
			return fmt.Errorf("raft log entry %d says it is entry %d", i, l.Index)
		}
		if l.Term < term {
			return fmt.Errorf("raft log entry %d has term %d, below the %d of the entry before", i, l.Term, term)
		}
		term = l.Term
		if l.Type == raft.LogConfiguration {
			if err := decodeConfiguration(l.Data); err != nil {
				return fmt.Errorf("raft log entry %d: %w", i, err)
			}
		}
	}
	return nil
}

// decodeConfiguration decodes a configuration entry as raft will, which
// panics on one that does not decode.
func decodeConfiguration(b []byte) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("configuration: %v", p)
		}
	}()
	raft.DecodeConfiguration(b)
	return nil
}
