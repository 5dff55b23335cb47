package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/nbd"
)

func (c *cli) serveNBDCmd() *cobra.Command {
	var (
		dir, volume, at, listen, overlay string
		writable                         bool
		where                            storeOrAdmin
	)
	cmd := &cobra.Command{
		Use:   "serve-nbd [--store DIR | --admin ADDR] --volume V [--at POINT|TIME] [--listen ADDR] [--writable] [--tls-dir DIR]",
		Short: "Serve a point straight from the store over NBD, so a VM boots before any copy is made",
		Long: `serve-nbd serves a volume as it was at a point over the Network Block Device
protocol until interrupted: a hypervisor (qemu -drive file=nbd://ADDR/VOLUME,
or nbd-client) boots from it at once, while the blocks are read from the
store on demand. The point is never changed: with --writable, writes go to
a copy-on-write overlay (a temporary file in --overlay-dir) that is dropped
when serve-nbd stops; copy the disk out (qemu-img convert) to keep them.

With --admin the blocks come from a running node (its admin API, with HTTP
range requests); with --store from a local store that no node has open.
The export name is the volume name.

With --tls-dir DIR (default $LIFEBOAT_TLS_DIR), an operator certificate
directory from ` + "`lifeboat ca issue --operator`" + `, the server requires TLS
(NBD_OPT_STARTTLS) and presents DIR/cert.crt; a client must present a
certificate of the same CA for an operator with role operator or admin.
Anything else is refused and logged. With --admin, DIR is also the
certificate for the node. Without TLS, --listen must be a loopback
address, and anyone on this host can read the volume.

Clients use an operator certificate directory as it is (ca issue writes
the GnuTLS file names ca-cert.pem, client-cert.pem, client-key.pem):
  nbdinfo 'nbds://127.0.0.1:10809/VOLUME?tls-certificates=DIR'
  qemu-img convert --object tls-creds-x509,id=tls0,endpoint=client,dir=DIR \
    --image-opts driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=10809,export=VOLUME,tls-creds=tls0 \
    -O qcow2 out.qcow2
The server's certificate names 127.0.0.1, ::1 and localhost; to be reached
by another name, issue it with --host NAME.`,
		Example: "  lifeboat serve-nbd --admin 127.0.0.1:7948 --volume web/disk --listen 127.0.0.1:10809\n" +
			"  qemu-img convert -f raw -O qcow2 nbd://127.0.0.1:10809/web/disk web.qcow2\n" +
			"  lifeboat serve-nbd --store /srv/store --volume disk --tls-dir ~/.config/lifeboat/tls --listen 0.0.0.0:10809",
		Args: noArgs,
		RunE: c.runE(func(cmd *cobra.Command, _ []string) error {
			if err := checkVolumeName(volume); err != nil {
				return err
			}
			if err := where.check(); err != nil {
				return err
			}
			tlsDir := where.admin.tlsDir
			if tlsDir == "" {
				tlsDir = os.Getenv(envTLSDir)
			}
			host, err := listenHost(listen)
			if err != nil {
				return err
			}
			var warnings []string
			var serverTLS *tls.Config
			if tlsDir != "" {
				if serverTLS, err = nbdServerTLS(tlsDir); err != nil {
					return err
				}
				if w := certNames(serverTLS.Certificates[0].Leaf, host, tlsDir); w != "" {
					warnings = append(warnings, w)
				}
			} else {
				if !loopback(host) {
					return usagef("serve-nbd: --listen %s is not a loopback address: NBD without TLS would serve the volume to anyone on the network; add --tls-dir DIR (an operator certificate from `lifeboat ca issue --operator`)", listen)
				}
				what := "read the volume"
				if writable {
					what = "read and write the volume"
				}
				warnings = append(warnings, "serve-nbd: warning: no TLS (neither --tls-dir nor $"+envTLSDir+"): anyone on this host can "+what+"; add --tls-dir DIR to require an operator certificate")
			}
			ctx := cmd.Context()
			start := time.Now()
			serve := func(data io.ReaderAt, size int64, point string, pt time.Time) error {
				exp := nbd.Export{Name: volume, Size: size, Data: data, Writable: writable, OverlayDir: overlay, Log: c.log}
				if serverTLS != nil {
					exp.TLS, exp.Authorize = serverTLS, authorizeNBD
				}
				srv, err := nbd.NewServer(exp)
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
				scheme, access := "nbd", ""
				if serverTLS != nil {
					scheme, access = "nbds", " with TLS for operator and admin certificates of the CA in "+tlsDir
				}
				for _, w := range warnings {
					fmt.Fprintln(c.stderr, w)
				}
				fmt.Fprintf(c.stdout, "serving %s at point %s (%s), %s, %s, on %s://%s/%s%s (ready in %s; Ctrl-C stops)\n",
					volume, point, pt.UTC().Format(time.RFC3339), formatBytes(size), mode, scheme, ln.Addr(), volume, access, time.Since(start).Round(time.Millisecond))
				err = srv.Serve(ctx, ln)
				st := srv.Stats()
				refused := ""
				if serverTLS != nil {
					refused = fmt.Sprintf(", %d refused", st.Refused)
				}
				fmt.Fprintf(c.stderr, "served %d connections%s, %s read, %s written\n", st.Connections, refused, formatBytes(st.BytesRead), formatBytes(st.BytesWritten))
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
				if cl, _, err = toHolder(ctx, cl, where.admin, volume, c.stderr); err != nil {
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
	f.Lookup("tls-dir").Usage = "operator certificate `DIR` from lifeboat ca issue --operator (default $" + envTLSDir + "): serve NBD with TLS to operator and admin certificates of its CA; with --admin, also the certificate for the node"
	f.StringVar(&volume, "volume", "", "volume to serve (required; SERVICE/VOLUME with --admin)")
	cmd.MarkFlagRequired("volume")
	f.StringVar(&at, "at", "latest", "point: latest, a point ID or prefix, a point name, or an RFC 3339 time")
	f.StringVar(&listen, "listen", "127.0.0.1:10809", "TCP address to serve NBD on")
	f.BoolVar(&writable, "writable", false, "accept writes into a temporary copy-on-write overlay")
	f.StringVar(&overlay, "overlay-dir", "", "directory of the overlay file (default the system's temporary directory)")
	return cmd
}

// listenHost returns the host part of a --listen address.
func listenHost(listen string) (string, error) {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return "", usagef("serve-nbd: --listen %q: want HOST:PORT, e.g. 127.0.0.1:10809: %v", listen, err)
	}
	return host, nil
}

// loopback reports whether host is only reachable from this machine:
// localhost or a loopback IP. "" and 0.0.0.0 listen everywhere.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// nbdServerTLS loads the credentials in dir as serve-nbd's TLS server
// config: dir's certificate (it must be good for TLS servers, as operator
// and node certificates are), clients verified against dir's CA.
func nbdServerTLS(dir string) (*tls.Config, error) {
	creds, err := loadOperatorCreds(dir)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(creds.Cert.Leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		return nil, &hintError{
			&usageError{fmt.Errorf("serve-nbd: %s (%s) cannot serve TLS: it is not a server certificate", filepath.Join(dir, mesh.FileCert), creds.Self)},
			"issue an operator certificate for this host with `lifeboat ca issue --dir CA --operator NAME --role operator --out DIR` (certificates from before serve-nbd had TLS must be issued again)",
		}
	}
	return creds.ServerTLS(), nil
}

// authorizeNBD admits operators with role operator or admin: those who
// may read images through the admin API. The handshake has verified the
// certificate against the CA and that it carries a lifeboat identity.
func authorizeNBD(cs tls.ConnectionState) error {
	id, err := mesh.PeerIdentity(cs)
	switch {
	case err != nil:
		return err
	case !id.Operator:
		return fmt.Errorf("%s is a %s certificate: serve-nbd serves operators with role operator or admin", id, id.Kind())
	case id.Role < mesh.RoleOperator:
		return fmt.Errorf("operator %s has role %s: serve-nbd needs role operator or admin", id.Name, id.Role)
	}
	return nil
}

// certNames warns when clients that check the server's name (qemu,
// libnbd) would refuse cert for a listen address it does not name.
func certNames(cert *x509.Certificate, host, dir string) string {
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) || cert.VerifyHostname(host) == nil {
		return ""
	}
	return fmt.Sprintf("serve-nbd: warning: %s does not name %s: clients that check the server's name (qemu, nbdinfo) will refuse it; issue the certificate with --host %s", filepath.Join(dir, mesh.FileCert), host, host)
}
