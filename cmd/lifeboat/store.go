package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/blockstore/imgfmt"
	"github.com/lifeboat-dr/lifeboat/internal/flock"
)

// The commands in this file work offline on a local store directory.

// storeFlag adds the --store flag every store command takes.
func storeFlag(cmd *cobra.Command, dir *string) {
	cmd.Flags().StringVar(dir, "store", "", "store directory (required)")
	cmd.MarkFlagRequired("store")
	cmd.MarkFlagDirname("store")
}

// jsonFlag adds --json.
func jsonFlag(cmd *cobra.Command, on *bool) {
	cmd.Flags().BoolVar(on, "json", false, "print JSON instead of text")
}

// openStore opens the store in dir with the command's logger.
func (c *cli) openStore(dir string) (*blockstore.Store, error) {
	kek, err := c.kek.load(context.Background(), true)
	if err != nil {
		return nil, err
	}
	s, err := blockstore.Open(dir, blockstore.Options{Logger: c.log, KEK: kek})
	switch {
	case errors.Is(err, blockstore.ErrNotStore):
		return nil, &hintError{err: err, hint: fmt.Sprintf("check the --store path, or create a store with `lifeboat store init --store %s`", dir)}
	case errors.Is(err, blockstore.ErrEncrypted):
		return nil, &hintError{err: err, hint: "give the store's key-encryption key with --kek-file FILE, --kek-command CMD or $" + envKEKFile}
	case errors.Is(err, blockstore.ErrWrongKEK):
		return nil, &hintError{err: err, hint: "the key given is not the one this store is sealed under; after a `store rekey` only the new key opens it"}
	}
	return s, err
}

// withStore opens the store in dir, runs f on it and closes it.
func (c *cli) withStore(dir string, f func(*blockstore.Store) error) (err error) {
	s, err := c.openStore(dir)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := s.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close store %s: %w", dir, cerr)
		}
	}()
	return f(s)
}

// checkVolumeName reports a bad --volume as a usage error.
func checkVolumeName(name string) error {
	if err := blockstore.ValidName("volume", name); err != nil {
		return &usageError{fmt.Errorf("--volume: %w", err)}
	}
	return nil
}

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// ---- store init ----

func (c *cli) storeCmd() *cobra.Command {
	store := &cobra.Command{
		Use:   "store",
		Short: "Create and manage local stores",
		Args:  noArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var dir, keyFile string
	initCmd := &cobra.Command{
		Use:   "init --store DIR [--key-file FILE] [--kek-file FILE | --kek-command CMD]",
		Short: "Create a new, empty store",
		Long: `Create a new, empty store in DIR, which must not exist or be empty.

The store's dedup key decides block IDs; stores that share a key deduplicate
against each other. Without --key-file a new random key is made and kept in
DIR/key. A key file holds 64 hex digits.

With a key-encryption key (--kek-file, --kek-command or $LIFEBOAT_KEK_FILE)
the store is encrypted at rest: a new data key seals every pack frame and
index value (AES-256-GCM), and DIR/keys holds it and the dedup key sealed
under the KEK; there is no plaintext key file. Every later command on the
store needs the same KEK ('lifeboat store rekey' changes it).`,
		Example: "  lifeboat store init --store /var/lib/lifeboat/store",
		Args:    noArgs,
		RunE: c.runE(func(cmd *cobra.Command, _ []string) error {
			var o blockstore.InitOptions
			kek, err := c.kek.load(cmd.Context(), true)
			if err != nil {
				return err
			}
			o.KEK = kek
			if keyFile != "" {
				k, err := blockstore.ReadKeyFile(keyFile)
				if err != nil {
					return err
				}
				o.Key = &k
			}
			if err := blockstore.Init(dir, o); err != nil {
				return err
			}
			if kek != nil {
				fmt.Fprintf(c.stderr, "created store %s, encrypted at rest under key-encryption key %s\n", dir, kek.Fingerprint())
				return nil
			}
			fmt.Fprintf(c.stderr, "created store %s\n", dir)
			return nil
		}),
	}
	storeFlag(initCmd, &dir)
	initCmd.Flags().StringVar(&keyFile, "key-file", "", "use the dedup key in FILE instead of a new random one")
	store.AddCommand(initCmd, c.rekeyCmd(), c.rebuildIndexCmd())
	return store
}

// ---- snapshot ----

func (c *cli) snapshotCmd() *cobra.Command {
	var (
		dir, volume, name string
		bs                blockSizeFlag
	)
	cmd := &cobra.Command{
		Use:   "snapshot --store DIR --volume NAME [--block-size SIZE] [--name NAME] SOURCE",
		Short: "Store a new point of a volume read from an image file or block device",
		Long: `Read SOURCE (a regular file or a block device) completely and store it as a
new point of the volume. Only blocks that differ from the volume's newest point
are looked at again; blocks the store already holds are not written twice.

A summary goes to stderr; the new point's ID is the only line on stdout.`,
		Example: "  lifeboat snapshot --store /srv/store --volume db1 /dev/vg0/db1\n" +
			"  lifeboat snapshot --store /srv/store --volume web --block-size 4KiB --name before-upgrade web.img",
		Args: oneArg("SOURCE (an image file or a block device)"),
		RunE: c.runE(func(cmd *cobra.Command, args []string) error {
			if err := checkVolumeName(volume); err != nil {
				return err
			}
			if name != "" {
				if err := blockstore.ValidName("point", name); err != nil {
					return &usageError{fmt.Errorf("--name: %w", err)}
				}
			}
			src, err := blockstore.OpenSource(args[0])
			if err != nil {
				return err
			}
			defer src.Close()
			return c.withStore(dir, func(s *blockstore.Store) error {
				return c.snapshot(cmd.Context(), s, src, blockstore.SnapshotOptions{Volume: volume, BlockSize: int(bs), Name: name})
			})
		}),
	}
	storeFlag(cmd, &dir)
	cmd.Flags().StringVar(&volume, "volume", "", "volume name (required)")
	cmd.MarkFlagRequired("volume")
	cmd.Flags().Var(&bs, "block-size", "block size of a new volume, a power of two from 4KiB to 1MiB (default 64KiB; an existing volume keeps its own)")
	cmd.Flags().StringVar(&name, "name", "", "name the new point (usable with restore --at)")
	return cmd
}

func (c *cli) snapshot(ctx context.Context, s *blockstore.Store, src blockstore.Source, o blockstore.SnapshotOptions) error {
	pr := newProgress(c.stderr, "snapshot "+o.Volume, true)
	o.Progress = pr.callback()
	start := time.Now()
	p, st, err := s.Snapshot(ctx, src, o)
	pr.done()
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	v, _ := p.Volume(o.Volume)
	fmt.Fprintf(c.stderr, "snapshot %s: %d blocks, %d changed, %d unchanged, %d zero; %s (block size %s) in %s, %s\n",
		o.Volume, st.Blocks, st.Changed, st.Unchanged, st.Zero,
		formatBytes(v.Size), formatSize(int64(v.BlockSize)), formatDuration(elapsed), formatRate(v.Size, elapsed))
	_, err = fmt.Fprintln(c.stdout, p.ID)
	return err
}

// blockSizeFlag is --block-size: a size that must be a valid block size.
type blockSizeFlag int

func (b *blockSizeFlag) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	if n < blockstore.MinBlockSize || n > blockstore.MaxBlockSize || n&(n-1) != 0 {
		return fmt.Errorf("%s is %d bytes: want a power of two from 4KiB to 1MiB (4KiB, 8KiB, ..., 64KiB, ..., 1MiB)", s, n)
	}
	*b = blockSizeFlag(n)
	return nil
}

func (b *blockSizeFlag) String() string {
	if *b == 0 {
		return ""
	}
	return formatSize(int64(*b))
}

func (b *blockSizeFlag) Type() string { return "size" }

// sizeUnits are the units parseSize accepts, lowercased.
var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"k": 1 << 10, "kib": 1 << 10,
	"m": 1 << 20, "mib": 1 << 20,
	"g": 1 << 30, "gib": 1 << 30,
}

// parseSize parses a byte count: a whole number of bytes ("65536") or a
// whole number with a binary unit ("4KiB", "64 KiB", "1MiB", "1M"). Decimal
// units (KB, MB, GB) are refused as ambiguous.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	if num == "" {
		return 0, fmt.Errorf("size %q: want a whole number of bytes, optionally with a unit (65536, 64KiB, 1MiB)", s)
	}
	mult, ok := sizeUnits[unit]
	if !ok {
		switch unit {
		case "kb", "mb", "gb":
			return 0, fmt.Errorf("size %q: unit %q is ambiguous: write %s%ciB (powers of 1024) or a plain byte count", s, t[i:], num, strings.ToUpper(unit[:1])[0])
		}
		if strings.HasPrefix(unit, ".") || strings.HasPrefix(unit, ",") {
			return 0, fmt.Errorf("size %q: want a whole number (write 1536KiB, not 1.5MiB)", s)
		}
		return 0, fmt.Errorf("size %q: unknown unit %q: want B, KiB, MiB or GiB", s, t[i:])
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return n * mult, nil
}

// formatSize returns n exactly, in the largest binary unit that divides it:
// 65536 -> "64KiB".
func formatSize(n int64) string {
	for _, u := range []struct {
		name string
		size int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.size == 0 {
			return fmt.Sprintf("%d%s", n/u.size, u.name)
		}
	}
	return strconv.FormatInt(n, 10)
}

// ---- points ----

func (c *cli) pointsCmd() *cobra.Command {
	var (
		dir, volume, service string
		jsonOut              bool
		where                storeOrAdmin
	)
	cmd := &cobra.Command{
		Use:   "points [--store DIR | --admin ADDR [--service S]] [--volume NAME] [--json]",
		Short: "List the points in a store, oldest first",
		Long: `List the points in a store, oldest first: ID, time (UTC, RFC 3339), name,
volume(s), volume size and the bytes in use (non-zero blocks). With --volume,
only the points that hold that volume. Any ID, name or time shown can be given
to restore --at.`,
		Args: noArgs,
		RunE: c.runE(func(cmd *cobra.Command, _ []string) error {
			if err := where.check(); err != nil {
				return err
			}
			if volume != "" {
				if err := checkVolumeName(volume); err != nil {
					return err
				}
			}
			if where.admin.addr != "" {
				cl, err := where.admin.client()
				if err != nil {
					return err
				}
				pts, err := cl.Points(cmd.Context(), service, volume)
				if err != nil {
					return err
				}
				if jsonOut {
					return writeJSON(c.stdout, pts)
				}
				return printPoints(c.stdout, pts, volume)
			}
			if service != "" {
				return usagef("--service works with --admin; in a local store use --volume")
			}
			return c.withStore(dir, func(s *blockstore.Store) error {
				pts, err := s.Points(cmd.Context(), volume)
				if err != nil {
					return err
				}
				if volume != "" && len(pts) == 0 {
					return volumeNotFound(cmd.Context(), s, volume)
				}
				if jsonOut {
					if pts == nil {
						pts = []blockstore.Point{}
					}
					return writeJSON(c.stdout, pts)
				}
				return printPoints(c.stdout, pts, volume)
			})
		}),
	}
	where.register(cmd, &dir)
	cmd.Flags().StringVar(&service, "service", "", "only points of this service (with --admin)")
	cmd.Flags().StringVar(&volume, "volume", "", "only points that hold this volume (SERVICE/VOLUME with --admin)")
	jsonFlag(cmd, &jsonOut)
	return cmd
}

// volumeNotFound returns the error for a volume the store does not hold,
// naming the volumes it does hold.
func volumeNotFound(ctx context.Context, s *blockstore.Store, volume string) error {
	names, err := s.Volumes(ctx)
	if err != nil {
		return err
	}
	have := "none"
	if len(names) > 0 {
		have = strings.Join(names, ", ")
	}
	return fmt.Errorf("volume %q: %w (volumes in this store: %s)", volume, blockstore.ErrNotFound, have)
}

func printPoints(w io.Writer, pts []blockstore.Point, volume string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTIME\tNAME\tVOLUME\tSIZE\tUSED")
	for _, p := range pts {
		var names []string
		var size, used int64
		for _, v := range p.Volumes {
			if volume != "" && v.Name != volume {
				continue
			}
			names = append(names, v.Name)
			size += v.Size
			used += min(v.Used*int64(v.BlockSize), v.Size)
		}
		name := p.Name
		if name == "" {
			name = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.ID, p.Time.UTC().Format(time.RFC3339), name,
			strings.Join(names, ","), formatBytes(size), formatBytes(used))
	}
	return tw.Flush()
}

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
				return c.restoreRemote(cmd.Context(), &where.admin, volume, at, format, out, force)
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
					err = c.restoreFile(ctx, s, v, out, force, pr)
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
func (c *cli) restoreFile(ctx context.Context, s *blockstore.Store, v blockstore.VolumeState, out string, force bool, pr *progress) error {
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
	if err := syncDir(filepath.Dir(out)); err != nil {
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

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}

// ---- verify ----

func (c *cli) verifyCmd() *cobra.Command {
	var (
		dir     string
		sample  float64
		jsonOut bool
	)
	cmd := &cobra.Command{
		Use:   "verify --store DIR [--sample FRACTION] [--json]",
		Short: "Check a store for damage",
		Long: `Check that the store's packs, index, block maps and points are intact: every
frame is re-read and re-hashed (or, with --sample, that fraction of them) and
every point's map is walked.

Damage is listed with what to do about it, and lifeboat exits with code 3.`,
		Args: noArgs,
		RunE: c.runE(func(cmd *cobra.Command, _ []string) error {
			if math.IsNaN(sample) || sample < 0 || sample > 1 {
				return usagef("--sample %v: want a fraction from 0 to 1 (0 or 1 checks everything)", sample)
			}
			if sample == 1 {
				sample = 0
			}
			return c.withStore(dir, func(s *blockstore.Store) error {
				pr := newProgress(c.stderr, "verify", true)
				rep, err := s.Verify(cmd.Context(), blockstore.VerifyOptions{Sample: sample, Progress: pr.callback()})
				pr.done()
				if err != nil {
					return err
				}
				if jsonOut {
					err = writeJSON(c.stdout, newVerifyJSON(rep, sample))
				} else {
					err = printVerify(c.stdout, rep)
				}
				if err != nil {
					return err
				}
				if len(rep.Damage) > 0 {
					return &damageError{n: len(rep.Damage)}
				}
				return nil
			})
		}),
	}
	storeFlag(cmd, &dir)
	cmd.Flags().Float64Var(&sample, "sample", 0, "re-hash only this fraction of frames, e.g. 0.05 (0 = all)")
	jsonFlag(cmd, &jsonOut)
	return cmd
}

type verifyJSON struct {
	OK     bool         `json:"ok"`
	Sample float64      `json:"sample,omitempty"`
	Packs  int64        `json:"packs"`
	Frames int64        `json:"frames"`
	Blocks int64        `json:"blocks"`
	Hashed int64        `json:"blocks_hashed"`
	Pages  int64        `json:"pages"`
	Points int64        `json:"points"`
	Damage []damageJSON `json:"damage"`
}

type damageJSON struct {
	Error  string `json:"error"`
	Path   string `json:"path,omitempty"`
	Offset *int64 `json:"offset,omitempty"`
	Block  string `json:"block,omitempty"`
	Hint   string `json:"hint,omitempty"`
}

func newVerifyJSON(r blockstore.VerifyReport, sample float64) verifyJSON {
	out := verifyJSON{OK: len(r.Damage) == 0, Sample: sample, Packs: r.Packs, Frames: r.Frames,
		Blocks: r.Blocks, Hashed: r.Hashed, Pages: r.Pages, Points: r.Points, Damage: []damageJSON{}}
	for _, d := range r.Damage {
		j := damageJSON{Error: d.Error(), Hint: errorHint(d)}
		var ce *blockstore.CorruptError
		if errors.As(d, &ce) {
			j.Path = ce.Path
			if ce.Offset >= 0 {
				j.Offset = &ce.Offset
			}
			if !ce.Block.IsZero() {
				j.Block = ce.Block.String()
			}
		}
		out.Damage = append(out.Damage, j)
	}
	return out
}

func printVerify(w io.Writer, r blockstore.VerifyReport) error {
	fmt.Fprintf(w, "checked %d packs, %d frames, %d blocks (%d re-hashed), %d map pages, %d points\n",
		r.Packs, r.Frames, r.Blocks, r.Hashed, r.Pages, r.Points)
	if len(r.Damage) == 0 {
		_, err := fmt.Fprintln(w, "no damage found")
		return err
	}
	for _, d := range r.Damage {
		fmt.Fprintf(w, "damage: %v\n", d)
		if h := errorHint(d); h != "" {
			fmt.Fprintf(w, "  Try: %s\n", h)
		}
	}
	return nil
}

// ---- prune ----

func (c *cli) pruneCmd() *cobra.Command {
	var (
		dir             string
		r               blockstore.Retention
		dryRun, jsonOut bool
	)
	cmd := &cobra.Command{
		Use:   "prune --store DIR [--keep-last N] [--keep-hours N] [--keep-hourly-days N] [--keep-daily-weeks N] [--dry-run] [--json]",
		Short: "Delete old points and the data only they use",
		Long: `Delete the points that no keep rule keeps, then the blocks and map pages no
remaining point uses; packs that become mostly empty are rewritten.

A point is kept when any rule keeps it:
  --keep-last N         the newest N points of each volume
  --keep-hours N        every point of the last N hours
  --keep-hourly-days N  then the newest point of each hour, for N days
  --keep-daily-weeks N  then the newest point of each day, for N weeks
At least one rule is required. --dry-run shows what would go.`,
		Example: "  lifeboat prune --store /srv/store --keep-hours 24 --keep-hourly-days 7 --keep-daily-weeks 8 --dry-run",
		Args:    noArgs,
		RunE: c.runE(func(cmd *cobra.Command, _ []string) error {
			for _, f := range []struct {
				name string
				v    int
			}{{"--keep-last", r.Last}, {"--keep-hours", r.Hours}, {"--keep-hourly-days", r.HourlyDays}, {"--keep-daily-weeks", r.DailyWeeks}} {
				if f.v < 0 {
					return usagef("%s %d: want a count of 0 or more", f.name, f.v)
				}
			}
			if r == (blockstore.Retention{}) {
				return usagef("prune: no keep rule given: pass at least one of --keep-last, --keep-hours, --keep-hourly-days, --keep-daily-weeks (prune never guesses what to keep)")
			}
			return c.withStore(dir, func(s *blockstore.Store) error {
				rep, err := s.Prune(cmd.Context(), r, blockstore.PruneOptions{DryRun: dryRun})
				if err != nil {
					return err
				}
				if jsonOut {
					return writeJSON(c.stdout, newPruneJSON(rep, dryRun))
				}
				return printPrune(c.stdout, rep, dryRun)
			})
		}),
	}
	storeFlag(cmd, &dir)
	cmd.Flags().IntVar(&r.Last, "keep-last", 0, "keep the newest N points")
	cmd.Flags().IntVar(&r.Hours, "keep-hours", 0, "keep every point of the last N hours")
	cmd.Flags().IntVar(&r.HourlyDays, "keep-hourly-days", 0, "then keep the newest point of each hour for N days")
	cmd.Flags().IntVar(&r.DailyWeeks, "keep-daily-weeks", 0, "then keep the newest point of each day for N weeks")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "show what would be deleted; change nothing")
	jsonFlag(cmd, &jsonOut)
	return cmd
}

type pruneJSON struct {
	DryRun        bool               `json:"dry_run"`
	PointsKept    int                `json:"points_kept"`
	PointsDeleted int                `json:"points_deleted"`
	Deleted       []blockstore.Point `json:"deleted"`
	BlocksDeleted int64              `json:"blocks_deleted"`
	PagesDeleted  int64              `json:"pages_deleted"`
	PacksDeleted  int                `json:"packs_deleted"`
	PacksRepacked int                `json:"packs_repacked"`
	BytesBefore   int64              `json:"bytes_before"`
	BytesAfter    int64              `json:"bytes_after"`
}

func newPruneJSON(r blockstore.PruneReport, dryRun bool) pruneJSON {
	out := pruneJSON{DryRun: dryRun, PointsKept: r.PointsKept, PointsDeleted: r.PointsDeleted, Deleted: r.Deleted,
		BlocksDeleted: r.BlocksDeleted, PagesDeleted: r.PagesDeleted, PacksDeleted: r.PacksDeleted,
		PacksRepacked: r.PacksRepacked, BytesBefore: r.BytesBefore, BytesAfter: r.BytesAfter}
	if out.Deleted == nil {
		out.Deleted = []blockstore.Point{}
	}
	return out
}

func printPrune(w io.Writer, r blockstore.PruneReport, dryRun bool) error {
	deleted, kept, rewrote, freed := "deleted", "kept", "rewrote", "freed"
	if dryRun {
		fmt.Fprintln(w, "dry run: nothing was changed")
		deleted, kept, rewrote, freed = "would delete", "keep", "rewrite", "would free"
	}
	fmt.Fprintf(w, "%s %d points, %s %d\n", deleted, r.PointsDeleted, kept, r.PointsKept)
	for _, p := range r.Deleted {
		var names []string
		for _, v := range p.Volumes {
			names = append(names, v.Name)
		}
		name := p.Name
		if name == "" {
			name = "-"
		}
		fmt.Fprintf(w, "  %s  %s  %s  %s\n", p.ID, p.Time.UTC().Format(time.RFC3339), name, strings.Join(names, ","))
	}
	fmt.Fprintf(w, "%s %d blocks and %d map pages; %s %d packs, %s %d\n",
		deleted, r.BlocksDeleted, r.PagesDeleted, deleted, r.PacksDeleted, rewrote, r.PacksRepacked)
	_, err := fmt.Fprintf(w, "store: %s -> %s (%s %s)\n", formatBytes(r.BytesBefore), formatBytes(r.BytesAfter),
		freed, formatBytes(r.BytesBefore-r.BytesAfter))
	return err
}

// ---- stats ----

func (c *cli) statsCmd() *cobra.Command {
	var (
		dir     string
		jsonOut bool
	)
	cmd := &cobra.Command{
		Use:   "stats --store DIR [--json]",
		Short: "Show how much a store holds and how well it deduplicates and compresses",
		Long: `Show what a store holds:
  logical      sum over all points of their volume sizes
  used         the non-zero data in those points
  unique       plaintext stored once (after deduplication)
  stored       pack bytes on disk (after compression)
  index        index bytes on disk
  dedup        used / unique
  compression  unique / stored`,
		Args: noArgs,
		RunE: c.runE(func(cmd *cobra.Command, _ []string) error {
			return c.withStore(dir, func(s *blockstore.Store) error {
				st, err := s.Stats(cmd.Context())
				if err != nil {
					return err
				}
				if jsonOut {
					return writeJSON(c.stdout, newStatsJSON(st))
				}
				return printStats(c.stdout, st)
			})
		}),
	}
	storeFlag(cmd, &dir)
	jsonFlag(cmd, &jsonOut)
	return cmd
}

type statsJSON struct {
	Points           int     `json:"points"`
	Volumes          int     `json:"volumes"`
	LogicalBytes     int64   `json:"logical_bytes"`
	UsedBytes        int64   `json:"used_bytes"`
	UniqueBytes      int64   `json:"unique_bytes"`
	StoredBytes      int64   `json:"stored_bytes"`
	IndexBytes       int64   `json:"index_bytes"`
	Blocks           int64   `json:"blocks"`
	Packs            int     `json:"packs"`
	DedupRatio       float64 `json:"dedup_ratio"`
	CompressionRatio float64 `json:"compression_ratio"`
}

// finite replaces a ratio JSON cannot carry (an empty store divides by
// zero) with 0.
func finite(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}

func newStatsJSON(s blockstore.Stats) statsJSON {
	return statsJSON{Points: s.Points, Volumes: s.Volumes, LogicalBytes: s.LogicalBytes, UsedBytes: s.UsedBytes,
		UniqueBytes: s.UniqueBytes, StoredBytes: s.StoredBytes, IndexBytes: s.IndexBytes, Blocks: s.Blocks,
		Packs: s.Packs, DedupRatio: finite(s.DedupRatio), CompressionRatio: finite(s.CompressionRatio)}
}

func printStats(w io.Writer, s blockstore.Stats) error {
	ratio := func(r float64) string {
		if r = finite(r); r == 0 {
			return "-"
		}
		return formatRatio(r)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "points\t%d\n", s.Points)
	fmt.Fprintf(tw, "volumes\t%d\n", s.Volumes)
	fmt.Fprintf(tw, "logical\t%s\n", formatBytes(s.LogicalBytes))
	fmt.Fprintf(tw, "used\t%s\n", formatBytes(s.UsedBytes))
	fmt.Fprintf(tw, "unique\t%s\t(%d blocks)\n", formatBytes(s.UniqueBytes), s.Blocks)
	fmt.Fprintf(tw, "stored\t%s\t(%d packs)\n", formatBytes(s.StoredBytes), s.Packs)
	fmt.Fprintf(tw, "index\t%s\n", formatBytes(s.IndexBytes))
	fmt.Fprintf(tw, "dedup\t%s\n", ratio(s.DedupRatio))
	fmt.Fprintf(tw, "compression\t%s\n", ratio(s.CompressionRatio))
	fmt.Fprintf(tw, "total saving\t%s\n", ratio(finite(s.DedupRatio)*finite(s.CompressionRatio)))
	fmt.Fprintf(tw, "encryption\t%s\n", s.Encryption)
	return tw.Flush()
}

func isBlockDevice(fi os.FileInfo) bool {
	m := fi.Mode()
	return m&os.ModeDevice != 0 && m&os.ModeCharDevice == 0
}
