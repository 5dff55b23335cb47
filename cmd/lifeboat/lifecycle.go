package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-dr/lifeboat/node/api"
)

// prune, stats and verify with --admin: the node's lifecycle engine.

func (c *cli) verifyRemote(ctx context.Context, af adminFlags, jsonOut bool) error {
	cl, err := af.client()
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stderr, "verifying the store of the node at %s (this reads every pack)...\n", af.addr)
	r, err := cl.Verify(ctx)
	if err != nil {
		return err
	}
	return c.reportVerify(verifyJSON{VerifyResult: *r}, jsonOut)
}

func (c *cli) pruneRemote(ctx context.Context, af adminFlags, service string, dryRun, jsonOut bool) error {
	cl, err := af.client()
	if err != nil {
		return err
	}
	r, err := cl.Prune(ctx, service, dryRun)
	if err != nil {
		return err
	}
	if service != "" && len(r.Plans) == 0 {
		return fmt.Errorf("service %q: this node holds no points of it under its site's policy", service)
	}
	if jsonOut {
		return writeJSON(c.stdout, r)
	}
	return printPruneResult(c.stdout, r)
}

func printPruneResult(w io.Writer, r *api.PruneResult) error {
	deleted := "deleted"
	if r.DryRun {
		fmt.Fprintln(w, "dry run: nothing was changed")
		deleted = "would delete"
	}
	for _, p := range r.Plans {
		kept := 0
		for _, pt := range p.Points {
			if pt.Kept() {
				kept++
			}
		}
		fmt.Fprintf(w, "%s at %s: %d points, keep %d\n", p.Service, p.Site, len(p.Points), kept)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, pt := range p.Points {
			why := strings.Join(pt.Keep, ", ")
			if !pt.Kept() {
				why = deleted
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", pt.ID, pt.Time.UTC().Format(time.RFC3339), why)
		}
		tw.Flush()
		for _, ref := range p.Refused {
			fmt.Fprintf(w, "  refused %s: %s\n", ref.ID, ref.Reason)
		}
	}
	fmt.Fprintf(w, "%s %d points", deleted, r.Deleted)
	if r.Refused > 0 {
		fmt.Fprintf(w, ", refused %d", r.Refused)
	}
	fmt.Fprintln(w)
	if g := r.GC; g != nil {
		if r.DryRun {
			fmt.Fprintf(w, "garbage: %s in %d dead blocks and pages; a collection would delete %d packs and rewrite %d\n",
				formatBytes(g.DeadBytes), g.Dead, g.PacksDeleted, g.PacksRewritten)
		} else {
			fmt.Fprintf(w, "collected: %s -> %s (freed %s), %d packs deleted, %d rewritten\n",
				formatBytes(g.BytesBefore), formatBytes(g.BytesAfter), formatBytes(g.BytesBefore-g.BytesAfter), g.PacksDeleted, g.PacksRewritten)
		}
	}
	return nil
}

func (c *cli) statsRemote(ctx context.Context, af adminFlags, jsonOut bool) error {
	cl, err := af.client()
	if err != nil {
		return err
	}
	st, err := cl.Stats(ctx)
	if err != nil {
		return err
	}
	if jsonOut {
		return writeJSON(c.stdout, st)
	}
	if err := printStats(c.stdout, st.Store); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "free\t%s of %s (%.1f%%)\n", formatBytes(st.FreeBytes), formatBytes(st.SizeBytes), st.FreePercent)
	if st.Reclaimable >= 0 {
		fmt.Fprintf(tw, "reclaimable\t%s\t(at the last collection, %s)\n", formatBytes(st.Reclaimable), st.Lifecycle.GCAt.UTC().Format(time.RFC3339))
	} else {
		fmt.Fprintf(tw, "reclaimable\t-\t(no collection since the node started)\n")
	}
	tw.Flush()
	tw = tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tPOINTS\tTO DELETE\tOLDEST\tNEWEST")
	for _, s := range st.Services {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\n", s.Service, s.Points, s.Deletes, s.Oldest.UTC().Format(time.RFC3339), s.Newest.UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}

// printKeptPoints is points --admin: each point and why its site keeps it.
func printKeptPoints(w io.Writer, pts []api.KeptPoint, volume string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTIME\tNAME\tVOLUME\tSIZE\tUSED\tKEPT BECAUSE")
	for _, p := range pts {
		names, size, used := pointVolumes(p.Point, volume)
		name := p.Name
		if name == "" {
			name = "-"
		}
		why := strings.Join(p.Keep, ", ")
		if why == "" {
			why = "(the next thinning pass deletes it)"
		}
		if p.Suspect && p.Suspicion != nil {
			why = fmt.Sprintf("SUSPECT (%s); %s", api.SuspicionText(p.Suspicion), why)
		}
		for _, site := range slices.Sorted(maps.Keys(p.Damaged)) {
			why = fmt.Sprintf("DAMAGED at %s (%s); %s", site, p.Damaged[site], why)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.ID, p.Time.UTC().Format(time.RFC3339), name,
			strings.Join(names, ","), formatBytes(size), formatBytes(used), why)
	}
	return tw.Flush()
}

// clearSuspectCmd is points clear-suspect: an admin declares a suspect
// point clean (issue 16).
func (c *cli) clearSuspectCmd() *cobra.Command {
	var (
		af      adminFlags
		jsonOut bool
	)
	cmd := &cobra.Command{
		Use:   "clear-suspect --admin ADDR SERVICE POINT",
		Short: "Declare a suspect point clean (admin role)",
		Long: `Declare a point the ransomware signal flagged clean, when its writes were
expected (a volume re-encrypted or restored on purpose, a bulk load of
compressed data): failover and drill take it and the points after it again,
and the clean point before it is no longer pinned. The mark keeps the figures
and who cleared it; the call is in the audit log. POINT is the point's ID or
a unique prefix of at least 8 characters (lifeboat status lists suspect points).`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return usagef("%s: want two arguments, SERVICE and POINT; got %d", cmd.Name(), len(args))
			}
			return nil
		},
		RunE: c.runE(func(cmd *cobra.Command, args []string) error {
			cl, err := af.client()
			if err != nil {
				return err
			}
			m, err := cl.ClearSuspect(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			if jsonOut {
				return writeJSON(c.stdout, m)
			}
			fmt.Fprintf(c.stdout, "point %s of %s is no longer suspect (cleared by %s); it was %s\n", m.Point, m.Service, m.Suspect.Cleared, api.SuspicionText(m.Suspect))
			return nil
		}),
	}
	af.register(cmd)
	jsonFlag(cmd, &jsonOut)
	return cmd
}
