package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/lifeboat-dr/lifeboat/blockstore"
)

// envKEKFile names the key-encryption key file when --kek-file is not given.
const envKEKFile = "LIFEBOAT_KEK_FILE"

// kekCommandTimeout bounds a KMS hook.
const kekCommandTimeout = 30 * time.Second

// loadKEK reads a key-encryption key from a file (64 hex digits; the file
// must not be readable by group or others) or from the standard output of
// a command run without a shell (a KMS hook). Neither: nil.
func loadKEK(ctx context.Context, file string, command []string) (*blockstore.KEK, error) {
	switch {
	case file != "" && len(command) > 0:
		return nil, usagef("give the key-encryption key one way: a file or a command, not both")
	case file != "":
		fi, err := os.Stat(file)
		if err != nil {
			return nil, fmt.Errorf("key-encryption key: %w", err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return nil, &hintError{fmt.Errorf("key-encryption key file %s has mode %04o: others can read it", file, fi.Mode().Perm()),
				"chmod 600 " + file}
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("key-encryption key: %w", err)
		}
		k, err := blockstore.ParseKEK(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		return &k, nil
	case len(command) > 0:
		ctx, cancel := context.WithTimeout(ctx, kekCommandTimeout)
		defer cancel()
		var out, errOut bytes.Buffer
		cmd := exec.CommandContext(ctx, command[0], command[1:]...)
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := cmd.Run(); err != nil {
			msg := strings.TrimSpace(errOut.String())
			if len(msg) > 500 {
				msg = msg[:500] + "..."
			}
			if ctx.Err() != nil {
				err = fmt.Errorf("no answer in %s", kekCommandTimeout)
			}
			return nil, fmt.Errorf("key-encryption key command %q: %w: %s", strings.Join(command, " "), err, msg)
		}
		k, err := blockstore.ParseKEK(out.Bytes())
		if err != nil {
			return nil, fmt.Errorf("key-encryption key command %q printed no key: %w", strings.Join(command, " "), err)
		}
		return &k, nil
	}
	return nil, nil
}

// kekFlags are --kek-file and --kek-command: global flags for every command
// that opens a local store, and --new-kek-* for rekey.
type kekFlags struct {
	file, command string
}

func (f *kekFlags) add(fs *pflag.FlagSet, prefix, what string) {
	fs.StringVar(&f.file, prefix+"kek-file", "", "file with the "+what+"key-encryption key of an encrypted store (64 hex digits, mode 0600; default $"+envKEKFile+")")
	fs.StringVar(&f.command, prefix+"kek-command", "", "command (no shell; words split on spaces) that prints the "+what+"key-encryption key")
}

// load returns the key the flags name, falling back to $LIFEBOAT_KEK_FILE
// when useEnv is set.
func (f *kekFlags) load(ctx context.Context, useEnv bool) (*blockstore.KEK, error) {
	file := f.file
	if file == "" && f.command == "" && useEnv {
		file = os.Getenv(envKEKFile)
	}
	return loadKEK(ctx, file, strings.Fields(f.command))
}

// kekArgv is the argv of a KEK command: the node file's own array when the
// command came from it (arguments may hold spaces), else command's words.
func kekArgv(command string, fromFile []string) []string {
	if len(fromFile) > 0 && command == strings.Join(fromFile, " ") {
		return fromFile
	}
	return strings.Fields(command)
}

// ---- store rekey ----

func (c *cli) rekeyCmd() *cobra.Command {
	var (
		dir string
		new kekFlags
	)
	cmd := &cobra.Command{
		Use:   "rekey --store DIR --kek-file OLD --new-kek-file NEW",
		Short: "Seal an encrypted store's keys under a new key-encryption key",
		Long: `Seal the data key and dedup key of the encrypted store in DIR under a new
key-encryption key (KEK). No data is rewritten: the change is one small file,
replaced atomically, so it takes milliseconds whatever the store's size, and
may run while a node has the store open (the node reads the keys file only
when it starts). Afterwards only the new KEK opens the store: update the
node file's [encryption] before the node restarts.`,
		Example: "  lifeboat store rekey --store /var/lib/lifeboat/store --kek-file /etc/lifeboat/kek.old --new-kek-file /etc/lifeboat/kek.hex",
		Args:    noArgs,
		RunE: c.runE(func(cmd *cobra.Command, _ []string) error {
			oldKEK, err := c.kek.load(cmd.Context(), true)
			if err != nil {
				return err
			}
			newKEK, err := new.load(cmd.Context(), false)
			if err != nil {
				return err
			}
			if oldKEK == nil || newKEK == nil {
				return usagef("rekey needs the current key (--kek-file or --kek-command) and the new one (--new-kek-file or --new-kek-command)")
			}
			if *oldKEK == *newKEK {
				return usagef("the new key-encryption key is the current one")
			}
			if err := blockstore.Rekey(dir, *oldKEK, *newKEK); err != nil {
				if errors.Is(err, blockstore.ErrWrongKEK) {
					return &hintError{err, "--kek-file (or --kek-command) must give the key the store is sealed under now"}
				}
				return err
			}
			fmt.Fprintf(c.stdout, "store %s: keys sealed under key-encryption key %s (was %s); no data rewritten\n", dir, newKEK.Fingerprint(), oldKEK.Fingerprint())
			return nil
		}),
	}
	storeFlag(cmd, &dir)
	new.add(cmd.Flags(), "new-", "new ")
	return cmd
}

// ---- store rebuild-index ----

func (c *cli) rebuildIndexCmd() *cobra.Command {
	var (
		dir    string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "rebuild-index --store DIR [--kek-file FILE] [--json]",
		Short: "Rebuild a damaged store index from the packs",
		Long: `Build a new index for the store in DIR from its pack files alone, for when
the index is damaged (commands fail with exit 3 naming a file under
DIR/index) or lost. Every frame of every pack is read and checked: blocks
are re-hashed against their IDs (authenticated, in an encrypted store),
damaged frames are skipped and listed. Points come back from the copies of
their records in the packs. The old index is moved aside to
DIR/index.damaged-TIME, not deleted.

Stop the node that uses the store first (the store's lock says if one runs).
Afterwards run 'lifeboat verify --store DIR'. Points that prune removed may
come back if their data is still in the packs: run prune again. A node
rebuilds its per-service block scopes from its catalog by itself.`,
		Example: "  lifeboat store rebuild-index --store /var/lib/lifeboat/store",
		Args:    noArgs,
		RunE: c.runE(func(cmd *cobra.Command, _ []string) error {
			kek, err := c.kek.load(cmd.Context(), true)
			if err != nil {
				return err
			}
			pr := newProgress(c.stderr, "rebuild index", true)
			rep, err := blockstore.RebuildIndex(cmd.Context(), dir, blockstore.Options{Logger: c.log, KEK: kek}, pr.callback())
			pr.done()
			if err != nil {
				return err
			}
			for _, d := range rep.Damage {
				fmt.Fprintf(c.stderr, "skipped: %v\n", d)
			}
			if asJSON {
				return writeJSON(c.stdout, rep)
			}
			fmt.Fprintf(c.stdout, "rebuilt the index of %s from %d packs: %d frames, %d blocks, %d map pages, %d points\n",
				dir, rep.Packs, rep.Frames, rep.Blocks, rep.Pages, rep.Points)
			if rep.Skipped > 0 {
				fmt.Fprintf(c.stdout, "%d damaged frames left out (listed above)\n", rep.Skipped)
			}
			if len(rep.Incomplete) > 0 {
				fmt.Fprintf(c.stdout, "%d points left out, their maps are gone: %s\n", len(rep.Incomplete), strings.Join(rep.Incomplete, " "))
			}
			if rep.LocksLost != "" {
				fmt.Fprintf(c.stdout, "retention locks lost: %s; a node sets them again from its catalog, locks set by hand must be set again\n", rep.LocksLost)
			} else if rep.Locks > 0 {
				fmt.Fprintf(c.stdout, "%d retention locks carried over from the old index\n", rep.Locks)
			}
			if rep.OldIndex != "" {
				fmt.Fprintf(c.stdout, "the old index is at %s\n", rep.OldIndex)
			}
			fmt.Fprintf(c.stdout, "next: lifeboat verify --store %s\n", dir)
			return nil
		}),
	}
	storeFlag(cmd, &dir)
	jsonFlag(cmd, &asJSON)
	return cmd
}
