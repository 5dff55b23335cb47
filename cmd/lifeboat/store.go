package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/node/api"
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

// withStore opens the store in dir with the command's logger and key,
// runs f on it and closes it.
func (c *cli) withStore(dir string, f func(*blockstore.Store) error) (err error) {
	kek, err := c.kek.load(context.Background(), true)
	if err != nil {
		return err
	}
	s, err := blockstore.Open(dir, blockstore.Options{Logger: c.log, KEK: kek})
	if err != nil {
		return openStoreErr(dir, err)
	}
	defer func() {
		if cerr := s.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close store %s: %w", dir, cerr)
		}
	}()
	return f(s)
}

// openStoreErr adds the way out to the errors of opening a store.
func openStoreErr(dir string, err error) error {
	switch {
	case errors.Is(err, blockstore.ErrNotStore):
		return &hintError{err: err, hint: fmt.Sprintf("check the --store path, or create a store with `lifeboat store init --store %s`", dir)}
	case errors.Is(err, blockstore.ErrEncrypted):
		return &hintError{err: err, hint: "give the store's key-encryption key with --kek-file FILE, --kek-command CMD or $" + envKEKFile}
	case errors.Is(err, blockstore.ErrWrongKEK):
		return &hintError{err: err, hint: "the key given is not the one this store is sealed under; after a `store rekey` only the new key opens it"}
	}
	return err
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
				pts, err := cl.KeptPoints(cmd.Context(), service, volume)
				if err != nil {
					return err
				}
				if jsonOut {
					if pts == nil {
						pts = []api.KeptPoint{}
					}
					return writeJSON(c.stdout, pts)
				}
				return printKeptPoints(c.stdout, pts, volume)
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
	cmd.AddCommand(c.clearSuspectCmd())
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
		names, size, used := pointVolumes(p, volume)
		name := p.Name
		if name == "" {
			name = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.ID, p.Time.UTC().Format(time.RFC3339), name,
			strings.Join(names, ","), formatBytes(size), formatBytes(used))
	}
	return tw.Flush()
}

// pointVolumes returns p's volume names (only volume, when given), their
// size and the bytes in use.
func pointVolumes(p blockstore.Point, volume string) (names []string, size, used int64) {
	for _, v := range p.Volumes {
		if volume != "" && v.Name != volume {
			continue
		}
		names = append(names, v.Name)
		size += v.Size
		used += min(v.Used*int64(v.BlockSize), v.Size)
	}
	return names, size, used
}
