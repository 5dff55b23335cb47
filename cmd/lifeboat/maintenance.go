package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/node/api"
)

// Checking and tending a local store: verify, prune, stats.

// ---- verify ----

func (c *cli) verifyCmd() *cobra.Command {
	var (
		dir     string
		sample  float64
		jsonOut bool
		repair  bool
		where   storeOrAdmin
	)
	cmd := &cobra.Command{
		Use:   "verify (--store DIR [--sample FRACTION] | --admin ADDR [--repair]) [--json]",
		Short: "Check a store for damage",
		Long: `Check that the store's packs, index, block maps and points are intact: every
frame is re-read and re-hashed (or, with --sample, that fraction of them) and
every point's map is walked. With --admin, the node's own store is checked
(operator role); with --repair too, the node scrubs its whole store now and
replaces every damaged or missing block with a sound copy from another node
that holds it, then verifies the store again. A block no node holds is
listed as lost with its service, volume, point and byte range, and the
points that need it are marked damaged (failovers and drills pass them over).

Damage is listed with what to do about it, and lifeboat exits with code 3.`,
		Args: noArgs,
		RunE: c.runE(func(cmd *cobra.Command, _ []string) error {
			if err := where.check(); err != nil {
				return err
			}
			if math.IsNaN(sample) || sample < 0 || sample > 1 {
				return usagef("--sample %v: want a fraction from 0 to 1 (0 or 1 checks everything)", sample)
			}
			if sample == 1 {
				sample = 0
			}
			if where.admin.addr != "" {
				if sample != 0 {
					return usagef("--sample works with --store; a node's store is checked in full")
				}
				return c.verifyRemote(cmd.Context(), where.admin, repair, jsonOut)
			}
			if repair {
				return usagef("--repair works with --admin: a node repairs from the other nodes of its cluster")
			}
			return c.withStore(dir, func(s *blockstore.Store) error {
				pr := newProgress(c.stderr, "verify", true)
				rep, err := s.Maintenance().Verify(cmd.Context(), blockstore.VerifyOptions{Sample: sample, Progress: pr.callback()})
				pr.done()
				if err != nil {
					return err
				}
				return c.reportVerify(newVerifyJSON(rep, sample), jsonOut)
			})
		}),
	}
	where.register(cmd, &dir)
	cmd.Flags().Float64Var(&sample, "sample", 0, "re-hash only this fraction of frames, e.g. 0.05 (0 = all)")
	cmd.Flags().BoolVar(&repair, "repair", false, "with --admin: repair damaged blocks from other nodes")
	jsonFlag(cmd, &jsonOut)
	return cmd
}

// reportVerify prints a verify result and returns the damage error.
func (c *cli) reportVerify(r verifyJSON, jsonOut bool) error {
	var err error
	if jsonOut {
		err = writeJSON(c.stdout, r)
	} else {
		err = printVerify(c.stdout, r)
	}
	if err != nil {
		return err
	}
	if len(r.Damage) > 0 {
		return &damageError{n: len(r.Damage)}
	}
	return nil
}

// verifyJSON is verify --json: the report, with the damage spelled out.
type verifyJSON struct {
	Sample float64 `json:"sample,omitempty"`
	api.VerifyResult
}

func newVerifyJSON(r blockstore.VerifyReport, sample float64) verifyJSON {
	out := verifyJSON{Sample: sample, VerifyResult: api.NewVerifyResult(r)}
	for i, d := range r.Damage {
		if h := errorHint(d); h != "" {
			out.Damage[i].Hint = h
		}
	}
	return out
}

func printVerify(w io.Writer, r verifyJSON) error {
	fmt.Fprintf(w, "checked %d packs, %d frames, %d blocks (%d re-hashed), %d map pages, %d points\n",
		r.Packs, r.Frames, r.Blocks, r.Hashed, r.Pages, r.Points)
	if len(r.Damage) == 0 {
		_, err := fmt.Fprintln(w, "no damage found")
		return err
	}
	for _, d := range r.Damage {
		fmt.Fprintf(w, "damage: %s\n", d.Error)
		if d.Hint != "" {
			fmt.Fprintf(w, "  Try: %s\n", d.Hint)
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
		where           storeOrAdmin
		service         string
	)
	cmd := &cobra.Command{
		Use:   "prune (--store DIR [--keep-last N] [--keep-hours N] [--keep-hourly-days N] [--keep-daily-weeks N] | --admin ADDR [--service S]) [--dry-run] [--json]",
		Short: "Delete old points and the data only they use",
		Long: `Delete the points that no keep rule keeps, then the blocks and map pages no
remaining point uses; packs that become mostly empty are rewritten. Locked
points are never deleted (they are listed as refused).

With --admin, the node thins its points now by its site's retention in the
policy (what it does by itself every lifecycle.thin_every) and collects the
garbage; --dry-run (viewer role) lists every point with why it is kept or
that it would go, and what a collection would reclaim. Without --dry-run
it needs the admin role.

In a local store (--store):
A point is kept when any rule keeps it:
  --keep-last N         the newest N points of each volume
  --keep-hours N        every point of the last N hours
  --keep-hourly-days N  then the newest point of each hour, for N days
  --keep-daily-weeks N  then the newest point of each day, for N weeks
At least one rule is required. --dry-run shows what would go.`,
		Example: "  lifeboat prune --store /srv/store --keep-hours 24 --keep-hourly-days 7 --keep-daily-weeks 8 --dry-run",
		Args:    noArgs,
		RunE: c.runE(func(cmd *cobra.Command, _ []string) error {
			if err := where.check(); err != nil {
				return err
			}
			if where.admin.addr != "" {
				if r != (blockstore.Retention{}) {
					return usagef("--keep-* work with --store; a node thins by its site's retention in the policy")
				}
				return c.pruneRemote(cmd.Context(), where.admin, service, dryRun, jsonOut)
			}
			if service != "" {
				return usagef("--service works with --admin")
			}
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
				rep, err := s.Maintenance().Prune(cmd.Context(), r, blockstore.PruneOptions{DryRun: dryRun})
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
	where.register(cmd, &dir)
	cmd.Flags().StringVar(&service, "service", "", "only this service (with --admin)")
	cmd.Flags().IntVar(&r.Last, "keep-last", 0, "keep the newest N points")
	cmd.Flags().IntVar(&r.Hours, "keep-hours", 0, "keep every point of the last N hours")
	cmd.Flags().IntVar(&r.HourlyDays, "keep-hourly-days", 0, "then keep the newest point of each hour for N days")
	cmd.Flags().IntVar(&r.DailyWeeks, "keep-daily-weeks", 0, "then keep the newest point of each day for N weeks")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "show what would be deleted; change nothing")
	jsonFlag(cmd, &jsonOut)
	return cmd
}

// pruneJSON is prune --json.
type pruneJSON struct {
	DryRun bool `json:"dry_run"`
	blockstore.PruneReport
}

func newPruneJSON(r blockstore.PruneReport, dryRun bool) pruneJSON {
	out := pruneJSON{DryRun: dryRun, PruneReport: r}
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
		where   storeOrAdmin
	)
	cmd := &cobra.Command{
		Use:   "stats (--store DIR | --admin ADDR) [--json]",
		Short: "Show how much a store holds and how well it deduplicates and compresses",
		Long: `Show what a store holds:
  logical      sum over all points of their volume sizes
  used         the non-zero data in those points
  unique       plaintext stored once (after deduplication)
  stored       pack bytes on disk (after compression)
  index        index bytes on disk
  dedup        used / unique
  compression  unique / stored
With --admin, the node's store, its file system's free space, what the last
garbage collection found reclaimable, and per service the points held and
how many the next thinning pass deletes.`,
		Args: noArgs,
		RunE: c.runE(func(cmd *cobra.Command, _ []string) error {
			if err := where.check(); err != nil {
				return err
			}
			if where.admin.addr != "" {
				return c.statsRemote(cmd.Context(), where.admin, jsonOut)
			}
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
	where.register(cmd, &dir)
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
