package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/lifeboat-dr/lifeboat/node"
	"github.com/lifeboat-dr/lifeboat/node/api"
)

// adminSession is one command's conversation with a node's admin API: the
// client (moved to the service's holder when the node at --admin names
// another one) and where the command's output goes.
type adminSession struct {
	af             adminFlags
	cl             *node.Client
	stdout, stderr io.Writer
	log            *slog.Logger
	json           bool // print events and results as JSON lines
}

// newAdminSession connects to the node at af.
func newAdminSession(c *cli, af *adminFlags, jsonOut bool) (*adminSession, error) {
	cl, err := af.client()
	if err != nil {
		return nil, err
	}
	return &adminSession{af: *af, cl: cl, stdout: c.stdout, stderr: c.stderr, log: c.log, json: jsonOut}, nil
}

// redirect moves the session to the node that must run a failover or
// drill when err says the node at --admin is not the service's holder and
// names the one that is. It reports whether it moved; the error is err, or
// the failure to reach the holder.
func (s *adminSession) redirect(err error) (bool, error) {
	var nh *node.NotHolderError
	if !errors.As(err, &nh) || nh.Admin == "" {
		return false, err
	}
	fmt.Fprintf(s.stderr, "lifeboat: the service's holder at this site runs it: continuing with the node at %s\n", nh.Admin)
	af2 := s.af
	af2.addr = nh.Admin
	cl, err := af2.client()
	if err != nil {
		return false, err
	}
	s.cl = cl
	return true, nil
}

// event prints one progress event of a failover or drill: a JSON line,
// the plan, or "[step] message (done of total)".
func (s *adminSession) event(e node.FailoverEvent) {
	switch {
	case s.json:
		json.NewEncoder(s.stdout).Encode(e) // one line each
	case e.Plan != nil:
		s.plan(e.Plan)
	default:
		line := fmt.Sprintf("[%s] %s", e.Step, e.Message)
		if e.Total > 0 {
			line += fmt.Sprintf(" (%s of %s)", formatBytes(e.Done), formatBytes(e.Total))
		}
		fmt.Fprintln(s.stdout, line)
	}
}

// plan prints a failover plan for the operator to read.
func (s *adminSession) plan(p *node.FailoverPlan) {
	w := s.stdout
	kind := "failover"
	if p.Planned {
		kind = "planned failover"
	}
	if p.Resume {
		kind = "the unfinished failover (resumed)"
	}
	fmt.Fprintf(w, "Plan: %s of %s from %s to %s, run by node %s (%s copy), epoch %d\n", kind, p.Service, p.From, p.To, p.Node, p.Tier, p.Epoch)
	switch {
	case p.Point != "":
		chosen := ""
		if p.Chosen != "" {
			chosen = " (" + p.Chosen + ")"
		}
		fmt.Fprintf(w, "  point:  %s at %s%s\n", p.Point, p.PointTime.Local().Format(time.RFC3339Nano), chosen)
		if len(p.PassedOver) > 0 {
			fmt.Fprintf(w, "  passed over: %s\n", api.PassedText(p.PassedOver))
		}
		if p.Warning != "" {
			fmt.Fprintf(w, "  WARNING: %s\n", p.Warning)
		}
		if !p.PrimaryNewest.IsZero() {
			fmt.Fprintf(w, "  RPO:    %s (%s's newest known point is from %s; the point is %s old)\n", secs(p.RPO), p.From, p.PrimaryNewest.Local().Format(time.RFC3339Nano), secs(p.PointAge))
		}
	case p.Planned:
		fmt.Fprintf(w, "  point:  the final point, made after %s's stop hook: RPO 0\n", p.From)
	}
	for _, im := range p.Images {
		fmt.Fprintf(w, "  image:  %s -> %s (%s, %s)\n", im.Volume, im.Path, formatBytes(im.Size), im.Source)
	}
	hook := func(name, cmd string) {
		if cmd == "" {
			cmd = "(none)"
		}
		fmt.Fprintf(w, "  %-7s %s\n", name+":", cmd)
	}
	if p.Planned {
		hook("stop", p.Hooks.Stop+" (at "+p.From+")")
	}
	hook("start", p.Hooks.Start)
	hook("health", p.Hooks.Health)
	if p.NeedForce {
		fmt.Fprintf(w, "  catalog: NO QUORUM: --force makes %s the catalog's only voter first\n", p.Node)
	}
}

// toHolder returns a client for the node that holds volume's service
// (SERVICE/VOLUME) at the site of the node cl reaches: the node named at
// --admin may be another node of that site, which holds none of the
// service's points. It says so on w when it moves, and returns the
// address it reads from: cl's own when that node holds the service, or
// when the catalog does not say who does.
func toHolder(ctx context.Context, cl *node.Client, af adminFlags, volume string, w io.Writer) (*node.Client, string, error) {
	service, _, ok := strings.Cut(volume, "/")
	if !ok {
		return cl, af.addr, nil
	}
	st, err := cl.Status(ctx)
	if err != nil {
		return nil, "", err
	}
	cat, err := cl.Catalog(ctx)
	if err != nil {
		return nil, "", err
	}
	h := cat.Holder(service, string(st.Site))
	if h == "" || h == st.Node || cat.Nodes[h].Admin == "" {
		return cl, af.addr, nil
	}
	fmt.Fprintf(w, "lifeboat: %s holds %s at site %s: reading from it at %s\n", h, service, st.Site, cat.Nodes[h].Admin)
	af.addr = cat.Nodes[h].Admin
	cl, err = af.client()
	return cl, af.addr, err
}
