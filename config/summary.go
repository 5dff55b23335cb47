package config

import (
	"fmt"
	"strings"
	"text/tabwriter"
)

// Summary describes the node for `lifeboat config check`, several lines.
func (n *Node) Summary() string {
	return summary(fmt.Sprintf("node %s at site %s (role %s)", n.Name, n.Site, n.Role), func(row func(k, v string)) {
		row("data dir", n.DataDir)
		row("tls dir", n.TLS.Dir)
		row("gossip", n.Listen.Gossip)
		row("quic", n.Listen.QUIC)
		row("admin", n.Listen.Admin)
		if n.HooksUser != "" {
			row("hooks run as", n.HooksUser)
		}
		switch {
		case n.Encryption.KEKFile != "":
			row("store key", "key-encryption key from "+n.Encryption.KEKFile)
		case len(n.Encryption.KEKCommand) > 0:
			row("store key", "key-encryption key from `"+strings.Join(n.Encryption.KEKCommand, " ")+"`")
		}
		if n.Listen.Advertise != "" {
			row("advertise", n.Listen.Advertise)
		}
		if len(n.Join) == 0 {
			row("join", "(none: starts a new cluster)")
		} else {
			row("join", strings.Join(n.Join, ", "))
		}
		row("bootstrap", fmt.Sprintf("waits for %d voter(s)", n.BootstrapExpect))
		row("dead nodes", fmt.Sprintf("removed from raft after %s", n.DeadNodeTimeout))
		row("log level", n.LogLevel)
		row("detection", n.GossipProfile+" gossip timings")
	})
}

// summary is a title line and the rows that rows adds, as an indented
// two-column table.
func summary(title string, rows func(row func(k, v string))) string {
	var b strings.Builder
	fmt.Fprintln(&b, title)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	rows(func(k, v string) { fmt.Fprintf(tw, "  %s\t%s\n", k, v) })
	tw.Flush()
	return b.String()
}

// plural returns "1 site" or "3 sites".
func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// Summary describes the cluster policy for `lifeboat config check`: a
// count line, then sites, links and a table of services.
func (c *Cluster) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "cluster policy: %s, %s, %s\n", plural(len(c.Sites), "site"), plural(len(c.Links), "link"), plural(len(c.Services), "service"))
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nSITE\tTIMEZONE\tARCHIVE")
	for _, s := range c.Sites {
		a := s.ArchiveDir
		if a == "" {
			a = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Name, s.Timezone, a)
	}
	if len(c.Links) > 0 {
		fmt.Fprintln(tw, "\nLINK\tRATE\tCOALESCE\tSCHEDULE")
		for _, l := range c.Links {
			var sched []string
			for _, s := range l.Schedule {
				when := strings.TrimSpace(s.Days.String() + " " + s.Hours.String())
				if when == "" {
					when = "always"
				}
				sched = append(sched, when+" "+s.Rate.String())
			}
			sc := "-"
			if len(sched) > 0 {
				sc = strings.Join(sched, "; ") + " (" + l.Timezone + ")"
			}
			co := "off"
			if l.Coalesce > 0 {
				co = l.Coalesce.String()
			}
			fmt.Fprintf(tw, "%s-%s\t%s\t%s\t%s\n", l.Between[0], l.Between[1], l.Rate, co, sc)
		}
	}
	if len(c.Services) > 0 {
		fmt.Fprintln(tw, "\nSERVICE\tPRIMARY\tRPO\tCOPIES\tVOLUMES\tSIZE")
		for _, s := range c.Services {
			var copies []string
			for _, cp := range s.Copies {
				d := cp.Site + ":" + string(cp.Tier)
				if cp.Tier == TierCold {
					d += " (" + cp.Schedule.String() + ")"
				}
				copies = append(copies, d)
			}
			cs := "-"
			if len(copies) > 0 {
				cs = strings.Join(copies, ", ")
			}
			var vols []string
			for _, sv := range s.Servers {
				for _, v := range sv.Volumes {
					vols = append(vols, fmt.Sprintf("%s/%s %s", sv.Name, v.Name, v.Size))
				}
			}
			rpo := "-"
			if s.RPO > 0 {
				rpo = s.RPO.String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.Primary, rpo, cs, strings.Join(vols, ", "), s.Size())
		}
	}
	tw.Flush()
	return b.String()
}
