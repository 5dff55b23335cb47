package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/test/workload"
)

// demoCmd runs lifeboat's main job on a built-in default: it generates a
// disk image, snapshots it, changes it as a day of work would, snapshots it
// again, restores both points and checks them byte for byte. Issue #7
// replaces this with the two-site failover demo.
func (c *cli) demoCmd() *cobra.Command {
	var (
		keep string
		size = sizeFlag(256 << 20)
	)
	cmd := &cobra.Command{
		Use:   "demo [--keep DIR] [--size SIZE]",
		Short: "Snapshot a generated disk image, change it, snapshot again, restore both points and check them",
		Long: `demo runs lifeboat's main job on data it makes itself: no config, no
flags needed. It generates a disk image (holes, text, random data and copies),
stores it as a point, writes a "day" of changes (1% of the image) and stores a
second point, then restores both points and compares them byte for byte with
the images they came from. It prints timings and the store's dedup and
compression figures. With --keep DIR the store and images stay in DIR for
exploring with the other commands.`,
		Args: noArgs,
		RunE: c.runE(func(cmd *cobra.Command, _ []string) error {
			return c.demo(cmd.Context(), keep, int64(size))
		}),
	}
	cmd.Flags().StringVar(&keep, "keep", "", "keep the store and images in `DIR` (must not exist or be empty)")
	cmd.Flags().Var(&size, "size", "size of the generated image, e.g. 256MiB or 2GiB")
	return cmd
}

func (c *cli) demo(ctx context.Context, keep string, size int64) error {
	if size < 1<<20 || size%4096 != 0 {
		return usagef("--size %d: want at least 1MiB, a multiple of 4KiB", size)
	}
	dir := keep
	if dir == "" {
		d, err := os.MkdirTemp("", "lifeboat-demo-")
		if err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		defer os.RemoveAll(d)
		dir = d
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	say := func(format string, a ...any) { fmt.Fprintf(c.stderr, "demo: "+format+"\n", a...) }
	storeDir := filepath.Join(dir, "store")
	day0, day1 := filepath.Join(dir, "day0.img"), filepath.Join(dir, "day1.img")

	start := time.Now()
	if err := makeDemoImage(day0, size, 1); err != nil {
		return err
	}
	say("generated %s image %s (holes, text, random data, copies) in %s", formatBytes(size), day0, formatDuration(time.Since(start)))
	if err := blockstore.Init(storeDir, blockstore.InitOptions{}); err != nil {
		return err
	}
	s, err := c.openStore(storeDir)
	if err != nil {
		return err
	}
	defer s.Close()

	var points [2]blockstore.Point
	for i, img := range []string{day0, day1} {
		if i == 1 {
			start = time.Now()
			n, err := copyAndMutate(day0, day1, size)
			if err != nil {
				return err
			}
			say("wrote a day of changes (%s) into %s in %s", formatBytes(n), day1, formatDuration(time.Since(start)))
		}
		src, err := blockstore.OpenSource(img)
		if err != nil {
			return err
		}
		start = time.Now()
		p, st, err := s.Snapshot(ctx, src, blockstore.SnapshotOptions{Volume: "disk", BlockSize: 4096, Name: fmt.Sprintf("day%d", i)})
		src.Close()
		if err != nil {
			return err
		}
		points[i] = p
		say("point %s (%s): %d blocks read, %d new, %d unchanged, %d zero in %s (%s)",
			p.ID, p.Name, st.Blocks, st.Changed, st.Unchanged, st.Zero, formatDuration(time.Since(start)), formatRate(size, time.Since(start)))
	}
	for i, img := range []string{day0, day1} {
		out := filepath.Join(dir, fmt.Sprintf("restored-day%d.img", i))
		v, _ := points[i].Volume("disk")
		start = time.Now()
		if err := c.restoreFile(ctx, s, v, out, true, newProgress(io.Discard, "", true)); err != nil {
			return err
		}
		elapsed := time.Since(start)
		same, err := sameFiles(img, out)
		if err != nil {
			return err
		}
		if !same {
			return fmt.Errorf("demo: restored point %s differs from %s", points[i].ID, img)
		}
		say("restored point %s to %s in %s (%s): identical to %s", points[i].ID, out, formatDuration(elapsed), formatRate(size, elapsed), filepath.Base(img))
	}
	st, err := s.Stats(ctx)
	if err != nil {
		return err
	}
	say("store holds %s of points as %s unique data in %s on disk: dedup %s, compression %s",
		formatBytes(st.UsedBytes), formatBytes(st.UniqueBytes), formatBytes(st.StoredBytes), formatRatio(st.DedupRatio), formatRatio(st.CompressionRatio))
	if keep != "" {
		say("kept everything in %s; try: lifeboat points --store %s", dir, storeDir)
	}
	fmt.Fprintln(c.stdout, "demo ok: 2 points stored and restored byte-exact")
	return nil
}

func makeDemoImage(path string, size, seed int64) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer f.Close()
	if err := workload.Image(f, size, seed); err != nil {
		return fmt.Errorf("demo: generate image: %w", err)
	}
	return f.Close()
}

func copyAndMutate(from, to string, size int64) (int64, error) {
	in, err := os.Open(from)
	if err != nil {
		return 0, fmt.Errorf("demo: %w", err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return 0, fmt.Errorf("demo: %w", err)
	}
	defer out.Close()
	if _, err := io.Copy(out, in); err != nil {
		return 0, fmt.Errorf("demo: copy image: %w", err)
	}
	n, err := workload.Mutate(out, size, 2, 1)
	if err != nil {
		return 0, fmt.Errorf("demo: change image: %w", err)
	}
	return n, out.Close()
}

// sameFiles compares two files byte for byte.
func sameFiles(a, b string) (bool, error) {
	fa, err := os.Open(a)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return false, err
	}
	defer fb.Close()
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	for {
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		if ea == io.EOF || ea == io.ErrUnexpectedEOF {
			return eb == ea, nil
		}
		if ea != nil {
			return false, ea
		}
		if eb != nil {
			return false, eb
		}
	}
}

// sizeFlag is a byte count given as "256MiB", "2GiB" or "1048576".
type sizeFlag int64

func (f *sizeFlag) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	*f = sizeFlag(n)
	return nil
}

func (f *sizeFlag) String() string { return formatSize(int64(*f)) }
func (f *sizeFlag) Type() string   { return "size" }
