package node

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
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

// raftStores are the durable parts of a node's Raft.
type raftStores struct {
	dir   string
	bolt  *raftboltdb.BoltStore
	snaps *raft.FileSnapshotStore
}

func (s *raftStores) Close() error {
	if s.bolt == nil {
		return nil
	}
	err := s.bolt.Close()
	s.bolt = nil
	return err
}

// resetRaftDir moves dir aside to dir.reset-TIMESTAMP and returns the new
// name, or "" when there was nothing to move.
func resetRaftDir(dir string, now time.Time) (string, error) {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	aside := fmt.Sprintf("%s.reset-%s", dir, now.UTC().Format("20060102T150405Z"))
	if err := os.Rename(dir, aside); err != nil {
		return "", fmt.Errorf("move raft state aside: %w", err)
	}
	return aside, nil
}

// openRaftStores opens (creating) the Raft log, stable store and snapshots
// in dir, after checking the log database page by page: bbolt panics on some
// corruption, and a node must say so instead of crashing later.
func openRaftStores(dir string, logOut io.Writer) (*raftStores, error) {
	if err := os.MkdirAll(filepath.Join(dir, "snapshots"), 0o700); err != nil {
		return nil, fmt.Errorf("create raft dir: %w", err)
	}
	path := filepath.Join(dir, "raft.db")
	if err := checkBolt(path); err != nil {
		return nil, err
	}
	bolt, err := raftboltdb.New(raftboltdb.Options{
		Path:        path,
		BoltOptions: &bbolt.Options{Timeout: time.Second},
	})
	if err != nil {
		if errors.Is(err, bbolt.ErrTimeout) {
			return nil, fmt.Errorf("raft log %s is locked: is another lifeboat node running on this data dir?", path)
		}
		return nil, &RaftStateError{Path: dir, Err: err}
	}
	st := &raftStores{dir: dir, bolt: bolt}
	if err := checkLog(bolt); err != nil {
		st.Close()
		return nil, &RaftStateError{Path: dir, Err: err}
	}
	snaps, err := raft.NewFileSnapshotStore(filepath.Join(dir, "snapshots"), 2, logOut)
	if err != nil {
		st.Close()
		return nil, &RaftStateError{Path: dir, Err: err}
	}
	st.snaps = snaps
	return st, nil
}

// checkBolt runs bbolt's consistency check on an existing database.
func checkBolt(path string) (err error) {
	if _, serr := os.Stat(path); errors.Is(serr, os.ErrNotExist) {
		return nil
	}
	defer func() {
		if p := recover(); p != nil {
			err = &RaftStateError{Path: filepath.Dir(path), Err: fmt.Errorf("raft.db: %v", p)}
		}
	}()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		if errors.Is(err, bbolt.ErrTimeout) {
			return fmt.Errorf("raft log %s is locked: is another lifeboat node running on this data dir?", path)
		}
		return &RaftStateError{Path: filepath.Dir(path), Err: fmt.Errorf("raft.db: %w", err)}
	}
	defer db.Close()
	var errs []error
	if verr := db.View(func(tx *bbolt.Tx) error {
		for e := range tx.Check() {
			errs = append(errs, e)
		}
		return nil
	}); verr != nil {
		errs = append(errs, verr)
	}
	if len(errs) > 0 {
		return &RaftStateError{Path: filepath.Dir(path), Err: fmt.Errorf("raft.db: %w", errors.Join(errs...))}
	}
	return nil
}

// checkLog reads the first and last entries of the log: both must decode.
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
	for _, i := range []uint64{first, last} {
		if err := s.GetLog(i, &l); err != nil {
			return fmt.Errorf("raft log entry %d: %w", i, err)
		}
		if l.Index != i {
			return fmt.Errorf("raft log entry %d says it is entry %d", i, l.Index)
		}
	}
	return nil
}
