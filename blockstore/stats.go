package blockstore

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Stats describe what a store holds.
type Stats struct {
	Points  int `json:"points"`
	Volumes int `json:"volumes"`
	// LogicalBytes is the sum over points of their volumes' sizes: what
	// full copies of every point would take.
	LogicalBytes int64 `json:"logical_bytes"`
	// UsedBytes is the same for non-zero blocks only.
	UsedBytes int64 `json:"used_bytes"`
	// UniqueBytes is the plaintext of the distinct blocks stored.
	UniqueBytes int64 `json:"unique_bytes"`
	// StoredBytes is the size of the pack files on disk.
	StoredBytes int64 `json:"stored_bytes"`
	// IndexBytes is the size of the index database on disk.
	IndexBytes int64 `json:"index_bytes"`
	Blocks     int64 `json:"blocks"`
	Packs      int   `json:"packs"`
	// DedupRatio is UsedBytes / UniqueBytes.
	DedupRatio float64 `json:"dedup_ratio"`
	// CompressionRatio is UniqueBytes / StoredBytes.
	CompressionRatio float64 `json:"compression_ratio"`
	// Encryption is "none", or the cipher and the fingerprint of the KEK
	// the store's keys are sealed under.
	Encryption string `json:"encryption"`
	// Repaired counts the blocks repaired since the store was opened (by
	// Repair, called by a read through Options.Fetch or by the caller);
	// Unrepaired the reads since then that met a bad or missing block and
	// could not repair it.
	Repaired   int64 `json:"repaired"`
	Unrepaired int64 `json:"unrepaired"`
}

// Stats counts points, blocks and bytes. It reads the whole index.
func (s *Store) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	if err := s.Flush(ctx); err != nil {
		return st, err
	}
	pts, err := s.Points(ctx, "")
	if err != nil {
		return st, err
	}
	st.Repaired, st.Unrepaired = s.heal.repaired.Load(), s.heal.unrepaired.Load()
	st.Encryption = "none"
	if s.codec.seal != nil {
		_, fp, _ := Encrypted(s.dir)
		st.Encryption = keysCipher + ", key-encryption key " + fp
	}
	vols := map[string]bool{}
	for _, p := range pts {
		st.Points++
		for _, v := range p.Volumes {
			vols[v.Name] = true
			st.LogicalBytes += v.Size
			st.UsedBytes += min(v.Used*int64(v.BlockSize), v.Size)
		}
	}
	st.Volumes = len(vols)
	err = s.idx.scan(ctx, kindBlock, func(id ID, loc location) error {
		st.Blocks++
		st.UniqueBytes += int64(loc.plainLen)
		return nil
	})
	if err != nil {
		return st, err
	}
	entries, err := os.ReadDir(filepath.Join(s.dir, packsDir))
	if err != nil {
		return st, fmt.Errorf("stats: %w", err)
	}
	for _, e := range entries {
		if _, ok := parsePackName(e.Name()); !ok {
			continue
		}
		if fi, err := e.Info(); err == nil {
			st.Packs++
			st.StoredBytes += fi.Size()
		}
	}
	filepath.WalkDir(filepath.Join(s.dir, indexDir), func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				st.IndexBytes += fi.Size()
			}
		}
		return nil
	})
	if st.UniqueBytes > 0 {
		st.DedupRatio = float64(st.UsedBytes) / float64(st.UniqueBytes)
	}
	if st.StoredBytes > 0 {
		st.CompressionRatio = float64(st.UniqueBytes) / float64(st.StoredBytes)
	}
	return st, nil
}
