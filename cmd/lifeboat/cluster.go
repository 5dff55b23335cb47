package main

// The commands that run or talk to a cluster: node run, status, policy and
// raft recover (ca and audit are in ca.go).

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node"
	"github.com/lifeboat-dr/lifeboat/node/api"
)

// defaultAdmin is where commands find a node's admin API by default.
const defaultAdmin = "127.0.0.1:7948"

func (c *cli) nodeCmd() *cobra.Command {
	nodeCmd := &cobra.Command{
		Use:   "node",
		Short: "Run a lifeboat node, or retire one (node leave)",
		Args:  noArgs,
	}
	var (
		file            string
		nf              config.Node
		join            []string
		resetRaft       bool
		role            string
		barrierInterval time.Duration
	)
	runCmd := &cobra.Command{
		Use:   "run --config FILE | --name N --site S --data-dir DIR ...",
		Short: "Run a node: join the cluster, serve the catalog and the admin API",
		Long: `Run a node until SIGINT or SIGTERM. Settings come from --config (a node file,
see config/examples/) and from flags of the same names, which win over the
file. A node stopped this way tells its peers at once (they see it dead,
not just unreachable) and keeps its place in the cluster: its Raft place
until dead_node_timeout, its holder assignments until holder_timeout. To
retire a node for good, use "lifeboat node leave".`,
		Args: noArgs,
		RunE: c.runE(func(cmd *cobra.Command, _ []string) error {
			n := &config.Node{}
			if file != "" {
				var err error
				if n, err = config.LoadNode(file); err != nil {
					return &usageError{err}
				}
			}
			fl := cmd.Flags()
			set := func(name string, apply func()) {
				if fl.Changed(name) {
					apply()
				}
			}
			set("name", func() { n.Name = nf.Name })
			set("site", func() { n.Site = nf.Site })
			set("data-dir", func() {
				if n.TLS.Dir == filepath.Join(n.DataDir, "tls") {
					n.TLS.Dir = "" // the default follows the data dir
				}
				n.DataDir = nf.DataDir
			})
			set("role", func() { n.Role = config.Role(role) })
			set("listen-gossip", func() { n.Listen.Gossip = nf.Listen.Gossip })
			set("listen-quic", func() { n.Listen.QUIC = nf.Listen.QUIC })
			set("listen-admin", func() { n.Listen.Admin = nf.Listen.Admin })
			set("advertise", func() { n.Listen.Advertise = nf.Listen.Advertise })
			set("join", func() { n.Join = join })
			set("tls-dir", func() { n.TLS.Dir = nf.TLS.Dir })
			set("bootstrap-expect", func() { n.BootstrapExpect = nf.BootstrapExpect })
			set("gossip-profile", func() { n.GossipProfile = nf.GossipProfile })
			set("hooks-user", func() { n.HooksUser = nf.HooksUser })
			set("dead-node-timeout", func() { n.DeadNodeTimeout = nf.DeadNodeTimeout })
			set("holder-timeout", func() { n.HolderTimeout = nf.HolderTimeout })
			set("thin-every", func() { n.Lifecycle.ThinEvery = nf.Lifecycle.ThinEvery })
			set("gc-every", func() { n.Lifecycle.GCEvery = nf.Lifecycle.GCEvery })
			set("log-level", func() { n.LogLevel = c.logLevel })
			n.SetDefaults()
			if err := n.Validate(); err != nil {
				return &usageError{err}
			}
			if lvl, ok := logLevels[n.LogLevel]; ok && !cmd.Flags().Changed("log-level") && c.setDefault != nil {
				c.log = slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: lvl}))
				c.setDefault(c.log)
			}
			// The store's key-encryption key: --kek-file/--kek-command win
			// over the node file's [encryption].
			kf := c.kek
			if kf.file == "" && kf.command == "" {
				kf.file = n.Encryption.KEKFile
				kf.command = strings.Join(n.Encryption.KEKCommand, " ")
			}
			kek, err := loadKEK(cmd.Context(), kf.file, kekArgv(kf.command, n.Encryption.KEKCommand))
			if err != nil {
				return err
			}
			creds, err := mesh.LoadCreds(n.TLS.Dir)
			if err != nil {
				return &hintError{err, fmt.Sprintf("issue this node's certificate with `lifeboat ca issue --dir CA --name %s --site %s --out %s`", n.Name, n.Site, n.TLS.Dir)}
			}
			nd, err := node.New(node.Options{
				Name: mesh.NodeID(n.Name), Site: mesh.Site(n.Site), Role: string(n.Role), DataDir: n.DataDir, Creds: creds,
				Gossip: n.Listen.Gossip, QUIC: n.Listen.QUIC, Admin: n.Listen.Admin, Advertise: n.Listen.Advertise,
				Join: n.Join, BootstrapExpect: n.BootstrapExpect, DeadNodeTimeout: n.DeadNodeTimeout.Std(), HolderTimeout: n.HolderTimeout.Std(),
				GossipProfile: n.GossipProfile, ResetRaft: resetRaft, Logger: c.log, HooksUser: n.HooksUser,
				BarrierInterval: barrierInterval, KEK: kek, AnnounceStop: true,
				ThinEvery: n.Lifecycle.ThinEvery.Std(), GCEvery: n.Lifecycle.GCEvery.Std(), GCRate: int64(n.Lifecycle.GCRate),
			})
			if err != nil {
				var rse *node.RaftStateError
				if errors.As(err, &rse) {
					return &hintError{err, rse.Hint()}
				}
				if errors.Is(err, node.ErrLeft) {
					// Exit 2, which the systemd unit does not restart on.
					return &usageError{err}
				}
				return err
			}
			fmt.Fprintf(c.stdout, "node %s (site %s) running: gossip %s, quic %s, admin %s\n",
				n.Name, n.Site, nd.GossipAddr(), nd.QUICAddr(), nd.AdminAddr())
			err = nd.Run(cmd.Context())
			if err == nil && cmd.Context().Err() != nil {
				return nil
			}
			return err
		}),
	}
	f := runCmd.Flags()
	f.StringVar(&file, "config", "", "node file (TOML)")
	f.StringVar(&nf.Name, "name", "", "node name")
	f.StringVar(&nf.Site, "site", "", "site name")
	f.StringVar(&nf.DataDir, "data-dir", "", "data directory")
	f.StringVar(&role, "role", "node", "node or witness")
	f.StringVar(&nf.Listen.Gossip, "listen-gossip", "0.0.0.0:7946", "gossip address (UDP and TCP)")
	f.StringVar(&nf.Listen.QUIC, "listen-quic", "0.0.0.0:7947", "QUIC address (UDP)")
	f.StringVar(&nf.Listen.Admin, "listen-admin", defaultAdmin, "admin API address (TCP; HTTPS, callers need an operator certificate)")
	f.StringVar(&nf.Listen.Advertise, "advertise", "", "host to advertise to peers when listening on 0.0.0.0")
	f.StringSliceVar(&join, "join", nil, "gossip address of a node to join (repeatable)")
	f.StringVar(&nf.TLS.Dir, "tls-dir", "", "directory written by `lifeboat ca issue` (default DATA_DIR/tls)")
	f.IntVar(&nf.BootstrapExpect, "bootstrap-expect", 0, "nodes that must see each other before a new cluster forms (default 1 without --join, else 3)")
	f.DurationVar(&barrierInterval, "barrier-interval", 10*time.Second, "how often a service with several agents gets a point consistent across its servers")
	f.BoolVar(&resetRaft, "reset-raft", false, "move this node's raft state aside and rejoin as a new member")
	f.StringVar(&nf.GossipProfile, "gossip-profile", "wan", "failure detection timings: wan (between sites), lan (one site) or test (one host)")
	f.StringVar(&nf.HooksUser, "hooks-user", "", "local user the policy's hooks run as (default: the node's own)")
	f.Var(durationFlag{&nf.DeadNodeTimeout}, "dead-node-timeout", "how long a dead node keeps its place in raft (default 24h)")
	f.Var(durationFlag{&nf.Lifecycle.ThinEvery}, "thin-every", "time between retention passes over the points this node holds (default 30s)")
	f.Var(durationFlag{&nf.Lifecycle.GCEvery}, "gc-every", "least time between garbage collections (default 15m)")
	f.Var(durationFlag{&nf.HolderTimeout}, "holder-timeout", "how long a service's holder may be gone before another node of its site takes over (default 1m)")
	nodeCmd.AddCommand(runCmd, c.nodeLeaveCmd())
	return nodeCmd
}

// adminFlags are the flags of commands that talk to a node's admin API.
type adminFlags struct {
	addr   string
	tlsDir string
}

// envTLSDir names the operator certificate directory when --tls-dir is
// not given.
const envTLSDir = "LIFEBOAT_TLS_DIR"

func (a *adminFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&a.addr, "admin", defaultAdmin, "a node's admin API address")
	cmd.Flags().StringVar(&a.tlsDir, "tls-dir", "", "operator certificate directory from `lifeboat ca issue --operator` (default $"+envTLSDir+", then ~/.config/lifeboat/tls)")
}

// operatorTLSDir finds the operator's certificate directory: --tls-dir,
// then $LIFEBOAT_TLS_DIR, then ~/.config/lifeboat/tls. It says which
// places it looked in when none holds one.
func operatorTLSDir(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if d := os.Getenv(envTLSDir); d != "" {
		return d, nil
	}
	def := ""
	if cfg, err := os.UserConfigDir(); err == nil {
		def = filepath.Join(cfg, "lifeboat", "tls")
		if _, err := os.Stat(filepath.Join(def, mesh.FileCert)); err == nil {
			return def, nil
		}
	}
	return "", &hintError{
		&usageError{fmt.Errorf("no operator certificate: --tls-dir is not given, $%s is not set, and %s holds none", envTLSDir, def)},
		"issue one with `lifeboat ca issue --dir CA --operator NAME --role viewer|operator|admin --out DIR`, then pass --tls-dir DIR or export " + envTLSDir + "=DIR",
	}
}

// loadOperatorCreds loads the operator credentials at dir.
func loadOperatorCreds(dir string) (*mesh.Creds, error) {
	creds, err := mesh.LoadCreds(dir)
	if err != nil {
		return nil, &hintError{err, "check " + dir + ": it must hold what `lifeboat ca issue --operator` wrote (ca.crt, cert.crt, cert.key)"}
	}
	return creds, nil
}

func (a *adminFlags) client() (*node.Client, error) {
	dir, err := operatorTLSDir(a.tlsDir)
	if err != nil {
		return nil, err
	}
	creds, err := loadOperatorCreds(dir)
	if err != nil {
		return nil, err
	}
	cl, err := node.NewClient(a.addr, creds)
	if err != nil {
		return nil, &usageError{err}
	}
	return cl, nil
}

func (c *cli) statusCmd() *cobra.Command {
	var (
		af      adminFlags
		jsonOut bool
	)
	cmd := &cobra.Command{
		Use:   "status [--admin ADDR] [--json]",
		Short: "Show the cluster as a node sees it: sites, nodes, leader, voters",
		Args:  noArgs,
		RunE: c.runE(func(cmd *cobra.Command, _ []string) error {
			cl, err := af.client()
			if err != nil {
				return err
			}
			st, err := cl.Status(cmd.Context())
			if err != nil {
				return err
			}
			if jsonOut {
				return writeJSON(c.stdout, st)
			}
			printStatus(c, st)
			return nil
		}),
	}
	af.register(cmd)
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}

// printSpace prints the node's disk space: each file system, the state,
// and what the node refuses (issue 15 item 5).
func printSpace(c *cli, sp *node.SpaceStatus) {
	if sp == nil {
		return
	}
	fmt.Fprintf(c.stdout, "\ndisk space: %s\n", sp.State)
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STORE\tFREE\tSIZE\tFREE %")
	for _, s := range sp.Stores {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f%%\n", s.Path, formatBytes(s.Free), formatBytes(s.Size), s.FreePercent)
	}
	tw.Flush()
	if len(sp.Refused) > 0 {
		fmt.Fprintf(c.stdout, "refusing new points of: %s\n", strings.Join(sp.Refused, ", "))
	}
	if sp.Detail != "" {
		fmt.Fprintf(c.stdout, "%s\n", sp.Detail)
	}
	if sp.Error != "" {
		fmt.Fprintf(c.stdout, "error: %s\n", sp.Error)
	}
}

func printScrub(c *cli, sc *api.ScrubStatus) {
	if sc == nil {
		return
	}
	last := "none yet"
	if !sc.LastCycle.IsZero() {
		last = sc.LastCycle.UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(c.stdout, "\nscrub: %.0f%% of this cycle (every %s), last full cycle %s; %d damaged or missing blocks found, %d repaired from other nodes, %d lost\n",
		100*sc.Progress, sc.Cycle, last, sc.Found, sc.Repaired, sc.Lost)
	if sc.Lost > 0 {
		fmt.Fprintln(c.stdout, "  lost blocks: points that need them are marked damaged here; run `lifeboat verify --admin ADDR --repair` and see docs/operations.md, \"Corrupt pack\"")
	}
	if sc.Error != "" {
		fmt.Fprintf(c.stdout, "  error: %s\n", sc.Error)
	}
}

func printStatus(c *cli, st *node.Status) {
	leader := string(st.Leader)
	if leader == "" {
		leader = "none (no quorum on this side: read-only)"
	}
	policy := "none"
	if st.PolicyVersion > 0 {
		policy = fmt.Sprintf("version %d", st.PolicyVersion)
	}
	fmt.Fprintf(c.stdout, "node %s (site %s, raft %s)\n", st.Node, st.Site, strings.ToLower(st.RaftState))
	fmt.Fprintf(c.stdout, "leader: %s   term: %d   policy: %s\n", leader, st.Term, policy)
	var sites []string
	for _, s := range st.Sites {
		sites = append(sites, fmt.Sprintf("%s %d/%d alive", s.Name, s.Alive, s.Nodes))
	}
	fmt.Fprintf(c.stdout, "sites: %s\n\n", strings.Join(sites, ", "))
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSITE\tROLE\tSTATE\tRAFT")
	for _, n := range st.Nodes {
		r := n.Raft
		if n.Name == st.Leader {
			r += " (leader)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", n.Name, n.Site, n.Role, n.State, r)
	}
	tw.Flush()
	printSpace(c, st.Space)
	printScrub(c, st.Scrub)
	if len(st.Services) == 0 {
		return
	}
	fmt.Fprintln(c.stdout)
	tw = tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tEPOCH\tSITE\tTIER\tHOLDER\tNEWEST POINT\tRPO NOW\tTARGET\tBACKLOG\tLINK NOW\tLINK POLICY")
	for _, s := range st.Services {
		target := "-"
		if s.RPOTarget > 0 {
			target = (time.Duration(s.RPOTarget * float64(time.Second))).String()
		}
		// The primary site first, then each copy.
		for _, w := range s.Watermarks {
			if w.Site != s.Primary {
				continue
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\tprimary\t%s\t%s\t%s\t%s\t-\t-\t-\n", s.Name, s.Epoch, w.Site, w.Node, w.Point,
				time.Since(w.Time).Round(time.Second), target)
		}
		if len(s.Watermarks) == 0 {
			fmt.Fprintf(tw, "%s\t%d\t%s\tprimary\t%s\tnone yet\t-\t%s\t-\t-\t-\n", s.Name, s.Epoch, s.Primary, s.Holders[s.Primary], target)
		}
		for _, cp := range s.Copies {
			point, rpo := "none yet", "-"
			if cp.Point != "" {
				point = cp.Point
				rpo = (time.Duration(cp.RPO * float64(time.Second))).Round(time.Second).String()
				if !cp.RPOMet {
					rpo += " (over)"
				}
			}
			switch {
			case cp.Standby != "" && cp.Standby != cp.Point:
				point += " (standby at " + cp.Standby + ")"
			case cp.Standby != "":
				point += " (standby)"
			case cp.Export != "":
				point += " (exported " + cp.Export + ")"
			}
			if cp.Error != "" {
				point += " (error: " + cp.Error + ")"
			}
			rate := "unlimited"
			if cp.LinkRate > 0 {
				rate = config.Rate(cp.LinkRate).String()
			}
			holder := cp.Holder
			if holder == "" {
				holder = "none"
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.Epoch, cp.Site, cp.Tier, holder, point,
				rpo, target, formatBytes(cp.Backlog), rate, cp.LinkPolicy)
		}
	}
	tw.Flush()
	for _, s := range st.Services {
		if f := s.Failover; f != nil {
			state := fmt.Sprintf("RPO %s, RTO %s", secs(f.RPO), secs(f.RTO))
			if !f.Done {
				state = "NOT FINISHED: run the failover again to finish it"
				if f.Error != "" {
					state += " (" + f.Error + ")"
				}
			}
			kind := "failover"
			if f.Planned {
				kind = "planned failover"
			}
			fmt.Fprintf(c.stdout, "%s: %s %s -> %s at %s, epoch %d, point %s; %s\n", s.Name, kind, f.From, f.To,
				f.Started.Local().Format(time.RFC3339), f.Epoch, f.Point, state)
		}
		for _, b := range s.Branches {
			fmt.Fprintf(c.stdout, "%s: divergent branch %s on %s: %d points from %s to %s (kept; restore --admin with --at to export)\n",
				s.Name, b.Name, b.Node, len(b.Points), b.First.Local().Format(time.RFC3339), b.Last.Local().Format(time.RFC3339))
		}
		for _, m := range s.Suspect {
			fmt.Fprintf(c.stdout, "%s: SUSPECT point %s at %s: %s. Failover and drill pass it over and the clean point before it is kept; check the servers (ransomware?)\n",
				s.Name, m.Point, m.Time.Local().Format(time.RFC3339), api.SuspicionText(m.Suspect))
		}
		if d := s.Drill; d != nil {
			res := "passed"
			if !d.Passed {
				res = "FAILED: " + d.Error
			}
			fmt.Fprintf(c.stdout, "%s: last drill %s at %s on %s: %s\n", s.Name, d.ID, d.Site, d.Node, res)
		}
		if m := s.Verified; m != nil {
			fmt.Fprintf(c.stdout, "%s: last verified point %.12s (%s) at %s on %s: %s\n", s.Name, m.Point,
				m.Time.Local().Format(time.RFC3339), m.Verified.Site, m.Verified.At.Local().Format(time.RFC3339), verifiedText(m.Verified))
		}
	}
}

// secs formats seconds.
func secs(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(time.Millisecond).String()
}

func (c *cli) policyCmd() *cobra.Command {
	policy := &cobra.Command{
		Use:   "policy",
		Short: "Apply or show the cluster policy (sites, links, services, tiers)",
		Args:  noArgs,
	}
	var af adminFlags
	apply := &cobra.Command{
		Use:   "apply [--admin ADDR] FILE",
		Short: "Validate a cluster policy file and apply it to the catalog",
		Args:  oneArg("the cluster policy file"),
		RunE: c.runE(func(cmd *cobra.Command, args []string) error {
			src, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			if _, err := config.ParseCluster(args[0], src); err != nil {
				return &usageError{err}
			}
			cl, err := af.client()
			if err != nil {
				return err
			}
			p, err := cl.ApplyPolicy(cmd.Context(), filepath.Base(args[0]), src)
			if err != nil {
				return err
			}
			if len(p.Changes) > 0 && p.ApprovedBy == "" {
				fmt.Fprintf(c.stdout, "policy version %d waits for a second admin (approvals = 2); it changes:\n", p.Version)
				for _, ch := range p.Changes {
					fmt.Fprintf(c.stdout, "  %s\n", ch)
				}
				fmt.Fprintf(c.stdout, "another admin applies it with: lifeboat policy approve %d\n", p.Version)
				return nil
			}
			fmt.Fprintf(c.stdout, "policy version %d applied (%d sites, %d services)\n", p.Version, len(p.Cluster.Sites), len(p.Cluster.Services))
			return nil
		}),
	}
	af.register(apply)
	var af3 adminFlags
	approve := &cobra.Command{
		Use:   "approve [--admin ADDR] VERSION",
		Short: "Approve a policy that waits for a second admin (approvals = 2)",
		Args:  oneArg("the pending policy's version"),
		RunE: c.runE(func(cmd *cobra.Command, args []string) error {
			v, err := strconv.ParseUint(args[0], 10, 64)
			if err != nil {
				return usagef("version %q: want the number policy apply printed", args[0])
			}
			cl, err := af3.client()
			if err != nil {
				return err
			}
			p, err := cl.ApprovePolicy(cmd.Context(), v)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "policy version %d applied: proposed by %s, approved by %s\n", p.Version, p.AppliedBy, p.ApprovedBy)
			return nil
		}),
	}
	af3.register(approve)
	var (
		af2     adminFlags
		jsonOut bool
	)
	show := &cobra.Command{
		Use:   "show [--admin ADDR] [--json]",
		Short: "Show the applied cluster policy",
		Args:  noArgs,
		RunE: c.runE(func(cmd *cobra.Command, _ []string) error {
			cl, err := af2.client()
			if err != nil {
				return err
			}
			p, err := cl.Policy(cmd.Context())
			if err != nil {
				return err
			}
			if jsonOut {
				return writeJSON(c.stdout, p)
			}
			fmt.Fprintf(c.stdout, "# policy version %d from %s, applied %s by %s", p.Version, p.File, p.AppliedAt.Format(time.RFC3339), p.AppliedBy)
			if p.ApprovedBy != "" {
				fmt.Fprintf(c.stdout, ", approved by %s", p.ApprovedBy)
			}
			fmt.Fprintln(c.stdout)
			fmt.Fprint(c.stdout, p.Source)
			if cat, err := cl.Catalog(cmd.Context()); err == nil && cat.PendingPolicy != nil {
				pp := cat.PendingPolicy
				fmt.Fprintf(c.stdout, "# pending: version %d from %s, proposed %s by %s, waits for a second admin (lifeboat policy approve %d):\n",
					pp.Version, pp.File, pp.AppliedAt.Format(time.RFC3339), pp.AppliedBy, pp.Version)
				for _, ch := range pp.Changes {
					fmt.Fprintf(c.stdout, "#   %s\n", ch)
				}
			}
			return nil
		}),
	}
	af2.register(show)
	show.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	policy.AddCommand(apply, show, approve)
	return policy
}

func (c *cli) raftCmd() *cobra.Command {
	raftCmd := &cobra.Command{
		Use:   "raft",
		Short: "Raft catalog maintenance",
		Args:  noArgs,
	}
	var (
		af    adminFlags
		force bool
	)
	recoverCmd := &cobra.Command{
		Use:   "recover --admin ADDR --force",
		Short: "Make a surviving node the only voter when a majority is lost for good",
		Long: `When a majority of the Raft voters is gone for good (a whole site lost), the
catalog accepts no writes. This makes the node at --admin the only voter; it
becomes leader and adds the surviving nodes back. It refuses while a leader is
reachable and without --force. Who ran it and when goes into the catalog.

Run it on one node only. Nodes of the lost site that come back must be
restarted with --reset-raft before they rejoin.`,
		Args: noArgs,
		RunE: c.runE(func(cmd *cobra.Command, _ []string) error {
			if !force {
				return &usageError{fmt.Errorf("%w: it makes the node at %s the only voter; run it only when a majority of the voters is gone for good", node.ErrNeedForce, af.addr)}
			}
			cl, err := af.client()
			if err != nil {
				return err
			}
			rec, err := cl.RecoverRaft(cmd.Context(), force)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "raft recovered on %s by %s at %s; voters before: %s; now: %s\n",
				rec.Node, rec.By, rec.At.Format(time.RFC3339), joinIDs(rec.Before), joinIDs(rec.After))
			return nil
		}),
	}
	af.register(recoverCmd)
	recoverCmd.Flags().BoolVar(&force, "force", false, "confirm that the lost voters are gone for good")
	raftCmd.AddCommand(recoverCmd)
	return raftCmd
}

func joinIDs(ids []mesh.NodeID) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = string(id)
	}
	return strings.Join(s, ", ")
}

// durationFlag is a config.Duration as a flag value.
type durationFlag struct{ d *config.Duration }

func (f durationFlag) String() string {
	if f.d == nil || *f.d == 0 {
		return "" // unset: the help text names the default
	}
	return f.d.String()
}
func (f durationFlag) Set(s string) error { return f.d.UnmarshalText([]byte(s)) }
func (f durationFlag) Type() string       { return "duration" }
