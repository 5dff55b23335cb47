package checks

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/internal/durable"
)

// Store is the part of the block store a verification restores from.
type Store interface {
	Restore(ctx context.Context, v blockstore.VolumeState, w io.WriterAt, o blockstore.RestoreOptions) error
	Holds() blockstore.Holds // a lease keeps GC off what the restore reads
}

// Restore writes every volume of p into a sparse raw file in dir (made
// anew), for checks that then throw it away, and returns the images.
func Restore(ctx context.Context, s Store, p blockstore.Point, dir string) ([]Image, error) {
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := durable.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	release := s.Holds().Lease()
	defer release()
	var out []Image
	for _, v := range p.Volumes {
		path := filepath.Join(dir, strings.ReplaceAll(v.Name, "/", "_")+".raw")
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, err
		}
		err = f.Truncate(v.Size)
		if err == nil {
			err = s.Restore(ctx, v, f, blockstore.RestoreOptions{})
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("restore %s of point %.12s for its verification: %w", v.Name, p.ID, err)
		}
		out = append(out, Image{Volume: v.Name, Path: path})
	}
	return out, nil
}

// EvidenceDir is where the checks of a point of service keep their
// evidence: DATA_DIR/verify/SERVICE/POINT12.
func EvidenceDir(dataDir, service, point string) string {
	return filepath.Join(dataDir, "verify", service, point[:min(12, len(point))])
}
