package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// imagesCmd is `lifeboat images list|rm`: the failover and drill images a
// node keeps under its data dir (issue 15 item 6).
func (c *cli) imagesCmd() *cobra.Command {
	images := &cobra.Command{
		Use:   "images",
		Short: "List or remove a node's failover and drill images",
		Long: `A node keeps the images a failover brought a service up on in
DATA_DIR/failover/SERVICE/POINT, and the images of drills run with --keep in
DATA_DIR/drills/SERVICE/DRILL_ID. Drill images go when the drill ends unless
--keep was given; failover images go by themselves once the service has
failed back (the failover home is done and it runs at its primary again).
Nothing removes an image a service runs on: the catalog says where it is
active and at which point.`,
		Args: noArgs,
	}
	var (
		af      adminFlags
		jsonOut bool
	)
	list := &cobra.Command{
		Use:   "list [--admin ADDR] [--json]",
		Short: "List the node's failover and drill images: size on disk, in use or not and why",
		Args:  noArgs,
		RunE: c.runE(func(cmd *cobra.Command, _ []string) error {
			cl, err := af.client()
			if err != nil {
				return err
			}
			ims, err := cl.Images(cmd.Context())
			if err != nil {
				return err
			}
			if jsonOut {
				return writeJSON(c.stdout, ims)
			}
			if len(ims) == 0 {
				fmt.Fprintln(c.stdout, "no failover or drill images on this node")
				return nil
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "IMAGE\tPOINT\tTIME\tSIZE\tIN USE\tWHY")
			for _, im := range ims {
				use, point, at := "no", im.Point, "-"
				if im.InUse {
					use = "yes"
				}
				if len(point) > 12 {
					point = point[:12]
				}
				if point == "" {
					point = "-"
				}
				if !im.Time.IsZero() {
					at = im.Time.Local().Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", im.Ref(), point, at, formatBytes(im.Size), use, im.Why)
			}
			return tw.Flush()
		}),
	}
	af.register(list)
	list.Flags().BoolVar(&jsonOut, "json", false, "print JSON")

	var af2 adminFlags
	rm := &cobra.Command{
		Use:   "rm [--admin ADDR] SERVICE/KIND/NAME...",
		Short: "Remove failover or drill images that are not in use (admin role)",
		Long: `rm removes the named images from the node at --admin: each as images list
prints it, SERVICE/KIND/NAME with KIND failover or drill (NAME may also be
8 or more characters of the point's ID when that names one image). All or
none: when one is unknown or in use (a service runs on it, a failover or a
drill works in it), nothing is removed and rm exits 8 saying why. Removing
a kept drill's images clears the drill's record as drill --cleanup does.
Needs an admin certificate; the removal is in the audit log.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("rm: name one or more images as SERVICE/KIND/NAME (lifeboat images list shows them)")
			}
			return nil
		},
		RunE: c.runE(func(cmd *cobra.Command, args []string) error {
			cl, err := af2.client()
			if err != nil {
				return err
			}
			ims, err := cl.RemoveImages(cmd.Context(), args)
			if err != nil {
				return err
			}
			for _, im := range ims {
				fmt.Fprintf(c.stdout, "removed %s (%s, %s)\n", im.Ref(), im.Path, formatBytes(im.Size))
			}
			return nil
		}),
	}
	af2.register(rm)
	images.AddCommand(list, rm)
	return images
}
