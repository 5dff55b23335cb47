package main

// The cluster's PKI and who used it: ca init, issue and revoke, and the
// admin audit log.

import (
	"fmt"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node"
)

func (c *cli) caCmd() *cobra.Command {
	ca := &cobra.Command{
		Use:   "ca",
		Short: "Create the cluster's certificate authority and issue certificates",
		Args:  noArgs,
	}
	var dir string
	initCmd := &cobra.Command{
		Use:   "init --dir DIR",
		Short: "Create a cluster CA, gossip key and dedup key in DIR",
		Long: `Create a cluster CA, gossip key and dedup key in DIR (which must not exist
or be empty). Keep DIR safe and offline: whoever holds ca.key can join nodes
to the cluster.`,
		Args: noArgs,
		RunE: c.runE(func(cmd *cobra.Command, _ []string) error {
			if err := mesh.InitCA(dir); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "cluster CA created in %s (ca.crt, ca.key, gossip.key, dedup.key)\n", dir)
			fmt.Fprintf(c.stdout, "next: lifeboat ca issue --dir %s --name NODE --site SITE --out DIR\n", dir)
			return nil
		}),
	}
	initCmd.Flags().StringVar(&dir, "dir", "", "directory for the CA (required)")
	initCmd.MarkFlagRequired("dir")

	var (
		req mesh.IssueRequest
		out string
	)
	var operator, role string
	issueCmd := &cobra.Command{
		Use:   "issue --dir DIR (--name NAME --site SITE [--agent --service SVC] | --operator NAME --role ROLE) --out DIR",
		Short: "Issue a node, agent or operator certificate signed by the cluster CA",
		Long: `Issue a certificate signed by the cluster CA in --dir and write it, with the
CA certificate, into --out:
  - a node's (--name, --site): with the gossip and dedup keys; what a node's
    tls.dir points at;
  - an agent's (--agent --service): with the dedup key, scoped to one service;
    what an agent's --tls-dir points at;
  - an operator's (--operator NAME --role viewer|operator|admin): for the
    admin API, what cluster commands take with --tls-dir or LIFEBOAT_TLS_DIR.
    A viewer reads status, points and metrics; an operator also runs drills,
    failovers, failbacks, restores and image reads; an admin also applies
    policies, recovers raft and revokes certificates.
Every certificate issued is recorded in DIR/issued.jsonl for ca revoke.`,
		Args: noArgs,
		RunE: c.runE(func(cmd *cobra.Command, _ []string) error {
			if operator != "" {
				if req.Name != "" || req.Site != "" || req.Agent || req.Service != "" {
					return usagef("--operator takes no --name, --site, --agent or --service")
				}
				r, err := mesh.ParseRole(role)
				if err != nil {
					return usagef("--role: %v", err)
				}
				req.Name, req.Operator, req.Role = operator, true, r
			} else {
				if role != "" {
					return usagef("--role is only for operator certificates (--operator NAME)")
				}
				if req.Name == "" || req.Site == "" {
					return usagef("--name and --site are required (or --operator NAME --role ROLE)")
				}
			}
			if req.Agent && req.Service == "" {
				return usagef("--agent needs --service: an agent certificate is scoped to one service")
			}
			if !req.Agent && req.Service != "" {
				return usagef("--service is only for agent certificates (--agent)")
			}
			rec, err := mesh.IssueCert(dir, req, out)
			if err != nil {
				return err
			}
			switch {
			case req.Operator:
				fmt.Fprintf(c.stdout, "operator certificate for %s with role %s written to %s (serial %s, valid until %s)\n",
					req.Name, req.Role, out, rec.Serial, rec.NotAfter.Format(time.RFC3339))
				fmt.Fprintf(c.stdout, "use it: export %s=%s\n", envTLSDir, out)
			case req.Agent:
				fmt.Fprintf(c.stdout, "agent (service %s) certificate for %s at site %s written to %s (serial %s)\n", req.Service, req.Name, req.Site, out, rec.Serial)
			default:
				fmt.Fprintf(c.stdout, "node certificate for %s at site %s written to %s (serial %s)\n", req.Name, req.Site, out, rec.Serial)
			}
			return nil
		}),
	}
	f := issueCmd.Flags()
	f.StringVar(&dir, "dir", "", "the CA directory made by `lifeboat ca init` (required)")
	f.StringVar(&req.Name, "name", "", "node or agent name")
	f.StringVar(&req.Site, "site", "", "site of the node or agent")
	f.BoolVar(&req.Agent, "agent", false, "issue an agent certificate")
	f.StringVar(&req.Service, "service", "", "the service an agent certificate is for")
	f.StringVar(&operator, "operator", "", "issue an operator certificate for the admin API, for this person or tool")
	f.StringVar(&role, "role", "", "the operator's role: viewer, operator or admin")
	f.StringSliceVar(&req.Hosts, "host", nil, "extra DNS name or IP for the certificate (repeatable)")
	f.DurationVar(&req.Validity, "validity", 0, "certificate lifetime, counted from now (default 5 years)")
	f.StringVar(&out, "out", "", "directory to write the certificate into (required)")
	for _, n := range []string{"dir", "out"} {
		issueCmd.MarkFlagRequired(n)
	}
	ca.AddCommand(initCmd, issueCmd, c.caRevokeCmd())
	return ca
}

func (c *cli) caRevokeCmd() *cobra.Command {
	var (
		af     adminFlags
		dir    string
		reason string
	)
	cmd := &cobra.Command{
		Use:   "revoke [--dir CA] [--admin ADDR] NAME|SERIAL...",
		Short: "Revoke certificates: every node refuses them within seconds",
		Long: `Revoke certificates by serial (hex, as ca issue printed it) or by name (every
certificate of that name in the CA's ledger, --dir). The serials go into the
catalog; every node refuses them on new handshakes and closes the
connections they hold open as soon as it applies the entry (within a second
or two where the cluster has a quorum). Needs an admin certificate.`,
		Args: cobra.MinimumNArgs(1),
		RunE: c.runE(func(cmd *cobra.Command, args []string) error {
			var ledger []mesh.IssuedCert
			if dir != "" {
				var err error
				if ledger, err = mesh.Ledger(dir); err != nil {
					return err
				}
			}
			var req node.RevokeRequest
			req.Reason = reason
			for _, a := range args {
				found := false
				for _, rec := range ledger {
					if rec.Name == a || rec.Serial == strings.ToLower(a) {
						req.Certificates = append(req.Certificates, node.Revocation{Serial: rec.Serial, Name: rec.Name, Kind: rec.Kind, NotAfter: rec.NotAfter})
						found = true
					}
				}
				if found {
					continue
				}
				if isSerial(a) {
					req.Certificates = append(req.Certificates, node.Revocation{Serial: strings.ToLower(a)})
					continue
				}
				if dir == "" {
					return usagef("%q is not a serial (hex): to revoke by name, give --dir CA (its issued.jsonl names the serials)", a)
				}
				return usagef("%q: no certificate of that name or serial in %s", a, filepath.Join(dir, mesh.FileLedger))
			}
			cl, err := af.client()
			if err != nil {
				return err
			}
			out, err := cl.Revoke(cmd.Context(), req)
			if err != nil {
				return err
			}
			for _, r := range out {
				who := r.Name
				if who == "" {
					who = "(name not known)"
				}
				fmt.Fprintf(c.stdout, "revoked %s %s serial %s at %s by %s\n", r.Kind, who, r.Serial, r.At.Format(time.RFC3339), r.By)
			}
			return nil
		}),
	}
	af.register(cmd)
	cmd.Flags().StringVar(&dir, "dir", "", "the CA directory, to revoke by name")
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the record")
	return cmd
}

func isSerial(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range strings.ToLower(s) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func (c *cli) auditCmd() *cobra.Command {
	var (
		af      adminFlags
		since   string
		limit   int
		jsonOut bool
	)
	cmd := &cobra.Command{
		Use:   "audit [--admin ADDR] [--since TIME|DURATION] [--limit N] [--json]",
		Short: "Show the cluster's audit log: who did or read what, from where, with what result",
		Long: `Show the audit log the cluster keeps in its Raft catalog: every mutating admin
call, every read of data (images, restores, NBD through the API) and every
refused attempt, with the identity of the caller's certificate, its role, its
address, what it asked and the result. Needs an operator or admin
certificate. --since takes an RFC 3339 time or a duration back from now
(e.g. 24h).`,
		Args: noArgs,
		RunE: c.runE(func(cmd *cobra.Command, _ []string) error {
			var t time.Time
			if since != "" {
				if d, err := config.ParseDuration(since); err == nil {
					t = time.Now().Add(-d.Std())
				} else if t, err = time.Parse(time.RFC3339, since); err != nil {
					return usagef("--since %q: want an RFC 3339 time or a duration like 24h", since)
				}
			}
			if limit < 0 {
				return usagef("--limit %d: want a positive number", limit)
			}
			cl, err := af.client()
			if err != nil {
				return err
			}
			es, err := cl.Audit(cmd.Context(), t, limit)
			if err != nil {
				return err
			}
			if jsonOut {
				return writeJSON(c.stdout, es)
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tWHO\tFROM\tNODE\tACTION\tTARGET\tRESULT\tDETAIL")
			for _, e := range es {
				who := e.Who
				if e.Kind != "none" {
					who += " (" + e.Kind
					if e.Role != "" {
						who += " " + e.Role
					}
					who += ")"
				}
				res := e.Result
				if e.Count > 1 {
					res += fmt.Sprintf(" x%d", e.Count)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Time.Local().Format(time.RFC3339), who, e.From, e.Node,
					e.Action, orDash(e.Target), res, orDash(e.Detail))
			}
			return tw.Flush()
		}),
	}
	af.register(cmd)
	cmd.Flags().StringVar(&since, "since", "", "only entries since this time or for this long back")
	cmd.Flags().IntVar(&limit, "limit", 0, "at most this many of the newest entries (default 1000)")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
