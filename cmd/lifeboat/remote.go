package main

// Commands that read a store either locally (--store DIR) or through a
// node's admin API (--admin ADDR).

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-dr/lifeboat/blockstore/imgfmt"
)

// storeOrAdmin is --store or --admin (with --tls-dir): exactly one.
type storeOrAdmin struct {
	dir   *string
	admin adminFlags
}

func (w *storeOrAdmin) register(cmd *cobra.Command, dir *string) {
	w.dir = dir
	cmd.Flags().StringVar(dir, "store", "", "local store directory")
	cmd.MarkFlagDirname("store")
	cmd.Flags().StringVar(&w.admin.addr, "admin", "", "a node's admin API address, instead of --store (e.g. "+defaultAdmin+")")
	cmd.Flags().StringVar(&w.admin.tlsDir, "tls-dir", "", "certificate directory, needed when --admin is not on this host")
}

func (w *storeOrAdmin) check() error {
	switch {
	case *w.dir == "" && w.admin.addr == "":
		return usagef("--store DIR or --admin ADDR is required")
	case *w.dir != "" && w.admin.addr != "":
		return usagef("--store and --admin exclude each other")
	}
	return nil
}

// restoreRemote streams a volume image from a node into out (a new file,
// renamed into place once complete and synced).
func (s *adminSession) restoreImage(ctx context.Context, volume, at string, format imgfmt.Format, out string, force bool) (err error) {
	cl, addr, err := toHolder(ctx, s.cl, s.af, volume, s.stderr)
	if err != nil {
		return err
	}
	start := time.Now()
	var point string
	var size int64
	err = writeImageFile(ctx, out, force, func(f *os.File) error {
		var err error
		point, size, err = cl.Image(ctx, volume, at, string(format), f)
		if err != nil {
			return fmt.Errorf("restore %s: %w", volume, err)
		}
		return f.Truncate(size)
	})
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	fmt.Fprintf(s.stderr, "restored %s at point %s from %s to %s: %s in %s, %s\n",
		volume, point, addr, out, formatBytes(size), formatDuration(elapsed), formatRate(size, elapsed))
	return nil
}
