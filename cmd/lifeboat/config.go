package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/lifeboat-dr/lifeboat/config"
)

// ---- config check ----

func (c *cli) configCmd() *cobra.Command {
	cfg := &cobra.Command{
		Use:   "config",
		Short: "Check node files, agent files and cluster policies",
		Args:  noArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var jsonOut bool
	check := &cobra.Command{
		Use:   "check FILE... [--json]",
		Short: "Validate config files and summarise them",
		Long: `Parse and validate each FILE, a node file, an agent file or a cluster
policy (told apart by their keys; docs/config.md lists every key), and print a summary of each, with warnings about what is
allowed but probably a mistake. Nothing is changed.

Every problem in every file is printed, one a line, as FILE:LINE: KEY: what
is wrong and what is allowed. If any file is invalid the exit code is 2.

With --json, print a JSON array with one object per file: "file", "kind"
("node", "agent", "cluster" or "" when unknown), "config" (the parsed file with
defaults applied), "warnings" and "errors" (each with file, line, key and
message).`,
		Example: "  lifeboat config check /etc/lifeboat/node.toml cluster.toml",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("%s: want one or more config files", cmd.Name())
			}
			return nil
		},
		RunE: c.runE(func(_ *cobra.Command, args []string) error {
			return c.configCheck(args, jsonOut)
		}),
	}
	jsonFlag(check, &jsonOut)
	cfg.AddCommand(check)
	return cfg
}

// configCheckJSON is one file in the output of config check --json.
type configCheckJSON struct {
	File     string            `json:"file"`
	Kind     string            `json:"kind"`
	Config   any               `json:"config"`
	Warnings []string          `json:"warnings"`
	Errors   []configErrorJSON `json:"errors"`
}

type configErrorJSON struct {
	File    string `json:"file,omitempty"`
	Line    int    `json:"line,omitempty"`
	Key     string `json:"key,omitempty"`
	Message string `json:"message"`
}

// configCheck validates files, printing a summary of each valid one to
// stdout and every problem of each invalid one to stderr.
func (c *cli) configCheck(files []string, jsonOut bool) error {
	var (
		bad int
		out []configCheckJSON
	)
	for i, f := range files {
		v, err := config.Load(f)
		r := configCheckJSON{File: f, Config: v, Warnings: []string{}, Errors: []configErrorJSON{}}
		switch x := v.(type) {
		case *config.Node:
			r.Kind = "node"
		case *config.Agent:
			r.Kind = "agent"
		case *config.Cluster:
			r.Kind = "cluster"
			r.Warnings = append(r.Warnings, x.Warnings()...)
		}
		if err != nil {
			bad++
			r.Errors = configErrors(err)
		}
		if jsonOut {
			out = append(out, r)
			continue
		}
		if i > 0 {
			fmt.Fprintln(c.stdout)
		}
		if err != nil {
			for _, e := range r.Errors {
				fmt.Fprintln(c.stderr, formatConfigError(e))
			}
			fmt.Fprintf(c.stdout, "%s: invalid, %d problem(s)\n", f, len(r.Errors))
			continue
		}
		fmt.Fprintf(c.stdout, "%s: ok\n", f)
		switch x := v.(type) {
		case *config.Node:
			fmt.Fprint(c.stdout, x.Summary())
		case *config.Agent:
			fmt.Fprint(c.stdout, x.Summary())
		case *config.Cluster:
			fmt.Fprint(c.stdout, x.Summary())
		}
		for _, w := range r.Warnings {
			fmt.Fprintf(c.stdout, "%s: warning: %s\n", f, w)
		}
	}
	if jsonOut {
		if err := writeJSON(c.stdout, out); err != nil {
			return err
		}
	}
	if bad > 0 {
		return &hintError{
			err:  &usageError{fmt.Errorf("config check: %d of %d file(s) invalid", bad, len(files))},
			hint: "fix each problem at its FILE:LINE and run `lifeboat config check` again",
		}
	}
	return nil
}

// configErrors lists the problems in err, one per *config.Error; an error
// that is not about a key (a file that cannot be read) is one problem.
func configErrors(err error) []configErrorJSON {
	var out []configErrorJSON
	for _, e := range config.Errors(err) {
		out = append(out, configErrorJSON{File: e.File, Line: e.Line, Key: e.Key, Message: e.Err.Error()})
	}
	if len(out) == 0 {
		out = append(out, configErrorJSON{Message: err.Error()})
	}
	return out
}

// formatConfigError prints a problem the way config.Error does.
func formatConfigError(e configErrorJSON) string {
	if e.File == "" && e.Line == 0 && e.Key == "" {
		return e.Message
	}
	return (&config.Error{File: e.File, Line: e.Line, Key: e.Key, Err: errors.New(e.Message)}).Error()
}
