// Command lifeboat is the one lifeboat binary. This file holds the root
// command, logging and signal handling; store.go the commands that work on a
// local store; exit.go the exit codes and the error printer.
package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := runWith(ctx, os.Args[1:], os.Stdout, os.Stderr, slog.SetDefault)
	stop()
	os.Exit(code)
}

// run executes lifeboat with args (without the program name), writing to
// stdout and stderr, and returns the exit code. It changes no process-wide
// state, so tests call it in parallel.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runWith(ctx, args, stdout, stderr, nil)
}

// runWith is run; setDefault, if not nil, receives the logger built from
// --log-level (main passes slog.SetDefault).
func runWith(ctx context.Context, args []string, stdout, stderr io.Writer, setDefault func(*slog.Logger)) int {
	c := &cli{stdout: stdout, stderr: stderr, setDefault: setDefault}
	root := c.rootCmd()
	if args == nil {
		args = []string{} // nil would make cobra read os.Args
	}
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	if !c.ran {
		// cobra refused the command line before any command ran: an unknown
		// command or flag, a missing required flag, a wrong argument count.
		var ue *usageError
		if !errors.As(err, &ue) {
			err = &usageError{err}
		}
	}
	helpCmd := root.CommandPath()
	if cmd != nil {
		helpCmd = cmd.CommandPath()
	}
	printError(ctx, stderr, err, helpCmd)
	return exitCode(ctx, err)
}

// newRootCmd returns the lifeboat command tree writing to stdout and stderr.
func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	return (&cli{stdout: stdout, stderr: stderr}).rootCmd()
}

// cli is the state shared by the commands of one invocation.
type cli struct {
	stdout, stderr io.Writer
	setDefault     func(*slog.Logger)

	logLevel string
	log      *slog.Logger
	kek      kekFlags // --kek-file, --kek-command
	// ran is set once a command's own code starts; errors before that are
	// cobra's objections to the command line.
	ran bool
}

// logLevels are the values of --log-level.
var logLevels = map[string]slog.Level{
	"debug": slog.LevelDebug,
	"info":  slog.LevelInfo,
	"warn":  slog.LevelWarn,
	"error": slog.LevelError,
}

func (c *cli) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "lifeboat",
		Short: "Disaster recovery with deduplicated, point-in-time block storage",
		Long: `lifeboat keeps deduplicated, compressed, point-in-time copies of disk
volumes at several sites and brings servers up from them at the surviving
site when one is lost.

Try it: lifeboat demo. Nodes run with "lifeboat node run", agents with
"lifeboat agent run"; the cluster commands (status, policy, failover,
failback, drill, points/restore/serve-nbd --admin) talk to a node's admin
API (--admin); snapshot, points, restore, verify, prune and stats also work
offline on a local store (--store).
Exit codes: 0 ok, 1 error, 2 usage, 3 damage, 4 not found, 5 store locked,
6 unavailable (no node or no quorum), 7 refused, 8 unsafe (in use, or
would lose the quorum or data), 130 interrupted.`,
		SilenceErrors:     true,
		SilenceUsage:      true,
		PersistentPreRunE: c.setupLogging,
	}
	root.SetOut(c.stdout)
	root.SetErr(c.stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	root.PersistentFlags().StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	c.kek.add(root.PersistentFlags(), "", "")
	root.RegisterFlagCompletionFunc("log-level", cobra.FixedCompletions([]string{"debug", "info", "warn", "error"}, cobra.ShellCompDirectiveNoFileComp))
	root.AddCommand(
		c.storeCmd(),
		c.snapshotCmd(),
		c.pointsCmd(),
		c.restoreCmd(),
		c.verifyCmd(),
		c.pruneCmd(),
		c.statsCmd(),
		c.demoCmd(),
		c.caCmd(),
		c.nodeCmd(),
		c.statusCmd(),
		c.policyCmd(),
		c.auditCmd(),
		c.raftCmd(),
		c.failoverCmd(),
		c.failbackCmd(),
		c.drillCmd(),
		c.imagesCmd(),
		c.serveNBDCmd(),
		c.configCmd(),
		c.agentCmd(),
	)
	return root
}

// setupLogging builds the logger from --log-level: text to stderr.
func (c *cli) setupLogging(*cobra.Command, []string) error {
	lvl, ok := logLevels[strings.ToLower(c.logLevel)]
	if !ok {
		return usagef("--log-level %q: want debug, info, warn or error", c.logLevel)
	}
	c.log = slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: lvl}))
	if c.setDefault != nil {
		c.setDefault(c.log)
	}
	return nil
}

// runE adapts a command body to cobra, marking that the command line was
// accepted.
func (c *cli) runE(f func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c.ran = true
		return f(cmd, args)
	}
}

// noArgs refuses positional arguments as a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	switch {
	case len(args) == 0:
		return nil
	case cmd.HasSubCommands():
		return usagef("unknown command %q for %q", args[0], cmd.CommandPath())
	default:
		return usagef("%s takes no arguments; got %q", cmd.Name(), args[0])
	}
}

// oneArg wants exactly one positional argument, described by what.
func oneArg(what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != 1 {
			return usagef("%s: want one argument, %s; got %d", cmd.Name(), what, len(args))
		}
		return nil
	}
}
