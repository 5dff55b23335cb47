package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/blockstore/imgfmt"
	"github.com/lifeboat-dr/lifeboat/internal/durable"
	"github.com/lifeboat-dr/lifeboat/internal/flock"
)

// Restoring a point from a local store: to a file, in a hypervisor's format,
// or onto a block device.

// ---- restore ----

func (c *cli) restoreCmd() *cobra.Command {
	var (
		dir, volume, at, out, formatName string
		force                            bool
		where                            storeOrAdmin
	)
	cmd := &cobra.Command{
		Use:   "restore [--store DIR | --admin ADDR] --volume NAME [--at POINT|NAME|TIME] [--format raw|qcow2|vhdx] --out PATH [--force]",
		Short: "Write a volume as it was at a point to an image file or block device",
		Long: `Write the volume as it was at a point to PATH.

--at picks the point: "latest" (the default), a point ID or a unique prefix of
at least 6 digits, a point name, or an RFC 3339 time (the newest point at or
before it).

For a file, the image is written to PATH.lifeboat-tmp beside it (zero blocks
stay holes, so the file is sparse), synced, and renamed over PATH only when
complete: PATH is never half-written. A second restore to the same PATH while
one runs exits 5; a temporary file left by a restore that was killed is
written over. An existing PATH is kept unless --force.
For a block device (--force required), every block including zeros is written
directly to the device, which must not be mounted.

--format qcow2 or vhdx writes a disk image for hypervisors (QEMU/KVM, Proxmox,
Hyper-V): only the blocks that hold data are allocated, and the image is
streamed straight from the store (no temporary raw copy). qemu-img info,
check and compare accept it.`,
		Example: "  lifeboat restore --store /srv/store --volume db1 --out db1.img\n" +
			"  lifeboat restore --store /srv/store --volume db1 --at 2025-06-01T12:00:00Z --out /dev/vg1/db1 --force",
		Args: noArgs,
		RunE: c.runE(func(cmd *cobra.Command, _ []string) error {
			if err := checkVolumeName(volume); err != nil {
				return err
			}
			format, err := imgfmt.ParseFormat(formatName)
			if err != nil {
				return usagef("--format: %v", err)
			}
			device := false
			switch fi, err := os.Stat(out); {
			case errors.Is(err, os.ErrNotExist):
			case err != nil:
				return fmt.Errorf("restore: %w", err)
			case isBlockDevice(fi):
				device = true
				if !force {
					return &hintError{fmt.Errorf("restore: %s is a block device and would be overwritten", out),
						"pass --force to write the volume onto the device, or choose another --out"}
				}
			case fi.IsDir():
				return fmt.Errorf("restore: %s is a directory; --out wants a file or block device", out)
			case !fi.Mode().IsRegular():
				return fmt.Errorf("restore: %s is not a regular file or a block device (%s)", out, fi.Mode().Type())
			case !force:
				return &hintError{fmt.Errorf("restore: %s exists; refusing to overwrite it", out),
					"pass --force to replace it, or choose another --out"}
			}
			if err := where.check(); err != nil {
				return err
			}
			if where.admin.addr != "" {
				if device {
					return usagef("restore through --admin writes image files; restore onto a device from a local --store")
				}
				s, err := newAdminSession(c, &where.admin, false)
				if err != nil {
					return err
				}
				return s.restoreImage(cmd.Context(), volume, at, format, out, force)
			}
			if device && format != imgfmt.Raw {
				return usagef("--format %s writes an image file; a block device takes --format raw", format)
			}
			return c.withStore(dir, func(s *blockstore.Store) error {
				ctx := cmd.Context()
				p, v, err := s.Resolve(ctx, volume, at)
				if err != nil {
					return err
				}
				pr := newProgress(c.stderr, "restore "+volume, true)
				start := time.Now()
				switch {
				case device:
					err = restoreDevice(ctx, s, v, out, pr)
				case format != imgfmt.Raw:
					err = restoreFormatted(ctx, s, v, format, out, force, pr)
				default:
					err = restoreFile(ctx, s, v, out, force, pr)
				}
				pr.done()
				if err != nil {
					return err
				}
				elapsed := time.Since(start)
				label := p.ID
				if p.Name != "" {
					label += " (" + p.Name + ")"
				}
				fmt.Fprintf(c.stderr, "restored %s at point %s of %s to %s: %s in %s, %s\n",
					volume, label, p.Time.UTC().Format(time.RFC3339), out,
					formatBytes(v.Size), formatDuration(elapsed), formatRate(v.Size, elapsed))
				return nil
			})
		}),
	}
	where.register(cmd, &dir)
	cmd.Flags().StringVar(&volume, "volume", "", "volume to restore (required; SERVICE/VOLUME with --admin)")
	cmd.MarkFlagRequired("volume")
	cmd.Flags().StringVar(&at, "at", "latest", "point: latest, a point ID or prefix, a point name, or an RFC 3339 time")
	cmd.Flags().StringVar(&out, "out", "", "image file or block device to write (required)")
	cmd.MarkFlagRequired("out")
	cmd.MarkFlagFilename("out")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite an existing file or a block device")
	cmd.Flags().StringVar(&formatName, "format", "raw", "image format: raw, qcow2 or vhdx")
	cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions([]string{"raw", "qcow2", "vhdx"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// restoreFormatted streams v as a qcow2 or vhdx image into a new file and
// renames it over out once it is complete and synced.
func restoreFormatted(ctx context.Context, s *blockstore.Store, v blockstore.VolumeState, format imgfmt.Format, out string, force bool, pr *progress) error {
	im, err := s.OpenImage(ctx, v)
	if err != nil {
		return err
	}
	return writeImageFile(ctx, out, force, func(f *os.File) error {
		if err := imgfmt.Write(ctx, f, format, imgfmt.FromStore(im), pr.callback()); err != nil {
			return fmt.Errorf("restore %s as %s: %w", v.Name, format, err)
		}
		return nil
	})
}

// restoreFile restores v into a new file and renames it over out once it is
// complete and synced. The temporary file is removed on any error, including
// cancellation.
func restoreFile(ctx context.Context, s *blockstore.Store, v blockstore.VolumeState, out string, force bool, pr *progress) error {
	return writeImageFile(ctx, out, force, func(f *os.File) error {
		// Sizing the new file first leaves every zero block a hole.
		if err := f.Truncate(v.Size); err != nil {
			return fmt.Errorf("restore: size %s: %w", f.Name(), err)
		}
		return s.Restore(ctx, v, blockstore.NewWriteback(f), blockstore.RestoreOptions{Progress: pr.callback()})
	})
}

// writeImageFile writes an image to out through write: into
// out.lifeboat-tmp, synced, closed and then moved into place (over an
// existing out only with force). The temporary file is held under a flock
// while it is written: a second restore to the same out is refused, and a
// file left by a restore that was killed (whose lock died with it) is
// simply written over. The temporary file is removed on any error,
// including cancellation.
func writeImageFile(ctx context.Context, out string, force bool, write func(*os.File) error) error {
	tmp := out + ".lifeboat-tmp"
	lk, err := flock.TryLock(tmp)
	if errors.Is(err, flock.ErrLocked) {
		return &hintError{fmt.Errorf("restore: another restore is writing %s: %w", tmp, flock.ErrLocked),
			"wait for it to finish, or choose another --out"}
	}
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer lk.Unlock()
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_TRUNC|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("restore: %w", err)
	}
	closed, placed := false, false
	defer func() {
		if !closed {
			f.Close()
		}
		if !placed {
			os.Remove(tmp)
		}
	}()
	if err := write(f); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("restore: sync %s: %w", tmp, err)
	}
	closed = true
	if err := f.Close(); err != nil {
		return fmt.Errorf("restore: close %s: %w", tmp, err)
	}
	// Last moment to back out: after this the image is in place.
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := place(tmp, out, force); err != nil {
		return err
	}
	placed = true
	if err := durable.SyncDir(filepath.Dir(out)); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return nil
}

// place moves the finished image tmp to out. Without force it links instead
// of renaming, so that a file created at out meanwhile is never replaced.
func place(tmp, out string, force bool) error {
	if !force {
		err := os.Link(tmp, out)
		if errors.Is(err, os.ErrExist) {
			return &hintError{fmt.Errorf("restore: %s appeared while restoring; refusing to overwrite it", out),
				"pass --force to replace it, or choose another --out"}
		}
		if err == nil {
			os.Remove(tmp)
			return nil
		}
		// The file system has no hard links: fall back to a checked rename.
		if _, err := os.Lstat(out); err == nil {
			return &hintError{fmt.Errorf("restore: %s appeared while restoring; refusing to overwrite it", out),
				"pass --force to replace it, or choose another --out"}
		}
	}
	if err := os.Rename(tmp, out); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return nil
}

// restoreDevice writes v onto a block device, zeros included, and syncs it.
func restoreDevice(ctx context.Context, s *blockstore.Store, v blockstore.VolumeState, dev string, pr *progress) error {
	// On Linux, O_EXCL on a block device fails with EBUSY while it is
	// mounted or otherwise claimed.
	f, err := os.OpenFile(dev, os.O_WRONLY|os.O_EXCL, 0)
	if errors.Is(err, syscall.EBUSY) {
		return &hintError{fmt.Errorf("restore: block device %s is in use", dev), "unmount it (or stop what holds it) and try again"}
	}
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("restore: size of %s: %w", dev, err)
	}
	if size < v.Size {
		return fmt.Errorf("restore: block device %s holds %d bytes (%s); the volume needs %d (%s)", dev, size, formatBytes(size), v.Size, formatBytes(v.Size))
	}
	if err := s.Restore(ctx, v, blockstore.NewWriteback(f), blockstore.RestoreOptions{WriteZeros: true, Progress: pr.callback()}); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("restore: sync %s: %w", dev, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("restore: close %s: %w", dev, err)
	}
	return nil
}
