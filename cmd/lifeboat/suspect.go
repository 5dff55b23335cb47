package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/lifeboat-dr/lifeboat/node/api"
)

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
