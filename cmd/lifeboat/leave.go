package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-dr/lifeboat/node"
)

// nodeLeaveCmd is `lifeboat node leave`: retire the node at --admin
// (issue 15 item 6).
func (c *cli) nodeLeaveCmd() *cobra.Command {
	var (
		af                  adminFlags
		yes, force, jsonOut bool
		dryRun              bool
	)
	cmd := &cobra.Command{
		Use:   "leave --admin ADDR [--yes] [--force] [--dry-run] [--json]",
		Short: "Retire the node at --admin from the cluster for good (admin role)",
		Long: `leave retires the node at --admin at once, instead of it being a dead
member until dead_node_timeout: a leader first hands leadership to another
voter; the node leaves the gossip gracefully (its peers see it "left"), the
leader removes it from Raft (voter or non-voter) and moves its holder
assignments to other nodes of its site; then the node stops and does not
start again with its old state (DATA_DIR/LEFT; --reset-raft makes it a new
member).

It prints what leaving means first and asks (or needs --yes). It refuses,
exit 8, and changes nothing when no Raft leader is reachable, when the
other voters would not be a quorum, or when the node is the only holder of
some service's points at its site (the message names the services);
--force leaves anyway, at that cost. Needs an admin certificate; audited.`,
		Args: noArgs,
		RunE: c.runE(func(cmd *cobra.Command, _ []string) error {
			cl, err := af.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			plan, err := cl.Leave(ctx, node.LeaveRequest{Force: force, DryRun: true})
			if err != nil {
				return err
			}
			if jsonOut && dryRun {
				return writeJSON(c.stdout, plan)
			}
			if !jsonOut {
				printLeave(c, plan, "would leave")
			}
			if dryRun {
				return nil
			}
			if !yes {
				if !isTerminal(c.stdout) || !isTerminalFile(os.Stdin) {
					return usagef("node leave retires %s for good: run it again with --yes", plan.Node)
				}
				fmt.Fprintf(c.stdout, "Retire %s now? [y/N] ", plan.Node)
				ans, _ := bufio.NewReader(os.Stdin).ReadString('\n')
				if a := strings.ToLower(strings.TrimSpace(ans)); a != "y" && a != "yes" {
					return errors.New("node leave not confirmed: nothing changed")
				}
			}
			res, err := cl.Leave(ctx, node.LeaveRequest{Force: force})
			if err != nil {
				return err
			}
			stopped := waitStopped(ctx, cl, 45*time.Second)
			if jsonOut {
				return writeJSON(c.stdout, res)
			}
			printLeave(c, res, "is leaving")
			if stopped {
				fmt.Fprintf(c.stdout, "%s left the cluster and stopped; lifeboat status on another node shows it as left\n", res.Node)
			} else {
				fmt.Fprintf(c.stdout, "%s is leaving; its admin API still answers: lifeboat status on another node shows when it is gone\n", res.Node)
			}
			return nil
		}),
	}
	af.register(cmd)
	f := cmd.Flags()
	f.BoolVar(&yes, "yes", false, "do not ask before acting")
	f.BoolVar(&force, "force", false, "leave even when that loses the Raft quorum or the only copy of a service's points at the node's site")
	f.BoolVar(&dryRun, "dry-run", false, "print what leaving means and stop")
	f.BoolVar(&jsonOut, "json", false, "print the result as JSON")
	return cmd
}

func printLeave(c *cli, r *node.LeaveResult, verb string) {
	fmt.Fprintf(c.stdout, "node %s (site %s, raft %s) %s the cluster", r.Node, r.Site, r.Raft, verb)
	if r.Transferred {
		fmt.Fprint(c.stdout, "; it leads and hands leadership on first")
	}
	fmt.Fprintln(c.stdout)
	if len(r.Holds) > 0 {
		fmt.Fprintf(c.stdout, "its holder assignments move to other nodes of %s: %s\n", r.Site, strings.Join(r.Holds, ", "))
	}
	for _, w := range r.Warnings {
		fmt.Fprintf(c.stdout, "WARNING (--force): %s\n", w)
	}
}

// waitStopped polls the node's admin API until it no longer answers, for
// up to timeout, and reports whether it stopped.
func waitStopped(ctx context.Context, cl *node.Client, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		if _, err := cl.Status(ctx); errors.Is(err, node.ErrUnreachable) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}
