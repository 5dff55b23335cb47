package main

import (
	"fmt"
	"io"
	"net"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/node/nbd"
)

func (c *cli) serveNBDCmd() *cobra.Command {
	var (
		dir, volume, at, listen, overlay string
		writable                         bool
		where                            storeOrAdmin
	)
	cmd := &cobra.Command{
		Use:   "serve-nbd [--store DIR | --admin ADDR] --volume V [--at POINT|TIME] [--listen ADDR] [--writable]",
		Short: "Serve a point straight from the store over NBD, so a VM boots before any copy is made",
		Long: `serve-nbd serves a volume as it was at a point over the Network Block Device
protocol until interrupted: a hypervisor (qemu -drive file=nbd://ADDR/VOLUME,
or nbd-client) boots from it at once, while the blocks are read from the
store on demand. The point is never changed: with --writable, writes go to
a copy-on-write overlay (a temporary file in --overlay-dir) that is dropped
when serve-nbd stops; copy the disk out (qemu-img convert) to keep them.

With --admin the blocks come from a running node (its admin API, with HTTP
range requests); with --store from a local store that no node has open.
The export name is the volume name.`,
		Example: "  lifeboat serve-nbd --admin 127.0.0.1:7948 --volume web/disk --listen 127.0.0.1:10809\n" +
			"  qemu-img convert -f raw -O qcow2 nbd://127.0.0.1:10809/web/disk web.qcow2",
		Args: noArgs,
		RunE: c.runE(func(cmd *cobra.Command, _ []string) error {
			if err := checkVolumeName(volume); err != nil {
				return err
			}
			if err := where.check(); err != nil {
				return err
			}
			ctx := cmd.Context()
			start := time.Now()
			serve := func(data io.ReaderAt, size int64, point string, pt time.Time) error {
				srv, err := nbd.NewServer(nbd.Export{Name: volume, Size: size, Data: data, Writable: writable, OverlayDir: overlay, Log: c.log})
				if err != nil {
					return err
				}
				defer srv.Close()
				ln, err := net.Listen("tcp", listen)
				if err != nil {
					return fmt.Errorf("serve-nbd: %w", err)
				}
				mode := "read-only"
				if writable {
					mode = "writable (writes go to an overlay, dropped at exit)"
				}
				fmt.Fprintf(c.stdout, "serving %s at point %s (%s), %s, %s, on nbd://%s/%s (ready in %s; Ctrl-C stops)\n",
					volume, point, pt.UTC().Format(time.RFC3339), formatBytes(size), mode, ln.Addr(), volume, time.Since(start).Round(time.Millisecond))
				err = srv.Serve(ctx, ln)
				st := srv.Stats()
				fmt.Fprintf(c.stderr, "served %d connections, %s read, %s written\n", st.Connections, formatBytes(st.BytesRead), formatBytes(st.BytesWritten))
				if err == nil {
					err = ctx.Err()
				}
				return err
			}
			if where.admin.addr != "" {
				cl, err := where.admin.client()
				if err != nil {
					return err
				}
				im, err := cl.OpenImage(ctx, volume, at)
				if err != nil {
					return fmt.Errorf("serve-nbd %s: %w", volume, err)
				}
				return serve(im, im.Size(), im.Point, im.Time)
			}
			return c.withStore(dir, func(s *blockstore.Store) error {
				p, v, err := s.Resolve(ctx, volume, at)
				if err != nil {
					return err
				}
				im, err := s.OpenImage(ctx, v)
				if err != nil {
					return err
				}
				return serve(im, im.Size(), p.ID, p.Time)
			})
		}),
	}
	where.register(cmd, &dir)
	f := cmd.Flags()
	f.StringVar(&volume, "volume", "", "volume to serve (required; SERVICE/VOLUME with --admin)")
	cmd.MarkFlagRequired("volume")
	f.StringVar(&at, "at", "latest", "point: latest, a point ID or prefix, a point name, or an RFC 3339 time")
	f.StringVar(&listen, "listen", "127.0.0.1:10809", "TCP address to serve NBD on")
	f.BoolVar(&writable, "writable", false, "accept writes into a temporary copy-on-write overlay")
	f.StringVar(&overlay, "overlay-dir", "", "directory of the overlay file (default the system's temporary directory)")
	return cmd
}
