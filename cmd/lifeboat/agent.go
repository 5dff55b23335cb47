package main

import (
	"fmt"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-dr/lifeboat/agent"
	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/mesh"
)

func (c *cli) agentCmd() *cobra.Command {
	ag := &cobra.Command{
		Use:   "agent",
		Short: "Run the agent that captures a protected server's volumes, or show its status",
		Args:  noArgs,
	}
	var (
		o          agent.Options
		volumes    []string
		tlsDir     string
		readRate   string
		spoolMax   string
		file       string
		cpuProfile string
	)
	run := &cobra.Command{
		Use:   "run --config FILE | --name N --service S --volume NAME=PATH... --node ADDR --tls-dir DIR --spool DIR [--mode scan|intercept] [--interval DUR]",
		Short: "Capture volumes and ship them to a node of the agent's site until stopped",
		Long: `Capture the service's volumes and ship them to a node at the agent's site.

scan mode re-reads each volume every --interval (reads limited to --read-rate),
ships the blocks whose content changed and commits a point: works on any file
or device; the copy is as consistent as the volume while it was read.

intercept mode mounts each volume as a file under --mount, backed by the real
image: the server writes through it (e.g. a loop device on that file). Every
write is journaled in order in the spool under --spool and shipped; an fsync
from above is a consistency point (and at the latest every --interval, a point
is made of what was written). --ack sync acknowledges a write only once the
node has it.

The node checks the agent's certificate (issued with ` + "`lifeboat ca issue --agent`" + `)
against the service and its volumes in the applied cluster policy. The agent
keeps its state and status.json in --spool; ` + "`lifeboat agent status`" + ` reads it.`,
		Args: noArgs,
		RunE: c.runE(func(cmd *cobra.Command, _ []string) error {
			if file != "" {
				af, err := config.LoadAgent(file)
				if err != nil {
					return &usageError{err}
				}
				fl := cmd.Flags()
				keep := func(name string, apply func()) {
					if !fl.Changed(name) {
						apply()
					}
				}
				keep("name", func() { o.Name = af.Name })
				keep("service", func() { o.Service = af.Service })
				keep("node", func() { o.Node = af.Node })
				keep("tls-dir", func() { tlsDir = af.TLSDir })
				keep("spool", func() { o.SpoolDir = af.Spool })
				keep("mode", func() { o.Mode = af.Mode })
				keep("interval", func() { o.Interval = af.Interval.Std() })
				keep("read-rate", func() { readRate = af.ReadRate.String() })
				keep("mount", func() { o.Mountpoint = af.Mount })
				keep("ack", func() { o.Ack = af.Ack })
				keep("spool-max", func() { spoolMax = af.SpoolMax.String() })
				keep("pre-hook", func() { o.PreHook = af.PreHook })
				keep("post-hook", func() { o.PostHook = af.PostHook })
				keep("hook-timeout", func() { o.HookTimeout = af.HookTimeout.Std() })
				keep("volume", func() {
					for _, v := range af.Volumes {
						volumes = append(volumes, v.Name+"="+v.Path)
					}
				})
			}
			for _, v := range volumes {
				name, path, ok := strings.Cut(v, "=")
				if !ok || name == "" || path == "" {
					return usagef("--volume %q: want NAME=PATH", v)
				}
				o.Volumes = append(o.Volumes, agent.Volume{Name: name, Path: path})
			}
			if readRate != "" {
				r, err := config.ParseRate(readRate)
				if err != nil {
					return usagef("--read-rate: %v", err)
				}
				o.ReadRate = int64(r)
			}
			if spoolMax != "" {
				n, err := config.ParseSize(spoolMax)
				if err != nil {
					return usagef("--spool-max: %v", err)
				}
				o.SpoolMax = int64(n)
			}
			if tlsDir == "" {
				return usagef("--tls-dir is required: the directory `lifeboat ca issue --agent` wrote")
			}
			creds, err := mesh.LoadCreds(tlsDir)
			if err != nil {
				return &hintError{err, fmt.Sprintf("issue the agent certificate with `lifeboat ca issue --dir CA --agent --name %s --service %s --site SITE --out %s`", o.Name, o.Service, tlsDir)}
			}
			o.Creds = creds
			o.Logger = c.log
			a, err := agent.New(o)
			if err != nil {
				return &usageError{err}
			}
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			fmt.Fprintf(c.stdout, "agent %s (service %s, %s mode) shipping %d volume(s) to %s\n", o.Name, o.Service, o.Mode, len(o.Volumes), o.Node)
			return a.Run(cmd.Context())
		}),
	}
	f := run.Flags()
	f.StringVar(&o.PreHook, "pre-hook", "", "command run before each point (e.g. a database flush), for application-consistent points")
	f.StringVar(&o.PostHook, "post-hook", "", "command run after each point (e.g. thaw)")
	f.DurationVar(&o.HookTimeout, "hook-timeout", time.Minute, "a hook running longer is killed; the point is then crash-consistent only")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a Go CPU profile of the agent to this file (for performance reports)")
	f.StringVar(&file, "config", "", "agent file (TOML, see config/examples/agent.toml); flags win over it")
	f.StringVar(&o.Name, "name", "", "agent name (as in its certificate)")
	f.StringVar(&o.Service, "service", "", "the service this server belongs to")
	f.StringArrayVar(&volumes, "volume", nil, "a volume to protect, NAME=PATH (repeatable)")
	f.StringVar(&o.Node, "node", "", "QUIC address of a node at this site (host:7947)")
	f.StringVar(&tlsDir, "tls-dir", "", "directory written by `lifeboat ca issue --agent`")
	f.StringVar(&o.Mode, "mode", agent.ModeScan, "capture mode: scan or intercept")
	f.DurationVar(&o.Interval, "interval", 30*time.Second, "scan mode: time between scans (the RPO)")
	f.StringVar(&o.SpoolDir, "spool", "", "state directory (spool, status.json)")
	f.StringVar(&readRate, "read-rate", "200MiB/s", "scan mode: read rate limit, so production is not hurt")
	f.StringVar(&o.Mountpoint, "mount", "", "intercept mode: directory where the volumes appear as files (point the server's loop device or VM at them)")
	f.StringVar(&o.Ack, "ack", agent.AckAsync, "intercept mode: acknowledge writes when the local spool has them (async) or the node has them (sync)")
	f.StringVar(&spoolMax, "spool-max", "1GiB", "intercept mode: spool bound; past it, changed blocks go to a dirty bitmap and are resynced later")

	var (
		spool   string
		jsonOut bool
	)
	status := &cobra.Command{
		Use:   "status --spool DIR [--json]",
		Short: "Show what a running (or stopped) agent is doing",
		Args:  noArgs,
		RunE: c.runE(func(cmd *cobra.Command, _ []string) error {
			st, err := agent.ReadStatus(spool)
			if err != nil {
				return &hintError{err, "point --spool at the agent's --spool directory"}
			}
			if jsonOut {
				return writeJSON(c.stdout, st)
			}
			fmt.Fprintf(c.stdout, "agent %s (service %s, %s mode, pid %d): %s", st.Agent, st.Service, st.Mode, st.PID, st.State)
			if st.Detail != "" {
				fmt.Fprintf(c.stdout, " (%s)", st.Detail)
			}
			fmt.Fprintf(c.stdout, "\nnode: %s\n", st.Node)
			if st.Point != "" {
				fmt.Fprintf(c.stdout, "newest point: %s, seq %d, %s (%s ago)\n", st.Point, st.Seq, st.PointTime.Format(time.RFC3339), time.Since(st.PointTime).Round(time.Second))
			}
			fmt.Fprintf(c.stdout, "read %s, sent %s in %d blocks, %s not sent (the node had them)\n",
				formatBytes(st.ReadBytes), formatBytes(st.SentBytes), st.SentBlocks, formatBytes(st.DedupBytes))
			if st.LagWrites > 0 {
				fmt.Fprintf(c.stdout, "replication lag (write to committed point): p50 %.0f ms, p99 %.0f ms over %d writes; backlog %s\n",
					st.LagP50, st.LagP99, st.LagWrites, formatBytes(st.Backlog))
			}
			if st.Refusal != nil {
				fmt.Fprintf(c.stdout, "the node refuses (%s) since %s: %s\n", st.Refusal.Code, st.Refusal.Since.Format(time.RFC3339), st.Refusal.Message)
			}
			if st.LastError != "" {
				fmt.Fprintf(c.stdout, "last error: %s\n", st.LastError)
			}
			fmt.Fprintf(c.stdout, "status written %s\n", st.Updated.Format(time.RFC3339))
			return nil
		}),
	}
	status.Flags().StringVar(&spool, "spool", "", "the agent's --spool directory (required)")
	status.MarkFlagRequired("spool")
	jsonFlag(status, &jsonOut)
	ag.AddCommand(run, status)
	return ag
}
