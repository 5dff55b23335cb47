package node

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/internal/ingest"
)

// Agents' ingest is the engine in node/internal/ingest; this file opens
// the block store it writes and keeps the names replication and the
// planned failover use from it.

// openStore opens (creating) the node's block store under the cluster's
// dedup key. A store made with another key is refused: its IDs would not
// match what agents and other sites compute.
// lockFor fixes each new point's retention lock as it is committed.
func openStore(dir string, creds *mesh.Creds, kek *blockstore.KEK, o blockstore.Options, log *slog.Logger) (*blockstore.Store, error) {
	if len(creds.DedupKey) != 32 {
		return nil, fmt.Errorf("the TLS dir holds no dedup.key (32 bytes): reissue the node certificate with `lifeboat ca issue`")
	}
	var key blockstore.Key
	copy(key[:], creds.DedupKey)
	if _, err := os.Stat(filepath.Join(dir, "lifeboat-store.json")); errors.Is(err, os.ErrNotExist) {
		if err := blockstore.Init(dir, blockstore.InitOptions{Key: &key, KEK: kek}); err != nil {
			return nil, fmt.Errorf("create block store: %w", err)
		}
		if kek != nil {
			log.Info("created block store encrypted at rest", "store", dir, "kek", kek.Fingerprint())
		}
	}
	o.Logger, o.KEK, o.Reserve = log, kek, storeReserve(dir)
	s, err := blockstore.Open(dir, o)
	if err != nil {
		return nil, err
	}
	if s.DedupKey() != key {
		s.Close()
		return nil, fmt.Errorf("block store %s was made with another dedup key than the cluster's (dedup.key in the TLS dir)", dir)
	}
	if kek != nil && !s.Encrypted() {
		log.Warn("this node has a key-encryption key but its block store is not encrypted: only a new store is created encrypted", "store", dir)
	}
	return s, nil
}

// storeReserve is the free space the block store's pack writes leave for
// its index: a hundredth of the file system, between 4 and 64 MiB (the
// store's own default is a tenth). The space guard (ingest.Space) refuses
// new points from 5% free, lowest priority first, so on a small file
// system the store's reserve must sit under the guard's marks, not over
// them; it stays the last line when the disk fills anyway (issue 15 item 5).
func storeReserve(dir string) int64 {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0 // the store's default
	}
	size := int64(st.Blocks) * int64(st.Bsize)
	return min(max(size/100, 4<<20), 64<<20)
}

// services is the ingest engine's per-service state as replication, the
// tier engines and the planned failover read it.
type services struct{ e *ingest.Engine }

// serviceState is one service's state: mu orders commits (hold runs with
// it held), newest takes it itself.
type serviceState struct {
	mu sync.Locker
	s  *ingest.State
}

func (ss services) get(name string) *serviceState {
	st := ss.e.Service(name)
	return &serviceState{mu: st, s: st}
}

// names returns the services with state on this node.
func (ss services) names() []string { return ss.e.Names() }

// hold records a point the store holds that did not come from an agent on
// this node; s.mu must be held.
func (s *serviceState) hold(p *blockstore.Point) { s.s.Hold(p) }

// newest returns the service's newest point (nil = none) and a channel
// closed when it changes.
func (s *serviceState) newest() (*blockstore.Point, <-chan struct{}) { return s.s.Newest() }
