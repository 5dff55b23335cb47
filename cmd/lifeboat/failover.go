package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-dr/lifeboat/node"
)

func (c *cli) failoverCmd() *cobra.Command {
	var (
		af                   adminFlags
		req                  node.FailoverRequest
		yes, jsonOut, dryRun bool
	)
	cmd := &cobra.Command{
		Use:   "failover SERVICE [--admin ADDR] [--to SITE] [--at latest|POINT|TIME] [--planned] [--force] [--yes]",
		Short: "Bring a service up at a recovery site from its newest (or a chosen) point",
		Long: `failover runs against a node of the site taking over (by default the site of
the node at --admin). It prints the plan first: the point and so the RPO, the
images and the hooks; then, after --yes or a "y" on a terminal, it makes the
images exist at the point (hot: the standby images; warm and cold: from the
store), starts a new epoch in the catalog (the old primary is fenced: its
nodes take no more writes for the service), runs the service's start hook
with the images in its environment, then the health hook until it passes.
It reports the RPO and RTO it achieved. Interrupted, it finishes when run
again.

  --at       an older point: the answer to corruption or ransomware that was
             already replicated (a point ID, or an RFC 3339 time: the newest
             point at or before it)
  --planned  both sites are up: the primary runs the stop hook, the final
             point is shipped, and the failover loses nothing
  --force    the primary site is gone and with it the catalog's quorum: this
             node becomes the catalog's only voter first (lifeboat raft recover)

Hooks get LIFEBOAT_SERVICE, LIFEBOAT_SITE, LIFEBOAT_EPOCH, LIFEBOAT_POINT,
LIFEBOAT_POINT_TIME, LIFEBOAT_IMAGE_DIR, LIFEBOAT_IMAGES (space-separated
paths), LIFEBOAT_IMAGE_<VOLUME> per volume and LIFEBOAT_PHASE (start, health).`,
		Args: oneArg("SERVICE"),
		RunE: c.runE(func(cmd *cobra.Command, args []string) error {
			req.Service, req.DryRun = args[0], dryRun
			s, err := newAdminSession(c, &af, jsonOut)
			if err != nil {
				return err
			}
			return s.failover(cmd.Context(), req, yes)
		}),
	}
	af.register(cmd)
	f := cmd.Flags()
	f.StringVar(&req.Site, "to", "", "the site taking over (default: the site of the node at --admin)")
	f.StringVar(&req.At, "at", "latest", "the point: latest (the newest not suspect, not after a suspect point, not damaged here, verified where required), a point ID (8+ characters) or an RFC 3339 time")
	f.BoolVar(&req.Planned, "planned", false, "both sites are up: stop the service at its primary, ship the final point, lose nothing")
	f.BoolVar(&req.Force, "force", false, "the primary site is lost for good: recover the catalog on this node first")
	f.BoolVar(&yes, "yes", false, "do not ask before acting")
	f.BoolVar(&dryRun, "dry-run", false, "print the plan and stop")
	f.BoolVar(&jsonOut, "json", false, "print the plan, the progress and the result as JSON lines")
	return cmd
}

// failover shows the plan of req, asks (unless yes) and runs it.
func (s *adminSession) failover(ctx context.Context, req node.FailoverRequest, yes bool) error {
	jsonOut := s.json
	printEvent := s.event
	plan := req
	plan.DryRun = true
	var seen *node.FailoverPlan
	onPlan := func(e node.FailoverEvent) {
		if e.Plan != nil {
			seen = e.Plan
		}
		printEvent(e)
	}
	_, err := s.cl.Failover(ctx, plan, onPlan)
	if ok, rerr := s.redirect(err); ok {
		_, err = s.cl.Failover(ctx, plan, onPlan)
	} else if rerr != nil && !errors.Is(rerr, err) {
		return rerr
	}
	if err != nil {
		return err
	}
	if req.DryRun {
		return nil
	}
	if seen != nil && !seen.Resume && !seen.Planned && seen.Point != "" {
		// Act on the plan shown: the newest point may change meanwhile.
		req.At = seen.Point
	}
	if seen != nil && seen.NeedForce && !req.Force {
		return fmt.Errorf("%w: the catalog has no quorum; if the primary site is lost for good, run again with --force", node.ErrNoQuorum)
	}
	if !yes {
		if !isTerminal(s.stdout) || !isTerminalFile(os.Stdin) {
			return usagef("failover changes where %s runs: run it again with --yes to act on this plan", req.Service)
		}
		fmt.Fprintf(s.stdout, "Fail over %s now? [y/N] ", req.Service)
		ans, _ := bufio.NewReader(os.Stdin).ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(ans)); a != "y" && a != "yes" {
			return errors.New("failover not confirmed: nothing changed")
		}
	}
	rec, err := s.cl.Failover(ctx, req, func(e node.FailoverEvent) {
		if e.Plan == nil || jsonOut { // the plan was shown already
			printEvent(e)
		}
	})
	if err != nil {
		return err
	}
	if jsonOut {
		return json.NewEncoder(s.stdout).Encode(rec)
	}
	met := ""
	if seen != nil && seen.RPOTarget > 0 {
		met = " (target " + secs(seen.RPOTarget) + ": met)"
		if rec.RPO > seen.RPOTarget {
			met = " (target " + secs(seen.RPOTarget) + ": NOT met)"
		}
	}
	fmt.Fprintf(s.stdout, "failover done: %s runs at %s, epoch %d, from point %s (%s); RPO %s%s; RTO %s\n",
		rec.Service, rec.To, rec.Epoch, rec.Point, rec.PointTime.Local().Format(time.RFC3339Nano), secs(rec.RPO), met, secs(rec.RTO))
	if !rec.Planned {
		fmt.Fprintf(s.stdout, "(RPO: the data the catalog knew %s had past the point; the point was %s old when the failover started, which bounds it from above)\n",
			rec.From, secs(rec.PointAge))
	}
	return nil
}

func isTerminalFile(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func (c *cli) failbackCmd() *cobra.Command {
	var af adminFlags
	cmd := &cobra.Command{
		Use:   "failback SERVICE [--admin ADDR]",
		Short: "Make the site a service failed over from a copy again, to bring it home later",
		Long: `failback re-protects a service in the reverse direction: the site it last
failed over from becomes a warm copy and receives only the blocks that
differ from what it already holds. Points that site took after the
failover stay there as a divergent branch (lifeboat status lists it). When
it has caught up, "lifeboat failover SERVICE --planned --to SITE" brings the
service home with no data loss.`,
		Args: oneArg("SERVICE"),
		RunE: c.runE(func(cmd *cobra.Command, args []string) error {
			cl, err := af.client()
			if err != nil {
				return err
			}
			st, err := cl.Failback(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			f := st.LastFailover()
			fmt.Fprintf(c.stdout, "failback: %s (running at %s, epoch %d) now replicates to %s as a warm copy; when lifeboat status shows %s caught up, run against a node of %s: lifeboat failover %s --planned --admin ADDR\n",
				args[0], st.Active, st.Epoch, f.From, f.From, f.From, args[0])
			return nil
		}),
	}
	af.register(cmd)
	return cmd
}

func (c *cli) drillCmd() *cobra.Command {
	var (
		af          adminFlags
		req         node.DrillRequest
		cleanup, js bool
		hook        string
	)
	cmd := &cobra.Command{
		Use:   "drill SERVICE [--admin ADDR] [--at ...] [--keep] [--nbd] | drill SERVICE --hook CMD [--at ...] | drill SERVICE --cleanup",
		Short: "Bring up an isolated copy of a service at a recovery site and test it",
		Long: `drill materializes the service's images at a point (default the newest)
into the node's drills directory, runs the test hook (--hook, or the
service's health hook) with the images in its environment (as for a
failover, plus LIFEBOAT_DRILL), reports pass or fail with timings, records
the result in the catalog and removes the images when it ends, passed or
failed (unless --keep; kept images stay until "drill SERVICE --cleanup" or
"lifeboat images rm SERVICE/drill/ID" removes them; "lifeboat images list"
shows them). Production is not touched: the
standby images, replication, the points and the epoch stay as they are.
Run it against a node of the recovery site.

With --nbd nothing is copied: each volume is served from the store over NBD
on 127.0.0.1 with a copy-on-write overlay (LIFEBOAT_NBD_<VOLUME> and
LIFEBOAT_NBDS hold the nbd:// URIs, e.g. for qemu -drive file=...); the
hook's writes go to the overlay and are dropped when the drill ends.

The node runs only the hook the applied policy names ([service.hooks] drill,
else health): no request carries a command for a node to run. With --hook
CMD the command runs here, on this machine, as you: each volume of the
point is read through the admin API (with your operator certificate) and
served over NBD on a Unix socket only you can open, with a copy-on-write
overlay (LIFEBOAT_NBD_<VOLUME>=nbd+unix:///?socket=PATH and LIFEBOAT_NBDS);
the result is recorded in the catalog as a drill run by you.`,
		Args: oneArg("SERVICE"),
		RunE: c.runE(func(cmd *cobra.Command, args []string) error {
			if hook != "" && (req.Keep || req.NBD || cleanup) {
				return usagef("--hook runs the drill on this machine: it takes no --keep, --nbd or --cleanup")
			}
			if cleanup && (req.Keep || req.NBD || cmd.Flags().Changed("at")) {
				return usagef("--cleanup removes the images of kept drills and runs none: it takes no --keep, --nbd or --at")
			}
			s, err := newAdminSession(c, &af, js)
			if err != nil {
				return err
			}
			if hook != "" {
				return s.localDrill(cmd.Context(), args[0], req.At, hook)
			}
			if cleanup {
				ds, err := s.cl.CleanupDrills(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				fmt.Fprintf(c.stdout, "removed the images of %d kept drills of %s\n", len(ds), args[0])
				return nil
			}
			req.Service = args[0]
			d, err := s.cl.Drill(cmd.Context(), req, s.event)
			if ok, rerr := s.redirect(err); ok {
				d, err = s.cl.Drill(cmd.Context(), req, s.event)
			} else if rerr != nil && !errors.Is(rerr, err) {
				return rerr
			}
			if err != nil {
				return err
			}
			if js {
				return json.NewEncoder(c.stdout).Encode(d)
			}
			res := "PASSED"
			if !d.Passed {
				res = "FAILED"
			}
			fmt.Fprintf(c.stdout, "drill %s %s: %s at %s from point %s (%s); images %s, hook %s\n", d.ID, res, d.Service, d.Site, d.Point,
				d.PointTime.Local().Format(time.RFC3339), secs(d.Materialize), secs(d.Hook))
			if d.Verified != nil {
				fmt.Fprintf(c.stdout, "verify checks: %s\n", verifiedText(d.Verified))
				for _, ch := range d.Verified.Checks {
					for _, ev := range ch.Evidence {
						fmt.Fprintf(c.stdout, "  %s evidence: %s\n", ch.Name, ev)
					}
				}
			}
			if d.Output != "" {
				fmt.Fprintf(c.stdout, "hook output:\n%s\n", d.Output)
			}
			if d.Dir != "" {
				fmt.Fprintf(c.stdout, "images kept in %s: lifeboat drill %s --cleanup (or lifeboat images rm %s/drill/%s) removes them\n", d.Dir, d.Service, d.Service, d.ID)
			}
			if !d.Passed {
				return fmt.Errorf("drill failed: %s", d.Error)
			}
			return nil
		}),
	}
	af.register(cmd)
	f := cmd.Flags()
	f.StringVar(&req.At, "at", "latest", "the point: latest (the newest not suspect, not after a suspect point, not damaged here, verified where required), a point ID (8+ characters) or an RFC 3339 time")
	f.StringVar(&hook, "hook", "", "run this test command here (sh -c), against the point served over NBD from the node, instead of the policy's drill hook on the node")
	f.BoolVar(&req.Keep, "keep", false, "keep the drill's images for exploring (until drill --cleanup or images rm)")
	f.BoolVar(&req.NBD, "nbd", false, "serve the point over NBD with copy-on-write overlays instead of copying it (instant; the hook gets LIFEBOAT_NBD_<VOLUME>=nbd://...)")
	f.BoolVar(&cleanup, "cleanup", false, "remove the images of this service's kept drills on the node (and of drills that did not finish)")
	f.BoolVar(&js, "json", false, "print progress and the result as JSON lines")
	return cmd
}
